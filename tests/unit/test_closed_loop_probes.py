"""The closed loop's probe summary (issue 16, session 16): the pick rate after r rounds, the first
round at 70%, and the halving verdict, on hand-made probe records."""

from __future__ import annotations

from benchmarks.closed_loop import RULES, probe_summary


def probes_for(rule: str, arm: str, rates: list[float], users: int = 2, sets: int = 10) -> list[dict]:
    """Records that give `rates[r]` after r rounds, split over `users` users of `sets` scored sets each."""
    out = []
    for after, rate in enumerate(rates):
        hits = round(rate * users * sets)
        for u in range(users):
            mine = min(sets, max(0, hits - u * sets))
            out.append({"after": after, "user": f"{rule}-{u}", "rule": rule, "arm": arm, "hits": mine, "scored": sets})
    return out


def test_rounds_to_70_and_halving():
    probes = []
    probes += probes_for("short", "ask_active", [0.5, 0.6, 0.7, 0.9, 0.9])  # 2 rounds
    probes += probes_for("short", "ask_random", [0.5, 0.55, 0.6, 0.65, 0.7])  # 4 rounds: halved
    probes += probes_for("long", "ask_active", [0.5, 0.6, 0.65, 0.7, 0.9])  # 3 rounds
    probes += probes_for("long", "ask_random", [0.5, 0.6, 0.6, 0.6, 0.6])  # never in 4: must reach by 2: not halved
    probes += probes_for("lists", "ask_active", [0.5, 0.8, 0.8, 0.8, 0.8])  # 1
    probes += probes_for("lists", "ask_random", [0.5, 0.8, 0.8, 0.8, 0.8])  # 1: half of 1 cannot be reached
    probes += probes_for("casual", "ask_active", [0.5, 0.5, 0.9, 0.9, 0.9])  # 2
    probes += probes_for("casual", "ask_random", [0.5, 0.5, 0.5, 0.5, 0.5])  # never in 4: 2 <= 4 / 2
    probes += probes_for("formal", "ask_active", [0.8, 0.8, 0.8, 0.8, 0.8])  # the prior is at 70% in both: 0 <= 0
    probes += probes_for("formal", "ask_random", [0.8, 0.6, 0.8, 0.8, 0.8])
    out = probe_summary(probes, rounds=4)
    assert out["probe_rate"]["short"]["ask_random"] == [0.5, 0.55, 0.6, 0.65, 0.7]
    reached = out["probe_rounds_to_70"]
    assert reached["short"] == {"ask_active": 2, "ask_random": 4}
    assert reached["long"] == {"ask_active": 3, "ask_random": None}
    halved = out["halved"]["ask_active"]
    assert halved["short"] and not halved["long"] and not halved["lists"] and halved["casual"] and halved["formal"]
    # rules no probe scored (every set tied) have no rate and are not halved
    assert out["probe_rate"]["no_lists"]["ask_active"] == [None] * 5 and not halved["no_lists"]
    assert set(halved) == set(RULES) and set(out["halved"]) == {"ask_active"}  # no chat pair arms here


def test_pair_arms_get_their_own_verdict():
    probes = probes_for("short", "active", [0.5, 0.9]) + probes_for("short", "random_pair", [0.5, 0.6])
    out = probe_summary(probes, rounds=1)
    assert set(out["halved"]) == {"active"}
    assert out["halved"]["active"]["short"] is False  # 1 round against never-in-1: it must reach by 0.5
