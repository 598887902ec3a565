"""`pluralign serve` SIGKILLed in the middle of a PATCH of stated preferences, at each of its two writes
(`service.users.services.set_stated`: the user's row, holding the new version, then the version's rows in
the `stated_changes` table), killed before each. Restarted on the same data folder, the user's stated
preferences are the old ones (killed before the row) or the new ones (killed between the row and the
changes: the version only in the row), never a mix, and their history replays
to them; the next PATCH numbers its version after them and the table then holds every version. A guard:
it passed at once (the row is the one commit that makes a version, and a read merges in what only the row
holds). Slow: two service starts per point."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from tests.e2e.test_crash39_kills import NO_GENERATOR
from tests.e2e.test_e2e_serve import ServeProcess

KILLED_AT = """
import os, signal, sys
from pluralign.store.tables import Store

point = os.environ["KILL_AT"]
original = getattr(Store, point)

def killed(self, *args, **kwargs):
    if point == "put_user_if" and getattr(args[0], "stated", None) == getattr(args[1], "stated", None):
        return original(self, *args, **kwargs)  # the stated preferences of the row read (a refit's): not the PATCH's
    if os.path.exists(os.environ["ARMED"]):  # killed before this write
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)

setattr(Store, point, killed)
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

OLD = {"length": "more", "list_items": "more"}
NEW = {"length": "less", "list_items": "less"}


def history_replayed(page: dict) -> dict:
    replayed: dict = {}
    for change in page["history"]:
        replayed = {k: v for k, v in {**replayed, change["feature"]: change["direction"]}.items() if v is not None}
    return replayed


@pytest.mark.slow
@pytest.mark.parametrize("point, wanted", [("put_user_if", OLD), ("add_stated_changes", NEW)])
def test_a_patch_killed_at_either_write_leaves_the_old_or_the_new_preferences_whole(tmp_path, tiny_pal_dir, point, wanted):
    data, armed = tmp_path / "data", tmp_path / "armed"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache")}
    proc = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, code=KILLED_AT, KILL_AT=point, ARMED=str(armed), **env)
    headers = {"Authorization": f"Bearer {proc.dev_key()}"}
    try:
        with httpx.Client(base_url=proc.url, headers=headers, timeout=60) as c:
            first = c.patch("/v1/users/sam/stated-preferences", json={"preferences": OLD})
            assert first.status_code == 200
            epoch = first.headers["etag"].strip('"').split(".")[0]  # the record's (session versions52)
            armed.touch()
            with contextlib.suppress(httpx.TransportError):  # killed before it answers
                c.patch("/v1/users/sam/stated-preferences", json={"preferences": NEW})
        proc.proc.wait(timeout=60)
        assert proc.proc.returncode == -9
    finally:
        proc.stop()
    again = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, **env)
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=60) as c:
            read = c.get("/v1/users/sam/stated-preferences")
            page = read.json()
            assert (page["preferences"], history_replayed(page)) == (wanted, wanted), page
            version = page["version"]
            # the entity tag's epoch is stored with the record: the restarted process gives the tag the killed one did
            assert read.headers["etag"] == f'"{epoch}.{version}"', (read.headers["etag"], epoch)
            r = c.patch("/v1/users/sam/stated-preferences", json={"preferences": {"length": None}})
            assert r.status_code == 200 and r.json()["version"] == version + 1, r.text
            assert r.headers["etag"] == f'"{epoch}.{version + 1}"', r.headers["etag"]
            page = c.get("/v1/users/sam/stated-preferences").json()
            assert [h["version"] for h in page["history"]] == sorted(h["version"] for h in page["history"])
            assert {h["version"] for h in page["history"]} == set(range(1, version + 2)), page
            assert history_replayed(page) == page["preferences"] == {k: v for k, v in wanted.items() if k != "length"}
    finally:
        again.stop()
