"""How long an encoder call holds its first turn for counting its texts' word pieces: `--texts` texts of
`--chars` characters (feedback texts may have 20,000; the feedback worker embeds 1,024 a call), the model's
slices skipped (zeros), so the turns held measure the count alone. Prints one JSON line per round.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/encoder_count_turn.py
    python benchmarks/encoder_count_turn.py --code /tmp/before   # another checkout (git archive REV | tar -x -C /tmp/before)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path

WORDS = "people weigh values trade offs differently so a reward that fits one user misleads another".split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout whose pluralign runs")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code))
    import numpy as np

    from pluralign.embed.encoders import SentenceEncoder
    from pluralign.turns import Turns

    encoder = SentenceEncoder()
    encoder._run = lambda texts: np.zeros((len(texts), encoder.dim), np.float32)  # the count alone
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(args.chars // 4))[: args.chars] for _ in range(args.texts)]
    held, turn = [], Turns.turn

    @contextmanager
    def timed(self, lane):
        with turn(self, lane):
            start = time.perf_counter()
            yield
            held.append(time.perf_counter() - start)

    Turns.turn = timed
    for _ in range(args.rounds):
        held.clear()
        start = time.perf_counter()
        encoder.encode(texts)
        print(json.dumps({"code": str(args.code), "call_s": round(time.perf_counter() - start, 2), "turns": len(held),
                          "longest_turn_s": round(max(held), 3)}))


if __name__ == "__main__":
    main()
