"""Attacks on DELETE's removal of a user from population training data (tests/service/test_break20_delete.py
covers the healthy paths): a population file the DELETE cannot rewrite must not stop it part way."""

from __future__ import annotations

import contextlib
import logging
import shutil

import msgspec
import pytest

from pluralign.reward.pal_checkpoint import load_pal
from pluralign.store.deletions import user_hash
from service.admin.controllers import ADMIN_HANDLERS
from service.runtime import PROMOTED_PAL
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, files_holding, give_comparisons, run_job
from tests.service.tiny import start_service


@contextlib.contextmanager
def logged(name: str, level: int = logging.ERROR):
    """The messages (with their exception's) that logger `name` writes at `level` or above meanwhile (caplog's
    handler is gone once the server's logging configuration is applied)."""
    records: list[str] = []
    handler = logging.Handler(level)
    handler.emit = lambda rec: records.append(rec.getMessage() + str(rec.exc_info and rec.exc_info[1]))
    logging.getLogger(name).addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger(name).removeHandler(handler)


@pytest.mark.slow  # make test-crash (~10 CPU-s: a PAL job's worker); kept by test_speedA63_delete.py, its artifact written as the job's
def test_an_unreadable_population_artifact_fails_the_delete_after_every_other_file_is_rewritten(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
):
    """A PAL checkpoint of another schema in the jobs' artifacts (a CLI run of an older version
    copied there), sorted before the job's own: the DELETE answers 500 (the user is not all gone),
    but only after every other snapshot, artifact and the served copy was rewritten without them;
    the file it could not read is left as it was, and a DELETE again fails again until it is fixed."""
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_comparisons(acme, GONE, "tea", MARKER)
        give_comparisons(acme, "ann", "coffee")
        pal = run_job(admin, "pal", {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16})
        assert pal["promoted"], pal
        artifacts = data / "jobs" / "artifacts"
        old = artifacts / "0-older-schema"  # sorts before the job's folder
        shutil.copytree(artifacts / pal["id"], old)
        meta = msgspec.json.decode((old / "meta.json").read_bytes())
        (old / "meta.json").write_bytes(msgspec.json.encode({**meta, "schema_version": 0}))
        before = {p.name: p.read_bytes() for p in old.iterdir()}

        with logged("pluralign.service") as records:
            r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 500, r.text
        assert "older-schema" not in r.text  # the path is in the log only
        assert any("0-older-schema" in text for text in records)
        # every file it could rewrite was: only the unreadable folder holds the user, and the journal's
        # entry of the unfinished DELETE (their id, not their texts: finished by the next pass or DELETE)
        holding = {line.split(": ")[0] for line in files_holding(data, MARKER, GONE)}
        entry = f"{JOURNAL_FOLDER}/{user_hash('acme', GONE)}.json"
        assert entry in holding and files_holding(data / JOURNAL_FOLDER, MARKER) == [], holding
        assert all(path.startswith("jobs/artifacts/0-older-schema/") for path in holding - {entry}), holding
        _, weights, meta = load_pal(data / "jobs" / "artifacts" / pal["id"])
        assert sorted(weights.users()) == ["acme/ann"] and meta.users == 1
        _, served, _ = load_pal(data / PROMOTED_PAL)
        assert sorted(served.users()) == ["acme/ann"]
        assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # left as it was
        assert acme.get(f"/v1/users/{GONE}").status_code == 404

        assert acme.delete(f"/v1/users/{GONE}").status_code == 500  # not reported done while it is there
        shutil.rmtree(old)
        assert acme.delete(f"/v1/users/{GONE}").status_code == 404  # nothing of them is left
        assert files_holding(data, MARKER, GONE) == []
        assert acme.get("/v1/users/ann").status_code == 200


@pytest.mark.slow  # ~10 s: kept out of the default suite for its time (make test-all runs it)
def test_what_a_stopped_population_save_left_loses_the_deleted_user_too(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A PAL job's worker killed while saving (a cancel, the memory cap, a crash) leaves its
    artifact without meta.json, which is written last: user_weights.json whole (and a temp file of a
    write it was killed in) with every training user's row. That folder is no checkpoint, so the
    DELETE passed it by and the user's weights stayed in the jobs folder. A failed job's EM save the same."""
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_comparisons(acme, GONE, "tea", MARKER)
        give_comparisons(acme, "ann", "coffee")
        pal = run_job(admin, "pal", {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16})
        em = run_job(admin, "em", {"k": 2, "restarts": 1})
        artifacts = data / "jobs" / "artifacts"
        for job in (pal, em):  # as a killed save left them (meta.json goes first, comes back last)
            per_user = "user_weights.json" if job is pal else "users.jsonl"
            (artifacts / job["id"] / "meta.json").unlink()
            shutil.copy(artifacts / job["id"] / per_user, artifacts / job["id"] / f".{per_user}.k1ll3d")

        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert files_holding(data, MARKER, GONE) == []
        weights = msgspec.json.decode((artifacts / pal["id"] / "user_weights.json").read_bytes())
        assert sorted(weights["users"]) == ["acme/ann"]  # the others' rows are kept
        users = [msgspec.json.decode(line)["user_id"] for line in (artifacts / em["id"] / "users.jsonl").read_bytes().splitlines()]
        assert users == ["acme/ann"]
        assert not list((artifacts / pal["id"]).glob(".user_weights.json.*"))
