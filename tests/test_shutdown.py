"""A server or worker ends after Ctrl-C / SIGTERM within its grace period, and a second signal ends it at once.

A device that does not let go (an environment whose ``close()`` never returns) must not leave a process that a
process manager cannot stop: after its grace period the worker prints every thread's stack (where
it is stuck) and exits with status 1 (``run.shutdown_grace``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from helpers import Output

from tmrl_core.testing.pytest_plugin import tmrl_command

#: a gymnasium environment whose close() takes ten minutes once it has stepped, importable by the worker (PYTHONPATH)
STUCK_ENV = textwrap.dedent(
    """
    import time

    import gymnasium
    from gymnasium.envs.classic_control.pendulum import PendulumEnv


    class StuckOnClose(PendulumEnv):
        stepped = False

        def step(self, action):
            self.stepped = True
            return super().step(action)

        def close(self):
            if self.stepped:  # not the instance tmrl builds to read the spaces
                time.sleep(600)


    gymnasium.register("StuckOnClose-v0", entry_point=StuckOnClose, max_episode_steps=200)
    """
)


def start_worker(tmrl_home: Path, tmp_path: Path, grace: float) -> subprocess.Popen[str]:
    (tmp_path / "stuck_env.py").write_text(STUCK_ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env.update(TMRL_HOME=str(tmrl_home), TMRL_RUN__SHUTDOWN_GRACE=str(grace), PYTHONPATH=str(tmp_path))
    # no server runs: the worker acts and queues its samples, which is all this test needs
    return subprocess.Popen(
        [*tmrl_command(), "worker", "--env", "gym:stuck_env:StuckOnClose-v0", "--algo", "sac", "-v"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_a_worker_stuck_while_closing_prints_its_stacks_and_exits_after_its_grace(tmrl_home: Path, tmp_path: Path):
    proc = start_worker(tmrl_home, tmp_path, grace=8.0)
    output = Output(proc)
    try:
        output.wait_for("first env step")
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = output.finish(timeout=120)
        took = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, out
    assert took >= 8.0, (took, out)  # not before its grace
    assert "interrupted" in out
    # the stack of the thread that is stuck, down to the environment's close()
    assert "Thread 0x" in out and "in close" in out and "stuck_env.py" in out, out


@pytest.mark.slow
def test_a_second_interrupt_ends_a_worker_at_once(tmrl_home: Path, tmp_path: Path) -> None:
    proc = start_worker(tmrl_home, tmp_path, grace=300.0)
    output = Output(proc)
    try:
        output.wait_for("first env step")
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = output.finish(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, out
    assert "interrupted again: exiting now" in out
