"""Session fair59: the answers' named-features cache (`pluralign.user.features`) is fair between tenants, as the users'
histories cache is (`pluralign.cache.FairLRU`): one tenant's many texts push out its own entries, not another tenant's.
Its entries are each tenant's own: a tenant whose text is a hit would learn that another tenant's text was the same
(a hit costs a digest, a miss a regex pass: timed, a membership test of any text it guesses). Work counted as the
regex passes run (each miss is one), not timed."""

from __future__ import annotations

import contextvars

import pytest

from pluralign.turns import CALLER
from pluralign.user import features


class Passes:
    """`features._ASCII_WORD` counting its passes (one per text computed, not per hit)."""

    def __init__(self, pattern):
        self.pattern, self.n = pattern, 0

    def finditer(self, text):
        self.n += 1
        return self.pattern.finditer(text)


@pytest.fixture
def passes(monkeypatch) -> Passes:
    counted = Passes(features._ASCII_WORD)
    monkeypatch.setattr(features, "_ASCII_WORD", counted)
    return counted


def as_caller(caller: str, texts: list[str]) -> None:
    """The features of `texts`, read as the service reads them for a request of `caller` (`pluralign.turns.CALLER`,
    set by its authentication for the request's task and threads)."""

    def run():
        CALLER.set(caller)
        features.response_features(texts)

    contextvars.Context().run(run)


def test_a_text_another_tenant_sent_is_computed_again_not_read_from_its_entry(passes):
    """globex's answer read after acme's same answer is a miss of globex's own: one pass each (before, globex's was a
    hit on acme's entry: whether acme had read that text, told by the time it took)."""
    text = "fair59: a private answer acme's user gave, which globex guesses."
    as_caller("tenant:acme", [text])
    as_caller("tenant:globex", [text])
    assert passes.n == 2, f"{passes.n} regex passes for one text read by two tenants"
    as_caller("tenant:globex", [text])
    assert passes.n == 2, "a tenant's own text read again was not a hit"


def test_one_tenants_many_texts_push_out_its_own_entries_not_another_tenants(passes, monkeypatch):
    """globex reads its 100 answers; acme then reads more distinct answers than the cache holds; globex's 100 read
    again are all hits (before: one LRU over every tenant's texts, acme's pushed out all of globex's, 100 passes
    again). The bound made 5,000 texts: 66,536 passes, at the real one, seen to fail the same way before."""
    monkeypatch.setattr(features, "FEATURES_CACHED", 5000)
    ours = [f"fair59 globex answer {i}." for i in range(100)]
    as_caller("tenant:globex", ours)
    as_caller("tenant:acme", [f"fair59 acme answer {i}." for i in range(features.FEATURES_CACHED + 1000)])
    assert len(features._cached) <= features.FEATURES_CACHED
    before = passes.n
    as_caller("tenant:globex", ours)
    assert passes.n - before == 0, f"{passes.n - before} of globex's 100 answers were computed again"
