"""Session 26c: a hostile pass over the journal of DELETEs in progress (`service.users.journal`) with
the real app (tiny models, real LanceDB in a temp dir, uvicorn on 127.0.0.1)."""

from __future__ import annotations

import logging
import os

from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.test_delete_stopped import stop_after_the_rows
from tests.service.tiny import start_service


def test_a_delete_whose_journal_cannot_be_written_is_a_clear_503_and_deletes_nothing(serve):
    """The journal's folder cannot be written (here a file stands where it goes; a read-only or full
    disk is the same OSError): the DELETE must not begin, and its client must be told so. Before: a bare
    500 "internal error" (nothing said whether anything was deleted, or what to do)."""
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        (data / JOURNAL_FOLDER).write_text("not a folder")
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.text)
        error = r.json()["error"]
        assert "nothing of the user was deleted" in error["message"] and error["code"] == "delete_not_recorded", error
        assert str(data) not in r.text  # the server's paths are the operator's (its log names them)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2  # nothing deleted
        (data / JOURNAL_FOLDER).unlink()
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200  # sent again once it can be written
        assert acme.delete(f"/v1/users/{GONE}").status_code == 404  # nothing of theirs left
        assert list((data / JOURNAL_FOLDER).iterdir()) == []


def test_a_foreign_entry_in_the_journal_does_not_stop_the_others_being_finished(serve, monkeypatch, caplog):
    """A folder, or an entry under another user's name, among the journal's entries: the unfinished
    DELETE beside them is still finished by the service's pass, and the foreign ones are logged and
    left. Before: reading the folder raised IsADirectoryError out of every pass ("finishing unfinished
    DELETEs failed"), so no unfinished DELETE was ever finished."""
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "ann", "coffee", n=1)
        stop_after_the_rows(rt, GONE, monkeypatch)
        journal = data / JOURNAL_FOLDER
        (entry,) = journal.iterdir()
        (journal / "0000.json").mkdir()  # sorted before the real entry
        misplaced = journal / "0001.json"  # a valid entry under a name not its user's (a copy, a restore)
        misplaced.write_bytes(entry.read_bytes().replace(GONE.encode(), b"ann"))
        monkeypatch.setattr(logging.getLogger("pluralign.service"), "handlers", [caplog.handler])  # the app's logging set-up took root's
        assert services.UnfinishedDeletes(rt, 3600).run_once() == 1, caplog.text[-2000:]
        assert wait_until(lambda: not entry.exists()), caplog.text[-2000:]
        assert acme.delete(f"/v1/users/{GONE}").status_code == 404  # finished: nothing of theirs left
        assert acme.get("/v1/users/ann/preferences").json()["total"] == 1  # the misplaced entry deleted nobody
        assert sorted(p.name for p in journal.iterdir()) == ["0000.json", "0001.json"]  # left for the operator
        assert str(journal / "0000.json") in caplog.text and str(misplaced) in caplog.text
        assert os.path.isdir(journal / "0000.json")


def test_what_a_user_imports_after_their_stopped_delete_is_kept_when_it_is_finished(serve, monkeypatch):
    """The user's DELETE was stopped part way; afterwards they import a preference file (their own
    older export: its rows carry the times they were first made, before the DELETE began). Finishing the
    DELETE tells what they sent since by those times, so it took the import for what the DELETE was
    meant to remove. Before: every imported row was deleted (what they sent after the DELETE lost)."""
    import msgspec

    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        stop_after_the_rows(rt, GONE, monkeypatch)
        rows = [{"prompt": f"Old question {i}?", "chosen": f"Kept answer {i}.", "rejected": f"Other answer {i}.",
                 "created_at": 1_700_000_000.0 + i} for i in range(3)]
        r = acme.post(f"/v1/users/{GONE}/import", content=b"".join(msgspec.json.encode(row) + b"\n" for row in rows))
        assert r.status_code == 201, r.text
        services.UnfinishedDeletes(rt, 3600).run_once()
        assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir())), list((data / JOURNAL_FOLDER).iterdir())
        page = acme.get(f"/v1/users/{GONE}/preferences").json()
        assert page["total"] == 3 and {p["chosen"] for p in page["data"]} == {row["chosen"] for row in rows}, page


def test_a_user_who_came_back_keeps_nothing_derived_from_before_the_delete(serve):
    """The DELETE stopped before the rows went (its process killed while it stopped their jobs); the
    user came back. Finishing the DELETE removes their rows from before, and must also remove what the
    service had drawn from them: the attributes their old feedback carried live on in their users row."""
    from tests.service.test_data36_journal import stopped_delete

    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        old = {"type": "comparison", "user": GONE, "prompt": "Which?", "chosen": "This one.", "rejected": "That one.",
               "attributes": {"diet": "secret-old"}}
        assert acme.post("/v1/feedback", json=old).status_code == 201
        assert acme.get(f"/v1/users/{GONE}").status_code == 200  # fitted: their users row holds the attribute
        assert "secret-old" in acme.get(f"/v1/users/{GONE}").text

        stopped_delete(rt)  # the process killed at the DELETE's first step: its journal entry stays
        time_sent = {"type": "comparison", "user": GONE, "prompt": "Again?", "chosen": "Yes.", "rejected": "No.",
                     "attributes": {"segment": "new"}}
        assert acme.post("/v1/feedback", json=time_sent).status_code == 201  # they came back
        services.UnfinishedDeletes(rt, 3600).run_once()
        assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir())), list((data / JOURNAL_FOLDER).iterdir())
        page = acme.get(f"/v1/users/{GONE}/preferences").json()
        assert page["total"] == 1 and page["data"][0]["prompt"] == "Again?", page
        user = acme.get(f"/v1/users/{GONE}")
        assert user.status_code == 200 and "secret-old" not in user.text, user.text


def test_a_delete_whose_entry_cannot_be_removed_answers_200_and_a_later_pass_removes_it(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """Every step of the DELETE ran, then its journal entry could not be removed (the folder made
    immutable meanwhile: `chattr +i`, as a read-only remount would). The user is deleted, so the client
    is told so; the entry stays until a pass can remove it. Before: a bare 500 "internal error" for a
    DELETE that had deleted everything (and the DELETE sent again was a 404)."""
    import shutil
    import subprocess

    import pytest

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    journal = data / JOURNAL_FOLDER
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("needs chattr +i (root on ext4 or the like)")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    rt = svc.runtime

    def frozen(forget) -> int:  # the last thing before the entry goes: the folder cannot be changed from now on
        subprocess.run(["chattr", "+i", str(journal)], check=True)
        return 0

    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        forget_population_users = rt.forget_population_users
        monkeypatch.setattr(rt, "forget_population_users", frozen)
        try:
            r = acme.delete(f"/v1/users/{GONE}")
            assert r.status_code == 200 and r.json()["deleted"]["preferences"] == 2, (r.status_code, r.text)
            assert len(list(journal.iterdir())) == 1  # it names the user until it can be removed
        finally:
            subprocess.run(["chattr", "-i", str(journal)], check=True)
        monkeypatch.setattr(rt, "forget_population_users", forget_population_users)
        services.UnfinishedDeletes(rt, 3600).run_once()
        assert wait_until(lambda: not any(journal.iterdir())), list(journal.iterdir())
        assert acme.delete(f"/v1/users/{GONE}").status_code == 404
