"""The ``tlspyo`` transport: server, trainer and workers on different machines, over TCP with TLS and a password.

Built on tlspyo's Relay and Endpoint (hardened: see :mod:`tmrl_tlspyo.relay` and :mod:`tmrl_tlspyo.endpoint`), with
the core codec as serializer and deserializer, so nothing is ever unpickled. On top of tlspyo:

- **samples**: a worker encodes each buffer with :func:`tmrl_core.codec.encode_buffer` and sends it in chunks of at
  most ``server.chunk_bytes`` (tlspyo's receive path is quadratic in the frame size); the trainer reassembles them
  per worker, refusing a declared size over ``server.max_message_bytes`` before receiving it;
- **weights**: the trainer signs every weights message with its Ed25519 key (``weights-signing-key.pem``); workers
  verify with the public key (``weights-signing-public.pem``) and refuse anything unsigned, forged, for another run,
  or older than what they hold; the relay lets only the trainer broadcast to workers;
- **flow control and reconnection**: every client sends a heartbeat that the relay echoes back; a worker keeps at
  most a small window of unconfirmed data in tlspyo's hands and queues the rest itself, bounded by
  ``server.local_buffer_max_samples`` (oldest dropped, counted in its log and reported to the trainer's metrics with
  the next buffer that gets through). The trainer holds at most ``server.queue_bytes`` of received buffers; beyond,
  it stops reading, so the relay holds the workers' chunks and then stops reading the workers (see
  :mod:`tmrl_tlspyo.relay`). Clients started before the server, or whose server restarts, connect when it is up
  (tlspyo reconnects; delays from 0.5 s up to 5 s).

Messages inside tlspyo objects (codec values): ``("ping", n)``, ``("chunk", sender, message, index, count, total,
data)`` and ``("weights", run, sequence, signature, payload)``; see ``docs/tlspyo.md``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from tmrl_core import Buffer, codec
from tmrl_core.errors import CodecError, TransportError
from tmrl_core.transport import (
    DROPPED_UNSENDABLE,
    DROPPED_UNSENT,
    DropOldestQueue,
    DropReports,
    NewestSlot,
    ReceivedBuffers,
    ServerEndpoint,
    TrainerEndpoint,
    Transport,
    Weights,
    WorkerEndpoint,
    snapshot,
)
from tmrl_tlspyo import credentials
from tmrl_tlspyo.relay import ECHO, TRAINER_GROUP, WORKERS_GROUP, RelayPolicy

log = logging.getLogger("tmrl.transport.tlspyo")

#: bytes of tlspyo envelope and message fields around a payload (generous)
_OVERHEAD = 4096
_signed_bytes = credentials.signed_bytes


class TlspyoTransport(Transport):
    """Workers, server and trainer on any machines, through a tlspyo relay.

    Args:
        settings: the ``server`` settings section: ``host``/``bind``/``port``, ``password``, ``tls`` and
            ``tls_hostname``, ``tls_credentials_directory`` (default ``<data>/tls``), ``max_workers``,
            ``max_message_bytes``, ``chunk_bytes``, ``local_buffer_max_samples``, ``connect_timeout``.
        run_name: signed into weights, so that workers of one run refuse another run's weights.
        options: ``heartbeat`` (seconds between heartbeats, default 0.5), ``handshake_timeout`` (seconds the relay
            gives a new connection to authenticate, default 10), ``reconnect_delay`` and ``reconnect_max_delay``
            (default 0.5 and 5 s), ``relay_pending_bytes`` (chunks the relay holds for the trainer, all workers
            together, default ``server.queue_bytes``), ``stalled_timeout`` (seconds a client may leave the relay's
            writes unread, default 30).
    """

    def __init__(self, settings: Any, *, run_name: str = "default", **options: Any) -> None:
        super().__init__(settings, run_name=run_name, **options)
        password = settings.password
        self.password = str(password.get_secret_value() if hasattr(password, "get_secret_value") else password)
        self.tls = bool(settings.tls)
        self.hostname = str(settings.tls_hostname)
        self.keys_dir = credentials.credentials_dir(settings)
        self.host, self.bind, self.port = str(settings.host), str(settings.bind), int(settings.port)
        self.max_bytes = int(settings.max_message_bytes)
        self.chunk_bytes = max(1024, min(int(settings.chunk_bytes), self.max_bytes))
        self.max_frame = self.max_bytes + _OVERHEAD
        self.max_pending_samples = int(settings.local_buffer_max_samples)
        self.max_workers = int(settings.max_workers)
        self.connect_timeout = float(settings.connect_timeout)
        self.heartbeat = float(options.get("heartbeat", 0.5))
        self.handshake_timeout = float(options.get("handshake_timeout", 10.0))
        self.reconnect_delay = float(options.get("reconnect_delay", 0.5))
        self.reconnect_max_delay = float(options.get("reconnect_max_delay", 5.0))
        self.queue_bytes = int(settings.queue_bytes)
        self.relay_pending_bytes = int(options.get("relay_pending_bytes", self.queue_bytes))
        self.stalled_timeout = float(options.get("stalled_timeout", 30.0))

    @property
    def security(self) -> str | None:
        return "TLS" if self.tls else None

    def server(self) -> TlspyoServer:
        return TlspyoServer(self)

    def trainer(self) -> TlspyoTrainer:
        return TlspyoTrainer(self)

    def worker(self, name: str | None = None) -> TlspyoWorker:
        return TlspyoWorker(self, name or f"worker-{os.getpid()}")


# -- server ----------------------------------------------------------------------------------------------------------


class TlspyoServer(ServerEndpoint):
    """The relay, in its own process (started by :meth:`start`)."""

    def __init__(self, transport: TlspyoTransport) -> None:
        self.t = transport
        self.relay: Any = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.t.bind}:{self.t.port} ({'TLS' if self.t.tls else 'no TLS'})"

    def start(self) -> None:
        from tmrl_tlspyo.relay import TmrlRelay

        with self._lock:
            if self.relay is not None:
                return
            # the relay checks the signature of weights before it keeps them as the latest
            needed = (credentials.SIGNING_PUBLIC_KEY,)
            if self.t.tls:
                needed = (credentials.TLS_KEY, credentials.TLS_CERTIFICATE, *needed)
            credentials.require(self.t.keys_dir, needed, role="server")
            if not self.t.tls and self.t.bind not in ("127.0.0.1", "localhost", "::1"):
                log.warning(
                    "server: TLS is off (server.tls=false): the password and all data cross the network in clear "
                    "text; turn TLS on beyond a trusted network"
                )
            chunk_frame = self.t.chunk_bytes + _OVERHEAD
            policy = RelayPolicy(
                password=self.t.password,
                max_frame_bytes=self.t.max_frame,
                keys_dir=str(self.t.keys_dir),
                max_workers=self.t.max_workers,
                handshake_timeout=self.t.handshake_timeout,
                pending_bytes=max(self.t.relay_pending_bytes, 2 * chunk_frame),
                worker_queue_bytes=max(self.t.relay_pending_bytes // 16, 2 * chunk_frame),
                trainer_window_bytes=max(self.t.relay_pending_bytes // 8, 2 * chunk_frame),
                stalled_timeout=self.t.stalled_timeout,
            )
            self.relay = TmrlRelay(
                port=self.t.port,
                bind=self.t.bind,
                policy=policy,
                security=self.t.security,
                keys_dir=str(self.t.keys_dir) if self.t.tls else None,
            )
            log.info("server: tlspyo relay listening on %s", self.address)

    def stop(self) -> None:
        with self._lock:
            if self.relay is not None:
                self.relay.stop()

    def kill(self) -> None:
        """Kill the relay process at once, as a crash would (tests)."""
        with self._lock:
            if self.relay is not None:
                self.relay.kill()


# -- clients ---------------------------------------------------------------------------------------------------------


class _Client:
    """What trainer and worker share: the tlspyo endpoint, a reader thread, a sender thread and the heartbeat."""

    group = "?"
    role = "?"

    def __init__(self, transport: TlspyoTransport, name: str) -> None:
        from tmrl_tlspyo.endpoint import TmrlEndpoint

        self.t = transport
        self.name = name
        self.rejected = 0
        self._cond = threading.Condition()
        self._closing = False
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._nonce = 0  # last heartbeat sent
        self._echoed = 0  # last heartbeat echoed back
        self._last_ping = 0.0
        self._last_echo: float | None = None
        self._started = time.monotonic()
        if self.t.tls:
            credentials.require(self.t.keys_dir, (credentials.TLS_CERTIFICATE,), role=self.role)
        self._check_credentials()
        self.endpoint = TmrlEndpoint(
            host=self.t.host,
            port=self.t.port,
            password=self.t.password,
            group=self.group,
            security=self.t.security,
            keys_dir=str(self.t.keys_dir) if self.t.tls else None,
            hostname=self.t.hostname,
            max_frame=self.t.max_frame,
            reconnect_delay=self.t.reconnect_delay,
            reconnect_max_delay=self.t.reconnect_max_delay,
        )
        self._reader = threading.Thread(target=self._read_loop, name=f"tmrl-tlspyo-{self.role}-read", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"tmrl-tlspyo-{self.role}-send", daemon=True)
        self._reader.start()
        self._sender.start()

    def _check_credentials(self) -> None:
        """Raise TransportError now if a credential this role needs is missing."""

    # -- state -------------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a heartbeat came back recently (the relay is reachable and accepts us)."""
        last = self._last_echo
        return last is not None and time.monotonic() - last < max(5.0, 4 * self.t.heartbeat)

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until a heartbeat came back (True), or ``timeout`` seconds (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.connected and not self._closed.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.1 if remaining is None else min(0.1, remaining))
        return self.connected

    def _check_not_stranded(self) -> None:
        """Raise if the server never answered within ``server.connect_timeout`` (0: wait forever)."""
        timeout = self.t.connect_timeout
        if timeout and self._last_echo is None and time.monotonic() - self._started > timeout:
            raise TransportError(
                f"no server at {self.t.host}:{self.t.port} after {timeout:g} s",
                hint="start `tmrl server` first; check server.host/port, the password, TLS and the certificate "
                "(`tmrl tls show` on both machines); or raise server.connect_timeout (0 waits forever)",
            )
        if not self.endpoint.alive and not self._closed.is_set():
            raise TransportError(f"the tlspyo network process of this {self.role} died")

    # -- sending -----------------------------------------------------------------------------------------------------

    def _send(self, obj: Any, destination: dict[str, int]) -> None:
        """Hand one object to tlspyo (called from the sender thread only)."""
        self.endpoint.send_object(obj, destination)

    def _ping_if_due(self, now: float, force: bool = False) -> int | None:
        """Send a heartbeat when one is due; returns its number. At most 3 unanswered ones, unless they are stale
        (lost with a connection), so that a long outage does not pile heartbeats up."""
        unanswered = self._nonce - self._echoed
        due = force or now - self._last_ping >= self.t.heartbeat
        if due and (unanswered < 3 or now - self._last_ping >= 5.0):
            self._nonce += 1
            self._last_ping = now
            self._send(("ping", self._nonce), {ECHO: -1})
            return self._nonce
        return None

    def _send_loop(self) -> None:
        try:
            while not self._closed.is_set():
                self._send_step()
        except OSError as exc:
            if not self._closed.is_set():
                log.error("%s %s: lost its tlspyo network process: %s", self.role, self.name, exc)

    def _send_step(self) -> None:
        raise NotImplementedError

    # -- receiving ---------------------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            raw = self.endpoint.receive(timeout=0.2)
            if raw is None:
                if not self.endpoint.alive:
                    return
                continue
            try:
                message = codec.decode(raw, max_bytes=self.t.max_frame)
                if type(message) is not tuple or not message or type(message[0]) is not str:
                    raise CodecError("not a tlspyo-transport message")
                if message[0] == "ping":
                    self._on_echo(message)
                else:
                    self._on_message(message)
            except CodecError as exc:
                self.rejected += 1
                log.warning("%s %s: rejected a message: %s", self.role, self.name, exc.message)

    def _on_echo(self, message: tuple) -> None:
        if len(message) != 2 or type(message[1]) is not int:
            raise CodecError("malformed heartbeat")
        with self._cond:
            if message[1] > self._echoed:
                first = self._last_echo is None
                self._echoed = message[1]
                self._last_echo = time.monotonic()
                if first:
                    log.info("%s %s: connected to %s:%d", self.role, self.name, self.t.host, self.t.port)
                self._on_confirmed(message[1])
            else:
                self._last_echo = time.monotonic()
            self._cond.notify_all()

    def _on_confirmed(self, nonce: int) -> None:
        """Everything sent before heartbeat ``nonce`` reached the relay (called with ``_cond`` held)."""

    def _on_message(self, message: tuple) -> None:
        raise NotImplementedError

    # -- closing -----------------------------------------------------------------------------------------------------

    def _drained(self) -> bool:
        """Nothing waits to be sent or confirmed (called with ``_cond`` held)."""
        return True

    def _summary(self) -> str:
        """What this client did, for the log line at closing."""
        return ""

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most ``timeout`` seconds, if connected), then disconnect; idempotent."""
        with self._close_lock:
            if self._closed.is_set():
                return
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                deadline = time.monotonic() + timeout
                while self.connected and not self._drained() and time.monotonic() < deadline:
                    self._cond.wait(0.1)
                log.info("%s %s: closing: %s", self.role, self.name, self._summary())
            self._closed.set()
            with self._cond:
                self._cond.notify_all()
            self._sender.join(timeout=5.0)
            self.endpoint.stop()
            self._reader.join(timeout=5.0)


class TlspyoWorker(_Client, WorkerEndpoint):
    """A worker: sends buffers in chunks (bounded queue while disconnected); receives signed weights."""

    group = WORKERS_GROUP
    role = "worker"

    def __init__(self, transport: TlspyoTransport, name: str) -> None:
        self._outbox: DropOldestQueue[Buffer] = DropOldestQueue(transport.max_pending_samples)
        self._reports = DropReports(name)
        self._in_flight: collections.deque[tuple[int, int]] = collections.deque()  # (heartbeat number, bytes)
        self._in_flight_bytes = 0
        self.oversized_buffers = 0
        self._sending = False
        self.sent_samples = 0
        self.sent_buffers = 0
        # a name unique among all workers of all machines: the trainer reassembles chunks per sender
        self.sender_id = f"{name}#{secrets.token_hex(6)}"
        self._message_number = 0
        self._weights: NewestSlot[Weights] = NewestSlot()
        self._weights_sequence = 0
        self._verifier: credentials.WeightsVerifier | None = None
        super().__init__(transport, name)

    def _check_credentials(self) -> None:
        self._verifier = credentials.WeightsVerifier(self.t.keys_dir)

    # -- samples -----------------------------------------------------------------------------------------------------

    def send_samples(self, buffer: Buffer) -> None:
        self._check_not_stranded()
        copy = snapshot(buffer)  # the caller may go on appending to (or clearing) its buffer
        with self._cond:
            self._reports.stamp(copy)
            dropped = self._outbox.put(copy)
            if dropped:
                # the count travels with the newest buffer (kept: it is this one), so the trainer's metrics show it
                lost = self._reports.lost(DROPPED_UNSENT, dropped)
                self._reports.stamp(copy)
                log.warning(
                    "worker %s: the server is unreachable or slow; dropped %d unsent samples (%d so far)",
                    self.name,
                    lost,
                    self.dropped_samples,
                )
            self._cond.notify_all()

    @property
    def dropped_samples(self) -> int:
        """Samples dropped because the server could not take them in time (oldest first)."""
        return self._outbox.dropped_weight

    @property
    def pending_samples(self) -> int:
        """Samples queued here and not yet handed to tlspyo."""
        with self._cond:
            return self._outbox.weight

    #: buffers handed to tlspyo and not yet confirmed by a heartbeat, at most (what tlspyo would otherwise queue
    #: without bound while disconnected)
    window = 2

    def _can_send(self) -> bool:
        return bool(self._outbox) and len(self._in_flight) < self.window

    def _send_step(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed.is_set() or self._can_send(), timeout=self.t.heartbeat)
            if self._closed.is_set():
                return
            self._ping_if_due(time.monotonic())
            buffer = self._outbox.get() if self._can_send() else None
            # between the queue and the in-flight window: closing must wait for it too (and count it)
            self._sending = buffer is not None
        if buffer is None:
            return
        try:
            self._send_buffer(buffer)
        finally:
            with self._cond:
                self._sending = False
                self._cond.notify_all()

    def _send_buffer(self, buffer: Buffer) -> None:
        try:
            data = codec.encode_buffer(buffer)
        except CodecError as exc:
            log.error("worker %s: cannot encode a buffer, dropped it: %s", self.name, exc)
            with self._cond:
                self._reports.lost(DROPPED_UNSENDABLE, [buffer])  # reported with the next buffer
            return
        if len(data) > self.t.max_bytes:
            self.oversized_buffers += 1
            with self._cond:
                self._reports.lost(DROPPED_UNSENDABLE, [buffer])
            log.error(
                "worker %s: a buffer of %d samples takes %d bytes, more than server.max_message_bytes=%d; dropped "
                "(send buffers more often, or raise the limit on every machine)",
                self.name,
                len(buffer),
                len(data),
                self.t.max_bytes,
            )
            return
        self._message_number += 1
        size = self.t.chunk_bytes
        count = max(1, math.ceil(len(data) / size))
        view = memoryview(data)
        for index in range(count):
            chunk = bytes(view[index * size : (index + 1) * size])
            self._send(
                ("chunk", self.sender_id, self._message_number, index, count, len(data), chunk), {TRAINER_GROUP: 1}
            )
        with self._cond:
            nonce = self._ping_if_due(time.monotonic(), force=True) or self._nonce
            self._in_flight.append((nonce, len(data)))
            self._in_flight_bytes += len(data)
            self.sent_samples += len(buffer)
            self.sent_buffers += 1

    def _on_confirmed(self, nonce: int) -> None:
        while self._in_flight and self._in_flight[0][0] <= nonce:
            self._in_flight_bytes -= self._in_flight.popleft()[1]

    def _drained(self) -> bool:
        return not self._outbox and not self._in_flight and not self._sending

    def _summary(self) -> str:
        unsent = self._outbox.weight
        unconfirmed = len(self._in_flight)
        return (
            f"sent {self.sent_samples} samples in {self.sent_buffers} buffers, dropped {self.dropped_samples}, "
            f"left unsent {unsent}, unconfirmed buffers {unconfirmed}"
        )

    # -- weights -----------------------------------------------------------------------------------------------------

    def _on_message(self, message: tuple) -> None:
        if message[0] != "weights" or len(message) != 5:
            raise CodecError(f"unexpected {message[0]!r} message for a worker")
        _, run, sequence, signature, payload = message
        if (
            type(run) is not str
            or type(sequence) is not int
            or type(signature) is not bytes
            or type(payload) is not bytes
        ):
            raise CodecError("malformed weights message")
        assert self._verifier is not None
        if run != self.t.run_name:
            raise CodecError(f"weights of run {run!r} (this worker is in run {self.t.run_name!r}); ignored")
        if not self._verifier.verify(signature, _signed_bytes(run, sequence, payload)):
            raise CodecError(
                "weights whose signature does not verify with weights-signing-public.pem: refused, the current "
                "policy is kept (a client holding the password may be trying to push its own weights)"
            )
        if sequence <= self._weights_sequence:
            raise CodecError(f"weights older than the current ones (#{sequence} <= #{self._weights_sequence})")
        weights = codec.decode_weights(payload, max_bytes=self.t.max_bytes)
        with self._cond:
            self._weights_sequence = sequence
            self._weights.put(weights)
            self._cond.notify_all()

    def receive_weights(self, blocking: bool = False, timeout: float | None = None) -> Weights | None:
        self._check_not_stranded()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while blocking and not self._weights and not self._closed.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(0.2 if remaining is None else min(0.2, remaining))
            return self._weights.take()


class _Reassembly:
    """Chunks of one sender's current message."""

    __slots__ = ("message", "count", "total", "parts", "size", "updated")

    def __init__(self, message: int, count: int, total: int) -> None:
        self.message, self.count, self.total = message, count, total
        self.parts: list[bytes] = []
        self.size = 0
        self.updated = time.monotonic()


class TlspyoTrainer(_Client, TrainerEndpoint):
    """The trainer: reassembles and decodes buffers; signs and broadcasts weights (newest wins)."""

    group = TRAINER_GROUP
    role = "trainer"
    #: senders with a message in progress, at most (the stalest is dropped beyond)
    max_partial_senders = 256

    def __init__(self, transport: TlspyoTransport, name: str = "trainer") -> None:
        # decoded buffers, bounded (see ReceivedBuffers): beyond, the reader waits, the endpoint's queue fills and
        # its network process stops reading from the relay (see the module docstring)
        self._received = ReceivedBuffers(transport.max_pending_samples, transport.queue_bytes)
        self._partial: collections.OrderedDict[str, _Reassembly] = collections.OrderedDict()
        self._partial_bytes = 0
        self._weights: NewestSlot[bytes] = NewestSlot()  # encoded, waiting to be signed and sent
        self._weights_in_flight: tuple[int, float] | None = None  # (heartbeat number, when)
        self._sequence = 0
        self._signer: credentials.WeightsSigner | None = None
        self.incomplete_messages = 0
        self.received_samples = 0
        self.received_buffers = 0
        super().__init__(transport, name)

    def _check_credentials(self) -> None:
        self._signer = credentials.WeightsSigner(self.t.keys_dir)

    # -- weights -----------------------------------------------------------------------------------------------------

    def send_weights(self, weights: Weights) -> None:
        self._check_not_stranded()
        data = codec.encode_weights(weights)  # a copy: training may go on changing the tensors
        if len(data) > self.t.max_bytes - _OVERHEAD:
            raise TransportError(
                f"the actor's weights take {len(data)} bytes, more than server.max_message_bytes allows",
                hint="raise server.max_message_bytes on every machine",
            )
        with self._cond:
            self._weights.put(data)
            self._cond.notify_all()

    def _weights_sendable(self) -> bool:
        if not self._weights:
            return False
        in_flight = self._weights_in_flight
        # one weights message in tlspyo's hands at a time; if its heartbeat never comes back (lost with the
        # connection), the newest weights go after a while
        return in_flight is None or time.monotonic() - in_flight[1] > 10.0

    def _send_step(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed.is_set() or self._weights_sendable(), timeout=self.t.heartbeat)
            if self._closed.is_set():
                return
            self._ping_if_due(time.monotonic())
            data = self._weights.take() if self._weights_sendable() else None
        if data is None:
            return
        assert self._signer is not None
        # strictly increasing across trainer restarts too (a clock in nanoseconds), so workers can refuse replays
        self._sequence = max(self._sequence + 1, time.time_ns())
        run = self.t.run_name
        signature = self._signer.sign(_signed_bytes(run, self._sequence, data))
        self._send(("weights", run, self._sequence, signature, data), {WORKERS_GROUP: -1})
        with self._cond:
            nonce = self._ping_if_due(time.monotonic(), force=True) or self._nonce
            self._weights_in_flight = (nonce, time.monotonic())

    def _on_confirmed(self, nonce: int) -> None:
        if self._weights_in_flight is not None and self._weights_in_flight[0] <= nonce:
            self._weights_in_flight = None

    def _drained(self) -> bool:
        return not self._weights and self._weights_in_flight is None

    def _summary(self) -> str:
        return (
            f"received {self.received_samples} samples in {self.received_buffers} buffers, rejected "
            f"{self.rejected} messages, dropped {self.incomplete_messages} incomplete buffers"
        )

    # -- samples -----------------------------------------------------------------------------------------------------

    def receive_samples(self) -> list[Buffer]:
        self._check_not_stranded()
        with self._cond:
            received = self._received.take_all()
            self.received_buffers += len(received)
            self.received_samples += sum(len(buffer) for buffer in received)
            self._cond.notify_all()
        return received

    def _on_message(self, message: tuple) -> None:
        if message[0] != "chunk" or len(message) != 7:
            raise CodecError(f"unexpected {message[0]!r} message for the trainer")
        _, sender, number, index, count, total, data = message
        if not (
            type(sender) is str
            and type(number) is int
            and type(index) is int
            and type(count) is int
            and type(total) is int
            and type(data) is bytes
        ):
            raise CodecError("malformed chunk")
        if not 0 <= index < count or total < 0:
            raise CodecError("malformed chunk numbering")
        if total > self.t.max_bytes:
            raise CodecError(f"a buffer of {total} bytes announced, over server.max_message_bytes; refused")
        partial = self._partial.get(sender)
        if index == 0:
            if partial is not None:
                self._drop_partial(sender, "a new message started before it was complete")
            partial = _Reassembly(number, count, total)
            self._partial[sender] = partial
        elif partial is None or partial.message != number or len(partial.parts) != index:
            if partial is not None:
                self._drop_partial(sender, "chunks missing (lost with a connection?)")
            raise CodecError(f"chunk {index} of message {number} from {sender} without its predecessors; dropped")
        if partial.count != count or partial.total != total or partial.size + len(data) > total:
            self._drop_partial(sender, "inconsistent chunks")
            raise CodecError(f"inconsistent chunks from {sender}")
        partial.parts.append(data)
        partial.size += len(data)
        partial.updated = time.monotonic()
        self._partial.move_to_end(sender)
        self._partial_bytes += len(data)
        self._bound_partials()
        if len(partial.parts) < count:
            return
        self._drop_partial(sender, None)
        if partial.size != total:
            raise CodecError(f"message from {sender} is {partial.size} bytes, announced {total}")
        buffer = codec.decode_buffer(b"".join(partial.parts), max_bytes=self.t.max_bytes)
        with self._cond:
            while self._received.full and not self._closed.is_set():
                self._cond.wait(0.2)
            self._received.put(buffer, total)

    def _drop_partial(self, sender: str, why: str | None) -> None:
        partial = self._partial.pop(sender, None)
        if partial is None:
            return
        self._partial_bytes -= partial.size
        if why:
            self.incomplete_messages += 1
            log.warning("trainer: dropped an incomplete buffer from %s: %s", sender, why)

    def _bound_partials(self) -> None:
        while self._partial and (
            len(self._partial) > self.max_partial_senders or self._partial_bytes > 2 * self.t.max_bytes
        ):
            stalest = next(iter(self._partial))
            self._drop_partial(stalest, "too many buffers in progress at once")


def default_credentials_dir() -> Path:
    """``<data>/tls``: where ``tmrl tls generate`` writes by default."""
    return credentials.credentials_dir(None)
