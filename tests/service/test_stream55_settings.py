"""The settings of session stream55: a streamed chat's bounds on a remote generation server
(`PLURALIGN_GENERATOR_STREAM_IDLE_S`, `PLURALIGN_GENERATOR_STREAM_TIMEOUT_S`) and the bound of each request to a remote
embeddings server (`PLURALIGN_ENCODER_TIMEOUT_S`: 60 s with no setting until then), read from the environment as
`pluralign serve` reads them, refused at start naming the variable when no socket could take them, and reaching the
clients the service builds (the real Runtime on a stub embeddings server)."""

from __future__ import annotations

import pytest

from service.runtime import Runtime
from service.settings import Settings
from tests.service.test_reviewsmall52 import RefusingEmbeddings
from tests.service.tiny import minilm, tiny_pal_dir  # noqa: F401

VARIABLES = ("PLURALIGN_GENERATOR_STREAM_IDLE_S", "PLURALIGN_GENERATOR_STREAM_TIMEOUT_S", "PLURALIGN_ENCODER_TIMEOUT_S")


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "86401", "soon"])
def test_a_bound_no_socket_takes_is_refused_at_start_naming_its_variable(variable, value):
    """As `PLURALIGN_GENERATOR_TIMEOUT_S` is (review of session remote54): above 0 and at most a day, else the start stops
    with one line naming the variable and the setting."""
    setting = variable.removeprefix("PLURALIGN_").lower()
    with pytest.raises(ValueError) as refused:
        Settings.load({variable: value})
    said = str(refused.value)
    assert said.startswith(f"{variable} (setting {setting}): "), said
    if value != "soon":
        assert f"`{setting}` must be above 0 and at most 86400 seconds" in said, said
    else:  # not a number
        assert "expected `float`" in said and "'soon'" in said, said
    assert Settings.load({variable: "86400"}) == Settings(**{setting: 86400.0})


@pytest.mark.slow  # a Runtime of its own (~1-3.5 s on two loaded cores): `make test-scaleout`; by default the generation
# server's settings are seen at work in tests/service/test_remote52_token_counts.py (a stream stalled past 1 s)
def test_the_bounds_set_reach_the_generation_and_embeddings_clients(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """The service built from the environment (`Runtime.build`, as `pluralign serve` builds it) bounds a streamed chat and
    each embeddings request as the variables say: before session stream55 the embeddings server's bound was 60 s
    whatever was set (no such setting: the variable refused as unknown), and a stream was bounded by
    `PLURALIGN_GENERATOR_TIMEOUT_S` whole."""
    embeddings = RefusingEmbeddings(dim=minilm.dim)
    settings = Settings.load({
        "PLURALIGN_GENERATOR": "openai:http://127.0.0.1:9/v1", "PLURALIGN_ENCODER": f"openai:{embeddings.url}",
        "PLURALIGN_ENCODER_MODEL": minilm.encoder_id, "PLURALIGN_ENCODER_TIMEOUT_S": "7.5",
        "PLURALIGN_GENERATOR_TIMEOUT_S": "30", "PLURALIGN_GENERATOR_STREAM_IDLE_S": "12", "PLURALIGN_GENERATOR_STREAM_TIMEOUT_S": "900",
    }, data_dir=str(tmp_path / "data"), pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1)
    runtime = Runtime.build(settings)
    try:
        assert runtime.encoder.timeout == 7.5  # before: 60
        policy = runtime.generator.policy
        assert (policy.timeout_s, policy.stream_idle_s, policy.stream_timeout_s) == (30, 12, 900), policy
    finally:
        runtime.close()
        embeddings.shutdown()
        embeddings.server_close()
