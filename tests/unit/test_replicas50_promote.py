"""`pluralign promote`: a pal or em job's artifact put into PLURALIGN_PAL_DIR as one turn under the folder's lock.

Until session replicas50 deploy/README.md promoted with `cp artifact/* $PLURALIGN_PAL_DIR/`: two operators' (or
pipelines') copies at once interleaved file by file and left a mix of the two (which since this session no replica
serves: `tests/unit/test_replicas50_pal_copy.py`), and nothing could say "only if the model there is still the one I
saw". `pluralign promote` copies under `.pal.lock` (`pluralign.files.promote_into`), so promotions at once end with
one whole model, and `--if-version` is a compare-and-swap."""

from __future__ import annotations

import json
import multiprocessing
import os
import re

import torch

from pluralign.files import folder_lock
from pluralign.reward.em import EMMixture
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from service.rewards import checkpoint_version
from tests.unit.clitools import cli
from tests.unit.test_replicas50_pal_copy import em
from training.cli import main, make_parser

ROUNDS = 2


def pal(folder, seed: int, users: int):
    torch.manual_seed(seed)  # a thousand users: a copy of ~40 KB, long enough for two to overlap
    names = [f"{seed}-user-{i}" for i in range(users)]
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)),
             UserWeights.from_logits(names, torch.randn(users, 2)), "enc")
    return folder


def promote(artifact: str, folder: str, start) -> None:
    start.wait()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os._exit(main(["promote", artifact, "--pal-dir", folder]))


def test_two_promotions_at_once_end_with_one_whole_model(tmp_path):
    folder = tmp_path / "pal"
    artifacts = [pal(tmp_path / f"artifact{i}", i, 1000) for i in (1, 2)]
    versions = {checkpoint_version(a): a for a in artifacts}
    make_parser()  # the commands' modules imported once, here: each forked child has them
    fork = multiprocessing.get_context("fork")
    for _ in range(ROUNDS):
        start = fork.Barrier(2)
        procs = [fork.Process(target=promote, args=(str(a), str(folder), start)) for a in artifacts]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        _, weights, _ = load_pal(folder, encoder_id="enc")  # whole: its files are the ones its meta.json records
        winner = versions[checkpoint_version(folder)]
        assert weights.users() == load_pal(winner, encoder_id="enc")[1].users()
        assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors", "user_weights.json"]

    other = next(a for a in artifacts if checkpoint_version(a) != checkpoint_version(folder))
    start = fork.Event()
    proc = fork.Process(target=promote, args=(str(other), str(folder), start))
    proc.start()  # before the lock is held: a child forked holding it would hold it too
    with folder_lock(folder):  # a replica's DELETE rewriting it, or its take-up loading it: the promotion waits its turn
        start.set()
        proc.join(0.5)
        assert proc.exitcode is None and checkpoint_version(folder) != checkpoint_version(other)
    proc.join(60)
    assert proc.exitcode == 0 and checkpoint_version(folder) == checkpoint_version(other)


def test_if_version_promotes_only_over_the_model_seen_and_a_promotion_replaces_another_kind(tmp_path, capsys):
    folder = tmp_path / "pal"
    first, second = pal(tmp_path / "first", 1, 2), pal(tmp_path / "second", 2, 2)
    code, out, err = cli(capsys, "promote", str(first), "--pal-dir", str(folder), "--if-version", "none")
    assert code == 0, err
    seen = json.loads(out)
    assert (seen["kind"], seen["version"], seen["files"]) == ("pal", checkpoint_version(first), ["meta.json", "model.safetensors", "user_weights.json"])
    code, _, _ = cli(capsys, "promote", str(second), "--pal-dir", str(folder), "--if-version", seen["version"])
    assert code == 0
    code, _, err = cli(capsys, "promote", str(first), "--pal-dir", str(folder), "--if-version", seen["version"])
    assert code == 2 and f"holds population version {checkpoint_version(second)}, not {seen['version']}" in err
    assert checkpoint_version(folder) == checkpoint_version(second) and not [p for p in folder.iterdir() if p.name.startswith(".")]

    mixture = em(tmp_path / "mixture", 3, ["x"])
    code, out, err = cli(capsys, "promote", str(mixture), "--pal-dir", str(folder))
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["heads.safetensors", "meta.json", "users.jsonl"]  # no PAL user rows left
    assert EMMixture.load(folder, "enc").users == ["x"]

    (tmp_path / "half").mkdir()
    code, _, err = cli(capsys, "promote", str(tmp_path / "half"), "--pal-dir", str(folder))
    assert code == 2 and "not a PAL checkpoint or an EM mixture" in err


def test_an_artifact_that_is_not_there_is_said_to_be_missing_and_the_help_names_where_jobs_write_them(tmp_path, capsys):
    """An operator following `pluralign promote --help` typed `data/jobs/<job id>/artifact`, where no job writes (a pal
    or em job's artifact is `data/jobs/artifacts/<job id>`), and was told the folder held no meta.json. Session admin55:
    a path that is not there is said to be missing, with where jobs write, and the help's example is that path. Failed
    before: 'not a PAL checkpoint or an EM mixture ... no meta.json' for a folder that does not exist."""
    folder, gone = tmp_path / "pal", tmp_path / "data" / "jobs" / "1a24e86e62e-2f5e4c26" / "artifact"
    code, _, err = cli(capsys, "promote", str(gone), "--pal-dir", str(folder))
    assert code == 2 and f"{gone}: no such folder" in err, err
    assert "jobs/artifacts/<job id>" in err and not folder.exists()
    code, out, _ = cli(capsys, "promote", "--help")
    assert code == 0 and "pluralign promote data/jobs/artifacts/<job id>\n" in out, out


def test_every_promote_example_of_the_docs_names_where_a_job_writes_its_artifact():
    """An operator copies the command from deploy/README.md ("Replicas"), not from `--help`: session admin55 fixed the
    help's `data/jobs/<job id>/artifact` (where no job writes: a pal or em job's artifact is
    `<data dir>/jobs/artifacts/<job id>`, its `artifact` in GET /admin/jobs/{id}) and left the README's
    `pluralign promote <job folder>/artifact`, the same folder no job has. Failed before (review admin55): that one."""
    from tests.conftest import REPO

    docs = [REPO / "README.md", REPO / "deploy" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    examples = [(doc.relative_to(REPO), found) for doc in docs if doc.name != "CHANGES.md"
                for found in re.findall(r"pluralign promote ((?:<[^>`]*>|[^\s`<])+)", doc.read_text())]
    given = [(doc, path) for doc, path in examples if not path.startswith("-")]  # `--if-version`, `--older-form`
    assert given, examples
    wrong = [(doc, path) for doc, path in given
             if path.endswith("/artifact") or ("<job id>" in path and not path.endswith("jobs/artifacts/<job id>"))]
    assert not wrong, wrong


def test_an_empty_artifact_or_pal_dir_is_refused_not_read_as_the_folder_the_command_runs_in(tmp_path, capsys, monkeypatch):
    """`pluralign promote "$ARTIFACT" --pal-dir "$PAL_DIR"` with a variable unset: an empty path was Path(""), the
    folder the command ran in. An operator standing in one model's folder promoted that model (not the job's), or,
    with `--pal-dir ""`, promoted the job's artifact over the model of the folder they stood in; an empty path given
    to `pluralign audit` is refused (session rows44, `check_given`). Failed before (review admin55): both exit 0, the
    served folder and the one stood in each holding the other model."""
    served, here, job = pal(tmp_path / "served", 1, 2), pal(tmp_path / "here", 2, 2), pal(tmp_path / "job", 3, 2)
    versions = {p: checkpoint_version(p) for p in (served, here, job)}
    monkeypatch.chdir(here)
    code, _, err = cli(capsys, "promote", "", "--pal-dir", str(served))
    assert code == 2 and "ARTIFACT '': empty; give the artifact folder" in err, err
    code, _, err = cli(capsys, "promote", str(job), "--pal-dir", "")
    assert code == 2 and "--pal-dir '': empty; give the folder served" in err, err
    assert {p: checkpoint_version(p) for p in (served, here, job)} == versions
