"""The update-to-data ratio a real-time run reaches when the trainer cannot keep up, and what
``training.when_behind`` changes: ``tmrl run --env rc-drone`` (rtgym, 20 time steps per second, target 2 training
steps per env step) with SAC (and REDQ-SAC with ``--algos sac redqsac``, much longer on a CPU), each with
``when_behind=continue`` (the env keeps its pace, the ratio falls) and ``wait`` (workers wait between episodes, the
ratio holds, env steps per second fall).

Each run is ``tmrl run`` in this process (:func:`tmrl_core.pipeline.run_local`, one worker process, the rc-drone
defaults, but rounds of 20 training steps and training from 100 samples) until ``--env-steps`` env steps. Printed
per run: the ratio reached over the rounds after training started (training steps / env steps received in them),
the worst round's, and env steps and training steps per second of wall time.

    python benchmarks/bench_realtime_utd.py [--env-steps 600] [--algos sac] [--modes continue wait]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def run(algo: str, mode: str, env_steps: int) -> dict[str, float]:
    os.environ["TMRL_HOME"] = tempfile.mkdtemp(prefix="tmrl-bench-utd-")
    from tmrl_core.pipeline import prepare, run_local
    from tmrl_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    p = prepare(
        "rc-drone",
        algo,
        overrides={"run": {"name": f"utd-{algo}-{mode}", "seed": 0}, "training": {"max_env_steps": env_steps}},
        # short rounds: a ratio per second of wall time or so, and the budget is checked at every round's end
        # and training from 100 samples on instead of 400, so that a run is mostly training
        sets=[f"training.when_behind={mode}", "training.steps_per_round=20", "training.start_training=100"],
    )
    t0 = time.perf_counter()
    history = run_local(p).history
    wall = time.perf_counter() - t0
    trained = [r for r in history if "update_to_data_round" in r]
    first = next((i for i, r in enumerate(history) if r["training_steps"] > 0), len(history) - 1)
    start = history[first]
    last = history[-1]
    span = sum(r["round_time"] for r in history[first + 1 :]) or float("nan")
    return {
        "target": float(last["update_to_data_target"]),
        "ratio": (last["training_steps"] - start["training_steps"]) / max(last["env_steps"] - start["env_steps"], 1),
        "ratio_min_round": min((r["update_to_data_round"] for r in trained), default=float("nan")),
        "env_steps_per_s": (last["env_steps"] - start["env_steps"]) / span,
        "training_steps_per_s": (last["training_steps"] - start["training_steps"]) / span,
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-steps", type=int, default=600)
    parser.add_argument("--algos", nargs="+", default=["sac"])
    parser.add_argument("--modes", nargs="+", default=["continue", "wait"])
    args = parser.parse_args(argv)
    print(f"rc-drone, {args.env_steps} env steps per run; cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'algo':8s} {'when_behind':11s} {'target':>6s} {'reached':>8s} {'worst round':>11s} "
          f"{'env steps/s':>11s} {'train steps/s':>13s} {'wall s':>7s}", flush=True)  # fmt: skip
    for algo in args.algos:
        for mode in args.modes:
            r = run(algo, mode, args.env_steps)
            print(
                f"{algo:8s} {mode:11s} {r['target']:6.2f} {r['ratio']:8.2f} {r['ratio_min_round']:11.2f} "
                f"{r['env_steps_per_s']:11.1f} {r['training_steps_per_s']:13.1f} {r['wall']:7.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
