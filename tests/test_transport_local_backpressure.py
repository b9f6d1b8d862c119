"""The ``local`` transport under a flood: a worker sending 1,000-sample buffers as fast as it can to a trainer that
takes them slowly. The server (a real `tmrl server` process) and the clients stay within bounded memory, the worker
drops its oldest samples and counts them, the count reaches the trainer, and nothing else is lost."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tmrl_core.buffer import Buffer
from tmrl_core.metrics import read_metrics
from tmrl_core.settings import ServerSettings
from tmrl_core.testing.pytest_plugin import tmrl_command
from tmrl_core.transport.local import LocalTransport

MiB = 1 << 20
_ports = itertools.count(47000 + os.getpid() % 1000)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pendulum_like(samples: int) -> Buffer:
    rng = np.random.default_rng(0)
    buffer = Buffer(maxlen=samples)
    for index in range(samples):
        act, obs = rng.uniform(-2, 2, 1).astype(np.float32), rng.uniform(-1, 1, 3).astype(np.float32)
        buffer.append_sample((act, obs, float(-index), False, index == samples - 1, {}))
    return buffer


def test_a_flood_through_the_local_transport_is_bounded_and_its_drops_are_counted(tmrl_home: Path) -> None:
    port = next(_ports)
    values = {"port": port, "password": "flood", "queue_bytes": MiB, "local_buffer_max_samples": 5000}
    settings = ServerSettings(**values)
    sets = [arg for key, value in values.items() for arg in ("--set", f"server.{key}={value}")]
    env = {**os.environ, "TMRL_HOME": str(tmrl_home)}
    server = subprocess.Popen([*tmrl_command(), "server", *sets, "--run-name", "flood"], env=env)
    transport = LocalTransport(settings, run_name="flood")
    trainer = worker = None
    try:
        trainer, worker = transport.trainer(), transport.worker("flooder")
        assert trainer.wait_connected(120) and worker.wait_connected(120)
        buffer = pendulum_like(1000)
        baseline = {"server": rss(server.pid), "clients": rss(os.getpid())}
        peak = dict(baseline)
        received = dropped_reported = sent = 0
        deadline = time.monotonic() + 15
        next_read = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            worker.send_samples(buffer)
            sent += len(buffer)
            time.sleep(0.002)
            if time.monotonic() >= next_read:  # a slow trainer: takes what waits once a second
                buffers = trainer.receive_samples()
                received += sum(len(b) for b in buffers)
                dropped_reported += sum(b.dropped for b in buffers)
                next_read = time.monotonic() + 1.0
                peak = {
                    "server": max(peak["server"], rss(server.pid)),
                    "clients": max(peak["clients"], rss(os.getpid())),
                }
        assert worker.dropped_samples > 0, "the flood never outran the trainer: nothing was tested"
        worker.send_samples(pendulum_like(10))  # carries the last drops to the trainer
        sent += 10
        deadline = time.monotonic() + 120
        while received + worker.dropped_samples < sent and time.monotonic() < deadline:
            buffers = trainer.receive_samples()
            received += sum(len(b) for b in buffers)
            dropped_reported += sum(b.dropped for b in buffers)
            time.sleep(0.05)
        # nothing lost that was not counted, and the count reached the trainer
        assert received + worker.dropped_samples == sent
        assert dropped_reported == worker.dropped_samples
        # 15 s of flooding with a queue of 1 MiB per hop: tens of MiB at most (unbounded, it was gigabytes)
        assert peak["server"] - baseline["server"] < 100 * MiB, peak
        assert peak["clients"] - baseline["clients"] < 200 * MiB, peak
    finally:
        for client in (worker, trainer):
            if client is not None:
                client.close()
        server.terminate()
        server.wait(30)


def dropped_by(run: str, worker: str) -> dict[str, int]:
    """Samples ``worker`` reported dropped, summed over the run's metrics: in all, and by place."""
    totals: dict[str, int] = {}
    for record in read_metrics(run):
        for key, value in record.items():
            if key == f"samples_dropped/{worker}" or key.startswith(f"samples_dropped/{worker}/"):
                where = key.removeprefix(f"samples_dropped/{worker}").lstrip("/") or "all"
                totals[where] = totals.get(where, 0) + int(value)
    return totals


def trained_on(run: str) -> int:
    """Samples in the trainer's memory so far (every episode is one reset sample plus its env steps)."""
    records = read_metrics(run)
    return records[-1]["env_steps"] + records[-1]["episodes"] if records else 0


def wait_for(predicate: Any, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(600)  # a real trainer (torch) beside the flood, on a machine that may be loaded
def test_every_sample_a_worker_sent_is_trained_on_or_counted_dropped_for_that_worker_in_the_metrics(
    tmrl_home: Path, tmp_path: Path
) -> None:
    """Two workers through `tmrl server` to `tmrl trainer`: one sends while no trainer is connected (the server
    drops the oldest beyond server.queue_bytes), one floods a running trainer (its own queue drops the oldest). For
    each, metrics.jsonl's ``samples_dropped/<worker>`` adds up to what it sent minus what the trainer trained on."""
    port, run = next(_ports), "drops"
    values = {"port": port, "password": "drops", "queue_bytes": MiB, "local_buffer_max_samples": 5000}
    sets = [arg for key, value in values.items() for arg in ("--set", f"server.{key}={value}")]
    training = [
        "--set", "training.start_training=64",
        "--set", "training.steps_per_round=10",
        "--set", "training.rounds_per_epoch=100000",
        "--set", "training.batch_size=32",
        "--set", "training.memory_size=100000",
        "--set", "training.update_buffer_interval=1",
        "--set", "training.max_training_steps_per_env_step=0.5",
        "--set", "sac.hidden_sizes=[16,16]",
    ]  # fmt: skip
    env = {**os.environ, "TMRL_HOME": str(tmrl_home)}
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("server", "trainer")}
    procs = {"server": subprocess.Popen(
        [*tmrl_command(), "server", *sets, "--run-name", run, "-v"], env=env, stdout=logs["server"],
        stderr=subprocess.STDOUT,
    )}
    transport = LocalTransport(ServerSettings(**values), run_name=run)
    early = greedy = None
    try:
        # 1. no trainer yet: 100 buffers of 1,000 samples; the server keeps 1 MiB of them and drops the oldest
        early = transport.worker("early")
        assert early.wait_connected(120)
        buffer = pendulum_like(1000)
        for _ in range(100):  # one at a time: its own queue (5,000 samples) must not be what drops them
            early.send_samples(buffer)
            wait_for(lambda: early.pending_samples == 0, "unsent samples handed to the server")
        time.sleep(2.0)  # the server reads what the socket holds
        procs["trainer"] = subprocess.Popen(
            [*tmrl_command(), "trainer", "--env", "pendulum", "--algo", "sac", "--run-name", run, "-v", *sets,
             *training],
            env=env, stdout=logs["trainer"], stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: dropped_by(run, "early").get("server", 0) > 0, "the server's drops in the metrics")
        wait_for(lambda: trained_on(run) + dropped_by(run, "early")["all"] == 100_000, "every early sample")
        assert dropped_by(run, "early") == {"all": 100_000 - trained_on(run), "server": 100_000 - trained_on(run)}
        early.close()
        after_early = trained_on(run)

        # 2. a flood to the running trainer: the worker's own queue drops its oldest samples
        greedy = transport.worker("greedy")
        assert greedy.wait_connected(120)
        offered = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            greedy.send_samples(buffer)
            offered += len(buffer)
            time.sleep(0.002)
        assert greedy.dropped_samples > 0, "the flood never outran the trainer: nothing was tested"
        greedy.send_samples(pendulum_like(10))  # carries the last drops
        offered += 10
        wait_for(lambda: greedy.pending_samples == 0, "the flood handed to the server")

        def accounted() -> bool:
            return trained_on(run) - after_early + dropped_by(run, "greedy").get("all", 0) == offered

        wait_for(accounted, f"{offered} flooded samples trained on or counted dropped")
        drops = dropped_by(run, "greedy")
        assert drops == {"all": greedy.dropped_samples, "unsent": greedy.dropped_samples}
        assert dropped_by(run, "early")["all"] == 100_000 - after_early  # unchanged
    finally:
        for client in (early, greedy):
            if client is not None:
                client.close()
        for proc in reversed(procs.values()):
            proc.terminate()
            proc.wait(60)
        for f in logs.values():
            f.close()
    trainer_log = (tmp_path / "trainer.log").read_text()
    assert "Traceback" not in trainer_log + (tmp_path / "server.log").read_text(), trainer_log[-3000:]
