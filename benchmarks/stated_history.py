"""What a long stated-preference history costs a user's reads (issue 16's review, fault 1).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.stated_history --changes 5000 --json

Builds the tiny service the tests use (a random tiny Llama, MiniLM, a tiny PAL on persona data;
real LanceDB in a temp folder, served by uvicorn on loopback), gives two users the same 5
comparisons, then lets one of them change a stated preference `--changes` times (the service's
own `set_stated`, the PATCH route's body, in process to save the HTTP round trips) and the other
once. Prints, for each user: the bytes of the stored `stated` column of their users row, the bytes
and median latency of GET .../stated-preferences and GET /v1/users/{id}, the median latency of a
chat request (n=2, 12 new tokens), and the size of `format=all` export's user line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median_ms(fn, n: int) -> tuple[float, object]:
    out, last = [], None
    for _ in range(n):
        start = time.perf_counter()
        last = fn()
        out.append((time.perf_counter() - start) * 1000)
    return statistics.median(out), last


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=5000, help="stated-preference changes of the long-history user")
    p.add_argument("--reads", type=int, default=30, help="timed reads per figure")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch

    from pluralign.embed.encoders import SentenceEncoder
    from service.users import services
    from tests.service.tiny import save_tiny_generator, start_service, train_tiny_pal

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="pluralign-stated-"))
    encoder = SentenceEncoder()
    gen = save_tiny_generator(work / "gen")
    pal = train_tiny_pal(work / "pal", encoder)
    server, svc = start_service(work / "data", gen, pal, encoder)
    rt = svc.runtime
    figures: dict[str, dict] = {}
    with server, svc.client() as c:
        for user in ("short_history", "long_history"):
            for i in range(5):
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tip {i}?",
                                                 "chosen": "Short.", "rejected": "A much longer answer with many words " * 3})
                assert r.status_code == 201, r.text
        rt.wait_for_background()
        start = time.perf_counter()
        n = args.changes
        for i in range(n):
            services.set_stated(rt, "acme", "long_history", {"length": ("more", "less")[i % 2]})
        build_s = time.perf_counter() - start
        services.set_stated(rt, "acme", "short_history", {"length": "less"})
        for user in ("short_history", "long_history"):
            record = rt.store.get_user("acme", user)
            stated_ms, stated = median_ms(lambda u=user: c.get(f"/v1/users/{u}/stated-preferences"), args.reads)
            profile_ms, prof = median_ms(lambda u=user: c.get(f"/v1/users/{u}"), args.reads)
            row_ms, _ = median_ms(lambda u=user: services.user_weights(rt, "acme", u), args.reads)
            chat = lambda u=user: c.post("/v1/chat/completions", json={  # noqa: E731
                "model": "pluralign", "user": u, "n": 2, "seed": 1, "messages": [{"role": "user", "content": "Any tips?"}]})
            chat_ms, out = median_ms(chat, max(5, args.reads // 3))
            assert out.status_code == 200, out.text
            export = c.get(f"/v1/users/{user}/export")
            user_line = next(x for x in export.text.splitlines() if json.loads(x)["type"] == "user")
            figures[user] = {
                "changes": len(json.loads(user_line)["stated"]["history"]),
                "row_stated_bytes": len(record.stated or b""),
                "stated_get_bytes": len(stated.content), "stated_get_ms": round(stated_ms, 2),
                "profile_bytes": len(prof.content), "profile_ms": round(profile_ms, 2),
                "user_weights_ms": round(row_ms, 2), "chat_ms": round(chat_ms, 2),
                "export_user_line_bytes": len(user_line),
            }
        deleted = c.delete("/v1/users/long_history")
        assert deleted.status_code == 200, deleted.text
        figures["after_delete"] = {
            "stated_version": c.get("/v1/users/long_history/stated-preferences").json()["version"],
            "export_status": c.get("/v1/users/long_history/export").status_code,
            "store_rows": rt.store.stats(),
        }
    figures["build_s"] = round(build_s, 1)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, values in figures.items():
            print(name, values)


if __name__ == "__main__":
    main()
