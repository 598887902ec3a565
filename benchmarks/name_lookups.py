"""What bounding the lookup of a server's name costs, and which library could bound it (session stream55).

    python benchmarks/name_lookups.py --lookups 300 --hang-s 3 --bound-s 0.5

Prints, per way of looking up `localhost` (port 80, TCP): the microseconds a lookup takes, averaged over `--lookups`
(after one warm-up): `socket.getaddrinfo` straight (unbounded), on a daemon thread of its own waited for with a bound
(`pluralign.bounded_http`'s way), and `anyio.getaddrinfo` under `anyio.fail_after` in an `anyio.run` (the way a sync
caller would use anyio). Then, for a lookup that hangs `--hang-s` seconds (`socket.getaddrinfo` made to hang for one
name, as a DNS server that never answers), the seconds until a caller bounded by `--bound-s` is free: with anyio it
is not until the lookup ends, since `anyio.run` waits for its executor's thread as it ends.
"""

from __future__ import annotations

import argparse
import socket
import time

import anyio
import httpcore2

from pluralign.bounded_http import _LOOKUPS

HUNG = "lookup-hangs.test"


def straight() -> None:
    socket.getaddrinfo("localhost", 80, 0, socket.SOCK_STREAM)


def on_a_thread(host: str = "localhost", bound_s: float = 5.0) -> None:
    """`pluralign.bounded_http`'s own lookup (`_Lookups`: a daemon thread per name under way, waited for with the bound)."""
    _LOOKUPS.addresses(host, 80, bound_s)


def with_anyio(host: str = "localhost", bound_s: float = 5.0) -> None:
    async def main() -> None:
        with anyio.fail_after(bound_s):
            await anyio.getaddrinfo(host, 80, type=socket.SOCK_STREAM)

    anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--hang-s", type=float, default=3.0)
    parser.add_argument("--bound-s", type=float, default=0.5)
    args = parser.parse_args()
    for name, lookup in (("straight", straight), ("daemon thread", on_a_thread), ("anyio.run + fail_after", with_anyio)):
        lookup()
        began = time.perf_counter()
        for _ in range(args.lookups):
            lookup()
        print(f"{name}: {(time.perf_counter() - began) / args.lookups * 1e6:.0f} us a lookup of localhost")
    real = socket.getaddrinfo

    def hanging(host, *rest, **options):
        if host in (HUNG, HUNG.encode()):  # anyio passes the name IDNA-encoded
            time.sleep(args.hang_s)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *rest, **options)

    socket.getaddrinfo = hanging
    for name, lookup in (("daemon thread", on_a_thread), ("anyio.run + fail_after", with_anyio)):
        began = time.monotonic()
        try:
            lookup(HUNG, args.bound_s)
        except (TimeoutError, OSError, httpcore2.ConnectTimeout, httpcore2.ConnectError):
            pass
        print(f"{name}: a lookup hung {args.hang_s:g} s, bounded by {args.bound_s:g} s, freed its caller after "
              f"{time.monotonic() - began:.2f} s")


if __name__ == "__main__":
    main()
