"""Session remote53: `service.chat.controllers.most_kept`, the search for the most retrieved shots a prompt keeps within
its budget (`fit_shots`), a few counts a round (a remote server's `/tokenize`: `PromptCounter.at_once`, 4) or one (a
local generator's): the same answer as counting every number of shots, within ceil(log_(at_once+1)(shots)) rounds, never
more than `at_once` counts a round, and the messages' own count asked whenever none fits (its 400 says it)."""

from __future__ import annotations

import math

import pytest

from service.chat.controllers import most_kept


@pytest.mark.parametrize("at_once", [1, 2, 4])
def test_most_kept_finds_what_counting_every_number_of_shots_finds(at_once):
    budget = 1000
    for shots in range(1, 30):
        for fitting in range(-1, shots):  # the most shots that fit (-1: not even the messages alone)
            tokens = [100 + 10 * k if k <= fitting else budget + 1 + k for k in range(shots)]  # growing with k
            rounds: list[list[int]] = []

            def counted(ks: list[int], tokens=tokens, rounds=rounds) -> list[int]:
                rounds.append(ks)
                return [tokens[k] for k in ks]

            kept, counts = most_kept(shots, counted, budget, at_once)
            assert kept == (fitting if fitting >= 0 else None), (at_once, shots, fitting)
            assert all(len(r) <= at_once for r in rounds) and len(rounds) <= math.ceil(math.log(shots + 1, at_once + 1)) + 1
            assert kept is not None or counts[0] == tokens[0]  # the messages alone counted: the 400's number
