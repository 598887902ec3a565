"""What exports held open by clients that stop reading cost the server: RSS, file descriptors, threads.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.export_held --rows 40000 --clients 30
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.export_held --per-tenant 30 --total 30 --send-timeout 3600  # no bound

Builds the tiny service the tests use (real LanceDB in a temp folder, uvicorn on loopback, in this process), writes
`--rows` short synthetic comparisons of one user straight into the store, then opens `--clients` connections of one
tenant that each GET `/v1/users/{id}/export` (`Accept-Encoding: identity`), read the status line and stop reading
(keeping the connection). Prints the process's RSS, open file descriptors and threads before, while they are held
(2 s after the last one), after `--send-timeout` seconds and a margin (the answers the deadline cut), and after the
clients close, for each of `--waves` rounds; and how many were answered 200 and 429. RSS is
what glibc keeps: memory given back shows as a later round not growing it, not as RSS falling.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def usage() -> str:
    rss = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return f"rss={rss / 1024:.0f} MB fds={len(os.listdir('/proc/self/fd'))} threads={threading.active_count()}/{len(os.listdir('/proc/self/task'))}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=40_000, help="comparisons of the exported user")
    p.add_argument("--clients", type=int, default=30, help="exports opened and left unread")
    p.add_argument("--per-tenant", type=int, default=4, help="setting max_exports_per_tenant")
    p.add_argument("--total", type=int, default=16, help="setting max_exports")
    p.add_argument("--send-timeout", type=float, default=10.0, help="setting export_send_timeout_s")
    p.add_argument("--waves", type=int, default=2, help="rounds of `--clients` held exports, one after another")
    args = p.parse_args()

    from benchmarks.serving import tiny_service_of_alice

    server, svc = tiny_service_of_alice("pluralign-export-held-", args.rows, max_exports_per_tenant=args.per_tenant,
                                        max_exports=args.total, export_send_timeout_s=args.send_timeout, access_log=False)
    request = (f"GET /v1/users/alice/export HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.keys['acme']}\r\n"
               "Accept-Encoding: identity\r\n\r\n").encode()
    with server:
        time.sleep(1)
        print("before:", usage(), flush=True)
        for wave in range(args.waves):
            held, statuses = [], []
            for _ in range(args.clients):
                s = socket.create_connection(("127.0.0.1", svc.server.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(request)
                statuses.append(s.recv(12)[-3:].decode())
                held.append(s)
            time.sleep(2)
            print(f"wave {wave} held: {usage()} answered={ {code: statuses.count(code) for code in sorted(set(statuses))} } "
                  f"in_flight={svc.runtime.exports.in_flight}", flush=True)
            if args.send_timeout < 60:
                time.sleep(args.send_timeout + 3)
                print(f"wave {wave} after the send timeout: {usage()} in_flight={svc.runtime.exports.in_flight}", flush=True)
            for s in held:
                s.close()
            time.sleep(3)
            print(f"wave {wave} closed: {usage()} in_flight={svc.runtime.exports.in_flight}", flush=True)

if __name__ == "__main__":
    main()
