"""A minimal in-process learning loop for agent tests and benchmarks (no worker, server or trainer).

One gymnasium environment, a :class:`~tmrl_core.memory.GenericTorchMemory` fed with one
:class:`~tmrl_core.buffer.Buffer` per finished episode (as a worker would send them), and a
:class:`~tmrl_core.agents.TrainingAgent` trained ``updates_per_step`` times per environment step. Every
``eval_interval`` environment steps the actor runs deterministically (``test=True``) on a separate copy of the
environment. It is what an agent plugin's short learning check needs; ``tmrl run`` is the real pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tmrl_core.agents import TrainingAgent
from tmrl_core.buffer import Buffer
from tmrl_core.memory import GenericTorchMemory
from tmrl_core.pipeline import seed_everything as seed_everything  # re-exported for learning checks


@dataclass
class LearningResult:
    """What :func:`run_learning` saw.

    Attributes:
        evaluations: ``(env_steps, mean deterministic test return)`` after each evaluation.
        steps_to_threshold: env steps at the first evaluation reaching ``threshold`` (None: never, or no threshold).
        seconds_to_threshold: wall-clock seconds until then.
        env_steps: environment steps taken.
        train_steps: ``agent.train`` calls.
        seconds: wall-clock seconds of the whole run.
    """

    evaluations: list[tuple[int, float]] = field(default_factory=list)
    steps_to_threshold: int | None = None
    seconds_to_threshold: float | None = None
    env_steps: int = 0
    train_steps: int = 0
    seconds: float = 0.0

    @property
    def last_return(self) -> float:
        return self.evaluations[-1][1] if self.evaluations else float("nan")

    @property
    def best_return(self) -> float:
        return max(r for _, r in self.evaluations) if self.evaluations else float("nan")


def evaluate(actor: Any, env: Any, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` deterministic episodes of ``actor`` on ``env``."""
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            obs, rew, terminated, truncated, _ = env.step(actor.act_(obs, test=True))
            total += float(rew)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def run_learning(
    make_env: Callable[[], Any],
    agent: TrainingAgent,
    *,
    env_steps: int,
    start_steps: int = 1000,
    updates_per_step: float = 1.0,
    batch_size: int = 256,
    eval_interval: int = 1000,
    eval_episodes: int = 5,
    threshold: float | None = None,
    stop_at_threshold: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> LearningResult:
    """Train ``agent`` on environments built by ``make_env`` for ``env_steps`` steps.

    Actions are uniformly random for the first ``start_steps`` steps, then sampled from the agent's actor; training
    starts once the memory holds ``batch_size`` transitions and runs ``updates_per_step`` ``train`` calls per
    environment step on average (fractions accumulate).
    """
    env, eval_env = make_env(), make_env()
    env.action_space.seed(seed)
    actor = agent.get_actor()
    memory = GenericTorchMemory(device=agent.device, batch_size=batch_size, seed=seed, memory_size=max(env_steps, 1))
    result = LearningResult()
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    zero_act = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)
    buffer = Buffer()
    buffer.append_sample((zero_act, obs, 0.0, False, False, {}))
    owed_updates = 0.0
    for step in range(1, env_steps + 1):
        act = env.action_space.sample() if step <= start_steps else actor.act_(obs, test=False)
        obs, rew, terminated, truncated, _ = env.step(act)
        buffer.append_sample((act, obs, float(rew), bool(terminated), bool(truncated), {}))
        if terminated or truncated:
            memory.append(buffer)
            obs, _ = env.reset()
            buffer = Buffer()
            buffer.append_sample((zero_act, obs, 0.0, False, False, {}))
        if len(memory) >= batch_size:
            owed_updates += updates_per_step
            while owed_updates >= 1.0:
                agent.train(memory.sample())
                result.train_steps += 1
                owed_updates -= 1.0
        result.env_steps = step
        if step % eval_interval == 0:
            value = evaluate(actor, eval_env, eval_episodes, seed=10_000 + seed)
            result.evaluations.append((step, value))
            if log is not None:
                log(f"  env steps {step:6d}  test return {value:8.1f}  ({time.perf_counter() - start:.0f} s)")
            if threshold is not None and value >= threshold and result.steps_to_threshold is None:
                result.steps_to_threshold = step
                result.seconds_to_threshold = time.perf_counter() - start
                if stop_at_threshold:
                    break
    result.seconds = time.perf_counter() - start
    env.close()
    eval_env.close()
    return result


