"""The tenant's pooled prior (`PLURALIGN_POOLED_PRIOR_USERS`, `pluralign.user.pooled`) through the
real app: once enough of a tenant's users are fitted, a new user of that tenant is asked and fitted
from how those users differ; another tenant's users never shape it."""

from __future__ import annotations

import json
import time

import pytest

from tests.service.test_user_model_service import TOPICS, short_and_long
from tests.service.tiny import start_service

POOL = [{"prompt": "Tips on travel?", "answers": list(short_and_long("travel"))},
        {"prompt": "Tips on sleep?", "answers": ["Sleep well at night.", "Sleep well at night!!! Wow!!! Yes!!!"]}]


def teach(c, user: str, short_wins: bool, topics) -> None:
    for topic in topics:
        s, l_ = short_and_long(topic)
        chosen, rejected = (s, l_) if short_wins else (l_, s)
        r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tips on {topic}?", "chosen": chosen, "rejected": rejected})
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("users", [0, 4])
def test_a_new_user_is_asked_and_fitted_from_how_the_tenants_users_differ(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, users):
    server, service = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, pooled_prior_users=users,
                                     pooled_prior_ttl_s=0.5)
    with server, service.client("globex") as c, service.client("acme") as other:
        for u in range(6):  # globex's users differ on length only: even ones pick the short answer, odd ones the long
            teach(c, f"pop{u}", u % 2 == 0, TOPICS[:8])
            assert c.get(f"/v1/users/pop{u}").status_code == 200  # the profile read fits the user
        teach(other, "stranger", True, TOPICS[:2])
        time.sleep(0.6)  # the tenant's prior, estimated while it had fewer users, is estimated again
        teach(c, "newbie", True, TOPICS[8:9])  # one answer: the short one, in both tenants
        teach(other, "newbie", True, TOPICS[8:9])
        mine, theirs = c.get("/v1/users/newbie").json()["user_model"], other.get("/v1/users/newbie").json()["user_model"]
        assert theirs["pooled_users"] == 0  # acme has one other user: below the bound, and globex's never count
        state = next(json.loads(x) for x in c.get("/v1/users/newbie/export").text.splitlines() if '"type":"user"' in x)["user_model"]
        if not users:  # off: both tenants' new users are fitted alike, from the model's own prior
            assert mine == {**theirs, "population": mine["population"]} and state["unpooled_mean"] == []
            return
        # its 6 users, or 7 once the newbie's own stored fit is among them: the estimate is reused 0.5 s at most, and a
        # loaded machine passes that between two reads (a full run exported a state fitted under 7)
        assert mine["pooled_users"] in (6, 7)
        # globex's users differ on length by less than the model's prior allows (sd 5): one answer settles more
        assert mine["features"]["length"]["sd"] < 0.8 * theirs["features"]["length"]["sd"]
        assert mine["features"]["length"]["weight"] < 0  # and still says: shorter
        # the fit under the model's own prior is kept (later pooled priors are estimated from it), and exported
        assert len(state["unpooled_mean"]) == len(state["mean"]) and state["pooled_users"] in (6, 7)
