"""A user's adapter whose swap a killed service cut short is served again at the next start.

A promotion of a user's adapter (`copy_into_place` -> `swap_folder`) renames their folder aside as
`.<user>.retired<random>` before renaming the new one in. artifact38 puts back the population model a
kill left so (`Runtime.restore_promoted`), not a user's adapter: before, the next start found no
adapter folder for the user and served them the fallback without a word, their trained adapter beside
it never loaded (until a DELETE removed it). Now each start puts such a folder back, as for the
population model; a retired folder beside a user folder that is there is left to `leftovers`.
"""

from __future__ import annotations

import shutil

from pluralign.policy.adapters import AdapterRegistry, adapter_name
from tests.service.tiny import start_service

GREEDY = {"temperature": 0, "pluralign": {"rerank": False, "shots": 0}}


def chat(client, user):
    r = client.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "max_tokens": 3,
                                                  "messages": [{"role": "user", "content": "Colour?"}], **GREEDY})
    assert r.status_code == 200, r.text
    return r.json()["pluralign"]["adapter"]


def test_a_user_adapter_set_aside_by_a_swap_cut_short_is_served_after_the_restart(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    from tests.service.test_service_adapters import random_adapter

    data = tmp_path / "data"
    registry = AdapterRegistry(data / "adapters")
    for user in ("ann", "bob"):
        random_adapter(tiny_generator_dir, registry.folder("acme", user), tiny_generator_dir.name, "user", 1)
    ann, bob = registry.folder("acme", "ann"), registry.folder("acme", "bob")
    ann.rename(ann.with_name(".ann.retired0123456789ab"))  # killed between swap_folder's two renames
    shutil.copytree(bob, bob.with_name(".bob.retiredba9876543210"))  # killed after them: bob's folder is in place
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    with server, svc.client("acme") as c:
        assert chat(c, "ann") == adapter_name("acme", "ann")
        assert chat(c, "bob") == adapter_name("acme", "bob")
    assert sorted(p.name for p in ann.parent.iterdir()) == [".bob.retiredba9876543210", "ann", "bob"]
