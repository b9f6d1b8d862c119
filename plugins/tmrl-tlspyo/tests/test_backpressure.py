"""Backpressure from the trainer to every sender, with real processes and TLS on 127.0.0.1: a password holder
flooding valid buffers as fast as it can is slowed down, a greedy worker drops (and reports) its oldest samples, the
server and the trainer stay within bounded memory, training goes on, and every sample not reported dropped arrives.
Also: a client that asks for echoes and never reads is disconnected, and the relay's memory stays flat.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tmrl_tlspyo.testing import RawClient, pendulum_buffer, server_args, server_settings, tree_rss
from tmrl_tlspyo.transport import TlspyoTransport

from tmrl_core.metrics import read_metrics

pytestmark = pytest.mark.slow

MiB = 1 << 20
QUEUE_BYTES = 8 * MiB
TRAINING = [
    "--set", "training.start_training=64",
    "--set", "training.steps_per_round=10",
    "--set", "training.rounds_per_epoch=1000",
    "--set", "training.batch_size=32",
    "--set", "training.memory_size=100000",
    "--set", "training.update_buffer_interval=1",
    "--set", "training.update_model_interval=10",
    "--set", "training.max_training_steps_per_env_step=0.5",
    "--set", "worker.max_samples_per_episode=50",
    "--set", "worker.test_episode_interval=0",
    "--set", f"server.queue_bytes={QUEUE_BYTES}",
    "--set", "server.local_buffer_max_samples=5000",
]  # fmt: skip


def last_metrics(run: str) -> dict[str, Any]:
    records = read_metrics(run)
    if not records:
        return {"training_steps": 0, "env_steps": 0, "episodes": 0, "dropped_total": 0}
    # samples_dropped is per round: the total is their sum
    return {**records[-1], "dropped_total": sum(record.get("samples_dropped", 0) for record in records)}


def wait_metrics(run: str, predicate: Any, what: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = last_metrics(run)
        if predicate(record):
            return record
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout:.0f} s; last metrics: {last_metrics(run)}")


class RssSampler(threading.Thread):
    """The largest resident memory of each process tree, sampled every 0.2 s until stopped."""

    def __init__(self, **pids: int) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], tree_rss(pid))

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.join()
        return self.peak


@pytest.mark.timeout(600)  # the flood, then draining what it queued, on a loaded machine
def test_a_flood_from_password_holders_is_slowed_counted_and_bounded_while_training_goes_on(
    tmrl_home: Path, credentials_dir: Path, spawn_tmrl: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmrl.transport.tlspyo")
    run = "flood"
    settings = server_settings(credentials_dir, queue_bytes=QUEUE_BYTES)
    common = [*server_args(settings), "--run-name", run, "-v"]
    server = spawn_tmrl("server", "server", *common, "--set", f"server.queue_bytes={QUEUE_BYTES}")
    trainer = spawn_tmrl("trainer", "trainer", "--env", "pendulum", "--algo", "sac", *common, *TRAINING)
    honest = spawn_tmrl("worker", "worker", "--env", "pendulum", "--algo", "sac", *common, *TRAINING)
    wait_metrics(run, lambda r: r["training_steps"] >= 20, "training before the flood")
    baseline = {"server": tree_rss(server.pid), "trainer": tree_rss(trainer.pid)}
    sampler = RssSampler(server=server.pid, trainer=trainer.pid)
    sampler.start()
    before = last_metrics(run)

    # a greedy worker using the transport, and a flooder that ignores every courtesy (its own process, raw TLS). The
    # greedy one connects first: on a loaded machine, a TLS handshake with a relay busy with the flood can take over a
    # minute (seen twice), and connecting during a flood is not what this test is about
    greedy = TlspyoTransport(settings.model_copy(update={"local_buffer_max_samples": 5000}), run_name=run).worker(
        "greedy"
    )
    assert greedy.wait_connected(120)
    report = tmp_path / "flood.json"
    config = {"settings": settings.model_dump(mode="json"), "seconds": 20, "report": str(report)}
    config["settings"]["password"] = settings.password.get_secret_value()
    flooder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from tmrl_tlspyo.testing import flood; flood(sys.argv[1])",
            json.dumps(config),
        ]
    )
    try:
        buffer = pendulum_buffer()
        offered = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            greedy.send_samples(buffer)
            offered += len(buffer)
            time.sleep(0.001)
        during = last_metrics(run)
        assert flooder.wait(60) == 0
    finally:
        greedy.close(timeout=60)
    peak = sampler.stop()

    # training went on during the flood
    assert during["training_steps"] >= before["training_steps"] + 10, (before, during)
    # memory stayed bounded: the queues hold tens of MiB (the unbounded trainer grew by gigabytes in this time)
    for part in ("server", "trainer"):
        growth = peak[part] - baseline[part]
        assert growth < 400 * MiB, f"{part} grew by {growth / MiB:.0f} MiB under the flood"
    # the flooder was slowed down, not served ahead of the trainer...
    flood_report = json.loads(report.read_text())
    # ...the greedy worker dropped its oldest samples, said so in its log, and the trainer counted them
    assert greedy.dropped_samples > 0
    assert "greedy: the server is unreachable or slow; dropped" in caplog.text
    # nothing else is lost: once the honest worker stops, every sample sent and not reported dropped is in memory
    honest.signal(signal.SIGTERM)
    assert honest.wait(60) == 0, honest.log()
    match = re.search(r"closing: sent (\d+) samples", honest.log())
    assert match, honest.log()
    expected = int(match.group(1)) + flood_report["sent_buffers"] * 1000 + greedy.sent_samples
    final = wait_metrics(
        run,
        lambda r: r["env_steps"] + r["episodes"] >= expected and r["dropped_total"] == greedy.dropped_samples,
        f"{expected} samples received and {greedy.dropped_samples} reported dropped",
    )
    assert final["env_steps"] + final["episodes"] == expected
    # per worker in metrics.jsonl: what the greedy one sent and was not trained on is counted as its drops (in its
    # queue of unsent samples), and no other worker reports any
    drops: dict[str, int] = {}
    for record in read_metrics(run):
        for key, value in record.items():
            if key.startswith("samples_dropped/"):
                drops[key] = drops.get(key, 0) + value
    lost = offered - greedy.sent_samples
    assert drops == {"samples_dropped/greedy": lost, "samples_dropped/greedy/unsent": lost}, drops
    for part in (trainer, server):
        part.signal(signal.SIGINT)
        assert part.wait(120) == 0, part.log()
    assert "Traceback" not in trainer.log() + server.log()


def test_a_client_that_asks_for_echoes_and_never_reads_is_disconnected(
    tmrl_home: Path, credentials_dir: Path, spawn_tmrl: Any
) -> None:
    settings = server_settings(credentials_dir)
    server = spawn_tmrl("server", "server", "-v", *server_args(settings))
    server.wait_for("listening on")
    baseline = tree_rss(server.pid)
    # 1 MiB echo requests are refused at once...
    big = RawClient(settings, "workers", read=False)
    try:
        big.send("OBJ", {"echo": -1}, b"\x00" * MiB)
        server.wait_for("an echo request of 1048576 bytes")
    finally:
        big.close()
    # ...and echoes of the largest size allowed, asked for as fast as possible and never read, stop being read,
    # then the client is disconnected; the server's memory does not follow
    slow = RawClient(settings, "workers", read=False)
    peak = baseline
    try:
        deadline = time.monotonic() + 120
        with pytest.raises(OSError):
            while time.monotonic() < deadline:
                slow.send("OBJ", {"echo": -1}, b"\x00" * 1000)
                if slow.stamp % 1000 == 0:
                    peak = max(peak, tree_rss(server.pid))
        server.wait_for("it has not read what the relay sent for")
    finally:
        slow.close()
    assert peak - baseline < 100 * MiB


@pytest.mark.timeout(600)
def test_while_no_trainer_is_connected_the_relay_stays_bounded_and_the_workers_count_what_they_drop(
    tmrl_home: Path, credentials_dir: Path
) -> None:
    """The relay holds at most server.queue_bytes for a trainer that is not there, then stops reading the worker,
    whose own queue drops and counts its oldest samples; the trainer that connects later gets the rest, with the
    count."""
    settings = server_settings(credentials_dir, queue_bytes=2 * MiB, chunk_bytes=256 * 1024)
    transport = TlspyoTransport(settings.model_copy(update={"local_buffer_max_samples": 5000}), run_name="idle")
    server = transport.server()
    server.start()
    worker = trainer = None
    try:
        relay_pid = server.relay.pid
        baseline = tree_rss(relay_pid)
        worker = transport.worker("lonely")
        assert worker.wait_connected(60)
        buffer = pendulum_buffer()
        offered, peak = 0, baseline
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            worker.send_samples(buffer)
            offered += len(buffer)
            time.sleep(0.002)
            peak = max(peak, tree_rss(relay_pid))
        assert worker.dropped_samples > 0, "the relay took everything: it did not push back"
        assert peak - baseline < 100 * MiB, f"the relay grew by {(peak - baseline) / MiB:.0f} MiB"
        trainer = transport.trainer()
        worker.send_samples(pendulum_buffer(10))  # carries the last drops
        offered += 10
        received: list[Any] = []

        def accounted() -> bool:
            received.extend(trainer.receive_samples())
            return sum(len(b) for b in received) + sum(b.dropped for b in received) >= offered

        deadline = time.monotonic() + 240
        while not accounted():
            assert time.monotonic() < deadline, (offered, sum(len(b) for b in received), worker.dropped_samples)
            time.sleep(0.1)
        assert sum(len(b) for b in received) == offered - worker.dropped_samples
        assert {b.worker for b in received} == {"lonely"}
        assert sum(b.dropped_at.get("unsent", 0) for b in received) == worker.dropped_samples
    finally:
        for client in (worker, trainer):
            if client is not None:
                client.close(timeout=5)
        server.stop()
