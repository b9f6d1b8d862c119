"""How fast ``tmrl run --env pendulum --algo sac`` learns, against Stable-Baselines3's SAC configured the same way.

For each seed, both learn Pendulum-v1 until the mean return of 5 deterministic test episodes reaches -200 (or the
env-step budget runs out); the two sides alternate seed by seed. The tmrl side is what ``tmrl run`` does
(:func:`tmrl_core.pipeline.run_local`: server and trainer in this process, the worker in its own process) with the
pendulum defaults. SB3's SAC gets the same:

- batch size 256, networks 256 x 256 (actor and critics), replay memory of 1M transitions;
- learning rate 1e-3 for actor, critics and entropy coefficient (SB3's default is 3e-4), initial entropy
  coefficient 0.2 learned towards -|A| (SB3's default starts at 1.0), gamma 0.99, polyak 0.995 (tau 0.005);
- one update per env step after 200 env steps (``learning_starts=200``; tmrl starts training at 200 samples);
- the same number of torch threads (``--threads``, default: all CPUs this process may use; tmrl's trainer is fixed
  to it with ``training.threads`` instead of tuning it) and denormals flushed on both sides;
- the same test schedule: 5 deterministic episodes every ``--eval-every`` env steps (tmrl: at the first round end
  past each multiple), the clock stopped while they run, so the seconds are training time only.

Differences that remain, by design: SB3 acts with uniformly random actions before ``learning_starts`` (tmrl acts
with its initial policy), and tmrl's worker runs a test episode every 5 episodes (``worker.test_episode_interval``)
inside the measured time.

    python benchmarks/bench_pendulum_learning.py [--seeds 0 1 2] [--max-env-steps 10000] [--eval-every 200]
        [--threads N] [--png docs/img/pendulum-sac-vs-sb3.png]

Prints, per seed and side, env steps and seconds to reach -200, the ratio of seconds (tmrl / SB3) and the medians; then
draws both sides' test-return curves (mean and spread over the seeds) with ``tmrl plot`` to ``--png``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _curves import DOCS_IMG, plot, write_curve

THRESHOLD = -200.0


@dataclass
class Outcome:
    env_steps: int | None  # env steps when the threshold was first reached (None: not within the budget)
    seconds: float | None  # training seconds until then (evaluations excluded)
    last_return: float
    total_env_steps: int
    evaluations: list[tuple[int, float]]  # (env steps, mean test return) at every evaluation


def evaluate(act, seed: int, episodes: int = 5) -> float:
    """Mean return of ``act(obs) -> action`` over deterministic episodes of Pendulum-v1."""
    import gymnasium

    env = gymnasium.make("Pendulum-v1")
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=10_000 + 100 * seed + k)
        total, done = 0.0, False
        while not done:
            obs, rew, terminated, truncated, _ = env.step(act(obs))
            total += float(rew)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run_tmrl(seed: int, max_env_steps: int, eval_every: int, threads: int) -> Outcome:
    """``tmrl run --env pendulum --algo sac --seed SEED --env-steps MAX`` with an evaluation hook."""
    os.environ["TMRL_HOME"] = tempfile.mkdtemp(prefix="tmrl-bench-")
    from tmrl_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    from tmrl_core.pipeline import prepare, run_local

    p = prepare(
        "pendulum",
        "sac",
        overrides={
            "run": {"name": f"bench-{seed}", "seed": seed},
            "training": {"max_env_steps": max_env_steps, "threads": threads},
        },
    )
    state: dict = {"next_eval": eval_every, "eval_time": 0.0, "reached": None, "last": float("nan"), "steps": 0}
    evaluations: list[tuple[int, float]] = []
    holder: dict = {}

    def on_start(trainer) -> None:
        holder["trainer"] = trainer
        state["t0"] = time.perf_counter()

    def on_round(record: dict) -> None:
        trainer = holder["trainer"]
        state["steps"] = record["env_steps"]
        if record["env_steps"] < state["next_eval"] or state["reached"] is not None:
            return
        t_eval = time.perf_counter()
        actor = trainer.training.agent.get_actor()
        state["last"] = evaluate(lambda obs: actor.act_(obs, test=True), seed)
        state["eval_time"] += time.perf_counter() - t_eval
        evaluations.append((record["env_steps"], state["last"]))
        print(f"  tmrl  seed {seed}: {record['env_steps']:6d} env steps  test return {state['last']:8.1f}", flush=True)
        while state["next_eval"] <= record["env_steps"]:
            state["next_eval"] += eval_every
        if state["last"] >= THRESHOLD:
            elapsed = time.perf_counter() - state["t0"] - state["eval_time"]
            state["reached"] = (record["env_steps"], elapsed)
            trainer.stop()

    run_local(p, on_round=on_round, on_start=on_start)
    reached = state["reached"]
    return Outcome(
        reached[0] if reached else None, reached[1] if reached else None, state["last"], state["steps"], evaluations
    )


def run_sb3(seed: int, max_env_steps: int, eval_every: int, threads: int) -> Outcome:
    import gymnasium
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    state: dict = {"eval_time": 0.0, "reached": None, "last": float("nan")}
    evaluations: list[tuple[int, float]] = []

    class EvalAndStop(BaseCallback):
        def _on_training_start(self) -> None:
            state["t0"] = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every:
                return True
            t_eval = time.perf_counter()
            state["last"] = evaluate(lambda obs: self.model.predict(obs, deterministic=True)[0], seed)
            state["eval_time"] += time.perf_counter() - t_eval
            evaluations.append((self.num_timesteps, state["last"]))
            steps, last = self.num_timesteps, state["last"]
            print(f"  sb3   seed {seed}: {steps:6d} env steps  test return {last:8.1f}", flush=True)
            if state["last"] >= THRESHOLD:
                state["reached"] = (self.num_timesteps, time.perf_counter() - state["t0"] - state["eval_time"])
                return False
            return True

    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # tmrl's trainer flushes them; SB3 gets the same floating-point mode
    model = SAC(
        "MlpPolicy",
        gymnasium.make("Pendulum-v1"),
        learning_rate=1e-3,
        buffer_size=1_000_000,
        learning_starts=200,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto_0.2",
        target_entropy="auto",
        policy_kwargs={"net_arch": [256, 256]},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=max_env_steps, callback=EvalAndStop())
    reached = state["reached"]
    return Outcome(
        reached[0] if reached else None,
        reached[1] if reached else None,
        state["last"],
        int(model.num_timesteps),
        evaluations,
    )


def _fmt(outcome: Outcome) -> str:
    if outcome.env_steps is None:
        return f"not reached in {outcome.total_env_steps} env steps (last test return {outcome.last_return:.1f})"
    return f"{outcome.env_steps:6d} env steps  {outcome.seconds:7.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-env-steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--skip-sb3", action="store_true", help="only the tmrl side")
    parser.add_argument("--png", type=Path, default=DOCS_IMG / "pendulum-sac-vs-sb3.png", help="the curves' PNG")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of both sides (0: every CPU)")
    args = parser.parse_args(argv)

    from tmrl_core.placement import available_cpus

    threads = args.threads or available_cpus()
    print(f"Pendulum-v1 to a mean deterministic test return of {THRESHOLD:.0f}; torch threads (both): {threads}; "
          f"cpus: {available_cpus()}; load average: {os.getloadavg()[0]:.1f}")  # fmt: skip

    results: list[tuple[int, Outcome, Outcome | None]] = []
    for seed in args.seeds:
        ours = run_tmrl(seed, args.max_env_steps, args.eval_every, threads)
        theirs = None if args.skip_sb3 else run_sb3(seed, args.max_env_steps, args.eval_every, threads)
        results.append((seed, ours, theirs))

    print("\nseed | tmrl run                                  | stable-baselines3 SAC, same settings      | tmrl/SB3 s")
    for seed, ours, theirs in results:
        ratio = "-"
        if theirs is not None and ours.seconds and theirs.seconds:
            ratio = f"{ours.seconds / theirs.seconds:.2f}"
        print(f"{seed:4d} | {_fmt(ours):41s} | {_fmt(theirs) if theirs else 'skipped':41s} | {ratio}")
    curves = Path(tempfile.mkdtemp(prefix="tmrl-bench-curves-"))
    for seed, ours, theirs in results:
        write_curve(curves, f"tmrl-sac-seed{seed}", ours.evaluations)
        if theirs is not None:
            write_curve(curves, f"sb3-sac-seed{seed}", theirs.evaluations)
    plot(curves, ["tmrl-sac-*", "sb3-sac-*"], args.png, "Pendulum-v1: tmrl run vs Stable-Baselines3 SAC, same settings")
    for name, side in (("tmrl", 1), ("sb3", 2)):
        done = [r[side] for r in results if r[side] is not None and r[side].seconds is not None]
        if done:
            print(
                f"{name}: reached -200 in {len(done)}/{len(results)} seeds; median "
                f"{statistics.median(o.env_steps for o in done):.0f} env steps, "
                f"{statistics.median(o.seconds for o in done):.1f} s"
            )
    pairs = [(o.seconds, t.seconds) for _, o, t in results if t is not None and o.seconds and t.seconds]
    if pairs:
        ratio = statistics.median(o for o, _ in pairs) / statistics.median(t for _, t in pairs)
        print(f"median seconds tmrl / SB3: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
