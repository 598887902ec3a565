"""Many chats' prompt counts at once on a remote generation server's `POST /tokenize`, checkouts side by side.

    python benchmarks/prompt_counts_at_once.py                                     # this checkout alone
    git archive 869e176a | tar -x -C /tmp/before                                   # an earlier version to compare
    python benchmarks/prompt_counts_at_once.py --checkout /tmp/before --checkout . --chats 10 40 80 --rounds 2

The server is `python -S -m tests.vllm_like 0` of this checkout, in a process of its own (as a generation server is:
one served in the measuring process takes its Python's turns), answering each count at once. For each round, each
checkout in turn runs in a process of its own: one `RemoteGenerator` (`RemotePolicy(timeout_s=--timeout-s,
max_retries=0)`: at 1 s, the counts' floor bound of 1 s), its first count asked alone, then for each `--chats` N, N
threads at once, each one chat: `prompt_counter().each` of `--each` conversations. A row: the seconds from the first
thread's start to the last one's end, and how many chats were not counted (PromptNotCounted: the chat's 503). The last
line is the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(root: str, url: str, chats: list[int], each: int, timeout_s: float) -> list[dict]:
    """In a child process: `root`'s RemoteGenerator on `url`, each number of `chats` at once."""
    sys.path.insert(0, root)
    from pluralign.policy.remote import RemoteGenerator, RemotePolicy

    remote = RemoteGenerator(url, "base", policy=RemotePolicy(timeout_s=timeout_s, max_retries=0))
    remote.prompt_tokens([{"role": "user", "content": "hello"}])
    rows = []
    for n in chats:
        failed: list[Exception] = []

        def chat(i: int, failed: list[Exception]) -> None:
            try:
                remote.prompt_counter().each([[{"role": "user", "content": f"chat {i} " + "y" * k}] for k in range(each)])
            except Exception as exc:
                failed.append(exc)

        threads = [threading.Thread(target=chat, args=(i, failed)) for i in range(n)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rows.append({"chats": n, "seconds": round(time.monotonic() - began, 3), "not_counted": len(failed)})
    return rows


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    out = open(log, "wb")  # noqa: SIM115 (the server's output, for as long as it runs)
    proc = subprocess.Popen([sys.executable, "-S", "-m", "tests.vllm_like", "0"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while (said := re.search(r"listening on port (\d+)", log.read_text())) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the stub server did not start:\n{log.read_text()}")
        time.sleep(0.01)
    return proc, f"http://127.0.0.1:{said[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", help="a checkout's root (repeat to compare; default: this one)")
    parser.add_argument("--chats", type=int, nargs="+", default=[10, 20, 40, 80], help="chats at once, in turn")
    parser.add_argument("--each", type=int, default=6, help="counts a chat asks (one `each` call)")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="the generator's timeout_s (1: the 1 s floor bound)")
    parser.add_argument("--rounds", type=int, default=1, help="each checkout measured this many times, interleaved")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.chats, args.each, args.timeout_s)))
        return
    checkouts = [str(Path(c).resolve()) for c in (args.checkout or [ROOT])]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"prompt_counts_at_once.{os.getpid()}.log"
    server, url = start_server(log)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    results = []
    try:
        print(f"load average {os.getloadavg()[0]:.1f} at the start; {os.cpu_count()} CPUs")
        for round_ in range(args.rounds):
            for checkout in checkouts:
                child = [sys.executable, __file__, "--child", checkout, url, "--chats", *map(str, args.chats), "--each",
                         str(args.each), "--timeout-s", str(args.timeout_s)]
                done = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
                for row in json.loads(done.stdout.strip().splitlines()[-1]):
                    results.append({"checkout": checkout, "round": round_, **row})
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        server.kill()
        server.wait()
        log.unlink(missing_ok=True)
    print("| chats at once | " + " | ".join(checkouts) + " |")
    print("|---" * (len(checkouts) + 1) + "|")
    for n in args.chats:
        cells = []
        for checkout in checkouts:
            rows = [r for r in results if r["checkout"] == checkout and r["chats"] == n]
            cells.append("; ".join(f"{r['seconds']:.2f} s ({r['not_counted']} not counted)" for r in rows))
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
