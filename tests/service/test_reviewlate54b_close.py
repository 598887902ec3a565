"""Review late54b: a service on a remote generation server and a remote embeddings server closes its connections to
them when it stops (`Runtime.close`, the app's shutdown), where since session remote54 they were left open to the
process's exit (real LanceDB in a temp dir, the servers on loopback)."""

from __future__ import annotations

from pluralign.embed.remote import RemoteEncoder
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.runtime import Runtime
from service.settings import Settings
from tests.service.tiny import minilm, tiny_pal_dir  # noqa: F401
from tests.stub_openai import served
from tests.unit.test_remote54_whole_bound import MESSAGES
from tests.unit.test_reviewlate54b_remote import KeptAlive, _open_after


def test_a_stopping_service_closes_its_connections_to_the_remote_servers(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    KeptAlive.open = 0
    with served(KeptAlive) as root:
        config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{root}/v1", encoder=f"openai:{root}/v1",
                          pal_dir=str(tiny_pal_dir))
        runtime = Runtime.build(config, generator=RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=5)),
                                encoder=RemoteEncoder(f"{root}/v1", minilm.encoder_id, timeout=5))
        try:
            assert runtime.generator.generate(MESSAGES)[0][0].text == "a plan"
            assert runtime.generator.prompt_tokens(MESSAGES) == 5 and runtime.encoder.encode(["hi"]).shape == (1, 384)
            assert KeptAlive.open >= 2, KeptAlive.open
        finally:
            runtime.close()
        assert _open_after() == 0, KeptAlive.open  # before: 3, to the process's exit


def test_an_app_that_built_its_runtime_closes_its_connections_to_the_remote_servers_when_it_stops(tmp_path, tiny_pal_dir):  # noqa: F811
    """`pluralign serve`'s app (`create_app(settings)`: it builds its runtime and owns it) on both remote servers: its
    shutdown closed a ProcessGenerator only; the connections to the servers stayed open to the process's exit."""
    from litestar.testing import TestClient

    from service.app import create_app

    KeptAlive.open = 0
    with served(KeptAlive) as root:
        config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{root}/v1", encoder=f"openai:{root}/v1",
                          pal_dir=str(tiny_pal_dir))
        app = create_app(config)
        with TestClient(app):  # its startup and shutdown hooks run
            runtime = app.state.runtime
            assert runtime.generator.generate(MESSAGES)[0][0].text == "a plan" and runtime.encoder.encode(["hi"]).shape == (1, 384)
            assert KeptAlive.open >= 2, KeptAlive.open
        assert _open_after() == 0, KeptAlive.open
