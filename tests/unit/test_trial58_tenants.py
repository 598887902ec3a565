"""Session trial58: `pluralign tenants users --tenant acmee` (a mistyped name) printed `{"users":0,"next":null}` alone, as
for a tenant without users, where the dashboard says of such a tenant that it shows nowhere (a typo?) and `tenants
remove` refuses it. Now a warning on stderr says so (the page still printed, exit 0), and of an admin key's label that
it only labels admin keys; a tenant that shows (a key, rows in the store) gets none."""

from __future__ import annotations

from service.auth import KeyRing
from tests.service.test_store import DIM, prefs
from tests.unit.clitools import cli


def test_an_empty_page_of_a_tenant_that_shows_nowhere_says_so(tmp_path, capsys, monkeypatch):
    from pluralign.store import Store

    data = tmp_path / "data"
    data.mkdir()
    Store(str(data / "lancedb"), "enc", DIM).add_preferences(*prefs("globex", "bea", 2))
    keys = KeyRing(data / "api_keys.json")
    keys.issue("acme")
    keys.issue("ops", admin=True)
    monkeypatch.delenv("PLURALIGN_STORE_URI", raising=False)
    said = {}
    for tenant in ("acmee", "acme", "globex", "ops"):
        code, out, err = cli(capsys, "tenants", "users", "--tenant", tenant, "--data-dir", str(data))
        assert code == 0, err
        said[tenant] = (out.splitlines()[-1], err)
    assert said["acmee"] == ('{"users":0,"next":null}', "pluralign: warning: tenant 'acmee' shows nowhere here: no key, no removal "
                             "before and nothing of it in the store or the jobs folder (a typo? `pluralign keys list` names the "
                             "tenants with keys)\n")
    assert said["acme"] == ('{"users":0,"next":null}', "")  # a key of its: a tenant without users yet
    assert said["globex"] == ('{"users":1,"next":null}', "")
    assert said["ops"] == ('{"users":0,"next":null}', "pluralign: warning: tenant 'ops' only labels admin keys (`keys create "
                           "--tenant ops --admin`), which reach no tenant's users\n")
