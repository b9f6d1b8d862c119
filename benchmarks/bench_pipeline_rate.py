"""Training steps per second inside ``tmrl run`` against the bare SAC update, measured alternately in one process.

- bare: ``SacAgent.train`` in a loop over 32 batches drawn beforehand (pendulum shapes and ranges, batch 256, MLP
  256x256), at every thread count the trainer may use; the best count is the bare rate.
- in run: ``tmrl run --env pendulum --algo sac`` (:func:`tmrl_core.pipeline.run_local`, a worker process, the
  defaults), ``--env-steps`` env steps; its rate is training steps over the seconds the trainer spent sampling and
  training (its waits for the worker's samples excluded, as in the lockstep defaults the trainer waits by design).
  The first complete round is left out (threads being tuned, allocator warm-up).
- before (``--before``): the same run with the previous placement, one torch thread and denormals not flushed
  (``--set training.threads=1 --set training.flush_denormal=false``).

Blocks alternate (bare, run, [before,] bare, run, ...) so that a change in machine load hits every side.

    python benchmarks/bench_pipeline_rate.py [--repeats 2] [--env-steps 1400] [--before] [--bare-seconds 6]

Prints every block, then the medians and the ratio in-run / bare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def bare_rate(seconds: float, threads: list[int]) -> dict[int, float]:
    """Updates/s of ``SacAgent.train`` on a fixed pendulum-shaped batch, per thread count."""
    import torch
    from gymnasium import spaces
    from tmrl_sac.agent import SacAgent

    torch.set_flush_denormal(True)
    obs_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    act_space = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
    n = 256
    gen = torch.Generator().manual_seed(0)

    def draw() -> tuple[torch.Tensor, ...]:  # pendulum-like: bounded observations and actions, rewards in [-16, 0]
        o = torch.rand(n, 3, generator=gen) * 2 - 1
        return (o, torch.rand(n, 1, generator=gen) * 4 - 2, -16 * torch.rand(n, generator=gen), o.roll(1, 0),
                torch.zeros(n), torch.zeros(n))  # fmt: skip

    # a pool of batches, drawn beforehand: one batch repeated trains measurably slower than changing batches (the
    # networks overfit it), which would flatter the in-run figure
    pool = [draw() for _ in range(32)]
    agent = SacAgent(obs_space, act_space, "cpu")
    rates = {}
    for t in threads:
        torch.set_num_threads(t)
        for k in range(5):
            agent.train(pool[k])
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(threads):
            agent.train(pool[steps % len(pool)])
            steps += 1
        rates[t] = steps / (time.perf_counter() - start)
    return rates


def run_rate(env_steps: int, seed: int, sets: list[str]) -> dict[str, float]:
    """In-run training rate of one ``tmrl run --env pendulum --algo sac`` (in this process, like the CLI)."""
    os.environ["TMRL_HOME"] = tempfile.mkdtemp(prefix="tmrl-bench-rate-")
    from tmrl_core.pipeline import prepare, run_local
    from tmrl_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    p = prepare(
        "pendulum",
        "sac",
        overrides={"run": {"name": f"rate-{seed}", "seed": seed}, "training": {"max_env_steps": env_steps}},
        sets=sets,
    )
    t0 = time.perf_counter()
    result = run_local(p)
    wall = time.perf_counter() - t0
    history = result.history
    # the first complete round with training (threads being tuned, allocator warm-up) is left out
    kept = [i for i, r in enumerate(history) if r["complete"] and r["training_steps"] > 0][1:]
    if not kept:
        raise SystemExit("no complete round after the first: raise --env-steps")
    rounds = [history[i] for i in kept]
    steps = sum(history[i]["training_steps"] - (history[i - 1]["training_steps"] if i else 0) for i in kept)
    busy = sum(r["training_time"] + r["sampling_time"] for r in rounds)
    idle = sum(r["idle_time"] for r in rounds)
    span = sum(r["round_time"] for r in rounds)
    return {
        "rate": steps / busy,
        "rate_wall": steps / span,
        "idle_share": idle / span,
        "threads": float(rounds[-1].get("torch_threads", 0)),
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--env-steps", type=int, default=1400)
    parser.add_argument("--bare-seconds", type=float, default=6.0)
    parser.add_argument("--before", action="store_true", help="also run with 1 thread and denormals kept")
    args = parser.parse_args(argv)

    from tmrl_core.placement import available_cpus, plan_trainer_threads

    placement = plan_trainer_threads(available_cpus(), 1, lockstep=True, realtime=False)
    tuner = placement.tuner()
    threads = tuner.candidates if tuner is not None else [placement.threads]
    print(f"cpus {available_cpus()}, candidate threads {threads}, load average {os.getloadavg()[0]:.1f}", flush=True)
    bare: list[float] = []
    runs: dict[str, list[dict[str, float]]] = {"tmrl run": [], "before": []}
    variants = {"tmrl run": []}
    if args.before:
        variants["before"] = ["training.threads=1", "training.flush_denormal=false"]
    for k in range(args.repeats):
        rates = bare_rate(args.bare_seconds, threads)
        best = max(rates.values())
        bare.append(best)
        print(f"bare  {' '.join(f'{t} thr {r:6.1f}/s' for t, r in rates.items())}  best {best:.1f}", flush=True)
        for name, sets in variants.items():
            r = run_rate(args.env_steps, k, sets)
            runs[name].append(r)
            print(
                f"{name:8s} {r['rate']:6.1f} training steps/s while training ({r['rate_wall']:.1f}/s with waits for "
                f"samples, {100 * r['idle_share']:.0f}% waiting), threads {r['threads']:.0f}, {r['wall']:.0f} s",
                flush=True,
            )
    rates = bare_rate(args.bare_seconds, threads)
    bare.append(max(rates.values()))
    print(f"bare  {' '.join(f'{t} thr {r:6.1f}/s' for t, r in rates.items())}  best {bare[-1]:.1f}", flush=True)

    b = statistics.median(bare)
    print(f"\nmedians: bare {b:.1f} updates/s")
    for name, rs in runs.items():
        if rs:
            m = statistics.median(r["rate"] for r in rs)
            w = statistics.median(r["rate_wall"] for r in rs)
            print(f"  {name:8s} {m:6.1f} training steps/s = {m / b:.2f}x bare ({w:.1f}/s counting waits: {w / b:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
