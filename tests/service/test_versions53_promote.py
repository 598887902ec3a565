"""`pluralign promote --if-version V` takes a version read off another release's `/health` for the same folder
(session versions53). `pal.version` (`service.rewards.checkpoint_version`) hashes the meta.json fields the running
release knows, so a release that knows a field another skips reads another version of one folder; an operator who
read `pal.version` from one release's /health and passed it to another release's `promote --if-version` was refused
("another promotion came first"), nothing promoted. /health now also says `pal.digest`
(`service.rewards.model_digest`), the same whatever the release. The real app over HTTP, the real CLI."""

from __future__ import annotations

import json
import shutil
import time

import msgspec
import pytest

from pluralign.user.model import SURPRISE_RULE, UserState
from service.rewards import checkpoint_version, model_digest
from tests.service.test_user_model_service import short_and_long
from tests.service.tiny import start_service
from tests.unit.clitools import cli
from tests.unit.test_versions52_served_weights import a_later_release


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    """The service on a PLURALIGN_PAL_DIR whose meta.json has a field a later release wrote (`calibration`)."""
    root = tmp_path_factory.mktemp("versions53")
    pal = root / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    meta = json.loads((pal / "meta.json").read_text())
    (pal / "meta.json").write_text(json.dumps({**meta, "calibration": {"temperature": 1.3}}))
    # a tenant's pooled prior from 2 users (`test_users_fitted_by_an_earlier_release_still_shape_the_pooled_prior`,
    # which shares this start: a second one would cost the default suite seconds)
    server, service = start_service(root / "data", tiny_generator_dir, pal, minilm, pooled_prior_users=2,
                                    pooled_prior_ttl_s=0.2)
    with server, service.client("acme") as c:
        health = c.get("/health").json()["pal"]
        yield pal, health, service


def test_a_version_read_off_either_releases_health_promotes_with_the_other_releases_cli(served, tmp_path, capsys,
                                                                                          monkeypatch):
    pal, health, _ = served
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
    pal, health, _ = served
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


def test_users_fitted_by_an_earlier_release_still_shape_the_pooled_prior(served):
    """A user model stored before session versions53 (no `surprise_rule`) that holds ties is refitted at its user's
    next read (`UserModel.current`), but its fit is still one of the tenant's users: their pooled prior and
    next-comparison's population read its mean and covariance, which no changed-mind rule changes. Until review
    versions53 such states were left out of both (`UserModel.fits`): after the upgrade a tenant whose users had given
    ties had no pooled prior for its new users (below PLURALIGN_POOLED_PRIOR_USERS) until each of them came back."""
    _, _, service = served
    store = service.runtime.store
    with service.client("globex") as c:
        for u in range(2):
            for topic in ("travel", "money", "sleep", "music"):
                s, l_ = short_and_long(topic)
                sent = c.post("/v1/feedback", json={"type": "comparison", "user": f"old{u}", "prompt": f"Tips on {topic}?",
                                                    "chosen": s if u else l_, "rejected": l_ if u else s,
                                                    "tie": topic == "music"})
                assert sent.status_code == 201, sent.text
            assert c.get(f"/v1/users/old{u}").status_code == 200  # fitted, and the fit stored
            # the refits the feedback queued write the row too: the row is read once they ran (else, under load, one
            # wrote it between the read and the put below, and put_user_if rightly refused: CI of 22795d3)
            service.runtime.wait_for_background()
            store.refresh("users")
            record = store.get_user("globex", f"old{u}")
            stored = msgspec.msgpack.decode(record.user_model)
            assert stored.pop("surprise_rule") and stored["ties"] == 1, stored
            earlier = msgspec.structs.replace(record, user_model=msgspec.msgpack.encode(stored))  # as stored before
            assert store.put_user_if(earlier, record)
            store.refresh("users")
            assert UserState.decode(store.get_user("globex", f"old{u}").user_model).surprise_rule == 0
        time.sleep(0.3)  # the tenant's prior, estimated before, is estimated again
        s, l_ = short_and_long("reading")
        sent = c.post("/v1/feedback", json={"type": "comparison", "user": "newbie53", "prompt": "Tips on reading?",
                                            "chosen": s, "rejected": l_})
        assert sent.status_code == 201, sent.text
        profile = c.get("/v1/users/newbie53")
        assert profile.status_code == 200, profile.text
        assert profile.json()["user_model"]["pooled_users"] in (2, 3), profile.json()["user_model"]  # before: 0
        assert c.get("/v1/users/old0").status_code == 200  # their own read refits them, under the rule in force
        store.refresh("users")
        assert UserState.decode(store.get_user("globex", "old0").user_model).surprise_rule == SURPRISE_RULE
