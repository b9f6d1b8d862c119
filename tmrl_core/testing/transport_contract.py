"""``TransportContract``: what every transport must do, as a pytest class that transport authors subclass.

Example (in a plugin's tests)::

    import pytest
    from tmrl_core.settings import ServerSettings
    from tmrl_core.testing import TransportContract
    from my_plugin.transport import MyTransport

    class TestMyTransport(TransportContract):
        @pytest.fixture
        def make_transport(self, tmrl_home):
            def make(**server_settings):
                settings = ServerSettings(**{"port": pick_a_free_port(), **server_settings})
                return MyTransport(settings, run_name="contract")
            return make

        # optional: open a raw connection to the server and write these bytes (return False if not applicable)
        def send_raw(self, transport, data: bytes) -> bool:
            ...

``make_transport(**server_settings)`` returns a new :class:`~tmrl_core.transport.Transport` built from the ``server``
settings section updated with ``server_settings`` (the contract sets ``max_message_bytes`` and
``local_buffer_max_samples``). Every server, trainer and worker a test creates is closed at its end, and each test
checks a behaviour the worker, server and trainer code rely on: delivery of every buffer in order with its episode
statistics, weights to every worker (newest wins), receives that do not block (or block with a timeout), idempotent
closing, refusal of oversized and malformed messages without harm to the server, clients that wait for a server
started after them and reconnect after it restarts.

Timeouts are generous (``delivery_timeout``): the contract checks behaviour, not speed, on machines that may be busy.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest

from tmrl_core.buffer import Buffer
from tmrl_core.transport.base import ServerEndpoint, TrainerEndpoint, Transport, WorkerEndpoint


def make_buffer(worker: int, first: int, count: int, *, obs_size: int = 8) -> Buffer:
    """``count`` samples tagged ``(worker, sequence number)`` in their action, with episode statistics."""
    buffer = Buffer(maxlen=max(count, 1))
    for seq in range(first, first + count):
        act = np.array([worker, seq], dtype=np.int64)
        obs = np.full(obs_size, seq, dtype=np.float32)
        buffer.append_sample((act, obs, float(seq), False, seq == first + count - 1, {"worker": worker}))
    buffer.stat_train_return = float(first)
    buffer.stat_train_steps = count
    return buffer


def make_weights(version: int, size: int = 16) -> dict[str, Any]:
    """A small actor's ``state_dict`` whose values all equal ``version``."""
    import torch

    return {"layer.weight": torch.full((size, 2), float(version)), "layer.bias": torch.full((size,), float(version))}


def weights_version(weights: Any) -> int:
    """The version :func:`make_weights` put in ``weights``."""
    values = {float(np.asarray(value).reshape(-1)[0]) for value in weights.values()}
    assert len(values) == 1, f"weights mix versions {values}"
    return int(values.pop())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class TransportContract:
    """Subclass in a transport's tests and provide the ``make_transport`` fixture (see the module docstring)."""

    #: Seconds allowed for any delivery (generous: CI machines are slow and shared).
    delivery_timeout: ClassVar[float] = 60.0
    #: ``server.max_message_bytes`` used by the contract (the settings allow no less than 1024).
    max_message_bytes: ClassVar[int] = 256 * 1024

    @pytest.fixture
    def make_transport(self) -> Callable[..., Transport]:
        raise NotImplementedError("a TransportContract subclass must provide the make_transport fixture")

    def send_raw(self, transport: Transport, data: bytes) -> bool:
        """Open a raw connection to the server of ``transport``, write ``data`` and close; False if not applicable."""
        return False

    # -- helpers ----------------------------------------------------------------------------------------------------

    @pytest.fixture
    def parts(self) -> Any:
        """Collects servers and clients to close at the end of the test, whatever happens."""
        opened: list[Any] = []
        yield opened
        for part in reversed(opened):
            try:
                if isinstance(part, ServerEndpoint):
                    part.stop()
                else:
                    part.close()
            except Exception as exc:  # noqa: BLE001 - report, but keep closing the others
                print(f"closing {part!r} failed: {exc!r}")

    @pytest.fixture
    def transport(self, make_transport: Callable[..., Transport]) -> Transport:
        return make_transport(max_message_bytes=self.max_message_bytes, local_buffer_max_samples=10_000)

    def start_server(self, transport: Transport, parts: list[Any]) -> ServerEndpoint:
        server = transport.server()
        parts.append(server)
        server.start()
        assert isinstance(server.address, str) and server.address
        return server

    def trainer(self, transport: Transport, parts: list[Any]) -> TrainerEndpoint:
        trainer = transport.trainer()
        parts.append(trainer)
        return trainer

    def worker(self, transport: Transport, parts: list[Any], name: str) -> WorkerEndpoint:
        worker = transport.worker(name)
        parts.append(worker)
        return worker

    def collect(self, trainer: TrainerEndpoint, expected_samples: int, received: list[Buffer] | None = None) -> list:
        """Receive buffers until ``expected_samples`` samples arrived; returns the buffers."""
        received = [] if received is None else received

        def enough() -> bool:
            received.extend(trainer.receive_samples())
            return sum(len(b) for b in received) >= expected_samples

        wait_for(enough, self.delivery_timeout, f"{expected_samples} samples at the trainer")
        return received

    def connect_worker(self, trainer: TrainerEndpoint, worker: WorkerEndpoint, version: int) -> None:
        """Send weights until ``worker`` holds weights of ``version`` (so both are connected)."""
        deadline = time.monotonic() + self.delivery_timeout
        trainer.send_weights(make_weights(version))
        while True:
            weights = worker.receive_weights(blocking=True, timeout=0.5)
            if weights is not None and weights_version(weights) == version:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"worker did not receive weights version {version}")
            trainer.send_weights(make_weights(version))

    # -- the contract -----------------------------------------------------------------------------------------------

    def test_samples_from_two_workers_reach_the_trainer_in_order(self, transport: Transport, parts: list) -> None:
        self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        workers = [self.worker(transport, parts, f"w{index}") for index in range(2)]
        per_buffer, buffers_per_worker = 25, 6
        for first in range(0, per_buffer * buffers_per_worker, per_buffer):
            for index, worker in enumerate(workers):
                worker.send_samples(make_buffer(index, first, per_buffer))
        total = 2 * per_buffer * buffers_per_worker
        received = self.collect(trainer, total)
        assert sum(len(b) for b in received) == total
        sequences: dict[int, list[int]] = {0: [], 1: []}
        for buffer in received:
            first_worker, first_seq = (int(x) for x in buffer.memory[0][0])
            # a buffer arrives whole, with its statistics
            assert buffer.stat_train_return == float(first_seq) and buffer.stat_train_steps == len(buffer)
            for act, obs, rew, terminated, truncated, info in buffer.memory:
                worker_index, seq = (int(x) for x in act)
                assert worker_index == first_worker and info == {"worker": worker_index}
                assert obs.dtype == np.float32 and np.all(obs == seq) and rew == float(seq) and not terminated
                assert truncated == (seq == buffer.memory[-1][0][1])
                sequences[worker_index].append(seq)
        for index in (0, 1):
            assert sequences[index] == list(range(per_buffer * buffers_per_worker)), f"worker {index} out of order"

    def test_weights_reach_every_worker(self, transport: Transport, parts: list) -> None:
        self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        workers = [self.worker(transport, parts, f"w{index}") for index in range(2)]
        for worker in workers:
            self.connect_worker(trainer, worker, 1)
        trainer.send_weights(make_weights(2))
        for worker in workers:

            def newest(w: WorkerEndpoint = worker) -> Any:
                weights = w.receive_weights(blocking=True, timeout=0.5)
                # copies of version 1 sent while connecting may still arrive first, never anything else
                assert weights is None or weights_version(weights) in (1, 2)
                return weights if weights is not None and weights_version(weights) == 2 else None

            weights = wait_for(newest, self.delivery_timeout, "weights version 2", interval=0)
            assert {name: tuple(np.asarray(v).shape) for name, v in weights.items()} == {
                "layer.weight": (16, 2),
                "layer.bias": (16,),
            }

    def test_newest_weights_win(self, transport: Transport, parts: list) -> None:
        self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        self.connect_worker(trainer, worker, 1)
        for version in range(2, 12):
            trainer.send_weights(make_weights(version))
        seen: list[int] = []

        def newest_seen() -> bool:
            weights = worker.receive_weights(blocking=True, timeout=0.5)
            if weights is not None:
                seen.append(weights_version(weights))
            return bool(seen) and seen[-1] == 11

        wait_for(newest_seen, self.delivery_timeout, "weights version 11", interval=0)
        assert seen == sorted(seen), f"older weights arrived after newer ones: {seen}"
        # nothing older arrives afterwards
        assert worker.receive_weights(blocking=True, timeout=1.0) is None

    def test_receives_do_not_block(self, transport: Transport, parts: list) -> None:
        self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        started = time.monotonic()
        for _ in range(20):
            assert trainer.receive_samples() == []
            assert worker.receive_weights() is None
            assert worker.receive_weights(blocking=False) is None
        assert time.monotonic() - started < 2.0

    def test_blocking_receive_waits_for_its_timeout(self, transport: Transport, parts: list) -> None:
        self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        self.connect_worker(trainer, worker, 1)
        # copies of version 1 sent while connecting may still be on their way: let them arrive
        while worker.receive_weights(blocking=True, timeout=1.0) is not None:
            pass
        started = time.monotonic()
        assert worker.receive_weights(blocking=True, timeout=0.6) is None
        assert 0.5 <= time.monotonic() - started < 10.0
        # and returns as soon as weights arrive
        trainer.send_weights(make_weights(2))
        weights = worker.receive_weights(blocking=True, timeout=self.delivery_timeout)
        assert weights is not None and weights_version(weights) == 2

    def test_close_is_idempotent(self, transport: Transport, parts: list) -> None:
        server = self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        self.connect_worker(trainer, worker, 1)
        for _ in range(2):
            worker.close()
            trainer.close()
            server.stop()
        never_started = transport.server()
        never_started.stop()

    def test_oversized_buffers_are_refused_and_the_server_keeps_serving(
        self, transport: Transport, parts: list
    ) -> None:
        self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        self.connect_worker(trainer, worker, 1)
        rng = np.random.default_rng(0)
        huge = make_buffer(0, 0, 3)
        noise = rng.integers(0, 256, self.max_message_bytes * 2, dtype=np.uint8)  # incompressible
        huge.memory[1] = (huge.memory[1][0], noise, *huge.memory[1][2:])
        worker.send_samples(huge)
        worker.send_samples(make_buffer(0, 100, 5))
        received = self.collect(trainer, 5)
        time.sleep(0.5)
        received += trainer.receive_samples()
        assert [[int(s[0][1]) for s in b.memory] for b in received] == [[100, 101, 102, 103, 104]]
        # still relaying, both ways
        self.connect_worker(trainer, worker, 2)
        worker.send_samples(make_buffer(0, 200, 2))
        assert sum(len(b) for b in self.collect(trainer, 2)) == 2

    def test_garbage_from_a_raw_connection_is_refused(self, transport: Transport, parts: list) -> None:
        self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        self.connect_worker(trainer, worker, 1)
        attempts = [b"", b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 8, pickle.dumps(Buffer())]
        if not all([self.send_raw(transport, data) for data in attempts]):
            pytest.skip("this transport has no raw connection to test")
        worker.send_samples(make_buffer(0, 0, 4))
        assert sum(len(b) for b in self.collect(trainer, 4)) == 4
        self.connect_worker(trainer, worker, 2)

    def test_clients_started_before_the_server_wait_for_it(self, transport: Transport, parts: list) -> None:
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        worker.send_samples(make_buffer(0, 0, 3))
        time.sleep(0.5)
        assert trainer.receive_samples() == []
        self.start_server(transport, parts)
        assert sum(len(b) for b in self.collect(trainer, 3)) == 3
        self.connect_worker(trainer, worker, 1)

    def test_samples_dropped_while_disconnected_are_counted(
        self, make_transport: Callable[..., Transport], parts: list
    ) -> None:
        """A worker without a server keeps at most ``local_buffer_max_samples`` samples; what it drops is counted in
        the ``dropped`` field of a buffer it delivers later (the trainer reports it as ``samples_dropped``)."""
        transport = make_transport(max_message_bytes=self.max_message_bytes, local_buffer_max_samples=6)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        for index in range(5):
            worker.send_samples(make_buffer(0, 3 * index, 3))
        time.sleep(0.5)
        self.start_server(transport, parts)
        received = self.collect(trainer, 6)
        time.sleep(0.5)  # anything else on its way
        received.extend(trainer.receive_samples())
        delivered = [int(s[0][1]) for b in received for s in b.memory]
        dropped = sum(b.dropped for b in received)
        assert dropped > 0 and len(delivered) + dropped == 15, (delivered, dropped)
        assert delivered[-6:] == list(range(9, 15))  # the newest are kept

    def test_clients_reconnect_after_the_server_restarts(self, transport: Transport, parts: list) -> None:
        server = self.start_server(transport, parts)
        trainer = self.trainer(transport, parts)
        worker = self.worker(transport, parts, "w0")
        self.connect_worker(trainer, worker, 1)
        worker.send_samples(make_buffer(0, 0, 3))
        assert sum(len(b) for b in self.collect(trainer, 3)) == 3
        server.stop()
        time.sleep(0.5)
        self.start_server(transport, parts)
        worker.send_samples(make_buffer(0, 3, 3))
        received = self.collect(trainer, 3)
        assert [int(s[0][1]) for b in received for s in b.memory] == [3, 4, 5]
        self.connect_worker(trainer, worker, 2)
