"""Two processes on one store as one replica (session remote51): the second start is refused once the first opened the
store, not only once its sweep's first pass wrote its clock row (real LanceDB in a temp dir)."""

from __future__ import annotations

import pytest

from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.app import create_app
from service.runtime import Runtime, open_store, served_replica
from service.settings import Settings
from service.users.services import register_adapter
from tests.service.test_remote49_generation_server import GenerationServer
from tests.service.test_remote50_replicas import answer, peft_folder, said
from tests.service.test_replicas43_counts import settings
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.vllm_like import BASE, digest


def test_a_second_process_as_the_same_replica_is_refused_once_the_first_has_its_model(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Replica 0 of 2 from data folder a has built its runtime (its app not started yet: no sweep has run). Before
    (remote51) a process started then as replica 0 from data folder b opened the store too (no clock row named replica
    0 yet) and both served as replica 0, naming their adapters alike on a remote generation server. Now the first wrote
    its row once it had its population model: the second's start is refused naming PLURALIGN_REPLICA_INDEX; a restart of
    the first on its own folder, and replica 1, still open the store."""
    def config(folder: str, index: int) -> Settings:
        return Settings(data_dir=str(tmp_path / folder), store_uri=str(tmp_path / "shared-lancedb"), replicas=2, replica_index=index,
                        pal_dir=str(tiny_pal_dir), generator="openai:http://127.0.0.1:9/v1")

    runtime = Runtime.build(config("a", 0), generator=RemoteGenerator("http://127.0.0.1:9/v1", BASE), encoder=minilm)
    try:
        with pytest.raises(ValueError, match="PLURALIGN_REPLICA_INDEX") as refused:
            open_store(config("b", 0), minilm)
        assert "PLURALIGN_REPLICA_INDEX=0" in str(refused.value) and "another data folder" in str(refused.value), refused.value
        open_store(config("a", 0), minilm)
        open_store(config("c", 1), minilm)
    finally:
        runtime.close()


def test_two_services_on_one_store_with_one_index_name_their_adapters_apart(tmp_path):
    """Two services each alone (`replicas` 1, no clock rows to see each other by) given one `store_uri`, or two started
    at once as one replica: before (remote51) their adapters' names on a remote generation server were alike (the store
    and the index alone), so one's eviction unloaded the copy the other served. Now each data folder names its own; a
    restart on a folder keeps its names (its earlier copies are "already loaded")."""
    a, b = (settings(tmp_path, folder, replicas=1, index=0) for folder in ("a", "b"))
    assert a.lancedb_uri == b.lancedb_uri
    assert served_replica(a) != served_replica(b)  # before: equal
    assert served_replica(a) == served_replica(settings(tmp_path, "a", replicas=1, index=0))


@pytest.mark.slow  # two apps on one generation server (~5 s on two busy cores): `make test-scaleout`
def test_one_services_eviction_leaves_the_copy_another_on_the_same_store_and_index_serves(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Services a and b, each alone on one `store_uri` with index 0, generate on one `tests.vllm_like` server with the
    names their starts give (`served_replica`). Both serve rae; a's next user, sam, evicts rae's adapter there. Before
    (remote51) both named rae's copy alike: a's unload took b's, and b's next chat for rae was answered 404 and loaded
    it again. Now b's chat is answered at once by rae's weights, nothing loaded."""
    server = GenerationServer(tmp_path / "generation.log")
    try:
        services = []
        for name in ("a", "b"):
            config = Settings(data_dir=str(tmp_path / name), adapters_dir=str(tmp_path / "adapters"), store_uri=str(tmp_path / "store"),
                              generator=f"openai:{server.url}", pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1,
                              adapter_budget_mb=1)
            generator = RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0), replica=served_replica(config))
            runtime = Runtime.build(config, generator=generator, encoder=minilm)
            services.append(Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")}))
        a, b = services
        with a.server, b.server:
            for user, fill in (("rae", 1.0), ("sam", 2.0)):
                register_adapter(a.runtime, "acme", user, peft_folder(tmp_path / "trained" / user, fill))
            rae = digest(str(a.runtime.adapters.registry.folder("acme", "rae")))
            assert answer(a, "rae").endswith(f"with weights {rae}") and answer(b, "rae").endswith(f"with weights {rae}")
            answer(a, "sam")  # a's budget holds one adapter: rae's is unloaded there
            mark = len(said(server))
            assert answer(b, "rae").endswith(f"with weights {rae}")
            assert [line.split()[0] for line in said(server, mark)] == ["chat"], said(server, mark)  # before: chat 404, load, chat
            assert said(server, mark)[0].endswith(" 200"), said(server, mark)
    finally:
        server.stop()
