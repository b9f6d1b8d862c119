"""`tmrl server`, `tmrl trainer` and `tmrl worker` as separate processes over tlspyo with TLS on 127.0.0.1.

Slow (each process imports torch and builds its part): kept to two tests with small settings.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from tmrl_tlspyo.testing import server_args, server_settings

from tmrl_core.metrics import read_metrics

pytestmark = pytest.mark.slow

TRAINING = [
    "--set", "training.start_training=64",
    "--set", "training.steps_per_round=10",
    "--set", "training.rounds_per_epoch=1000",
    "--set", "training.batch_size=32",
    "--set", "training.update_buffer_interval=5",
    "--set", "training.update_model_interval=10",
    "--set", "training.max_training_steps_per_env_step=0.5",
    "--set", "worker.max_samples_per_episode=50",
    "--set", "worker.test_episode_interval=0",
]  # fmt: skip

#: the relay's line for a worker that joined (not the one for a worker that left)
WORKER_JOINED = re.compile(r"relay: workers \S+ connected$", re.MULTILINE)


def wait_metrics(run: str, predicate: Any, what: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = read_metrics(run)
        if records and predicate(records[-1]):
            return records[-1]
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout:.0f} s; last metrics: {read_metrics(run)[-1:]}")


def start(spawn_tmrl: Any, credentials_dir: Path, run: str, workers: int) -> tuple[Any, Any, list[Any], list[str]]:
    settings = server_settings(credentials_dir)
    common = [*server_args(settings), "--run-name", run, "-v"]
    server = spawn_tmrl("server", "server", *common)
    trainer = spawn_tmrl("trainer", "trainer", "--env", "pendulum", "--algo", "sac", *common, *TRAINING)
    parts = [
        spawn_tmrl(f"worker{i}", "worker", "--env", "pendulum", "--algo", "sac", "--index", str(i), *common, *TRAINING)
        for i in range(workers)
    ]
    return server, trainer, parts, common


def test_two_workers_train_pendulum_and_every_sample_reaches_the_memory(
    tmrl_home: Path, credentials_dir: Path, spawn_tmrl: Any
) -> None:
    server, trainer, workers, _ = start(spawn_tmrl, credentials_dir, "e2e", workers=2)
    wait_metrics("e2e", lambda r: r["training_steps"] >= 10 and r["env_steps"] >= 200, "training")
    sent = 0
    for worker in workers:
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log()
        match = re.search(r"closing: sent (\d+) samples in \d+ buffers, dropped (\d+), left unsent (\d+)", worker.log())
        assert match, worker.log()
        assert match.group(2) == "0" and match.group(3) == "0", match.group(0)
        sent += int(match.group(1))
    wait_metrics("e2e", lambda r: r["env_steps"] + r["episodes"] == sent, f"{sent} samples in the trainer's memory")
    trainer.signal(signal.SIGTERM)
    assert trainer.wait(120) == 0, trainer.log()
    log = trainer.log()
    assert f"received {sent} samples" in log
    summary = re.search(r"\((\d+) samples received\), \d+ training steps, (\d+) transitions in memory", log)
    assert summary, log
    assert int(summary.group(1)) == sent
    steps = re.search(r"(\d+) env steps in (\d+) episodes", log)
    assert steps and int(steps.group(1)) + int(steps.group(2)) == sent
    assert int(summary.group(2)) == int(steps.group(1))  # one transition per env step: nothing lost
    assert "Traceback" not in log + server.log()


@pytest.mark.timeout(600)  # three phases of training with real processes, on a machine that may be loaded
def test_training_goes_on_after_the_server_is_killed_and_restarted_and_after_a_worker_is_killed(
    tmrl_home: Path, credentials_dir: Path, spawn_tmrl: Any
) -> None:
    server, trainer, (worker,), common = start(spawn_tmrl, credentials_dir, "restart", workers=1)
    before = wait_metrics("restart", lambda r: r["training_steps"] >= 10, "training")
    server.signal(signal.SIGKILL)
    server.wait(30)
    time.sleep(2.0)
    # the relay process went down with its server: the port is free again
    server = spawn_tmrl("server", "server", *common)
    server.wait_for("listening on")
    # Both parts reconnect by themselves. Progress is measured from a record taken once both are back: samples the
    # trainer received before the kill but had not yet reported must not pass for samples sent through the new server.
    server.wait_for("relay: trainer")
    server.wait_for("relay: workers")
    assert len(WORKER_JOINED.findall(server.log())) == 1, server.log()
    reconnected = read_metrics("restart")[-1]
    after = wait_metrics(
        "restart",
        lambda r: r["env_steps"] >= reconnected["env_steps"] + 200
        and r["training_steps"] >= reconnected["training_steps"] + 10,
        "progress after the restart",
    )
    assert after["env_steps"] > before["env_steps"]
    # a worker killed with SIGKILL takes its network process with it; a new worker joins and training goes on
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    worker.signal(signal.SIGKILL)
    worker.wait(30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{child}").exists() for child in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{child}").exists() for child in children), "the killed worker left a process"
    worker = spawn_tmrl(
        "worker-new", "worker", "--env", "pendulum", "--algo", "sac", "--index", "1", *common, *TRAINING
    )
    worker.wait_for("connected to")
    deadline = time.monotonic() + 120
    while len(WORKER_JOINED.findall(server.log())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(WORKER_JOINED.findall(server.log())) == 2, server.log()  # the one that was killed, and the new one
    rejoined = read_metrics("restart")[-1]
    joined = wait_metrics(
        "restart",
        lambda r: r["env_steps"] >= rejoined["env_steps"] + 200
        and r["training_steps"] >= rejoined["training_steps"] + 10,
        "progress with the new worker",
    )
    assert joined["env_steps"] > after["env_steps"]
    for part in (worker, trainer, server):  # Ctrl-C ends each part cleanly
        part.signal(signal.SIGINT)
        assert part.wait(120) == 0, part.log()
    assert "checkpoint written" in trainer.log() and "interrupted" in worker.log()
