"""What several of the core's test modules share: fast settings for real runs, waiting, a clean environment for
subprocesses, and small pipelines. Importable as ``helpers`` (``pythonpath`` in pyproject.toml); not a test module."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from tmrl_core.buffer import Buffer
    from tmrl_core.pipeline import Pipeline
    from tmrl_core.trainer import TorchTrainingOffline, Trainer
    from tmrl_core.worker import RolloutWorker


def fast_sets(start_training: int = 200, round_steps: int = 40) -> list[str]:
    """``--set`` options for `tmrl run` with small networks and short rounds: for tests of where things go (figures,
    checkpoints, errors), not of learning."""
    return [
        "--set", "sac.hidden_sizes=[16,16]",
        "--set", "training.batch_size=16",
        "--set", f"training.start_training={start_training}",
        "--set", f"training.steps_per_round={round_steps}",
        "--set", f"training.update_model_interval={round_steps}",
    ]  # fmt: skip


FAST = fast_sets()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


class Output:
    """A running process's output, read line by line by a thread per pipe as it is written (so no pipe fills), to
    wait for what a user would see on the terminal. ``stderr`` may be merged into ``stdout`` (``stderr=STDOUT``)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((proc.stdout, self.out), (proc.stderr, self.err))
            if stream is not None
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 120.0, after: str | None = None) -> None:
        """Wait until ``count`` lines of stdout match the regex ``pattern`` (only those after the first line that
        contains ``after``); fail with the output so far if the time is up or the process ends first."""

        def seen() -> bool:
            lines = list(self.out)
            if after is not None:
                start = next((i for i, line in enumerate(lines) if after in line), len(lines))
                lines = lines[start + 1 :]
            if sum(bool(re.search(pattern, line)) for line in lines) >= count:
                return True
            if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                raise AssertionError(f"the process ended ({self.proc.returncode}) before {what}")
            return False

        what = f"{count} line(s) matching {pattern!r}" + (f" after {after!r}" if after else "")
        try:
            wait_until(seen, timeout, what)
        except AssertionError as exc:
            printed = "".join(self.out)[-4000:] + "".join(self.err)[-4000:]
            raise AssertionError(f"{exc}; its output:\n{printed}") from None

    def finish(self, timeout: float) -> tuple[str, str]:
        """Wait for the process to end and its pipes to close: ``(stdout, stderr)``."""
        self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return "".join(self.out), "".join(self.err)


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a child, with no ``TMRL_*`` setting but ``TMRL_HOME=home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env.update({"TMRL_HOME": str(home), **extra})
    return env


def pendulum_training(
    run: str, **training: object
) -> tuple[Pipeline, Callable[..., TorchTrainingOffline], RolloutWorker]:
    """A pipeline's training loop (ring memory, small SAC) and a standalone worker that gives it real pendulum
    episodes of 30 steps, no server: ``(pipeline, training class, worker)``."""
    from tmrl_core.pipeline import build_training, build_worker, prepare

    sets = ["sac.hidden_sizes=[16,16]", "training.batch_size=16", f"run.name={run}", "run.seed=3"]
    sets += [f"training.{k}={json.dumps(v)}" for k, v in training.items()]
    p = prepare("pendulum", "sac", sets=sets)
    worker = build_worker(p, standalone=True, save_weights=False)
    worker.max_samples_per_episode = 30
    return p, build_training(p), worker


def feed(training: TorchTrainingOffline, worker: RolloutWorker, episodes: int) -> None:
    """Append ``episodes`` training episodes of a standalone ``worker`` to ``training``'s memory, as one reception
    of buffers from the server."""
    from tmrl_core.trainer import _Interface

    def next_episode() -> Buffer:
        worker.collect_train_episode()
        buffer, worker.buffer = worker.buffer, type(worker.buffer)()
        return buffer

    class Feed(_Interface):
        def retrieve_buffers(self) -> list[Buffer]:
            return [next_episode() for _ in range(episodes)]

    training.ingest(Feed())


def train_with_local_server(p: Pipeline, trainer: Trainer) -> tuple[list[dict], RolloutWorker]:
    """Run ``trainer`` to its budget with the in-process server and one worker thread: the trainer's history and the
    (closed) worker."""
    from tmrl_core.pipeline import build_server, build_worker, run_worker

    server = build_server(p)
    worker = build_worker(p, save_weights=False)
    thread = threading.Thread(target=run_worker, args=(p, worker), daemon=True)
    thread.start()
    try:
        return trainer.run(), worker
    finally:
        worker.stop(wait=10)
        worker.close()
        server.stop()


def image_buffers(steps: int, *, seed: int, act_buf_len: int = 0, **env_options: object) -> list[Buffer]:
    """The buffers of a random policy on the rtgym image env (``make_image_env(**env_options)``), compressed by the
    history compressor (frames at observation index 1): what a worker would send for at least ``steps`` steps."""
    from tmrl_core.compression import history_compressor
    from tmrl_core.testing.image_env import make_image_env
    from tmrl_core.testing.memory_contract import rollout

    env = make_image_env(act_buf_len=act_buf_len, seed=seed, **env_options)
    try:
        return rollout(env, steps, compressor=history_compressor(act_buf_len=act_buf_len, history_index=1), seed=seed)
    finally:
        env.close()
