"""Idle connections held against `pluralign serve`: the server's file descriptors, and whether it still answers.

    python benchmarks/connections.py --open 19000                    # the defaults
    python benchmarks/connections.py --open 5000 --step 500 --server-fd-limit 4096   # past the server's limit

Loopback only: a tiny random generator, an untrained population model (no persona data), a fresh temp data
folder. The script opens `--open` TCP connections to the server in steps of `--step`, sending nothing (each
within the read deadline, PLURALIGN_REQUEST_READ_TIMEOUT_S), and after each step counts the server process's
open files (/proc/PID/fd) and times a GET /health on a new connection (5 s at most). A connection the server
answered and closed at once (over its connection limit) is counted apart. The last line is the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start(folder: Path, port: int, env: dict, fd_limit: int | None = None) -> subprocess.Popen:
    from tests.service.tiny import save_tiny_generator

    generator = save_tiny_generator(folder / "tiny-llama")
    full = {**os.environ, "PLURALIGN_DATA_DIR": str(folder / "data"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "PLURALIGN_GENERATOR": str(generator), "PLURALIGN_PAL_DIR": str(folder / "pal"),
            "PLURALIGN_SHARED_DATA": str(folder / "no-persona-data"), "PLURALIGN_CACHE_DIR": str(folder / "cache"),
            "PLURALIGN_GENERATION_PROCESS": "false", **env}
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=open(folder / "serve.log", "wb"),
                            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))) if fd_limit else None)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    raise SystemExit("serve did not start:\n" + (folder / "serve.log").read_text()[-3000:])


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> str:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files"))
    return " / ".join(line.split()[3:5])  # soft / hard


def health_s(url: str) -> tuple[float, str]:
    started = time.monotonic()
    try:
        status = str(httpx.get(url + "/health", timeout=5).status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return time.monotonic() - started, status


def answered_and_closed(sockets: list[socket.socket]) -> int:
    """How many of `sockets` the server has answered or closed (readable at once)."""
    n = 0
    for s in sockets:
        s.setblocking(False)
        try:
            n += s.recv(1, socket.MSG_PEEK) is not None
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--open", type=int, default=19000, help="connections to open in all")
    p.add_argument("--step", type=int, default=2000)
    p.add_argument("--port", type=int, default=8791)
    p.add_argument("--server-fd-limit", type=int, default=None, help="the server's RLIMIT_NOFILE (default: this shell's)")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this script's own sockets
    folder = Path(tempfile.mkdtemp(prefix="pluralign-conns-"))
    proc = start(folder, args.port, dict(e.split("=", 1) for e in args.env), args.server_fd_limit)
    url = f"http://127.0.0.1:{args.port}"
    rows, held = [], []
    try:
        print(f"server pid {proc.pid}, open files limit (soft / hard) {fd_limit(proc.pid)}; {' '.join(args.env) or 'default settings'}")
        rows.append({"held": 0, "server_fds": fds(proc.pid), "health_s": round(health_s(url)[0], 3), "health": "200", "closed_by_server": 0})
        print(rows[-1], flush=True)
        while len(held) < args.open:
            for _ in range(min(args.step, args.open - len(held))):
                try:
                    held.append(socket.create_connection(("127.0.0.1", args.port), timeout=5))
                except OSError as exc:
                    print(f"connect {len(held) + 1} failed: {exc}")
                    break
            else:
                time.sleep(0.5)  # the server accepts what is queued
                seconds, status = health_s(url)
                rows.append({"held": len(held), "server_fds": fds(proc.pid), "health_s": round(seconds, 3), "health": status,
                             "closed_by_server": answered_and_closed(held)})
                print(rows[-1], flush=True)
                continue
            break
        for s in held:
            s.close()
        time.sleep(1)
        seconds, status = health_s(url)
        rows.append({"held": 0, "server_fds": fds(proc.pid), "health_s": round(seconds, 3), "health": status, "closed_by_server": 0})
        print("all closed:", rows[-1])
        log = (folder / "serve.log").read_text()
        print("server log, last lines:\n" + "\n".join(log.splitlines()[-5:]))
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
