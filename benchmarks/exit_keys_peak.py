"""What a job's exit holds in memory to purge its forget-at-exit note (`Admin.forget_at_exit`: the FORGET_AT_EXIT
file, 32 bytes, a `text_key`, per text of every user deleted while the job ran): the note read in chunks of
EXIT_KEYS_PER_READ keys, each purged before the next is read (`Admin._forget_keys_of`, session ops62), against the note
read whole and purged in one call (before ops62).

    python -m benchmarks.exit_keys_peak --json
    python -m benchmarks.exit_keys_peak --keys 1000000

The note holds `--keys` random keys. Both ways call the real `OwedVectors.forget` (its keys made distinct in one dict,
as the caches' purge takes them); the caches it would clean are not there (PLURALIGN_CACHE_DIR and HOME point at an
empty temp folder), so what is measured is the keys held, not SQLite's work. Admin's other parts are not built: the
method runs on an Admin holding only a runtime with `owed_vectors`. Prints each way's Python peak (tracemalloc, MiB)
and the keys it passed on; `--json`: one object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

KEY = 32  # bytes of a text_key


def whole(admin, path: Path) -> None:
    """The note's purge before session ops62: every key read, then one `forget` of them all."""
    data = path.read_bytes()
    admin.rt.owed_vectors.forget([data[i : i + KEY] for i in range(0, len(data) // KEY * KEY, KEY)])


def chunks(admin, path: Path) -> None:
    admin._forget_keys_of(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys in the job's note")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PLURALIGN_CACHE_DIR"] = os.environ["HOME"] = tmp  # no cache there: forget cleans nothing
        from service.admin.services import EXIT_KEYS_PER_READ, Admin
        from service.users.vectors import OwedVectors

        owed = OwedVectors(Path(tmp) / "vectors-owed")
        passed: list[int] = []
        forget = owed.forget
        owed.forget = lambda keys: (passed.append(len(keys)), forget(keys))[1]
        admin = Admin.__new__(Admin)  # only what `_forget_keys_of` reads
        admin.rt = SimpleNamespace(owed_vectors=owed)
        path = Path(tmp) / "job.keys"
        path.write_bytes(os.urandom(KEY * args.keys))
        out: dict = {"keys": args.keys, "note_mib": round(KEY * args.keys / 2**20, 1), "keys_per_read": EXIT_KEYS_PER_READ}
        for name, way in (("whole", whole), ("chunks", chunks)):
            passed.clear()
            tracemalloc.start()
            way(admin, path)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert sum(passed) == args.keys, (name, sum(passed))
            out[name] = {"python_peak_mib": round(peak / 2**20, 1), "forget_calls": len(passed)}
        out["ratio"] = round(out["whole"]["python_peak_mib"] / out["chunks"]["python_peak_mib"], 1)
    if args.json:
        print(json.dumps(out))
        return
    for name in ("whole", "chunks"):
        print(f"{args.keys} keys ({out['note_mib']} MiB note), {name}: Python peak {out[name]['python_peak_mib']} MiB "
              f"over {out[name]['forget_calls']} forget call(s)")
    print(f"whole / chunks = {out['ratio']}")


if __name__ == "__main__":
    main()
