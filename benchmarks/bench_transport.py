"""The tlspyo transport against plain tlspyo with its default pickle serializer, over loopback with TLS.

Measured in the same run, with the same credentials:

1. samples/s and MB/s from one worker to the trainer through the relay, for buffers of flat observations and of
   image histories: ``TlspyoTransport`` (codec, chunks, signed weights, flow control) against tlspyo's Relay and
   Endpoints sending the Buffer objects with pickle (``produce`` / ``notify``);
2. time to broadcast a 1M-parameter actor to 4 workers: ``send_weights`` (safetensors, Ed25519 signature) against
   tlspyo ``broadcast`` of the pickled ``state_dict``;
3. tlspyo's receive path on single large frames (1, 4, 8 MiB; ``--big`` adds 16 and 32), against the same bytes
   sent by the transport in chunks: the reason for chunking.

Ratios above 1 mean the transport is faster. Run: ``python benchmarks/bench_transport.py [--buffers 20] [--big]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tmrl_core.buffer import Buffer
from tmrl_core.settings import ServerSettings

PASSWORD = "benchmark password"


def make_buffer(samples: int, obs_shape: tuple[int, ...], seed: int = 0) -> Buffer:
    rng = np.random.default_rng(seed)
    buffer = Buffer(maxlen=samples)
    for step in range(samples):
        if len(obs_shape) > 1:
            obs = rng.integers(0, 256, obs_shape, dtype=np.uint8)
        else:
            obs = rng.standard_normal(obs_shape).astype(np.float32)
        act = rng.uniform(-1, 1, 3).astype(np.float32)
        buffer.append_sample((act, obs, float(step), False, step == samples - 1, {}))
    buffer.stat_train_return = 1.0
    return buffer


def settings_for(keys: Path, port: int, **extra: Any) -> ServerSettings:
    return ServerSettings(
        transport="tlspyo",
        host="127.0.0.1",
        bind="127.0.0.1",
        port=port,
        password=PASSWORD,
        tls=True,
        tls_credentials_directory=keys,
        max_message_bytes=256 << 20,
        **extra,
    )


def wait(predicate: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.001)


# -- the transport ---------------------------------------------------------------------------------------------------


def transport_samples(keys: Path, buffer: Buffer, count: int) -> float:
    """Seconds for ``count`` buffers from a worker to reach the trainer."""
    from tmrl_tlspyo.testing import free_port
    from tmrl_tlspyo.transport import TlspyoTransport

    transport = TlspyoTransport(settings_for(keys, free_port()), run_name="bench")
    server = transport.server()
    server.start()
    trainer, worker = transport.trainer(), transport.worker("bench")
    try:
        assert trainer.wait_connected(60) and worker.wait_connected(60)
        received: list[Buffer] = []
        worker.send_samples(buffer)  # warm-up
        wait(lambda: received.extend(trainer.receive_samples()) or len(received) >= 1)
        received.clear()
        start = time.perf_counter()
        for _ in range(count):
            worker.send_samples(buffer)
        wait(lambda: received.extend(trainer.receive_samples()) or len(received) >= count)
        return time.perf_counter() - start
    finally:
        worker.close(timeout=1)
        trainer.close(timeout=1)
        server.stop()


def transport_weights(keys: Path, state: dict[str, Any], workers: int, repeat: int) -> list[float]:
    """Seconds for each of ``repeat`` weight broadcasts to reach all ``workers``."""
    from tmrl_tlspyo.testing import free_port
    from tmrl_tlspyo.transport import TlspyoTransport

    transport = TlspyoTransport(settings_for(keys, free_port()), run_name="bench")
    server = transport.server()
    server.start()
    trainer = transport.trainer()
    parts = [transport.worker(f"w{i}") for i in range(workers)]
    times = []
    try:
        for client in (trainer, *parts):
            assert client.wait_connected(60)
        for attempt in range(repeat + 1):
            start = time.perf_counter()
            trainer.send_weights(state)
            for part in parts:
                assert part.receive_weights(blocking=True, timeout=120) is not None
            if attempt:  # the first one warms up
                times.append(time.perf_counter() - start)
        return times
    finally:
        for client in (*parts, trainer):
            client.close(timeout=1)
        server.stop()


# -- plain tlspyo with pickle -----------------------------------------------------------------------------------------


class PlainTlspyo:
    """tlspyo 0.3.0 as documented: a Relay and Endpoints with the default (pickle) serializer, TLS."""

    def __init__(self, keys: Path) -> None:
        from tlspyo import Relay
        from tmrl_tlspyo.testing import free_port

        self.keys = str(keys)
        self.port = free_port()
        self.relay = Relay(port=self.port, password=PASSWORD, local_com_port=free_port(), keys_dir=self.keys)
        self.endpoints: list[Any] = []

    def endpoint(self, group: str) -> Any:
        from tlspyo import Endpoint
        from tmrl_tlspyo.testing import free_port

        endpoint = Endpoint(
            "127.0.0.1",
            self.port,
            PASSWORD,
            groups=group,
            local_com_port=free_port(),
            keys_dir=self.keys,
            recon_initial_delay=0.5,
        )
        self.endpoints.append(endpoint)
        return endpoint

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.stop()
        self.relay.stop()


def plain_samples(keys: Path, buffer: Buffer, count: int) -> float:
    plain = PlainTlspyo(keys)
    try:
        trainer, worker = plain.endpoint("trainer"), plain.endpoint("workers")
        received: list[Any] = []
        worker.produce(buffer, "trainer")  # warm-up (and connection)
        trainer.notify({"trainer": 10**9})
        wait(lambda: received.extend(trainer.receive_all()) or len(received) >= 1)
        received.clear()
        start = time.perf_counter()
        for _ in range(count):
            worker.produce(buffer, "trainer")
        wait(lambda: received.extend(trainer.receive_all()) or len(received) >= count)
        return time.perf_counter() - start
    finally:
        plain.close()


def plain_weights(keys: Path, state: dict[str, Any], workers: int, repeat: int) -> list[float]:
    plain = PlainTlspyo(keys)
    times = []
    try:
        trainer = plain.endpoint("trainer")
        parts = [plain.endpoint("workers") for _ in range(workers)]
        for attempt in range(repeat + 1):
            start = time.perf_counter()
            trainer.broadcast(state, "workers")
            for part in parts:
                assert part.receive_all(blocking=True)
            if attempt:
                times.append(time.perf_counter() - start)
        return times
    finally:
        plain.close()


def plain_frame(keys: Path, size: int) -> float:
    """Seconds for one object of ``size`` bytes (one tlspyo frame) from an endpoint to another."""
    plain = PlainTlspyo(keys)
    try:
        sender, receiver = plain.endpoint("a"), plain.endpoint("b")
        sender.broadcast(b"warm-up", "b")
        assert receiver.receive_all(blocking=True)
        payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
        start = time.perf_counter()
        sender.broadcast(payload, "b")
        assert receiver.receive_all(blocking=True)
        return time.perf_counter() - start
    finally:
        plain.close()


def chunked_frame(keys: Path, size: int) -> float:
    """Seconds for a buffer of about ``size`` bytes through the transport (in chunks of server.chunk_bytes)."""
    buffer = Buffer(maxlen=1)
    noise = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    buffer.append_sample((noise,))
    return transport_samples(keys, buffer, 1)


# -- main ------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffers", type=int, default=20, help="buffers per throughput measurement")
    parser.add_argument("--repeat", type=int, default=5, help="weight broadcasts measured")
    parser.add_argument("--big", action="store_true", help="also measure 16 and 32 MiB frames (plain tlspyo: slow)")
    args = parser.parse_args()

    import torch
    from tmrl_tlspyo.credentials import generate

    keys = Path(tempfile.mkdtemp(prefix="tmrl-bench-tls-"))
    generate(keys)

    print("1. worker -> trainer through the relay, TLS on loopback")
    for label, buffer in (
        ("1000 samples, flat float32 obs (20,)", make_buffer(1000, (20,))),
        ("100 samples, uint8 images (4, 64, 64)", make_buffer(100, (4, 64, 64))),
    ):
        from tmrl_core import codec

        size = len(codec.encode_buffer(buffer))
        ours = transport_samples(keys, buffer, args.buffers)
        theirs = plain_samples(keys, buffer, args.buffers)
        samples = len(buffer) * args.buffers
        print(f"  {label}: {args.buffers} buffers of {size / 1e6:.2f} MB")
        print(
            f"    tlspyo transport (codec): {samples / ours:10.0f} samples/s "
            f"{size * args.buffers / ours / 1e6:8.1f} MB/s"
        )
        print(
            f"    plain tlspyo (pickle):    {samples / theirs:10.0f} samples/s "
            f"{size * args.buffers / theirs / 1e6:8.1f} MB/s"
        )
        print(f"    ratio: {theirs / ours:.2f}x")

    print("2. broadcast of a 1M-parameter actor to 4 workers")
    actor = torch.nn.Sequential(torch.nn.Linear(999, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 1))
    state = actor.state_dict()
    params = sum(p.numel() for p in actor.parameters())
    ours_w = statistics.median(transport_weights(keys, state, 4, args.repeat))
    theirs_w = statistics.median(plain_weights(keys, state, 4, args.repeat))
    print(f"  {params} parameters, median of {args.repeat}")
    print(f"    tlspyo transport (safetensors + Ed25519): {ours_w * 1e3:8.1f} ms")
    print(f"    plain tlspyo (pickle):                    {theirs_w * 1e3:8.1f} ms")
    print(f"    ratio: {theirs_w / ours_w:.2f}x")

    print("3. one large message: plain tlspyo (one frame) vs the transport (1 MiB chunks)")
    sizes = [1, 4, 8] + ([16, 32] if args.big else [])
    for mib in sizes:
        theirs_f = plain_frame(keys, mib << 20)
        ours_f = chunked_frame(keys, mib << 20)
        print(
            f"  {mib:3d} MiB: plain tlspyo {theirs_f:7.2f} s, transport {ours_f:7.2f} s, ratio {theirs_f / ours_f:.2f}x"
        )


if __name__ == "__main__":
    main()
