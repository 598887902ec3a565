"""Review of session 59's break: a user's stated history sent a page at a time by the export, driven over real HTTP."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from pluralign.user import FEATURE_NAMES
from service.users import controllers, services
from service.users.controllers import in_chunks
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("review-break59-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, adapter_every=1_000_000)
    with server:
        yield service


def _patch_versions(c: httpx.Client, user: str, versions: int, first: str) -> None:
    for v in range(versions):
        direction = first if v % 2 == 0 else ("less" if first == "more" else "more")
        r = c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {f: direction for f in FEATURE_NAMES}})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("made_again", [False, True], ids=["deleted", "deleted-and-made-again"])
def test_an_export_never_sends_a_history_cut_or_mixed_by_a_delete_between_its_pages(svc, monkeypatch, made_again):
    """The export sends a user's stated history a page of versions at a time, the pages after the first read while
    the `user` line is being sent. A DELETE of the user between two pages made the export end as if whole (200, every
    line) with the versions of the pages read after it missing, or, the user made again with new stated preferences
    meanwhile, with the new record's versions in the old record's history. The preference and chat lines, read from
    one fixed version of their tables, never mix so: a streamed export cut by a DELETE stops short (DeletedMeanwhile).
    The DELETE (and the new PATCHes) are sent over HTTP while the export reads its second page."""
    versions, per_read = 6, 2  # three pages, the DELETE before the second: the page size is not what is checked
    user = f"changer-rb59-{made_again}"
    with svc.client() as c, svc.client() as other:
        _patch_versions(c, user, versions, "more")  # odd versions "more", even "less"
        stated_changes = svc.runtime.store.stated_changes
        reads = []

        def meanwhile(*args, **kwargs):
            reads.append(args)
            if len(reads) == 2:  # the second page: the DELETE (and a new user under the id) lands first
                def delete_and_patch():
                    assert other.delete(f"/v1/users/{user}").status_code == 200
                    if made_again:
                        _patch_versions(other, user, versions, "less")  # odd versions "less": told apart
                done = threading.Thread(target=delete_and_patch)
                done.start()
                done.join(120)
                assert not done.is_alive()
            return stated_changes(*args, **kwargs)

        monkeypatch.setattr(services, "STATED_VERSIONS_PER_READ", per_read)
        monkeypatch.setattr(svc.runtime.store, "stated_changes", meanwhile)
        # each piece its own body message, as a real page (500 versions, 35-560 KB) fills one: the 200 and the first
        # page are sent before the second page is read
        monkeypatch.setattr(controllers, "in_chunks", lambda lines: in_chunks(lines, size=1))
        with c.stream("GET", f"/v1/users/{user}/export", headers={"Accept-Encoding": "identity"}) as r:
            assert r.status_code == 200
            body = b""
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # cut short: the client knows it is not whole
                for part in r.iter_raw():
                    body += part
                stated = json.loads(body.splitlines()[0])["stated"]
                history = {(ch["version"], ch["feature"], ch["direction"]) for ch in stated["history"]}
                whole = {(v, f, "more" if v % 2 else "less") for v in range(1, versions + 1) for f in FEATURE_NAMES}
                pytest.fail(f"the export ended whole with {len(history & whole)} of the user's {len(whole)} changes "
                            f"and {len(history - whole)} of another record")
