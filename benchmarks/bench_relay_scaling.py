"""How the tlspyo relay's cost grows with the number of workers, against plain tlspyo + pickle, in the same run.

For 1, 8, 32 and 64 workers (real processes, TLS on loopback), measured on each relay:

- **throughput**: every worker sends realistic sample buffers (100 samples of a TrackMania-lidar-sized observation:
  4 x 19 floats, speed, action buffer) as fast as the relay takes them for ``--seconds``; the trainer counts what
  arrives: samples/s and MB/s;
- **server CPU per MB**: CPU seconds of the relay process (user + system, from ``/proc``) per MB delivered to the
  trainer;
- **weights**: time from the trainer sending a 1M-parameter actor until every worker received it.

The workers are lightweight: ``--procs`` processes hold the connections (threads, raw TLS sockets speaking tlspyo's
protocol), so that 64 workers do not take 64 Python interpreters and 64 network processes; the relay and the trainer
are the real ones. The plain relay is tlspyo 0.3's ``Relay`` with pickle, its workers send the pickled Buffer broadcast
to the trainer's group, its trainer is a tlspyo ``Endpoint``.

The planning figure assumes 64 workers at 20 Hz, each sample sent once: it multiplies the measured CPU per MB by the
bytes per second such a fleet sends.
Run: ``python benchmarks/bench_relay_scaling.py [--seconds 8] [--workers 1 8 32 64]`` (about 4 minutes with the
defaults on 2 cores). The machine's load is printed: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import queue
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tmrl_core.buffer import Buffer

PASSWORD = "benchmark password"
HEADER = 10
SAMPLES_PER_BUFFER = 100


def make_buffer(samples: int = SAMPLES_PER_BUFFER) -> Buffer:
    """Samples shaped like trackmania-lidar's: 4 lidar frames of 19 beams, speed, 2 previous actions."""
    rng = np.random.default_rng(0)
    buffer = Buffer(maxlen=samples)
    for step in range(samples):
        obs = (
            rng.uniform(0, 300, 1).astype(np.float32),
            rng.uniform(0, 1000, (4, 19)).astype(np.float32),
            rng.uniform(-1, 1, 3).astype(np.float32),
            rng.uniform(-1, 1, 3).astype(np.float32),
        )
        act = rng.uniform(-1, 1, 3).astype(np.float32)
        buffer.append_sample((act, obs, float(step), False, step == samples - 1, {}))
    buffer.stat_train_return = 1.0
    return buffer


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- lightweight workers: raw TLS connections speaking tlspyo's protocol ----------------------------------------------


class RawWorker:
    """One worker connection: sends ``frame_obj`` (already serialized) to the trainer as fast as the relay reads, and
    records when a large object (weights) arrives."""

    def __init__(self, port: int, cafile: str, dumps: Any, loads: Any, trainer_dest: dict[str, int]) -> None:
        context = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock = context.wrap_socket(raw, server_hostname="default")
        self.dumps, self.loads, self.dest = dumps, loads, trainer_dest
        self.stamp = 0
        self.lock = threading.Lock()
        self._read_frame()  # the relay's hello
        self.sock.settimeout(None)
        self.send("HELLO", None, ("workers",))
        self.weights_at: float | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read_exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            part = self.sock.recv(size - len(data))
            if not part:
                raise ConnectionError("closed")
            data += part
        return bytes(data)

    def _read_frame(self) -> bytes:
        return self._read_exactly(int(self._read_exactly(HEADER)))

    def _read(self) -> None:
        try:
            while True:
                frame = self._read_frame()
                stamp, cmd, _ = self.loads(frame)
                if cmd != "ACK":
                    self.send("ACK", None, None, stamp=stamp)
                    if len(frame) > 100_000 and self.weights_at is None:
                        self.weights_at = time.perf_counter()
        except (OSError, ConnectionError):
            pass

    def send(self, cmd: str, dest: Any, obj: Any, stamp: int | None = None) -> None:
        with self.lock:
            if stamp is None:
                self.stamp += 1
                stamp = self.stamp
            body = self.dumps((stamp, cmd, dest, obj))
            self.sock.sendall(f"{len(body):<{HEADER}}".encode() + PASSWORD.encode() + body)


def worker_process(config: dict[str, Any], obj: bytes, start: Any, stop: Any, results: Any) -> None:
    """Hold ``config['connections']`` workers; send ``obj`` from each between ``start`` and ``stop``."""
    from tmrl_core import codec

    dumps, loads = (pickle.dumps, pickle.loads) if config["plain"] else (codec.encode, codec.decode)
    workers = [
        RawWorker(config["port"], config["cafile"], dumps, loads, config["dest"]) for _ in range(config["connections"])
    ]
    sent = [0] * len(workers)

    def flood(index: int) -> None:
        worker = workers[index]
        while not stop.is_set():
            worker.send("OBJ", config["dest"], obj)
            sent[index] += 1

    results.put(("ready", 0))
    start.wait()
    threads = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(30)
    results.put(("sent", sum(sent)))
    # then wait for weights (sent by the trainer after the throughput phase)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(w.weights_at is None for w in workers):
        time.sleep(0.001)
    results.put(("weights", max((w.weights_at or float("inf")) for w in workers)))


# -- one measurement --------------------------------------------------------------------------------------------------


def measure(kind: str, workers: int, seconds: float, keys: Path, procs: int) -> dict[str, Any]:
    """Throughput, relay CPU per MB and weights broadcast time for ``workers`` workers on relay ``kind``."""
    import torch
    from tmrl_tlspyo.testing import free_port, server_settings

    from tmrl_core import codec

    buffer = make_buffer()
    state = {"l1.weight": torch.randn(1000, 1000), "l1.bias": torch.randn(1000)}
    port = free_port()
    plain = kind == "plain"
    if plain:
        import tlspyo

        relay = tlspyo.Relay(port=port, password=PASSWORD, local_com_port=free_port(), keys_dir=str(keys))
        relay_pid = relay._p.pid  # tlspyo does not expose its relay process: its CPU time is what we measure
        trainer = tlspyo.Endpoint(
            ip_server="127.0.0.1", port=port, password=PASSWORD, groups=("trainer",), local_com_port=free_port(),
            keys_dir=str(keys), recon_initial_delay=0.5, recon_max_delay=1.0, deserializer_mode="synchronous",
        )  # fmt: skip
        obj = pickle.dumps(buffer)
        dest = {"trainer": -1}
    else:
        from tmrl_tlspyo.transport import TlspyoTransport

        settings = server_settings(keys, port=port, password=PASSWORD, max_message_bytes=256 << 20)
        transport = TlspyoTransport(settings, run_name="bench")
        server = transport.server()
        server.start()
        relay_pid = server.relay.pid
        trainer = transport.trainer()
        assert trainer.wait_connected(60)
        data = codec.encode_buffer(buffer)
        obj = codec.encode(("chunk", "w", 1, 0, 1, len(data), data))
        dest = {"trainer": 1}
    ctx = multiprocessing.get_context("fork")
    start, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    nprocs = min(procs, workers)
    shares = [workers // nprocs + (i < workers % nprocs) for i in range(nprocs)]
    processes = [
        ctx.Process(
            target=worker_process,
            args=(
                {
                    "port": port,
                    "cafile": str(keys / "certificate.pem"),
                    "plain": plain,
                    "dest": dest,
                    "connections": share,
                },
                obj,
                start,
                stop,
                results,
            ),  # fmt: skip
            daemon=True,
        )
        for share in shares
    ]
    for process in processes:
        process.start()
    for _ in processes:
        assert results.get(timeout=120)[0] == "ready"
    time.sleep(1.0)  # every worker's hello is through
    received = 0
    received_bytes = 0
    cpu0 = cpu_seconds(relay_pid)
    t0 = time.perf_counter()
    start.set()
    while time.perf_counter() - t0 < seconds:
        if plain:
            for got in trainer.receive_all(blocking=False):  # unpickled by tlspyo in this thread
                received += len(got)
                received_bytes += len(obj)
        else:
            for got in trainer.receive_samples():
                received += len(got)
                received_bytes += len(data)
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(relay_pid) - cpu0
    stop.set()
    for _ in processes:
        assert results.get(timeout=120)[0] == "sent"
    # weights: one broadcast of a 1M-parameter actor, timed until the last worker has it
    # what the flood left in the queues drains first (until nothing arrives for a second): a trainer behind on
    # samples is not read by the relay, weights included, until it catches up (see docs/tlspyo.md)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        got = trainer.receive_all(blocking=False) if plain else trainer.receive_samples()
        if got:
            quiet_since = time.monotonic()
        time.sleep(0.01)
    if plain:
        sent_at = time.perf_counter()
        trainer.broadcast(state, "workers")
    else:
        sent_at = time.perf_counter()
        trainer.send_weights(state)
    # the trainer goes on taking samples meanwhile, as a real one does (a trainer that stops reading is not read
    # either, weights included: that is the backpressure)
    arrivals: list[float] = []
    deadline = time.monotonic() + 180
    while len(arrivals) < len(processes) and time.monotonic() < deadline:
        try:
            arrivals.append(results.get(timeout=0.01)[1])
        except queue.Empty:
            if plain:
                trainer.receive_all(blocking=False)
            else:
                trainer.receive_samples()
    last = max(arrivals) if len(arrivals) == len(processes) else float("inf")
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()
    if plain:
        trainer.stop()
        relay.stop()
    else:
        trainer.close(timeout=1.0)
        server.stop()
    megabytes = received_bytes / 1e6
    return {
        "relay": kind,
        "workers": workers,
        "samples_per_s": received / elapsed,
        "mb_per_s": megabytes / elapsed,
        "bytes_per_sample": received_bytes / max(received, 1),
        "relay_cpu_s_per_mb": cpu / megabytes if megabytes else float("nan"),
        "relay_cpu_share": cpu / elapsed,
        "weights_s": last - sent_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="throughput phase per measurement")
    parser.add_argument("--procs", type=int, default=4, help="processes holding the worker connections")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    from tmrl_tlspyo.credentials import generate

    os.environ.setdefault("TMRL_HOME", tempfile.mkdtemp(prefix="tmrl-bench-"))
    keys = Path(tempfile.mkdtemp(prefix="tmrl-bench-keys-"))
    generate(keys)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows = []
    for workers in args.workers:
        for kind in ("tmrl", "plain"):  # interleaved: both relays see the same load
            row = measure(kind, workers, args.seconds, keys, args.procs)
            rows.append(row)
            print(json.dumps(row))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    header = "| workers | relay | samples/s | MB/s | relay CPU s per MB | relay CPU (cores) | weights to all (s) |"
    print(header)
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['workers']} | {row['relay']} | {row['samples_per_s']:,.0f} | {row['mb_per_s']:.1f} | "
            f"{row['relay_cpu_s_per_mb']:.3f} | {row['relay_cpu_share']:.2f} | {row['weights_s']:.2f} |"
        )
    print()
    for workers in args.workers:
        ours = next(r for r in rows if r["workers"] == workers and r["relay"] == "tmrl")
        plain = next(r for r in rows if r["workers"] == workers and r["relay"] == "plain")
        print(
            f"{workers} workers: samples/s ratio tmrl/plain {ours['samples_per_s'] / plain['samples_per_s']:.2f}, "
            f"CPU per MB ratio {ours['relay_cpu_s_per_mb'] / plain['relay_cpu_s_per_mb']:.2f}, "
            f"weights time ratio {ours['weights_s'] / plain['weights_s']:.2f}"
        )
    biggest = max(args.workers)
    ours = next(r for r in rows if r["workers"] == biggest and r["relay"] == "tmrl")
    fleet_mb_per_s = 64 * 20 * ours["bytes_per_sample"] / 1e6
    share = fleet_mb_per_s * ours["relay_cpu_s_per_mb"]
    print(
        f"\nplanning figure: 64 workers at 20 Hz send {fleet_mb_per_s:.2f} MB/s "
        f"({ours['bytes_per_sample']:.0f} bytes per sample) and use {100 * share:.1f}% of the server's core "
        f"(relay CPU {ours['relay_cpu_s_per_mb']:.3f} s per MB, measured with {biggest} workers)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
