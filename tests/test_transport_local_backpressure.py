"""The ``local`` transport under a flood: a worker sending 1,000-sample buffers as fast as it can to a trainer that
takes them slowly. The server (a real `tmrl server` process) and the clients stay within bounded memory, the worker
drops its oldest samples and counts them, the count reaches the trainer, and nothing else is lost."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from tmrl_core.buffer import Buffer
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
