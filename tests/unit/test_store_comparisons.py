"""What a user's reward fit reads from the store (real LanceDB in a temp folder): only their strict
comparisons; their ties apart; another user's rows never."""

from __future__ import annotations

import numpy as np
import pytest
from msgspec.structs import replace as msgspec_replace

from pluralign.store import Store, StoredPreference


def row(user: str, n: int, rejected: str, tie: bool = False, kind: str = "comparison") -> StoredPreference:
    return StoredPreference(tenant="t", user_id=user, pref_id=f"{user}-{n}", prompt="q", chosen=f"c{n}",
                            rejected=rejected, kind=kind, created_at=float(n), tie=tie)


def test_a_fit_reads_the_users_strict_comparisons_and_ties_apart(tmp_path):
    store = Store(str(tmp_path / "db"), "enc", 2)
    rows = [row("ann", 1, "r1"), row("ann", 2, "r2", tie=True), row("ann", 3, "", kind="rating"), row("ann", 4, "r4"),
            row("bob", 5, "r5")]
    vec = np.array([[float(r.pref_id[-1]), 1.0] for r in rows], np.float32)  # chosen_vec[:, 0] names the row
    store.add_preferences(rows, np.ones_like(vec), vec, -vec)
    assert store.count_comparisons("t", "ann") == 2  # counted in the table: no tie, no answer without rival
    prompt, chosen, rejected = store.comparisons("t", "ann")
    assert chosen[:, 0].tolist() == [1.0, 4.0] and (rejected == -chosen).all() and prompt.shape == (2, 2)
    assert store.count_comparisons("t", "ann") == 2  # counted again from the cached history: the same
    _, tied, _, chosen_text, rejected_text = store.history("t", "ann").tie_set()
    assert tied[:, 0].tolist() == [2.0] and (chosen_text, rejected_text) == (["c2"], ["r2"])
    assert store.comparisons("t", "bob")[1][:, 0].tolist() == [5.0]
    assert store.count_preferences("t", "ann") == 4 and store.count_preferences("t", "bob") == 1


def test_the_newest_answers_are_comparisons_and_ties_together_oldest_first(tmp_path):
    """(session 52) What the changed-mind check reads (`History.newest_answers`): the newest answers by `created_at`,
    strict comparisons and ties interleaved as given, each an index into `comparison_set`'s or `tie_set`'s rows; a
    rating (no rival) is not an answer of two. Until then it named comparisons only (`newest_comparisons`)."""
    store = Store(str(tmp_path / "db"), "enc", 2)
    when = [5, 1, 3, 2, 6, 4, 7]  # stored out of time order
    rows = [msgspec_replace(row("ann", i, f"r{i}", tie=i in (2, 4)), created_at=float(t)) for i, t in enumerate(when)]
    rows.append(row("ann", 9, "", kind="rating"))
    vec = np.array([[float(i), 1.0] for i in range(len(rows))], np.float32)
    store.add_preferences(rows, np.ones_like(vec), vec, -vec)
    history = store.history("t", "ann")
    strict, tied = history.comparison_set()[1][:, 0], history.tie_set()[1][:, 0]  # each row's index in `rows`
    newest = history.newest_answers(5)
    named = [int((tied if t else strict)[i]) for i, t in zip(newest.index, newest.tie, strict=True)]
    assert named == [2, 5, 0, 4, 6], named  # rows at times 3, 4, 5, 6, 7; rows 2 and 4 ties
    assert newest.tie.tolist() == [rows[i].tie for i in named]
    assert len(history.newest_answers(0).index) == 0 and len(history.newest_answers(50).index) == 7


def test_the_rows_a_fit_does_not_learn_from_are_counted_apart_from_the_table_and_from_the_cache(tmp_path):
    """Ties (a rating of 3 too) and ratings of an answer with no rival, each counted as it is stored (the
    summary's `ties` and `unpaired_ratings`), the same from the table as from the cached history."""
    store = Store(str(tmp_path / "db"), "enc", 2)
    rows = [row("ann", 1, "r1"), row("ann", 2, "r2", tie=True), row("ann", 3, "", tie=True, kind="rating"),
            row("ann", 4, "", kind="rating"), row("ann", 5, "", kind="rating"), row("bob", 6, "", kind="rating")]
    store.add_preferences(rows, np.ones((6, 2), np.float32), np.ones((6, 2), np.float32), np.ones((6, 2), np.float32))
    assert store.histories.peek(("t", "ann")) is None and store.histories.peek(("t", "bob")) is None
    for _ in ("the table", "the cached histories"):
        assert (store.count_comparisons("t", "ann"), store.count_ties("t", "ann"), store.count_unpaired("t", "ann")) == (1, 2, 2)
        assert (store.count_ties("t", "bob"), store.count_unpaired("t", "bob")) == (0, 1)
        # what the user model fits, in one count: the comparison and the tie of two answers, not the rating of 3
        assert (store.count_paired_ties("t", "ann"), store.count_paired("t", "ann"), store.count_paired("t", "bob")) == (1, 2, 0)
        store.history("t", "ann"), store.history("t", "bob")  # cached from now on


def test_the_nearest_shots_are_the_users_own_nearest_first_from_the_table_and_from_the_cache(tmp_path):
    """`search` (a chat's few-shot retrieval): the first read is a LanceDB vector search, later ones
    the cached history's; both give the user's own rows, nearest prompt first, and never another
    user's, however near their prompts are."""
    store = Store(str(tmp_path / "db"), "enc", 2)
    angles = {"ann-1": 0.0, "ann-2": 0.5, "ann-3": 1.2, "bob-4": 0.01, "bob-5": 0.02}  # radians from the query
    rows = [row(pid.split("-")[0], int(pid[-1]), f"r{pid[-1]}") for pid in angles]
    prompts = np.array([[np.cos(a), np.sin(a)] for a in angles.values()], np.float32)
    store.add_preferences(rows, prompts, np.ones_like(prompts), -np.ones_like(prompts))
    query = np.array([1.0, 0.0], np.float32)
    assert store.histories.peek(("t", "ann")) is None
    first = store.search("t", "ann", query, 2)  # nothing cached yet: the table's vector search
    store.wait_warm()
    assert store.histories.peek(("t", "ann")) is not None  # the search warmed the cache
    again = store.search("t", "ann", query, 2)
    for found in (first, again):
        assert [p.pref_id for p, _ in found] == ["ann-1", "ann-2"]
        assert [d for _, d in found] == [pytest.approx(0.0, abs=1e-6), pytest.approx(1 - np.cos(0.5), abs=1e-5)]


def test_users_with_preferences_names_only_the_users_asked_for_that_hold_a_row(tmp_path, monkeypatch):
    """A stop's check of the users whose refits wait (`keep_dropped_refits`): one read per USERS_PER_READ users,
    whose filter (tenants IN, users IN) also matches pairs not asked for; a user with nothing stored is left out."""
    import pluralign.store.tables as tables

    monkeypatch.setattr(tables, "USERS_PER_READ", 2)  # three reads of the five asked for
    store = Store(str(tmp_path / "db"), "enc", 2)
    rows = [msgspec_replace(row("ann", 1, "r1"), tenant="a"), msgspec_replace(row("bob", 2, "r2"), tenant="b"),
            msgspec_replace(row("bob", 3, "r3"), tenant="a"), msgspec_replace(row("o'cy", 4, "r4"), tenant="a")]
    store.add_preferences(rows, np.ones((4, 2), np.float32), np.ones((4, 2), np.float32), np.ones((4, 2), np.float32))
    asked = [("a", "ann"), ("b", "ann"), ("b", "bob"), ("a", "gone"), ("a", "o'cy"), ("a", "ann")]  # a quote: quoted
    assert store.users_with_preferences(asked) == {("a", "ann"), ("b", "bob"), ("a", "o'cy")}  # not ("a", "bob"): not asked
    assert store.users_with_preferences([]) == set()


def test_a_users_own_answers_sample_holds_their_pairs_each_once_and_no_one_elses(tmp_path):
    """(review of trial16_53) What a profile's nearest prototype is described by by default (`History.answers_sample`):
    both answers of each of the user's pairs, a comparison or a tie, each pair of answers once whatever its prompt or
    spelling (NFC or NFD), the answers beside their own vectors; a rating of one answer is no pair; another user's
    rows are never there; `limit` caps the pairs."""
    store = Store(str(tmp_path / "db"), "enc", 2)
    rows = [row("ann", 1, "r1"), row("ann", 2, "r2", tie=True), row("ann", 3, "", kind="rating"),
            msgspec_replace(row("ann", 4, "r1"), chosen="c1", prompt="another q"),  # the pair of row 1 again
            msgspec_replace(row("ann", 5, "Cafe\u0301"), chosen="c5"), msgspec_replace(row("ann", 6, "Caf\u00e9"), chosen="c5"),
            row("bob", 7, "r7")]
    vec = np.array([[float(r.pref_id[-1]), 1.0] for r in rows], np.float32)  # chosen_vec[:, 0] names the row
    store.add_preferences(rows, np.ones_like(vec), vec, -vec)
    prompts, answers, prompt_vec, answer_vec = store.history("t", "ann").answers_sample(200)
    pairs = {frozenset(answers[k : k + 2]) for k in range(0, len(answers), 2)}
    assert len(answers) == 6 and {frozenset(("c1", "r1")), frozenset(("c2", "r2"))} <= pairs, answers
    assert len(prompts) == 6 and prompt_vec.shape == answer_vec.shape == (6, 2)
    for k in range(0, len(answers), 2):  # each answer with its own row's vectors: chosen +v, rejected -v
        assert answer_vec[k, 0] == -answer_vec[k + 1, 0] and answers[k].startswith("c")
    assert "r7" not in answers and "c7" not in answers
    assert len(store.history("t", "ann").answers_sample(2)[1]) == 4
    assert [len(x) for x in store.history("t", "nobody").answers_sample(200)] == [0, 0, 0, 0]
    # the store's draw: from the cached history, or (uncached) from the table, the same pairs either way
    cached = store.own_answers_sample("t", "ann", 200)
    store.histories.invalidate([("t", "ann")])
    read = store.own_answers_sample("t", "ann", 200)
    assert store.histories.peek(("t", "ann")) is None  # not loaded for it
    as_pairs = lambda out: {(out[1][k], out[1][k + 1]) for k in range(0, len(out[1]), 2)}  # noqa: E731
    assert as_pairs(cached) == as_pairs(read) and len(read[1]) == 6, (cached[1], read[1])


def test_a_users_own_answers_sample_names_a_damaged_table_as_every_read_of_it_does(tmp_path):
    """Review late53: `Store.own_answers_sample` (a profile's examples by default since the review of trial16_53) checks
    the user's cached history against the table (with replicas, `sync_seconds`) outside the wrapper every other read of
    the preferences table has (`_uses`): a file of the table gone surfaced as Lance's bare RuntimeError (a 500 with
    Lance's words), where `count_preferences` beside it gives StoreUnavailable naming the table (a 503)."""
    import glob
    import os
    import time

    from pluralign.store.failures import StoreUnavailable

    store = Store(str(tmp_path / "db"), "enc", 2, sync_seconds=0.05)  # a replica's: a cached history is checked
    vec = np.ones((1, 2), np.float32)
    store.add_preferences([row("ann", 1, "r1")], vec, vec, -vec)
    store.history("t", "ann")  # cached
    Store(str(tmp_path / "db"), "enc", 2, sync_seconds=0.05).add_preferences([row("bob", 2, "r2")], vec, vec, -vec)  # another replica
    time.sleep(0.1)
    for data in glob.glob(str(tmp_path / "db" / "preferences.lance" / "data" / "*")):
        os.remove(data)
    with pytest.raises(StoreUnavailable, match="table `preferences`"):
        store.own_answers_sample("t", "ann", 200)
