"""A DELETE and the embedding cache the jobs share across tenants (privacy session 40). The cache keys a vector by
the SHA-256 of its text alone, so one text sent by users of two tenants is one entry. What was found: a DELETE
removes the vector of every text of the user's comparisons, whoever else holds the same text, so it never leaves
one of theirs behind, one no one else holds included; another tenant's vector of a shared text goes too (it is
embedded again at that tenant's next job: speed only), and texts only others sent stay."""

from __future__ import annotations

import numpy as np

from pluralign.embed.cache import EmbeddingCache, default_cache_path, text_key
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE


def comparison(client, user: str, prompt: str, chosen: str, rejected: str) -> None:
    r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    assert r.status_code == 201, r.text
    assert client.get(f"/v1/users/{user}/preferences").json()["total"] >= 1  # moved into the table


def test_a_delete_leaves_no_vector_of_its_user_s_texts_shared_with_another_tenant_or_not(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    shared, alone, theirs = "Tea or coffee for a long night?", "Quince-lantern-77 is what I drink.", "Globex-only answer 31."
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        comparison(acme, GONE, shared, alone, "Water.")
        comparison(globex, "gil", shared, theirs, "Water.")
        # as a PAL job embeds a population snapshot (every tenant's rows) into the jobs' cache
        cache = EmbeddingCache(default_cache_path())
        texts = [shared, alone, "Water.", theirs]
        encoder_id = svc.runtime.encoder.encoder_id
        cache.put(encoder_id, [text_key(t) for t in texts], np.ones((len(texts), 4), np.float32))
        assert len(cache.get(encoder_id, [text_key(t) for t in texts])) == 4
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert r.json().get("warnings", []) == []
        left = cache.get(encoder_id, [text_key(t) for t in texts])
        cache.close()
    assert text_key(alone) not in left  # theirs alone: gone
    assert text_key(shared) not in left and text_key("Water.") not in left  # shared with globex's gil: gone too (speed only)
    assert set(left) == {text_key(theirs)}  # what only another tenant sent stays
