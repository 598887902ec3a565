"""`pluralign promote --if-version V` takes a version read off another release's `/health` for the same folder
(session versions53). `pal.version` (`service.rewards.checkpoint_version`) hashes the meta.json fields the running
release knows, so a release that knows a field another skips reads another version of one folder; an operator who
read `pal.version` from one release's /health and passed it to another release's `promote --if-version` was refused
("another promotion came first"), nothing promoted. /health now also says `pal.digest`
(`service.rewards.model_digest`), the same whatever the release. The real app over HTTP, the real CLI."""

from __future__ import annotations

import json
import shutil

import pytest

import service.rewards as rewards
from service.rewards import checkpoint_version, model_digest
from tests.service.tiny import start_service
from tests.unit.clitools import cli


def a_later_release(monkeypatch) -> None:
    """This process from now on reads meta.json as a later release does: it knows (and hashes) `calibration` too."""
    known = rewards._described_fields
    monkeypatch.setattr(rewards, "_described_fields", lambda meta: (known(meta) or frozenset()) | {"calibration"})


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    """The service on a PLURALIGN_PAL_DIR whose meta.json has a field a later release wrote (`calibration`)."""
    root = tmp_path_factory.mktemp("versions53")
    pal = root / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    meta = json.loads((pal / "meta.json").read_text())
    (pal / "meta.json").write_text(json.dumps({**meta, "calibration": {"temperature": 1.3}}))
    server, service = start_service(root / "data", tiny_generator_dir, pal, minilm)
    with server, service.client("acme") as c:
        health = c.get("/health").json()["pal"]
        yield pal, health


def test_a_version_read_off_either_releases_health_promotes_with_the_other_releases_cli(served, tmp_path, capsys,
                                                                                          monkeypatch):
    pal, health = served
    artifact = tmp_path / "artifact"  # the model served, promoted again: the folder is the same after each promotion
    shutil.copytree(pal, artifact)
    assert health["version"] == checkpoint_version(pal) and health["digest"] == model_digest(pal) is not None
    code, out, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(pal), "--if-version", health["digest"])
    assert code == 0, err
    assert json.loads(out)["digest"] == health["digest"]
    with monkeypatch.context() as m:
        a_later_release(m)
        later = checkpoint_version(pal)  # what the later release's /health says of the folder
        assert later != health["version"]
        # this release's /health's version, given to the later release's promote: before, "holds population version
        # <later>, not <this>", exit 2
        code, _, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(pal), "--if-version", health["version"])
        assert code == 0, err
        code, out, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(pal), "--if-version", health["digest"])
        assert code == 0 and json.loads(out)["digest"] == health["digest"], err  # the same digest in both releases
    # the later release's version, given to this release's promote: before, refused likewise
    code, _, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(pal), "--if-version", later)
    assert code == 0, err


def test_a_version_or_digest_of_another_model_is_still_refused(served, tmp_path, capsys):
    pal, health = served
    other = tmp_path / "other"
    shutil.copytree(pal, other)
    prior = json.loads((other / "user_weights.json").read_text())
    prior["prior"] = [v + 0.5 for v in prior["prior"]]  # another population prior, the same weights
    (other / "user_weights.json").write_text(json.dumps(prior))
    meta = json.loads((other / "meta.json").read_text())
    meta["files"] = {}  # a hand-edited copy: no digests to check
    (other / "meta.json").write_text(json.dumps(meta))
    stale = (checkpoint_version(other), model_digest(other))
    assert stale[1] != health["digest"]
    before = {p.name: p.read_bytes() for p in pal.iterdir()}
    for value in stale:
        code, _, err = cli(capsys, "promote", str(other), "--pal-dir", str(pal), "--if-version", value)
        assert code == 2 and "another promotion came first" in err and health["digest"] in err, err
        assert {p.name: p.read_bytes() for p in pal.iterdir()} == before  # nothing changed
