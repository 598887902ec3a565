"""A third tenant's chat starts at once while two others keep every chat they may hold running or waiting, over real
HTTP with the default `generation_workers` (4). Before (session 47's close): a tenant alone took 3 of the 4 workers,
a second tenant's chat the last one, and a third tenant's chat waited for one of theirs to end (minutes with long
chats). And the limit on a hung generation process (`generation_stall_s`) refuses what it cannot honour."""

from __future__ import annotations

import threading

import httpx
import pytest

from pluralign.policy.generator import Generator
from pluralign.turns import CALLER
from tests.service.test_generation_fairness import CHAT, serve, wait_for


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = serve(tmp_path_factory.mktemp("newcomer"), Generator.from_folder(tiny_generator_dir), tiny_pal_dir,
                            minilm, tenant_generations=4, generation_queue=16, rerank=False, candidates=1)
    service.keys["initech"] = service.runtime.keys.issue("initech")
    with server:
        yield service


def test_a_third_tenant_s_chat_starts_while_two_tenants_hold_all_they_may(svc):
    release = threading.Event()
    generator = svc.runtime.generator
    generate = generator.generate

    def held(*args, **kwargs):  # acme's and globex's chats hold their workers until the test ends
        if CALLER.get() in ("tenant:acme", "tenant:globex"):
            release.wait(60)
        return generate(*args, **kwargs)

    chat = {**CHAT, "max_tokens": 4, "temperature": 0}
    answers: dict[str, list[httpx.Response]] = {"acme": [], "globex": [], "initech": []}

    def send(who: str) -> None:
        with svc.client(who) as c:
            answers[who].append(c.post("/v1/chat/completions", json=chat))

    generator.generate = held
    threads = []
    try:
        for who in ("acme", "globex"):
            for _ in range(4):
                threads.append(threading.Thread(target=send, args=(who,), daemon=True))
                threads[-1].start()
            assert wait_for(lambda: sum(svc.runtime.scheduler.stats()[k] for k in ("running", "waiting")) == len(threads))
        newcomer = threading.Thread(target=send, args=("initech",), daemon=True)
        newcomer.start()
        newcomer.join(30)
        stats = svc.runtime.scheduler.stats()
        assert answers["initech"], f"initech's chat waited for acme's or globex's to end: {stats}"
        assert answers["initech"][0].status_code == 200, answers["initech"][0].text
        assert not answers["acme"] and not answers["globex"]  # all still held
    finally:
        release.set()
        del generator.generate
    for thread in threads:
        thread.join(60)
    assert [r.status_code for who in ("acme", "globex") for r in answers[who]] == [200] * 8


@pytest.mark.parametrize(("env", "said"), [
    ({"PLURALIGN_GENERATION_STALL_S": "1"}, "`generation_stall_s` must be at least 5 and at most 3600 seconds, got 1.0"),
    ({"PLURALIGN_GENERATION_STALL_S": "nan"}, "`generation_stall_s` must be at least 5"),
    ({"PLURALIGN_GENERATION_STALL_S": "soon"}, "PLURALIGN_GENERATION_STALL_S (setting generation_stall_s): expected `float`"),
])
def test_a_bad_generation_stall_limit_is_refused_naming_the_setting(env, said):
    """The limit on a hung generation process (session 48): below 5 s a healthy child, heard from every second at best,
    could be killed as hung under load."""
    from service.settings import Settings

    with pytest.raises(ValueError) as refused:
        Settings.load(env)
    assert said in str(refused.value), str(refused.value)
