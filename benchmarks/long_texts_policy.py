"""Time to tokenize a batch holding a few long texts where only their start or end is kept, before (each text
tokenized whole, then cut) against after (cut first to the start or end holding the tokens kept:
`pluralign.policy.chat_template.cut`, `pluralign.embed.base.window_starts`), side by side in one process, rounds
interleaved; every result of both sides is checked equal. Prints one JSON line each:

- `maxmin`: `tokenize_pairs` of 64 rows, `--long` of them holding a prompt, chosen and rejected answer of `--chars`
  characters (SmolLM2's tokenizer, `max_length` 160);
- `fspo`: `pair_batch` of 16 one-shot episodes of those rows (prompts' last 1,024 tokens, answers' first 96);
- `remote`: `RemoteEncoder.encode` of 32 texts of `--chars` characters, 8 a request, on a loopback server that only
  parses the request (the wire and the parse: what a far side pays before its model), sent whole (no `counter`) or
  cut (MiniLM's tokenizer as `counter`); with the request bytes of each.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.long_texts_policy
    python -m benchmarks.long_texts_policy --chars 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import http.server
import json
import resource
import statistics
import threading
import time
from contextlib import contextmanager, nullcontext

SENTENCE = "The committee met on Tuesday; its members, weary, argued until dawn about the budget and its trade-offs. "


@contextmanager
def tokenizing_whole():
    """The policy's token ids as before: every text tokenized whole, then its ids cut."""
    from pluralign.policy import chat_template

    cut = chat_template.cut
    chat_template.cut = lambda tokenizer, text, first=None, last=None: text
    try:
        yield
    finally:
        chat_template.cut = cut


def rows(chars: int, long: int):
    from pluralign.data.record import Preference

    huge = (SENTENCE * (chars // len(SENTENCE) + 1))[:chars]
    every = 64 // max(long, 1)
    return [Preference(user_id=f"u{i % 3}", prompt=(huge if i % every == 0 and long else "Plans for the weekend?") + f" {i}",
                       chosen=(huge if i % every == 0 and long else "A short walk.") + " a",
                       rejected="No. " + (huge if i % every == 0 and long else "b")) for i in range(64)]


def policy_case(name: str, tokenizer, records, rounds: int) -> dict:
    import torch

    from pluralign.policy.fspo import FSPOConfig, episode, pair_batch
    from pluralign.policy.maxmin import tokenize_pairs

    def run():
        if name == "maxmin":
            return tokenize_pairs(records, tokenizer, max_length=160).chosen_ids
        episodes = [episode([records[(i + 1) % 64]], records[i]) for i in range(0, 64, 4)]
        return pair_batch(tokenizer, episodes, FSPOConfig(shots=1)).input_ids

    times, out = {"before": [], "after": []}, {}
    for _ in range(rounds):
        for side in ("before", "after"):
            with tokenizing_whole() if side == "before" else nullcontext():
                start = time.perf_counter()
                out[side] = run()
                times[side].append(time.perf_counter() - start)
        assert torch.equal(out["before"], out["after"]), name
    return {"case": name, "before_s": round(statistics.median(times["before"]), 3),
            "after_s": round(statistics.median(times["after"]), 3), "batch": list(out["after"].shape)}


class Parsing(http.server.ThreadingHTTPServer):
    """`/v1/embeddings` on loopback: parses the request, notes its bytes, answers unit vectors of 384 numbers."""

    def __init__(self):
        self.sent = 0
        super().__init__(("127.0.0.1", 0), _Parse)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


class _Parse(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.sent += len(body)
        texts = json.loads(body)["input"]
        data = [{"object": "embedding", "index": i, "embedding": [1.0] + [0.0] * 383} for i in range(len(texts))]
        answer = json.dumps({"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self):  # noqa: N802 (no /info: not TEI)
        self.send_error(404)

    def log_message(self, *args):
        pass


def remote_case(chars: int, rounds: int) -> dict:
    from pluralign.embed.models import MINILM_ID, minilm_tokenizer
    from pluralign.embed.remote import RemoteEncoder

    server = Parsing()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    sides = {"before": RemoteEncoder(url, MINILM_ID, batch_size=8, max_length=256, timeout=300),
             "after": RemoteEncoder(url, MINILM_ID, batch_size=8, max_length=256, timeout=300, counter=minilm_tokenizer())}
    texts = [f"{i} " + (SENTENCE * (chars // len(SENTENCE) + 1))[:chars] for i in range(32)]
    times, sent = {"before": [], "after": []}, {}
    for _ in range(rounds):
        for side, encoder in sides.items():
            server.sent, start = 0, time.perf_counter()
            encoder.encode(texts)
            times[side].append(time.perf_counter() - start)
            sent[side] = server.sent
    for encoder in sides.values():
        encoder.close()
    server.shutdown()
    server.server_close()
    return {"case": "remote", "before_s": round(statistics.median(times["before"]), 3),
            "after_s": round(statistics.median(times["after"]), 3), "before_bytes": sent["before"], "after_bytes": sent["after"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=1_000_000, help="characters of each long text")
    parser.add_argument("--long", type=int, default=4, help="rows of the 64 holding long texts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from pluralign.embed.models import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    records = rows(args.chars, args.long)
    for name in ("maxmin", "fspo"):
        print(json.dumps(policy_case(name, tokenizer, records, args.rounds)), flush=True)
    print(json.dumps(remote_case(args.chars, args.rounds)), flush=True)
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
