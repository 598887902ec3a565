"""Review of session small48: what its checks of an emptied setting left open."""

from __future__ import annotations

import re

import pytest

NO_URL = ["openai:", "openai: ", "openai:localhost:8000/v1", "openai:ftp://gen/v1", "openai:http://", "openai:http://[::1/v1",
          "openai:http://gen:port/v1"]


@pytest.mark.parametrize("name", NO_URL)
def test_an_openai_generator_or_encoder_without_a_server_url_is_named_at_once(tmp_path, name):
    """small48 named PLURALIGN_GENERATOR= (read as the working folder), but `openai:` with no URL after it (what
    `PLURALIGN_GENERATOR=openai:$VLLM_URL` gives with VLLM_URL unset) or one no HTTP client can reach was taken: the
    service started, and every chat was a 500 "internal error" (the log: "generation server at  unreachable (2 retries)");
    the encoder's failed at start only after its imports ("embeddings server at : Connection error.")."""
    from pluralign.embed.remote import RemoteEncoder
    from pluralign.policy.remote import RemoteGenerator
    from service.runtime import make_generator
    from service.settings import Settings

    for variable, field in (("PLURALIGN_GENERATOR", "generator"), ("PLURALIGN_ENCODER", "encoder")):
        settings = Settings.load({variable: name, "PLURALIGN_DATA_DIR": str(tmp_path / "data")})
        with pytest.raises(ValueError, match=rf"^{variable} \(setting {field}\): `openai:URL` needs the server's http:// or "
                                             rf"https:// URL \(`openai:http://127\.0\.0\.1:8000/v1`\), got {re.escape(repr(name))}: "):
            settings.check_models()
    with pytest.raises(ValueError, match=r"^PLURALIGN_GENERATOR \(setting generator\): `openai:URL` needs"):
        make_generator(name)  # Runtime.build's
    url = name.removeprefix("openai:")
    for remote in (lambda: RemoteGenerator(url, "m"), lambda: RemoteEncoder(url, "m")):  # the library's, before any request
        with pytest.raises(ValueError, match=r"^`base_url` must be an http:// or https:// URL naming its host"):
            remote()


def test_a_server_url_is_still_taken(tmp_path):
    from service.runtime import make_generator
    from service.settings import Settings

    for url in ("http://127.0.0.1:8000/v1", "HTTPS://gen.internal/v1/", "http://[::1]:8000"):
        Settings.load({"PLURALIGN_GENERATOR": f"openai:{url}", "PLURALIGN_ENCODER": f"openai:{url}",
                       "PLURALIGN_DATA_DIR": str(tmp_path / "data")}).check_models()
        assert make_generator(f"openai:{url}").base_url == url.rstrip("/")


def test_two_encoders_opening_a_store_made_under_no_encoder_at_once_are_not_both_taken(tmp_path, monkeypatch):
    """small48 opens tables an earlier release made under the encoder id '' as the opening encoder's and records it there.
    Two processes with different encoders (a rolling change of PLURALIGN_ENCODER, replicas started together) each
    found '' and went on to record theirs: the second one's record raced the first's, Lance refused it, and the retry
    (`_upgrade_retrying`) wrote it over the first's without looking at what it now said. Both served, each writing its
    own encoder's vectors into the one store. Now the second is refused as any open with another encoder is. The
    interleaving is played in one process: `other` opens whole between the second's check and its record."""
    from pluralign.store import Store, StoreError, tables
    from tests.unit.test_small48_library import _encoder_ids, _made_before_session_47

    uri = str(tmp_path / "lancedb")
    _made_before_session_47(uri)
    upgrade, played = tables.Store._upgrade, []

    def other_opens_first(self, name, schema, table):
        if not played and self.encoder_id == "second":  # `table` was read before `other` recorded its id
            played.append(Store(uri, encoder_id="other", dim=4))
        return upgrade(self, name, schema, table)

    monkeypatch.setattr(tables.Store, "_upgrade", other_opens_first)
    with pytest.raises(StoreError, match=r"table `preferences` at .* was made with encoder_id=other, and is opened with "
                                         r"encoder_id=second"):
        Store(uri, encoder_id="second", dim=4)
    assert played and _encoder_ids(uri) == {"other"}  # before: {'second', 'other'}: preferences overwritten


def test_an_em_config_counts_a_numpy_seed_as_the_number_it_is():
    """small48's bound (seed + restarts - 1 at most 2**32 - 1) was summed in the seed's own type: a numpy uint32 seed
    wrapped around (2**32 - 1 + 1 is 0, with numpy's overflow warning) and was taken, restart 1 then seeding k-means
    with 0. Counted as a Python int, it is refused as the same int seed is."""
    import warnings

    import numpy as np

    from pluralign.reward.em import EMConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        with pytest.raises(ValueError, match=r"EMConfig: `seed` \+ `restarts` - 1 must be at most 2\*\*32 - 1"):
            EMConfig(seed=np.uint32(2**32 - 1), restarts=2)
        assert EMConfig(seed=np.uint32(2**32 - 2), restarts=2).seed == 2**32 - 2
