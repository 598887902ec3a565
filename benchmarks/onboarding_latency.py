"""What `"target": "population"` costs an onboarding request (`POST /v1/users/{id}/next-comparison`).

    python -m benchmarks.onboarding_latency                    # 128 known users, 200 pairs, 50 comparisons of the user's
    python -m benchmarks.onboarding_latency --users 32 --json

Times the service's own steps on the bootstrap shape (PAL variant a, K=4, latent 64; the D
coefficients it prints), against a real LanceDB store in a temp folder that holds `--users` fitted users of
one tenant (each a stored user-model state, as refits write them):

- `read`: `service.users.services.population_particles`, the store query (`Store.fitted_users`) and
  decoding and checking each user's state;
- `choose`: each known user's predictive on the `--pairs` candidate pairs and on the asking user's
  `--history` comparisons, their posterior weights and the information of every pair
  (`particle_predictive`, `particle_posterior`, `group_information`);
- `bald`: what the default criterion computes for the same pairs (`pair_information`), for scale.

The candidates' coordinates, the pool's encoding and the user's own refit are the same for both
criteria and are not counted. Prints the median and p90 over `--repeats` requests, in ms.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from types import SimpleNamespace

import msgspec
import numpy as np

from benchmarks.user_refit import ANSWERS, service_shaped_user_model


def main(argv: list[str] | None = None) -> None:
    from pluralign.store import Store, UserRecord
    from pluralign.user.active import group_information, pair_information, particle_posterior
    from service.users.services import population_particles

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=128, help="fitted users of the tenant")
    parser.add_argument("--pairs", type=int, default=200, help="candidate pairs (the stored sample holds up to 200)")
    parser.add_argument("--history", type=int, default=50, help="the asking user's own comparisons")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("users", "pairs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.history < 0:
        parser.error("--history must be >= 0")

    um = service_shaped_user_model()
    rng = np.random.default_rng(0)
    p50, c50, r50 = (rng.normal(size=(50, 384)).astype(np.float32) for _ in range(3))
    logits, state = um.fit_user(p50, c50, r50, [ANSWERS[i % 4] for i in range(50)], [ANSWERS[(i + 1) % 4] for i in range(50)], np.zeros(4))
    rewards = SimpleNamespace(user_model=um, version="bench")
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder, "bench-encoder", 384)
        for u in range(args.users):  # each user a little apart from the others
            mean = (state.mean_array() + rng.normal(scale=0.5, size=um.dim)).tolist()
            # a row as a refit on answers writes it: PAL's logits set (`Store.fitted_users(answered=True)` reads only
            # those since issue 16; without them no user was read and the choice step raised on an empty population)
            store.put_user(UserRecord(tenant="t", user_id=f"u{u}", created_at=1.0, updated_at=1.0, pal_version="bench",
                                      pal_logits=[float(x) for x in logits], n_preferences=50,
                                      user_model=msgspec.structs.replace(state, mean=mean).encode()))
        rt = SimpleNamespace(store=store)
        diff = rng.normal(size=(args.pairs, um.dim))  # candidate pairs' coordinate differences
        history = rng.normal(size=(args.history, um.dim))  # the asking user's comparisons, chosen minus rejected
        times: dict[str, list[float]] = {"read": [], "choose": [], "bald": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            particles = population_particles(rt, "t", "asking", rewards)
            t1 = time.perf_counter()
            if len(particles) != args.users:  # before the choice, which cannot weigh an empty population
                raise SystemExit(f"read {len(particles)} of {args.users} stored users as the tenant's population")
            bits = group_information(particles.predictive(diff), particle_posterior(particles.predictive(history)), particles.groups)
            t2 = time.perf_counter()
            pair_information(diff, state.mean_array(), state.cov_array())
            t3 = time.perf_counter()
            for key, ms in (("read", t1 - t0), ("choose", t2 - t1), ("bald", t3 - t2)):
                times[key].append(ms * 1000)
        if not np.isfinite(bits).all():
            raise SystemExit("the information is not finite")
    out = {key: {"median_ms": round(float(np.median(v)), 2), "p90_ms": round(float(np.percentile(v, 90)), 2)} for key, v in times.items()}
    out["setting"] = {"users": args.users, "pairs": args.pairs, "history": args.history, "repeats": args.repeats, "dim": um.dim}
    print(f"population onboarding: {args.users} known users, {args.pairs} pairs, {args.history} comparisons of the user's, D = {um.dim}")
    for key in ("read", "choose", "bald"):
        print(f"  {key:6s} median {out[key]['median_ms']:.2f} ms, p90 {out[key]['p90_ms']:.2f} ms")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
