"""The real data sets: counts match their documentation; persona populations have no leakage."""

import json

import pytest

from pluralign.data.persona import PersonaConfig, build_persona, group_stances
from pluralign.data.splits import by_user, ukp_protocol
from pluralign.data.ukp import load_ukp, ukp_stats


@pytest.fixture(scope="module")
def ukp(shared_data):
    return load_ukp(shared_data / "ukp_convarg1")


def test_ukp_counts_match_the_published_set(ukp):
    records, pairs = ukp
    stats = ukp_stats(records, pairs)
    assert (stats.pairs, stats.judgments, stats.users, stats.ties, stats.topics) == (16927, 84445, 3815, 19105, 32)
    a_tie = next(r for r in records if r.tie)
    assert a_tie.source == "ukp_convarg1" and "worker_stance" in a_tie.attributes


def test_ukp_protocol_users_are_disjoint_and_sized(ukp):
    records, _ = ukp
    protocol = ukp_protocol(records, seed=0)
    seen = by_user(protocol.seen.train + protocol.seen.val + protocol.seen.test)
    assert all(len(p) >= 100 for p in seen.values())
    assert not set(seen) & set(protocol.unseen.support)
    for user, query in protocol.unseen.query.items():
        n = len(query) + len(protocol.unseen.support[user])
        assert 50 <= n < 100
        assert not any(r.tie for r in query)
    again = ukp_protocol(records, seed=0)
    assert again.seen.test == protocol.seen.test  # deterministic under a seed
    assert ukp_protocol(records, seed=1).seen.test != protocol.seen.test


def test_group_stances_are_opposed_codes():
    assert group_stances(2, 1) == [(1,), (-1,)]
    assert sorted(group_stances(4, 2)) == [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    with pytest.raises(ValueError, match="need at least 2 traits"):
        group_stances(3, 1)


def test_persona_population_has_known_groups_and_no_statement_leakage(shared_data):
    config = PersonaConfig(groups=4, users_per_group=5, unseen_users_per_group=3, comparisons_per_user=30, seed=3)
    protocol = build_persona(config, shared_data)
    train_texts = {t for r in protocol.seen.train + protocol.seen.val for t in (r.chosen, r.rejected)}
    train_texts |= {t for pool in protocol.unseen.support.values() for r in pool for t in (r.chosen, r.rejected)}
    test_texts = {t for r in protocol.seen.test for t in (r.chosen, r.rejected)}
    test_texts |= {t for q in protocol.unseen.query.values() for r in q for t in (r.chosen, r.rejected)}
    assert not train_texts & test_texts
    assert len(set(protocol.true_groups.values())) == 4
    seen_users = {r.user_id for r in protocol.seen.train}
    assert len(seen_users) == 20 and not seen_users & set(protocol.unseen.support)
    # a user's preferences follow its group: two users of opposed groups disagree on shared traits
    again = build_persona(config, shared_data)
    assert again.seen.train == protocol.seen.train


def test_persona_users_prefer_their_groups_stance(shared_data):
    protocol = build_persona(PersonaConfig(groups=2, users_per_group=2, unseen_users_per_group=1, seed=1), shared_data)
    from pluralign.data.persona import load_trait

    trait = PersonaConfig(groups=2).trait_names[0]
    says = {s.statement for s in load_trait(shared_data / "anthropic_persona", trait) if s.answer_matching_behavior == " Yes"}
    for r in protocol.seen.train:
        holder = r.attributes["group"] == "g0"
        assert (r.chosen in says) == holder


def test_group_weights_make_a_majority_and_a_minority(shared_data):
    config = PersonaConfig(groups=2, users_per_group=10, group_weights=(0.9, 0.1), unseen_users_per_group=1)
    protocol = build_persona(config, shared_data)
    users = {r.user_id: r.attributes["group"] for r in protocol.seen.train}
    counts = [sum(g == f"g{i}" for g in users.values()) for i in range(2)]
    assert counts == [18, 2]


def test_more_unseen_users_leave_the_seen_population_as_it_was(shared_data):
    """`EvalConfig.unseen_users_per_group` / `query_size` (benchmarks/active_shots.py's narrower
    intervals) draw more new users and queries after the seen users, so the seen users, and any
    model fitted on them, are the eval's own."""
    from pluralign.evaluation import EvalConfig, load_protocol

    small = load_protocol(EvalConfig(protocol="persona", data_dir=str(shared_data), groups=4, seed=2))
    large = load_protocol(EvalConfig(protocol="persona", data_dir=str(shared_data), groups=4, seed=2, unseen_users_per_group=25, query_size=30))
    assert large.seen.train == small.seen.train and large.seen.val == small.seen.val and large.seen.test == small.seen.test
    assert len(small.unseen.support) == 40 and len(large.unseen.support) == 100
    assert {len(q) for q in large.unseen.query.values()} == {30}


@pytest.mark.parametrize("field", ["unseen_users_per_group", "query_size"])
def test_a_population_without_new_users_or_queries_is_refused(shared_data, field):
    from pluralign.evaluation import EvalConfig, load_protocol

    with pytest.raises(ValueError, match=f"PersonaConfig.{field} must be >= 1"):
        load_protocol(EvalConfig(protocol="persona", data_dir=str(shared_data), **{field: 0}))


def test_ukp_chosen_and_rejected_follow_each_workers_value(tmp_path):
    """A worker's `a1` chooses the first argument, `a2` the second, `equal` is a tie; one record per
    worker, user_id their turkID (a tiny file in the original XML layout: no real data needed)."""
    def assignment(value, worker, stance="pro"):
        return f"<mTurkAssignment><value>{value}</value><turkID>{worker}</turkID><workerStance>{stance}</workerStance></mTurkAssignment>"

    (tmp_path / "topic-x.xml").write_text(
        "<list><annotatedArgumentPair><id>p1</id><debateMetaData><title>Cats or dogs</title></debateMetaData>"
        "<arg1><text>Cats are calm.</text><stance>cats</stance></arg1><arg2><text>Cats sleep a lot.</text></arg2>"
        + assignment("a1", "w1") + assignment("a2", "w2", "con") + assignment("equal", "w3")
        + "</annotatedArgumentPair></list>")
    records, pairs = load_ukp(tmp_path)
    assert pairs == 1
    by = {r.user_id: r for r in records}
    assert (by["w1"].chosen, by["w1"].rejected, by["w1"].tie) == ("Cats are calm.", "Cats sleep a lot.", False)
    assert (by["w2"].chosen, by["w2"].rejected, by["w2"].tie) == ("Cats sleep a lot.", "Cats are calm.", False)
    assert by["w3"].tie
    assert by["w2"].attributes == {"worker_stance": "con", "pair_id": "p1", "topic": "topic-x"}
    assert by["w1"].prompt == "Debate: Cats or dogs\nSide: cats\nWhich argument for this side is more convincing?"


def test_persona_users_choose_the_statement_of_their_groups_stance_on_a_tiny_trait_file(tmp_path):
    """Without the real data: one trait file of 6 statements a holder would say and 6 it would not;
    group g0 holds the trait (+1) and always chooses a " Yes" statement, g1 (-1) a " No" one."""
    folder = tmp_path / "anthropic_persona" / "persona"
    folder.mkdir(parents=True)
    lines = [{"statement": f"{answer.strip()} statement {i}", "label_confidence": 0.99, "answer_matching_behavior": answer}
             for answer in (" Yes", " No") for i in range(6)]
    (folder / "politically-liberal.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    config = PersonaConfig(groups=2, users_per_group=2, unseen_users_per_group=1, comparisons_per_user=8,
                           support_size=3, query_size=2, test_fraction=0.5)
    protocol = build_persona(config, tmp_path)
    records = protocol.seen.train + protocol.seen.val + protocol.seen.test
    records += [r for pool in (*protocol.unseen.support.values(), *protocol.unseen.query.values()) for r in pool]
    assert {r.attributes["group"] for r in records} == {"g0", "g1"}
    for r in records:
        says = "Yes" if r.attributes["group"] == "g0" else "No"
        assert r.chosen.startswith(says) and not r.rejected.startswith(says), r
