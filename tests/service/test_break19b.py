"""A hostile pass on the tenant's pooled prior (`PLURALIGN_POOLED_PRIOR_USERS`) through the real app."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
from cachetools import TTLCache

from tests.service.test_pooled_prior import POOL, teach
from tests.service.test_user_model_service import TOPICS
from tests.service.tiny import start_service


def test_a_deleted_user_no_longer_shapes_the_tenants_pooled_prior(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A DELETE leaves nothing of the user behind: the tenant's cached pooled prior, estimated from
    them among others, is dropped with them, not served for up to the TTL (60 s by default)."""
    server, service = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, pooled_prior_users=4,
                                     pooled_prior_ttl_s=60)
    with server, service.client("globex") as c:
        for u in range(4):
            teach(c, f"pop{u}", u % 2 == 0, TOPICS[:6])
            assert c.get(f"/v1/users/pop{u}").status_code == 200
        service.runtime.pooled_priors.clear()  # as once the prior estimated while the tenant had fewer users expires
        teach(c, "newbie", True, TOPICS[8:9])
        assert c.get("/v1/users/newbie").json()["user_model"]["pooled_users"] == 4
        for gone in ("pop0", "pop1"):
            assert c.delete(f"/v1/users/{gone}").status_code == 200
        teach(c, "later", True, TOPICS[8:9])  # 3 fitted users are left (newbie is one): below the bound
        assert c.get("/v1/users/later").json()["user_model"]["pooled_users"] == 0


def test_a_cached_prior_expiring_mid_read_is_no_500(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """The cache was asked `key in cache` and then `cache[key]`: a prior expiring between the two
    (the clock moves on) raised KeyError, a 500 to a user's next-comparison."""
    server, service = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, pooled_prior_users=2,
                                     pooled_prior_ttl_s=0.5)
    clock = itertools.count(0.0, 0.3)  # every look at the clock is 0.3 s later: expiries fall between any two looks
    with server, service.client("globex") as c:
        for u in range(2):
            teach(c, f"pop{u}", u % 2 == 0, TOPICS[:4])
            assert c.get(f"/v1/users/pop{u}").status_code == 200
        service.runtime.pooled_priors = TTLCache(maxsize=1024, ttl=0.5, timer=lambda: next(clock))
        for i in range(6):
            r = c.post(f"/v1/users/new{i}/next-comparison", json={"pool": POOL})
            assert r.status_code == 200, r.text


def test_what_docs_say_a_user_s_export_tells_about_the_others_holds(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """docs/api.md: with N = 2, one stated preference on a fresh user makes their export the other
    users' mean coefficients, so whoever controls one of the two learns the other's exactly (a
    disclosure the docs now state, not one this pass could remove)."""
    server, service = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, pooled_prior_users=2,
                                     pooled_prior_ttl_s=0.2)

    def state(c, user):
        return next(json.loads(x) for x in c.get(f"/v1/users/{user}/export").text.splitlines() if '"type":"user"' in x)["user_model"]

    with server, service.client("globex") as c:
        teach(c, "victim", True, TOPICS[:6])
        teach(c, "attacker", False, TOPICS[:6])
        for user in ("victim", "attacker"):
            assert c.get(f"/v1/users/{user}").status_code == 200
        time.sleep(0.3)
        r = c.patch("/v1/users/spy/stated-preferences", json={"preferences": {"list_items": "less"}})
        assert r.status_code == 200, r.text
        spy, attacker, victim = (state(c, u) for u in ("spy", "attacker", "victim"))
        assert spy["pooled_users"] == 2 and spy["n"] == 0
        keep = [i for i, name in enumerate(spy["names"]) if name != "list_items"]
        own = np.array(attacker["unpooled_mean"] or attacker["mean"])
        truth = np.array(victim["unpooled_mean"] or victim["mean"])
        assert (2 * np.array(spy["mean"]) - own)[keep] == pytest.approx(truth[keep], abs=1e-9)


def test_users_who_only_stated_preferences_do_not_crowd_out_the_fitted_ones(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                           monkeypatch):
    """The prior reads one bounded query of the tenant's users with a stored model (128 rows), then
    keeps those fitted on comparisons: a tenant whose oldest 128 users only stated preferences at
    sign-up (a model with no comparisons) never had a pooled prior, however many users answered.
    Both bounds (the prior's and next-comparison's `population`) are 8 here: 10 sign-ups fill either
    window as 130 fill the real ones (speed60a: 130 PATCHes were ~9 of the test's 10.4 CPU-s)."""
    import service.users.services as users

    monkeypatch.setattr(users, "POOLED_PRIOR_MAX_USERS", 8)
    monkeypatch.setattr(users, "POPULATION_USERS", 8)
    signups = users.POOLED_PRIOR_MAX_USERS + 2
    # a prior estimated at newbie's first fit is kept for newbie's later refits: with a TTL of 0.2 s a
    # busy machine let it expire meanwhile, and the estimate counted newbie too (3 == 2 failed)
    server, service = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, pooled_prior_users=2,
                                     pooled_prior_ttl_s=60)
    # the windows the service's queries read: the patched 8 (the prior's) and 9 (`population`'s, the user left out),
    # which 10 sign-ups fill. A bound read anywhere else (a default argument, a setting) leaves the real 128: then the
    # sign-ups fill nothing and the test would pass with the crowding back, unless this says so
    windows = []
    store, fitted_users = service.runtime.store, service.runtime.store.fitted_users
    monkeypatch.setattr(store, "fitted_users", lambda tenant, limit, **kw: windows.append(limit) or fitted_users(tenant, limit, **kw))
    with server, service.client("globex") as c:
        for u in range(signups):
            r = c.patch(f"/v1/users/signup{u}/stated-preferences", json={"preferences": {"list_items": "less"}})
            assert r.status_code == 200, r.text
        for u in range(2):
            teach(c, f"pop{u}", u % 2 == 0, TOPICS[:4])
            assert c.get(f"/v1/users/pop{u}").status_code == 200
        service.runtime.pooled_priors.clear()  # as once the prior estimated while the tenant had fewer users expires
        teach(c, "newbie", True, TOPICS[8:9])
        assert c.get("/v1/users/newbie").json()["user_model"]["pooled_users"] == 2
        # next-comparison's `population` target read the same crowded window: nobody to compare against
        r = c.post("/v1/users/newer/next-comparison", json={"pool": POOL, "target": "population"})
        assert r.status_code == 200 and r.json()["population_users"] == 3, r.text
    assert set(windows) == {8, 9}, windows  # each query read its patched window
