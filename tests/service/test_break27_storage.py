"""Session 27: storage failures while serving, with the real app (tiny models, real LanceDB in a temp
dir, uvicorn on 127.0.0.1): a damaged Lance data file, a full disk under the feedback log and under
the tables. Before, each was a bare 500 "internal error" (Lance's words in the log named neither the
table nor the folder) and /health said "ok"."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import sys
import textwrap
import time

import httpx
import lancedb
import pytest

import pluralign.store.feedback_log as feedback_log
from pluralign.store import Store
from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.tiny import ROOT, start_service

# what Lance raises when a write meets a file size limit (RLIMIT_FSIZE; a full disk says os error 28):
# seen from lancedb 0.40's `Table.add` (test_a_real_lance_write_over_a_file_size_limit_names_the_table)
LANCE_FULL = ("lance error: LanceError(IO): File too large (os error 27), /root/.cargo/registry/src/index.crates.io-"
              "1949cf8c6b5b557f/lance-file-13.0.0/src/writer/structural.rs:258:9")


def comparison(user: str, i: int = 0) -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Which drink {i}?", "chosen": f"Tea {i}.", "rejected": f"Coffee {i}."}


def chat(client, user: str, **extra):
    return client.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "max_tokens": 3,
                                                      "messages": [{"role": "user", "content": "Hello?"}], **extra})


def no_room(table, monkeypatch, method: str = "add") -> None:
    """`table.<method>` fails as Lance does on a full disk (this table only)."""

    def full(*args, **kwargs):
        raise RuntimeError(LANCE_FULL)

    monkeypatch.setattr(table, method, full)


def storage_error(r, status: int, code: str, what: str, data) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == code and error["message"].startswith(what), error
    assert str(data) not in r.text  # the server's paths are the operator's (its log names them)
    assert (r.headers.get("Retry-After") is not None) == (status == 503)
    return error["message"]


@pytest.fixture
def service_log(monkeypatch, caplog):
    """The service's and the store's log records (the app's logging set-up took root's handlers)."""
    for name in ("pluralign.service", "pluralign.store"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [caplog.handler])
    return caplog


def test_a_damaged_data_file_is_a_503_naming_the_table_and_health_says_so(service_log, serve, tiny_generator_dir, tiny_pal_dir, minilm):
    """A data file of the preferences table cut short while the service runs (a disk error, a partial
    restore). Before: every read of the table answered 500 "internal error", the log said only Lance's
    "failed to fill whole buffer", and /health said "ok". Feedback is still acknowledged (the log takes
    it; appends make new files) and routes that read no table still answer. Then the recovery that
    docs/operations.md gives: stop, roll the table back to its newest readable version, start again."""
    data, server, svc = serve()
    rt = svc.runtime
    files = data / "lancedb" / "preferences.lance" / "data"
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        give_comparisons(globex, "bea", "tea", n=2)
        rt.wait_for_background()
        before = set(files.iterdir())
        give_comparisons(acme, "ann", "coffee", n=2)
        rt.wait_for_background()
        for damaged in set(files.iterdir()) - before:  # ann's rows
            damaged.write_bytes(damaged.read_bytes()[:100])
        rt.store.histories.invalidate([("acme", "ann")])  # as a restart (or the cache's eviction) would

        for r in (acme.get("/v1/users/ann/preferences"), acme.get("/v1/users/ann"), chat(acme, "ann")):
            message = storage_error(r, 503, "storage_unavailable", "table `preferences` cannot be read: a file of it is damaged", data)
        assert "nothing this request sent was acknowledged" in message  # the chat: nothing of it stored
        assert acme.post("/v1/feedback", json=comparison("ann", 9)).status_code == 201  # durable in the log
        assert acme.get("/v1/models").status_code == 200
        metrics = acme.get("/metrics")
        assert metrics.status_code == 200 and 'pluralign_table_rows{table="users"}' in metrics.text, metrics.text[-2000:]
        failures = next(line for line in metrics.text.splitlines() if line.startswith("pluralign_storage_failures "))
        assert float(failures.split()[1]) >= 3, failures
        health = acme.get("/health").json()
        assert health["status"] == "degraded", health
        (problem,) = health["storage"]
        assert problem["what"] == "table `preferences`" and problem["action"] == "read" and problem["problem"] == "unreadable"
        assert problem["failures"] >= 3, problem
        logged = [r.getMessage() for r in service_log.records if "table `preferences`" in r.getMessage()]
        assert any(f"at {data / 'lancedb'} cannot be read" in line and "failed to fill whole buffer" in line
                   and "docs/operations.md" in line for line in logged), logged

    # docs/operations.md, "A damaged table": the newest version whose rows all read, made the latest
    table = lancedb.connect(str(data / "lancedb")).open_table("preferences")
    for version in sorted((v["version"] for v in table.list_versions()), reverse=True):
        table.checkout(version)
        try:
            table.to_arrow()
            break
        except (OSError, RuntimeError):
            continue
    table.restore()
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        assert globex.get("/v1/users/bea/preferences").json()["total"] == 2
        assert acme.get("/v1/users/ann/preferences").status_code == 200  # readable again (rows since the version are gone)
        assert acme.get("/health").json()["status"] == "ok"


NO_WRITE = {  # errno -> status, code, what the message says
    "full": (errno.ENOSPC, 507, "insufficient_storage", "no space left"),
    "read-only": (errno.EROFS, 503, "storage_unavailable", "the folder is read-only"),
}


@pytest.mark.parametrize("cause", NO_WRITE)
def test_a_full_disk_under_the_feedback_log_is_a_507_and_acknowledges_nothing(service_log, serve, monkeypatch, cause):
    """No room for the feedback log's record (or its folder remounted read-only). Before: a bare 500
    "internal error" for the feedback and for an import (the client could not tell whether it was
    stored; it was not). Once it can be written again, the next feedback is acknowledged and /health
    is "ok" again, without a restart."""
    code, status, word, says = NO_WRITE[cause]
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        assert acme.post("/v1/feedback", json=comparison("ann", 0)).status_code == 201

        def full(fd, data):
            raise OSError(code, errno.errorcode[code])

        with monkeypatch.context() as disk:
            disk.setattr(feedback_log, "_write_all", full)
            for r in (acme.post("/v1/feedback", json=comparison("ann", 1)),
                      acme.post("/v1/users/ann/import", content=b'{"prompt": "Q?", "chosen": "X.", "rejected": "Y."}\n')):
                message = storage_error(r, status, word, f"the feedback log cannot be written: {says}", data)
                assert "nothing this request sent was acknowledged" in message
            health = acme.get("/health").json()
            assert health["status"] == "degraded" and health["storage"][0]["what"] == "the feedback log", health
            assert any(f"the feedback log at {data / 'feedback-log'} cannot be written" in r.getMessage() for r in service_log.records)
        assert acme.post("/v1/feedback", json=comparison("ann", 2)).status_code == 201  # room again
        page = acme.get("/v1/users/ann/preferences").json()
        assert [p["chosen"] for p in page["data"]] == ["Tea 0.", "Tea 2."], page  # exactly what was acknowledged
        assert acme.get("/health").json()["status"] == "ok"
        paths = acme.get("/schema/openapi.json").json()["paths"]  # clients learn of both from the schema
        assert {"503", "507"} <= set(paths["/v1/feedback"]["post"]["responses"])


def test_a_full_disk_under_the_tables_is_a_507_naming_the_table_and_loses_nothing(service_log, serve, monkeypatch):
    """No room for LanceDB's files. A chat whose answer cannot be stored, streamed or not, and a read
    that must first move the user's acknowledged feedback into the table: before, a bare 500 (a stream's
    error event "generation failed: RuntimeError"). Feedback is still acknowledged (the log takes it),
    the ingest worker says so once, not a traceback a second, and moves it once there is room."""
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        with monkeypatch.context() as disk:
            no_room(rt.store.interactions, disk)
            storage_error(chat(acme, "ann"), 507, "insufficient_storage", "table `interactions` cannot be written: no space left", data)
            stream = chat(acme, "ann", stream=True)
            assert stream.status_code == 200 and '"code":"insufficient_storage"' in stream.text, stream.text[-500:]
            assert "table `interactions` cannot be written" in stream.text and stream.text.endswith("data: [DONE]\n\n")
            assert acme.get("/health").json()["storage"][0]["what"] == "table `interactions`"
        assert chat(acme, "ann").status_code == 200  # room again
        assert acme.get("/health").json()["status"] == "ok"

        with monkeypatch.context() as disk:
            no_room(rt.store.preferences, disk)
            for i in range(3):
                assert acme.post("/v1/feedback", json=comparison("bob", i)).status_code == 201
            storage_error(acme.get("/v1/users/bob/preferences"), 507, "insufficient_storage", "table `preferences` cannot be written", data)
            # trial48a, a client generated from /schema/openapi.json: every read that moves the user's feedback first
            # answers the same 507, and its operation declares it (they declared 503 alone: "never a 507")
            paths = acme.get("/schema/openapi.json").json()["paths"]
            reads = {
                ("/v1/users/{user_id}/preferences", "get"): None,
                ("/v1/users/{user_id}", "get"): lambda: acme.get("/v1/users/bob"),
                ("/v1/users/{user_id}/export", "get"): lambda: acme.get("/v1/users/bob/export"),
                ("/v1/rewards/score", "post"): lambda: acme.post("/v1/rewards/score", json={
                    "user": "bob", "prompt": "Which drink?", "responses": ["Tea.", "Coffee."]}),
                ("/v1/users/{user_id}/next-comparison", "post"): lambda: acme.post("/v1/users/bob/next-comparison", json={}),
            }
            for (path, method), read in reads.items():
                if read is not None:
                    storage_error(read(), 507, "insufficient_storage", "table `preferences` cannot be written", data)
                assert "507" in paths[path][method]["responses"], (path, method, sorted(paths[path][method]["responses"]))
            assert wait_until(lambda: any("moving feedback from the log into the table failed" in r.getMessage() for r in service_log.records))
            assert acme.get("/health").json()["feedback_pending"] == 3
        rt.wait_for_background()
        assert acme.get("/v1/users/bob/preferences").json()["total"] == 3  # nothing acknowledged was lost
        moving = [r for r in service_log.records if r.getMessage().startswith("moving feedback")]
        assert len(moving) == 1 and moving[0].exc_info is None, [r.getMessage() for r in moving]


def test_a_delete_that_cannot_write_the_table_is_recorded_and_finished_once_there_is_room(serve, monkeypatch):
    """A DELETE whose rows cannot be deleted (no room for Lance's deletion file). Before: a bare 500;
    now a 507 saying the DELETE is recorded, and the service's own pass finishes it once there is room."""
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        rt.wait_for_background()  # in the table, not only in the log
        with monkeypatch.context() as disk:
            no_room(rt.store.preferences, disk, "delete")
            message = storage_error(acme.delete("/v1/users/ann"), 507, "insufficient_storage", "table `preferences` cannot be written", data)
            assert "the DELETE is recorded" in message
        assert len(list((data / JOURNAL_FOLDER).iterdir())) == 1
        assert services.UnfinishedDeletes(rt, 3600).run_once() == 1
        assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir()))
        assert acme.delete("/v1/users/ann").status_code == 404  # nothing of theirs left


def test_a_job_whose_record_cannot_be_written_is_a_507_and_is_not_created(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """An admin's job submitted with no room for its record. Before: a bare 500. /health lists it as
    `the data folder` (nothing reports the next record written: shown as a read's failure is)."""
    import training.jobs.store as job_store
    from service.admin.controllers import ADMIN_HANDLERS

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("admin") as admin, svc.client("acme") as acme:
        def full(path, data):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        give_comparisons(acme, "ann", "tea", n=2)
        with monkeypatch.context() as disk:
            disk.setattr(job_store, "write_atomic", full)
            r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "min_comparisons": 0}})
            storage_error(r, 507, "insufficient_storage", "the data folder cannot be written: no space left", data)
            # reviewtrial48a: an adapter job (a copy of the user's comparisons) and a population job (a copy of every
            # stored comparison) write their snapshot before the record: it was left behind by each 507, a retry loop
            # filling the disk that has no room with copies of the store
            for kind, params in (("adapter", {"tenant": "acme", "user": "ann"}), ("pal", {})):
                r = admin.post("/admin/jobs", json={"kind": kind, "params": params})
                storage_error(r, 507, "insufficient_storage", "the data folder cannot be written: no space left", data)
                left = sorted(str(p.relative_to(data)) for p in (data / "jobs" / "data").rglob("*") if p.is_file())
                assert left == [], (kind, left)  # snapshots and a population snapshot's users file
            # trial48a: so is the audit route's job, and both operations declare it (they declared 503 alone)
            r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "min_comparisons": 0, "wait": 0})
            storage_error(r, 507, "insufficient_storage", "the data folder cannot be written: no space left", data)
        paths = admin.get("/schema/openapi.json").json()["paths"]
        for path, method in (("/admin/jobs", "post"), ("/admin/audits/fairness", "get")):
            assert "507" in paths[path][method]["responses"], (path, method, sorted(paths[path][method]["responses"]))
        assert admin.get("/admin/jobs").json()["jobs"] == []
        assert admin.get("/health").json()["storage"][0]["what"] == "the data folder"

        # reviewtrial48a: the operator's dashboard with no room for the preferences table. It moves the feedback waiting
        # in the log first, and answered a JSON 507 (undeclared) instead of the page: the operator lost the page when
        # the disk filled. As with a large import's backlog, it is described by what is stored, and says why
        with monkeypatch.context() as disk:
            no_room(svc.runtime.store.preferences, disk)
            assert acme.post("/v1/feedback", json=comparison("bob", 0)).status_code == 201
            for url in ("/admin/dashboard", "/admin/dashboard?tenant=acme"):
                r = admin.get(url)
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (url, r.status_code, r.text[:300])
                assert "acknowledged comparisons cannot be stored yet (table `preferences` cannot be written: no space left" in r.text
                assert "described by what is stored so far" in r.text and str(data) not in r.text
            assert admin.get("/health").json()["feedback_pending"] == 1  # nothing acknowledged was lost
        svc.runtime.wait_for_background()
        assert "cannot be stored yet" not in admin.get("/admin/dashboard").text


def test_health_shows_a_failed_write_until_one_succeeds_and_a_failed_read_for_a_while():
    from pluralign.store.failures import Problems, StoreUnavailable

    def failure(what: str, action: str, problem: str) -> StoreUnavailable:
        return StoreUnavailable(what, "/srv", action, problem, "words")

    problems = Problems(read_problem_s=-1.0)  # a read's failure is no longer shown once recent() looks
    problems.failed(failure("table `users`", "written", "full"))
    problems.failed(failure("table `users`", "written", "full"))
    problems.failed(failure("the data folder", "written", "full"), watched=False)
    problems.failed(failure("table `preferences`", "read", "unreadable"))
    assert [(p["what"], p["failures"]) for p in problems.recent()] == [("table `users`", 2)]  # the others aged out
    problems.succeeded("table `preferences`", "read")
    assert len(problems.recent()) == 1
    problems.succeeded("table `users`", "written")
    assert problems.recent() == []
    problems = Problems()
    problems.failed(failure("table `preferences`", "read", "unreadable"))  # another replica's removal, met by a purge
    problems.forget("table `preferences`", "read")  # which passed when done again
    assert problems.recent() == []


def test_a_delete_whose_turn_cannot_begin_says_nothing_was_deleted(serve, monkeypatch):
    """A DELETE's turn first finishes the purge a stopped one left; with no room for that, the DELETE
    never began (its journal entry is not written): its answer must not say it is recorded."""
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        rt.wait_for_background()
        rt.store.marks.mark(["preferences"])  # a purge left to do, as a killed DELETE leaves it
        with monkeypatch.context() as disk:
            no_room(rt.store.preferences, disk, "to_lance")  # the purge's compaction (pluralign.store.versions)
            message = storage_error(acme.delete("/v1/users/ann"), 507, "insufficient_storage", "table `preferences` cannot be written", data)
            assert message.endswith("nothing of the user was deleted; send the DELETE again later"), message
            assert not (data / JOURNAL_FOLDER).exists() or not any((data / JOURNAL_FOLDER).iterdir())
            assert acme.get("/v1/users/ann/preferences").json()["total"] == 2
        table, count_rows = rt.store.preferences, rt.store.preferences.count_rows
        missed = []

        def count_once_missing(*args, **kwargs):  # another replica's purge removed a file the count read, once
            if args and not missed:
                missed.append(args)
                raise RuntimeError("lance error: LanceError(IO): Generic N/A error: Wrapped error: Not found: x.lance")
            return count_rows(*args, **kwargs)

        monkeypatch.setattr(table, "count_rows", count_once_missing)
        assert acme.delete("/v1/users/ann").status_code == 200  # room again; the count done again passed
        assert missed and acme.get("/health").json()["storage"] == []  # not "degraded" for a failure got past


def test_a_delete_that_cannot_rewrite_the_feedback_log_is_recorded_and_finished_once_there_is_room(serve, monkeypatch):
    """A DELETE rewrites the feedback log's segments without the user's records; with no room for the
    rewrite it stops there. Before: a bare 500 "internal error"; now a 507 naming the feedback log and
    saying the DELETE is recorded, and the journal's pass finishes it, every other user's feedback kept."""
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        with rt.ingest.paused():  # both users' feedback stays in the log's segment
            for i in range(2):
                assert acme.post("/v1/feedback", json=comparison("ann", i)).status_code == 201
                assert acme.post("/v1/feedback", json=comparison("bo", i)).status_code == 201

            def full(fd, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            with monkeypatch.context() as disk:
                disk.setattr(feedback_log, "_write_all", full)
                message = storage_error(acme.delete("/v1/users/ann"), 507, "insufficient_storage", "the feedback log cannot be written", data)
                assert "the DELETE is recorded" in message
                assert acme.get("/health").json()["storage"][0]["what"] == "the feedback log"
            assert services.UnfinishedDeletes(rt, 3600).run_once() == 1
            assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir()))
        assert not any(b"Tea 0." in p.read_bytes() and b"ann" in p.read_bytes() for p in (data / "feedback-log").iterdir())
        assert acme.get("/v1/users/ann/preferences").status_code == 404
        assert acme.get("/v1/users/bo/preferences").json()["total"] == 2


LANCE_SAYS = {  # what lancedb 0.40 raised here for each damage (a read of the table), Rust source lines cut
    "data file cut short": "lance error: LanceError(IO): Generic LocalFileSystem error: failed to fill whole buffer, /rustc/x/result.rs:1896:29",
    "data file emptied": "lance error: LanceError(IO): Generic memory error: Invalid range 0..1835 for object of size 0 bytes, /rustc/x/a.rs:1:1",
    "data file removed": "lance error: LanceError(IO): Generic N/A error: Wrapped error: Not found: Wrapped error: Not found: /d/t.lance/data/1.lance",
    "deletion file cut short": "lance error: LanceError(Arrow): Parser error: Arrow file does not contain correct footer, /c/deletion.rs:1:1",
    "deletion file overwritten": "lance error: LanceError(Arrow): Io error: invalid seek to a negative or overflowing position, /c/deletion.rs:157:49",
    "data file header overwritten": 'task 355 panicked with message "the offset + length of the sliced Buffer cannot exceed the existing length"',
}


@pytest.mark.parametrize("damage", LANCE_SAYS)
def test_lance_s_words_for_a_damaged_file_name_the_table(damage, tmp_path, monkeypatch):
    """Before this session every one of them was a 500 "internal error"; the first three were a 503 naming
    the table from this session's first commit, the last three still a 500."""
    from pluralign.store.failures import StoreUnavailable

    store = Store(str(tmp_path / "lancedb"), "enc", 4)

    def damaged(*args, **kwargs):
        raise RuntimeError(LANCE_SAYS[damage])

    monkeypatch.setattr(store.interactions, "search", damaged)
    with pytest.raises(StoreUnavailable) as caught:
        store.interactions_for("acme", "ann")
    assert (caught.value.name, caught.value.action, caught.value.problem) == ("table `interactions`", "read", "unreadable")
    assert ".rs:" not in str(caught.value)


def test_the_system_s_errors_are_sorted_by_what_an_operator_does_about_them():
    from pluralign.store.failures import storage_problem

    kinds = {code: (storage_problem(OSError(code, "words")) or (None,))[0] for code in (
        errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO, errno.ESTALE, errno.ENOTCONN, errno.ENOENT)}
    assert kinds == {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EFBIG: "full", errno.EROFS: "read-only",
                     errno.EACCES: "read-only", errno.EIO: "unreadable", errno.ESTALE: "unreadable",
                     errno.ENOTCONN: "unreadable", errno.ENOENT: None}
    assert storage_problem(RuntimeError("lance error: LanceError(IO): No space left on device (os error 28), /x.rs:1:1")) == ("full", 28)
    assert storage_problem(RuntimeError("lance error: LanceError(IO): Read-only file system (os error 30)")) == ("read-only", 30)


def test_a_storage_failure_crosses_a_process_boundary_whole():
    """A job's error travels pickled (Ray, a child process); OSError's own pickling would call the
    constructor with (errno, message) and fail."""
    import pickle

    from pluralign.store.failures import StoreUnavailable

    sent = StoreUnavailable("table `users`", "/srv/lancedb", "written", "full", "No space left on device", errno.ENOSPC)
    got = pickle.loads(pickle.dumps(sent))
    assert (type(got), str(got), got.public, got.errno) == (StoreUnavailable, str(sent), sent.public, errno.ENOSPC)


def test_what_is_not_a_storage_failure_stays_what_it_was(tmp_path, monkeypatch):
    """A commit conflict, a bad filter or a timeout is no damaged file: it is raised as it was."""
    store = Store(str(tmp_path / "lancedb"), "enc", 4)
    for words in ("lance error: Retryable commit conflict for version 3", "lance error: LanceError(Schema): no field `x`",
                  "task 7 cancelled"):
        monkeypatch.setattr(store.interactions, "search", lambda *a, words=words, **k: (_ for _ in ()).throw(RuntimeError(words)))
        with pytest.raises(RuntimeError) as caught:
            store.interactions_for("acme", "ann")
        assert type(caught.value) is RuntimeError and str(caught.value) == words


# A real Lance write over a file size limit (RLIMIT_FSIZE, as a full disk fails it), then room again
LIMITED_WRITE = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from tests.service.test_feedback_log import feedback

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails instead of killing
    store = Store(sys.argv[1], "enc", 4)
    rows = feedback("ann", 0, n=200)
    vectors = np.ones((200, 4), np.float32)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        store.add_preferences(rows, vectors, vectors, vectors)
    except StoreUnavailable as exc:
        print(exc.problem, exc.name)
        print(exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    store.add_preferences(rows[:1], vectors[:1], vectors[:1], vectors[:1])
""")


@pytest.mark.slow  # a child process loading lancedb (~2 s); tests/e2e/test_break27_full_disk.py meets the real limit too
def test_a_real_lance_write_over_a_file_size_limit_names_the_table(tmp_path):
    """What LANCE_FULL stands for: lancedb's own error for a write that meets the limit is a
    StoreUnavailable naming the table; the failed write leaves nothing that stops the next open."""
    folder = tmp_path / "lancedb"
    child = subprocess.run([sys.executable, "-c", LIMITED_WRITE, str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    first, message = child.stdout.splitlines()
    assert first == "full table `preferences`", child.stdout
    assert message.startswith(f"table `preferences` at {folder} cannot be written: no space left") and "(os error 27)" in message
    assert ".rs:" not in message  # not where in Lance's source
    assert Store(str(folder), "enc", 4).stats()["preferences"] == 1


def damaged_with_feedback_pending(data) -> None:
    """A data folder whose preferences table has a data file cut short, and feedback acknowledged in
    the log but not yet moved into the table (the service stopped with a backlog): a start must check
    the table for the log's rows, so it reads the damaged file."""
    import numpy as np

    from pluralign.store.feedback_log import FeedbackLog
    from tests.service.test_feedback_log import feedback

    store = Store(str(data / "lancedb"), "sentence-transformers/all-MiniLM-L6-v2", 384)
    vectors = np.ones((2, 384), np.float32)
    store.add_preferences(feedback("ann", 0, n=2), vectors, vectors, vectors)
    log = FeedbackLog(data / "feedback-log")
    log.append(feedback("ann", 1))
    log.close()
    for damaged in (data / "lancedb" / "preferences.lance" / "data").iterdir():
        damaged.write_bytes(damaged.read_bytes()[:100])


def test_a_start_that_meets_a_damaged_table_names_it(tmp_path):
    """Before: Lance's RuntimeError "failed to fill whole buffer" out of the feedback log's replay (a
    traceback from `pluralign serve`, naming neither the table nor the folder)."""
    from pluralign.store.failures import StoreUnavailable
    from pluralign.store.feedback_log import FeedbackLog
    from pluralign.store.ingest import Ingestor
    from training.cli import _os_problem

    data = tmp_path / "data"
    damaged_with_feedback_pending(data)
    store = Store(str(data / "lancedb"), "sentence-transformers/all-MiniLM-L6-v2", 384)
    log = FeedbackLog(data / "feedback-log")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            Ingestor(log, store, encoder=None)
    finally:
        log.close()
    line = _os_problem(caught.value)  # what `pluralign serve` prints after "pluralign: error: "
    assert line.startswith(f"table `preferences` at {data / 'lancedb'} cannot be read: a file of it is damaged"), line
    assert "\n" not in line and ".rs:" not in line


@pytest.mark.slow  # ~10 s: MiniLM and a tiny generator load before the tables are opened
def test_serve_on_a_damaged_table_with_feedback_pending_is_one_error_naming_it(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """Before: a traceback ending in Lance's RuntimeError, exit code 1."""
    import os

    data = tmp_path / "data"
    damaged_with_feedback_pending(data)
    env = {**os.environ, "PLURALIGN_PAL_DIR": str(tiny_pal_dir), "PLURALIGN_GENERATOR": str(tiny_generator_dir),
           "PLURALIGN_GENERATION_PROCESS": "false", "PLURALIGN_SHARED_DATA": str(tmp_path / "none")}
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--data-dir", str(data), "--port", "0"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (f"pluralign: error: table `preferences` at {data / 'lancedb'} cannot be read: a file of it is damaged or unreadable"
            in result.stderr), result.stderr[-3000:]


def test_a_delete_that_cannot_forget_the_embedding_cache_says_so(service_log, serve, tmp_path):
    """The embedding cache the training jobs share (PLURALIGN_CACHE_DIR) is damaged. The DELETE removes
    everything else of the user and cannot remove the vectors of their texts from it. Before: a bare 500
    "internal error" for a DELETE that had deleted the user (sent again: 404), nothing saying what was
    left; a cause that is an OSError would now read as a full disk with the DELETE "recorded" (it is not:
    its journal entry is gone, every other step ran)."""
    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        svc.runtime.wait_for_background()  # in the table: a job could have embedded them
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "embeddings.sqlite").write_bytes(b"not a database, a copy cut short" * 64)
        r = acme.delete("/v1/users/ann")
        assert r.status_code == 200, r.text  # session 33: the user is gone, so a 200 that warns (it was a 500)
        warnings = r.json()["warnings"]
        assert len(warnings) == 1 and warnings[0].startswith("the vectors of their texts stay in the embedding cache the training jobs share"), warnings
        assert str(tmp_path) not in r.text
        assert acme.get("/health").json()["status"] == "degraded"
        assert not any((data / JOURNAL_FOLDER).iterdir())  # nothing left for the journal's pass: every other step ran
        assert acme.get("/v1/users/ann/preferences").status_code == 404
        assert acme.delete("/v1/users/ann").status_code == 404
        assert any(str(tmp_path / "cache" / "embeddings.sqlite") in r.getMessage() for r in service_log.records)


def test_a_delete_that_cannot_rewrite_a_damaged_population_snapshot_says_so(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """A population snapshot (the jobs' copy of every user's comparisons) cut short by a partial copy:
    the DELETE removes the user from the store and everything else, cannot rewrite that file without
    them, and keeps its journal entry (the service tries again). Before: a bare 500 "internal error",
    nothing saying the user's rows were deleted, nor that one file still holds them."""
    from service.admin.controllers import ADMIN_HANDLERS

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    population = data / "jobs" / "data" / "population"
    population.mkdir(parents=True)
    snapshot = population / f"comparisons-{int(time.time() * 1000)}.jsonl"  # a young one: the job retention keeps it
    snapshot.write_text('{"user_id": "acme/ann", "prompt": "Tea?", "created_at": 1.0}\n{"user_id": "acme/bo", "prom')
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        svc.runtime.wait_for_background()
        r = acme.delete("/v1/users/ann")
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert error["code"] == "population_not_rewritten", error
        assert error["message"].startswith("the user's rows are deleted, but 1 population file could not be rewritten without them"), error
        assert str(data) not in r.text
        assert acme.get("/v1/users/ann/preferences").status_code == 404
        assert len(list((data / JOURNAL_FOLDER).iterdir())) == 1  # the service tries again
        snapshot.unlink()  # the operator removes it (docs/operations.md): the next pass finishes the DELETE
        assert services.UnfinishedDeletes(svc.runtime, 3600).run_once() == 1
        assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir()))


def test_a_feedback_log_segment_that_cannot_be_created_does_not_stall_feedback(serve, monkeypatch):
    """The feedback log starts a new segment file once one is full (8 MiB); with no room for the new
    file's entry in its folder (or the folder remounted read-only), creating it fails. Before: that
    failure killed the log's writer thread after the round was acknowledged, and every feedback after
    it waited for good (the request never answered)."""
    _, server, svc = serve()
    log = svc.runtime.ingest.log
    with server, svc.client("acme") as acme:
        acme.timeout = httpx.Timeout(20)
        monkeypatch.setattr(log, "segment_bytes", 1)  # every round fills its segment

        def no_room(segment):
            raise OSError(errno.ENOSPC, "No space left on device", str(log._path(segment)))

        stored = []
        with monkeypatch.context() as disk:
            disk.setattr(log, "_open", no_room)
            for i in range(3):
                r = acme.post("/v1/feedback", json=comparison("ann", i))
                assert r.status_code == 201, r.text  # the record is in the segment it had
                stored += r.json()["stored"]
        r = acme.post("/v1/feedback", json=comparison("ann", 3))  # room again: a new segment
        assert r.status_code == 201, r.text
        stored += r.json()["stored"]
        page = acme.get("/v1/users/ann/preferences").json()
        assert sorted(p["pref_id"] for p in page["data"]) == sorted(stored)


def test_feedback_acknowledged_into_a_segment_file_someone_removed_survives(serve, tmp_path):
    """The feedback log's segment files are `<n>.log` in `<data>/feedback-log/`; a cleanup that removes
    `*.log` files (or an operator) takes the one being written. Before: the service went on appending to
    the removed file, fsynced, acknowledged, and a crash then lost every record in it (no file left to
    replay). Now the next round writes the removed segment's pending records again into a new file first."""
    from pluralign.store.feedback_log import read_frames

    data, server, svc = serve()
    folder = data / "feedback-log"
    rt = svc.runtime
    acknowledged = []
    with server, svc.client("acme") as acme, rt.ingest.paused():  # the records stay pending: only the log holds them
        for i in range(2):
            r = acme.post("/v1/feedback", json=comparison("ann", i))
            assert r.status_code == 201, r.text
            acknowledged += r.json()["stored"]
        for segment in folder.glob("*.log"):
            segment.unlink()
        r = acme.post("/v1/feedback", json=comparison("ann", 2))
        assert r.status_code == 201, r.text
        acknowledged += r.json()["stored"]
        shutil.rmtree(folder)  # the whole folder
        r = acme.post("/v1/feedback", json=comparison("ann", 3))
        storage_error(r, 503, "storage_unavailable", "the feedback log cannot be written: its folder was removed", tmp_path)
        folder.mkdir()  # the operator puts it back
        r = acme.post("/v1/feedback", json=comparison("ann", 4))
        assert r.status_code == 201, r.text
        acknowledged += r.json()["stored"]
        # what a restart after a crash now would replay
        replayed = [row.pref_id for path in sorted(folder.glob("*.log")) for rows in read_frames(path) for row in rows]
        assert sorted(replayed) == sorted(acknowledged)


def test_a_stated_preference_kept_in_the_user_s_row_is_not_refused(serve, monkeypatch):
    """A PATCH writes the user's row (the new version) first, then appends the version's changes to
    their history table; with no room for the second, the change is stored all the same (reads merge
    the row's version in, the next change stores the missing one). It must not be answered 507
    "nothing this request sent was acknowledged" while GET then shows it applied."""
    _, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        with monkeypatch.context() as disk:
            no_room(rt.store.tables["stated_changes"], disk)
            r = acme.patch("/v1/users/ann/stated-preferences", json={"preferences": {"length": "less"}})
            assert r.status_code == 200 and r.json()["version"] == 1, r.text
        page = acme.get("/v1/users/ann/stated-preferences").json()
        assert page["version"] == 1 and page["preferences"] == {"length": "less"}, page
        r = acme.patch("/v1/users/ann/stated-preferences", json={"preferences": {"list_items": "more"}})
        assert r.status_code == 200, r.text
        history = acme.get("/v1/users/ann/stated-preferences").json()["history"]
        assert sorted(c["version"] for c in history) == [1, 2], history  # the missing version was stored after

