"""Sample efficiency on Pendulum: environment steps until the mean deterministic test return reaches -200, for
``redqsac`` against ``sac`` (3 seeds each by default).

Each run uses the in-process loop of ``tmrl_core.testing.learning`` (one gymnasium Pendulum-v1, a
``GenericTorchMemory`` fed one episode at a time, the agent trained after every environment step): the same data
path for both agents, without the pipeline's asynchrony. SAC makes one update per environment step (its usual
update-to-data ratio), REDQ-SAC ``g`` critic updates per step (the paper's ratio, ``g = 20`` by default), each with
the agent's default settings unless ``--hidden`` / ``--set`` say otherwise. The first ``--start-steps`` actions are
uniformly random for both. Every ``--eval-interval`` steps the deterministic policy runs ``--eval-episodes``
episodes; a run stops at the first evaluation whose mean reaches the threshold.

With the defaults (MLPs 256x256, N = 10 critics, 20 critic updates per step) REDQ-SAC costs about 20 times SAC's
compute per environment step: on a 2-core CPU a seed takes tens of minutes; ``--hidden 64,64`` is much quicker.

    python benchmarks/bench_redq_pendulum.py [--seeds 0,1,2] [--algos redqsac,sac] [--hidden 64,64] [--device cpu]
        [--png docs/img/pendulum-redq-vs-sac.png]

The test-return curves of each algorithm (mean and spread over the seeds) are drawn with ``tmrl plot`` to ``--png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import gymnasium
import torch
from _curves import DOCS_IMG, plot, write_curve

from tmrl_core.testing.learning import run_learning, seed_everything


def build_agent(algo: str, device: str, settings: dict[str, Any]) -> Any:
    env = gymnasium.make("Pendulum-v1")
    if algo == "sac":
        from tmrl_sac.agent import SacAgent

        return SacAgent(env.observation_space, env.action_space, device, settings=settings)
    if algo == "redqsac":
        from tmrl_redq.agent import RedqSacAgent

        return RedqSacAgent(env.observation_space, env.action_space, device, settings=settings)
    raise SystemExit(f"unknown algorithm {algo!r} (sac, redqsac)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="redqsac,sac")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threshold", type=float, default=-200.0)
    parser.add_argument("--max-env-steps", default="redqsac=6000,sac=15000", help="per algorithm budget")
    parser.add_argument("--start-steps", type=int, default=500, help="uniformly random actions at the start")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--sac-utd", type=float, default=1.0, help="SAC updates per environment step")
    parser.add_argument("--hidden", default=None, help="hidden sizes for both agents, e.g. 64,64 (default: theirs)")
    parser.add_argument("--set", action="append", default=[], help="extra agent setting KEY=JSON (both agents)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--png", type=Path, default=DOCS_IMG / "pendulum-redq-vs-sac.png", help="the curves' PNG")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = {k: int(v) for k, v in (item.split("=") for item in args.max_env_steps.split(","))}
    extra: dict[str, Any] = {}
    if args.hidden:
        extra["hidden_sizes"] = [int(h) for h in args.hidden.split(",")]
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = json.loads(value)

    results: dict[str, list[tuple[int | None, float | None, float]]] = {}
    curves = Path(tempfile.mkdtemp(prefix="tmrl-bench-curves-"))
    for algo in args.algos.split(","):
        results[algo] = []
        for seed in (int(s) for s in args.seeds.split(",")):
            seed_everything(seed)
            agent = build_agent(algo, args.device, dict(extra))
            utd = float(agent.settings.g) if algo == "redqsac" else args.sac_utd
            print(f"{algo} seed {seed}: {utd:g} updates per env step, settings {extra or 'defaults'}", flush=True)
            result = run_learning(
                lambda: gymnasium.make("Pendulum-v1"),
                agent,
                env_steps=budgets.get(algo, 10_000),
                start_steps=args.start_steps,
                updates_per_step=utd,
                batch_size=args.batch,
                eval_interval=args.eval_interval,
                eval_episodes=args.eval_episodes,
                threshold=args.threshold,
                stop_at_threshold=True,
                seed=seed,
                log=lambda line: print(line, flush=True),
            )
            results[algo].append((result.steps_to_threshold, result.seconds_to_threshold, result.best_return))
            write_curve(curves, f"{algo}-seed{seed}", result.evaluations)
            reached = (
                f"{result.steps_to_threshold} env steps, {result.seconds_to_threshold:.0f} s"
                if result.steps_to_threshold
                else f"not reached in {result.env_steps} env steps (best {result.best_return:.0f})"
            )
            print(f"{algo} seed {seed}: threshold {args.threshold:g} -> {reached}", flush=True)

    print(
        f"\nEnv steps to a mean deterministic test return of {args.threshold:g} on Pendulum-v1 "
        f"(evaluations every {args.eval_interval} steps, {args.eval_episodes} episodes; device {args.device}, "
        f"torch threads {torch.get_num_threads()}, settings {extra or 'defaults'}):"
    )
    medians: dict[str, float] = {}
    for algo, runs in results.items():
        steps = [s for s, _, _ in runs]
        seconds = [t for _, t, _ in runs]
        cells = ", ".join(f"{s} ({t:.0f} s)" if s is not None else f"> budget (best {b:.0f})" for s, t, b in runs)
        print(f"  {algo:8s} {cells}")
        if all(s is not None for s in steps):
            medians[algo] = statistics.median(steps)  # type: ignore[arg-type]
            print(
                f"  {'':8s} median {medians[algo]:.0f} env steps, mean {statistics.mean(steps):.0f}; "
                f"median {statistics.median(seconds):.0f} s"
            )  # type: ignore[arg-type]
    if "redqsac" in medians and "sac" in medians:
        print(f"  sac / redqsac env steps (medians): {medians['sac'] / medians['redqsac']:.2f}x")
    plot(curves, [f"{algo}-*" for algo in results], args.png, "Pendulum-v1: env steps to -200, REDQ-SAC vs SAC")
    if "redqsac" in results:
        within = sum(1 for s, _, _ in results["redqsac"] if s is not None and s <= 3000)
        print(f"  redqsac seeds within 3,000 env steps: {within}/{len(results['redqsac'])}")


if __name__ == "__main__":
    main()
