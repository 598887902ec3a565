"""Session reviewtrial50: CLI inputs a user gets wrong (trial50's report left them alone); each test failed before its fix."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_break37_cli import last_line, usage_error


@pytest.mark.parametrize("name", ["", "   ", "\u3000"])
def test_keys_create_with_a_blank_name_is_a_usage_error_not_a_nameless_key(tmp_path, name, capsys):
    """`keys create --name "$NAME"` with NAME unset in a script issued a key without a name, exit 0, as if a label
    had been given: the key could then be found by no name, and `keys revoke ""` refuses a blank name (it would
    name every nameless key). An explicit blank --name is now a usage error naming the option; leaving --name
    out still issues a key without one."""
    code, out, err = usage_error(capsys, "keys", "--data-dir", str(tmp_path), "create", "--tenant", "acme", "--name", name)
    assert code == 2 and out == "" and "argument --name:" in last_line(err) and "blank" in last_line(err), err
    assert not (tmp_path / "api_keys.json").exists()  # no key issued
    code, out, err = usage_error(capsys, "keys", "--data-dir", str(tmp_path), "create", "--tenant", "acme")
    assert code == 0 and json.loads(out)["name"] == "", err


def test_tenants_remove_of_a_tenant_that_never_was_is_an_error_not_a_removal_begun(tmp_path, capsys):
    """`pluralign tenants remove --tenant acmee` (a typo for acme) printed a removal `running`, `keys_revoked: 0`,
    exit 0, and the service then marked it `done`: it looked like the tenant was gone while acme's keys and rows
    stayed. Now a tenant with no key, no row in the store and no removal before is an error naming it (exit 2, as every refusal), with
    nothing recorded; one with rows only (its keys revoked earlier), or removed before, is still removed, and
    `--even-if-unseen` removes a name that shows none of these (feedback only still in the service's log)."""
    import numpy as np

    from pluralign.store import Store, StoredPreference
    from service.auth import KeyRing
    from training.cli import main

    data = tmp_path / "data"
    keys = KeyRing(data / "api_keys.json")
    keys.issue("acme"), keys.issue("acmee", admin=True, name="ops")  # an admin key's --tenant only labels it
    row = StoredPreference(tenant="globex", user_id="ann", pref_id="p1", prompt="q", chosen="a", rejected="b", kind="comparison",
                            created_at=1.0)
    Store(str(data / "lancedb"), "enc", 2).add_preferences([row], *np.zeros((3, 1, 2), np.float32))  # globex: rows, no key
    code, out, err = usage_error(capsys, "tenants", "remove", "--tenant", "acmee", "--data-dir", str(data))
    assert code == 2 and out == "", (code, out, err)
    assert "acmee" in last_line(err) and "nothing to remove" in last_line(err) and "--even-if-unseen" in last_line(err), err
    assert not (data / "tenant-removals").exists() or not any((data / "tenant-removals").iterdir())  # nothing recorded
    assert [k.tenant for k in keys.list() if not k.admin] == ["acme"]
    for tenant, revoked in (("acme", 1), ("globex", 0)):  # a key, or rows in the store: begun
        assert main(["tenants", "remove", "--tenant", tenant, "--data-dir", str(data)]) == 0
        removal = json.loads(capsys.readouterr().out)
        assert (removal["tenant"], removal["state"], removal["keys_revoked"]) == (tenant, "running", revoked), removal
    assert main(["tenants", "remove", "--tenant", "acme", "--data-dir", str(data)]) == 0  # removed before: that one
    assert json.loads(capsys.readouterr().out)["tenant"] == "acme"
    assert main(["tenants", "remove", "--tenant", "initech", "--even-if-unseen", "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "running"
