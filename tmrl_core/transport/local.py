"""The ``local`` transport: server, trainer and workers on one machine, without a network port.

The server listens on a Unix socket inside the run's folder (``<data>/runs/<run>/``; a named pipe on Windows), so
only the user's processes can reach it. Every connection starts with a mutual HMAC-SHA256 challenge keyed by the
password (the password itself never travels), then a hello message naming the peer's role. After that, messages are
:mod:`tmrl_core.codec` messages framed by ``multiprocessing.connection`` (``send_bytes``/``recv_bytes``, never its
pickling ``send``/``recv``):

- worker -> server -> trainer: sample buffers (the server checks the header and relays the bytes as they are);
- trainer -> server -> every worker: weights (newest wins: a slow worker skips versions instead of queueing them).

It works the same between threads of one process (the tutorial's style) and between processes. Clients started
before the server wait for it; a client whose server goes away reconnects when it comes back, keeping a bounded
queue of unsent buffers (oldest dropped, and counted).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from tmrl_core import codec
from tmrl_core.buffer import DROPPED_ON_SERVER, DROPPED_UNSENDABLE, DROPPED_UNSENT, Buffer
from tmrl_core.errors import CodecError, TransportError
from tmrl_core.paths import run_dir
from tmrl_core.transport.base import ServerEndpoint, TrainerEndpoint, Transport, Weights, WorkerEndpoint
from tmrl_core.transport.queues import (
    DropOldestQueue,
    DropReports,
    NewestSlot,
    ReceivedBuffers,
    snapshot,
    worker_name,
)

log = logging.getLogger("tmrl.transport.local")

PROTOCOL_VERSION = 1
_CHALLENGE_BYTES = 32
_HANDSHAKE_TIMEOUT = 10.0
_POLL = 0.2
#: Unix socket paths longer than this do not fit in ``sockaddr_un`` on every platform.
_MAX_UNIX_PATH = 100


# -- addresses and authentication -----------------------------------------------------------------------------------


def local_address(run_name: str, port: int) -> tuple[str, str]:
    """``(address, family)`` of the local server of ``run_name``; the port keeps two servers of one run apart."""
    key = f"{run_name}:{port}"
    if sys.platform == "win32":
        digest = hashlib.sha256(f"{Path.home()}:{key}".encode()).hexdigest()[:24]
        return rf"\\.\pipe\tmrl-{digest}", "AF_PIPE"

    path = run_dir(run_name) / f"server-{port}.sock"
    if len(str(path)) <= _MAX_UNIX_PATH:
        return str(path), "AF_UNIX"
    # Deep data folders (e.g. pytest's tmp paths) overflow sockaddr_un: use a private folder in /tmp instead.
    private = Path(tempfile.gettempdir()) / f"tmrl-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    if private.stat().st_uid != os.getuid() or private.stat().st_mode & 0o077:
        raise TransportError(
            f"{private} is not a private folder of this user", hint="remove it, or set TMRL_HOME to a shorter path"
        )
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:24]
    return str(private / f"{digest}.sock"), "AF_UNIX"


def _authkey(password: str) -> bytes:
    return hashlib.sha256(b"tmrl-local-transport\0" + password.encode()).digest()


def _recv(conn: Connection, max_bytes: int, timeout: float) -> bytes:
    if not conn.poll(timeout):
        raise TransportError("the peer did not answer in time")
    return conn.recv_bytes(max_bytes)


def _prove(conn: Connection, key: bytes, challenge_first: bool) -> None:
    """Mutual challenge-response: each side proves it knows ``key`` without sending it."""

    def ask() -> None:
        challenge = secrets.token_bytes(_CHALLENGE_BYTES)
        conn.send_bytes(challenge)
        answer = _recv(conn, 64, _HANDSHAKE_TIMEOUT)
        expected = hmac.new(key, b"answer" + challenge, "sha256").digest()
        if not hmac.compare_digest(answer, expected):
            conn.send_bytes(b"DENIED")
            raise TransportError("authentication failed", hint="use the same password (server.password) everywhere")
        conn.send_bytes(b"OK")

    def answer() -> None:
        challenge = _recv(conn, _CHALLENGE_BYTES, _HANDSHAKE_TIMEOUT)
        conn.send_bytes(hmac.new(key, b"answer" + challenge, "sha256").digest())
        if _recv(conn, 16, _HANDSHAKE_TIMEOUT) != b"OK":
            raise TransportError("the server refused the password", hint="use the same password everywhere")

    if challenge_first:
        ask()
        answer()
    else:
        answer()
        ask()


# -- the transport ---------------------------------------------------------------------------------------------------


class LocalTransport(Transport):
    """Server, trainer and workers on one machine (threads or processes), through a Unix socket.

    Args:
        settings: the ``server`` settings section (password, ``port`` as a namespace, message limits, timeouts).
        run_name: the run; its folder holds the socket.
        address: an explicit ``(address, family)`` (tests); default :func:`local_address`.
    """

    def __init__(
        self, settings: Any, *, run_name: str = "default", address: tuple[str, str] | None = None, **options: Any
    ):
        super().__init__(settings, run_name=run_name, **options)
        password = settings.password
        if hasattr(password, "get_secret_value"):
            password = password.get_secret_value()
        self.key = _authkey(str(password))
        self.address, self.family = address or local_address(run_name, int(settings.port))
        self.max_bytes = int(settings.max_message_bytes)
        self.connect_timeout = float(settings.connect_timeout)
        self.max_pending_samples = int(settings.local_buffer_max_samples)
        self.max_workers = int(settings.max_workers)
        self.queue_bytes = int(settings.queue_bytes)

    def server(self) -> LocalServer:
        return LocalServer(self)

    def trainer(self) -> LocalTrainerEndpoint:
        return LocalTrainerEndpoint(self)

    def worker(self, name: str | None = None) -> LocalWorkerEndpoint:
        return LocalWorkerEndpoint(self, name or f"worker-{os.getpid()}-{secrets.token_hex(2)}")


# -- server ----------------------------------------------------------------------------------------------------------


#: a buffer on its way to the trainer: the name of the worker that sent it, and its bytes
_Relayed = tuple[str, bytes]
#: workers named in the server's drop reports; beyond, their counts go under one name
_MAX_REPORTED_WORKERS = 256
_OTHER_WORKERS = "other-workers"


def _relayed_size(item: _Relayed) -> int:
    return len(item[1])


class _Peer:
    """One authenticated connection on the server side, with its writer thread.

    The trainer's peer holds the buffers on their way to it, bounded by ``server.queue_bytes``: the workers' readers
    wait for room (:meth:`push_buffer`), so a trainer that cannot keep up slows the workers down, whose own queues
    then drop and count their oldest samples. A worker's peer holds the newest weights not yet delivered.
    """

    def __init__(self, server: LocalServer, conn: Connection, role: str, name: str) -> None:
        self.server, self.conn, self.role, self.name = server, conn, role, name
        self.alive = True
        self.cond = threading.Condition()
        # trainer: buffers to deliver, with the name of the worker that sent each
        self.queue: DropOldestQueue[_Relayed] = DropOldestQueue(server.t.queue_bytes, _relayed_size)
        self.latest: NewestSlot[bytes] = NewestSlot()  # worker: newest weights not yet delivered
        self.writer = threading.Thread(target=self._write, name=f"tmrl-local-send-{name}", daemon=True)

    def push_buffer(self, data: _Relayed, stopping: threading.Event) -> bool:
        """Queue ``data`` for the trainer, waiting while the queue is full; False if this peer went away first."""
        with self.cond:
            while self.alive and self.queue.full and not stopping.is_set():
                self.cond.wait(_POLL)
            if not self.alive or stopping.is_set():
                return False
            self.queue.add(data)  # over the limit by this message at most: the wait above made room
            self.cond.notify_all()
            return True

    def push_weights(self, data: bytes) -> None:
        with self.cond:
            self.latest.put(data)
            self.cond.notify_all()

    def _write(self) -> None:
        try:
            while self.alive:
                with self.cond:
                    while self.alive and not self.queue and not self.latest:
                        self.cond.wait(_POLL)
                    if not self.alive:
                        return
                    data = self.queue.get()[1] if self.queue else self.latest.take()
                    self.cond.notify_all()  # room for a waiting reader
                if data is not None:
                    self.conn.send_bytes(data)
        except (OSError, EOFError, ValueError) as exc:
            log.info("server: lost %s %s while sending: %s", self.role, self.name, exc)
        finally:
            self.server._drop(self)

    def close(self) -> None:
        with self.cond:
            self.alive = False
            self.cond.notify_all()
        try:
            self.conn.close()
        except OSError:
            pass


class LocalServer(ServerEndpoint):
    """Accepts workers and one trainer; relays buffers to the trainer and the newest weights to every worker."""

    def __init__(self, transport: LocalTransport) -> None:
        self.t = transport
        self._listener: Listener | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._trainer: _Peer | None = None
        self._workers: dict[int, _Peer] = {}
        self._latest_weights: bytes | None = None
        # buffers received while no trainer is connected (bounded in bytes; the oldest are dropped and counted)
        self._pending: DropOldestQueue[_Relayed] = DropOldestQueue(transport.queue_bytes, _relayed_size)
        # samples dropped here, per worker, not yet reported to a trainer
        self._lost: dict[str, Buffer] = {}
        self.relayed_buffers = 0
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return self.t.address

    def start(self) -> None:
        if self._listener is not None:
            return
        self._prepare_address()
        self._listener = Listener(self.t.address, self.t.family, backlog=64)
        if self.t.family == "AF_UNIX":
            os.chmod(self.t.address, 0o600)
        thread = threading.Thread(target=self._accept_loop, name="tmrl-local-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info("local server listening on %s", self.t.address)

    def _prepare_address(self) -> None:
        if self.t.family != "AF_UNIX" or not os.path.exists(self.t.address):
            return
        try:
            Client(self.t.address, self.t.family).close()
        except OSError:
            os.unlink(self.t.address)  # left behind by a server that died
            return
        raise TransportError(
            f"a server is already listening on {self.t.address}",
            hint="is this run already running? choose another --run-name, or stop the other one",
        )

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(_POLL)
                continue
            if self._stopping.is_set():
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), name="tmrl-local-peer", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        peer: _Peer | None = None
        try:
            _prove(conn, self.t.key, challenge_first=True)
            hello = codec.decode(_recv(conn, 4096, _HANDSHAKE_TIMEOUT), max_bytes=4096)
            if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL_VERSION:
                raise TransportError(f"unexpected hello {hello!r}")
            role, name = hello.get("role"), str(hello.get("name", "?"))[:100]
            if role not in ("trainer", "worker"):
                raise TransportError(f"unknown role {role!r}")
            refusal = self._admit(role)
            conn.send_bytes(codec.encode({"ok": refusal is None, "error": refusal or ""}))
            if refusal:
                raise TransportError(refusal)
            peer = _Peer(self, conn, role, name)
            self._register(peer)
            log.info("server: %s %s connected", role, name)
            self._read(peer)
        except (EOFError, ConnectionResetError):
            pass  # the peer hung up (a reset is how a peer that exits mid-send hangs up); _drop logs it
        except (TransportError, CodecError, OSError) as exc:
            if not self._stopping.is_set():
                log.warning("server: closing a connection: %s", exc)
        finally:
            if peer is not None:
                self._drop(peer)
            else:
                conn.close()

    def _admit(self, role: str) -> str | None:
        with self._lock:
            if role == "trainer" and self._trainer is not None:
                return "a trainer is already connected to this server"
            if role == "worker" and 0 <= self.t.max_workers <= len(self._workers):
                return f"the server accepts at most {self.t.max_workers} workers"
        return None

    def _register(self, peer: _Peer) -> None:
        with self._lock:
            if peer.role == "trainer":
                self._trainer = peer
                self._report_lost(peer)
                for data in self._pending.take_all():
                    peer.queue.add(data)
            else:
                self._workers[id(peer)] = peer
                if self._latest_weights is not None:
                    peer.latest.put(self._latest_weights)
        peer.writer.start()

    def _drop(self, peer: _Peer) -> None:
        with self._lock:
            if self._trainer is peer:
                self._trainer = None
                # buffers not yet delivered wait for the next trainer
                with peer.cond:
                    # drop reports go back too (they are tiny): the next trainer gets them
                    dropped = self._pending.extend_front(peer.queue.take_all())
                if dropped:
                    lost = self._count_lost(dropped)
                    log.warning(
                        "server: the trainer left; dropped the oldest waiting buffers (%d samples, %d buffers so far)",
                        lost,
                        self._pending.dropped,
                    )
            self._workers.pop(id(peer), None)
        if peer.alive and not self._stopping.is_set():
            log.info("server: %s %s disconnected", peer.role, peer.name)
        peer.close()

    def _read(self, peer: _Peer) -> None:
        while peer.alive and not self._stopping.is_set():
            if not peer.conn.poll(_POLL):
                continue
            data = peer.conn.recv_bytes(self.t.max_bytes)
            try:
                header = codec.read_header(data, max_bytes=self.t.max_bytes)
            except CodecError as exc:
                log.warning("server: rejected a message from %s %s: %s", peer.role, peer.name, exc)
                continue
            if peer.role == "worker" and header.kind == codec.Kind.BUFFER:
                self._relay_buffer(data, peer)
            elif peer.role == "trainer" and header.kind == codec.Kind.WEIGHTS:
                self._broadcast_weights(data)
            else:
                log.warning("server: rejected a %s message from %s %s", header.kind.name, peer.role, peer.name)

    def _relay_buffer(self, data: bytes, sender: _Peer) -> None:
        """Hand ``data`` to the trainer; while it cannot take more, this worker's reader waits here, which slows the
        worker down (its own queue then drops and counts its oldest samples)."""
        while sender.alive and not self._stopping.is_set():
            with self._lock:
                trainer = self._trainer
                if trainer is None:
                    self.relayed_buffers += 1
                    dropped = self._pending.put((sender.name, data))
                    if dropped:
                        lost = self._count_lost(dropped)
                        log.warning(
                            "server: no trainer; dropped the oldest waiting buffer (%d samples; %d buffers so far)",
                            lost,
                            self._pending.dropped,
                        )
                    return
            if trainer.push_buffer((sender.name, data), self._stopping):
                with self._lock:
                    self.relayed_buffers += 1
                return
            # the trainer went away while this waited: its queue went back to pending; try again

    @property
    def dropped_buffers(self) -> int:
        """Buffers dropped because no trainer took them in time."""
        return self._pending.dropped

    def _count_lost(self, dropped: list[_Relayed]) -> int:
        """Count buffers dropped here per worker (called with ``_lock`` held), to report them to the next trainer
        (:meth:`_report_lost`); returns their samples. A dropped buffer's own drop counts are kept too."""
        samples = 0
        for name, data in dropped:
            try:
                buffer = codec.decode_buffer(data, max_bytes=self.t.max_bytes)
            except CodecError as exc:
                log.warning("server: dropped a buffer from %s that does not decode: %s", name, exc)
                continue
            worker = buffer.worker or worker_name(name)
            if worker not in self._lost and len(self._lost) >= _MAX_REPORTED_WORKERS:
                worker = _OTHER_WORKERS
            report = self._lost.setdefault(worker, Buffer(maxlen=1))
            report.count_dropped(DROPPED_ON_SERVER, len(buffer), carried=buffer)
            samples += len(buffer)
        return samples

    def _report_lost(self, trainer: _Peer) -> None:
        """Queue, for ``trainer``, one empty buffer per worker whose samples were dropped here (called with
        ``_lock`` held): it carries the counts to the trainer's metrics like a worker's own report."""
        for worker, report in self._lost.items():
            report.worker = worker
            data = codec.encode_buffer(report)
            with trainer.cond:
                trainer.queue.put_back((worker, data))
                trainer.cond.notify_all()
        self._lost.clear()

    def _broadcast_weights(self, data: bytes) -> None:
        with self._lock:
            self._latest_weights = data
            workers = list(self._workers.values())
        for worker in workers:
            worker.push_weights(data)

    @property
    def worker_count(self) -> int:
        with self._lock:
            return len(self._workers)

    @property
    def trainer_connected(self) -> bool:
        with self._lock:
            return self._trainer is not None

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._listener is not None:
            try:  # wake the accept() call
                Client(self.t.address, self.t.family).close()
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            peers = ([self._trainer] if self._trainer else []) + list(self._workers.values())
        for peer in peers:
            peer.close()
        for thread in self._threads:
            thread.join(timeout=2.0)


# -- clients ---------------------------------------------------------------------------------------------------------


class _LocalClient:
    """A connection to the local server that (re)connects in the background and reads in the background."""

    role = "?"

    def __init__(self, transport: LocalTransport, name: str) -> None:
        self.t = transport
        self.name = name
        self._closed = threading.Event()
        self._cond = threading.Condition()
        self._conn: Connection | None = None
        self._connected = threading.Event()
        self._error: TransportError | None = None
        self._thread = threading.Thread(target=self._run, name=f"tmrl-local-{self.role}", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"tmrl-local-{self.role}-send", daemon=True)
        self._thread.start()
        self._writer.start()

    # connection management
    def _connect_once(self) -> Connection | None:
        try:
            conn = Client(self.t.address, self.t.family)
        except (FileNotFoundError, ConnectionRefusedError, OSError):
            return None
        try:
            _prove(conn, self.t.key, challenge_first=False)
            conn.send_bytes(codec.encode({"protocol": PROTOCOL_VERSION, "role": self.role, "name": self.name}))
            reply = codec.decode(_recv(conn, 4096, _HANDSHAKE_TIMEOUT), max_bytes=4096)
        except (OSError, EOFError, CodecError):
            conn.close()
            return None
        except TransportError:
            conn.close()
            raise
        if not isinstance(reply, dict) or not reply.get("ok"):
            conn.close()
            message = reply.get("error") if isinstance(reply, dict) else "bad reply"
            raise TransportError(f"the server refused this {self.role}: {message}")
        return conn

    def _run(self) -> None:
        started = time.monotonic()
        warned = False
        while not self._closed.is_set():
            try:
                conn = self._connect_once()
            except TransportError as exc:
                self._error = exc
                log.error("%s %s: %s", self.role, self.name, exc)
                self._connected.set()
                return
            if conn is None:
                waited = time.monotonic() - started
                if self.t.connect_timeout and waited > self.t.connect_timeout:
                    self._error = TransportError(
                        f"no server at {self.t.address} after {waited:.0f} s",
                        hint="start the server first, or raise server.connect_timeout (0 waits forever)",
                    )
                    self._connected.set()
                    return
                if not warned and waited > 5.0:
                    log.info("%s %s: waiting for the server at %s", self.role, self.name, self.t.address)
                    warned = True
                self._closed.wait(_POLL)
                continue
            log.info("%s %s: connected to %s", self.role, self.name, self.t.address)
            with self._cond:
                self._conn = conn
                self._cond.notify_all()
            self._connected.set()
            try:
                while not self._closed.is_set():
                    if conn.poll(_POLL):
                        self._on_message(conn.recv_bytes(self.t.max_bytes))
            except (OSError, EOFError) as exc:
                if not self._closed.is_set():
                    log.info("%s %s: lost the server (%s); reconnecting", self.role, self.name, exc)
            finally:
                with self._cond:
                    self._conn = None
                conn.close()
            started = time.monotonic()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until connected (True), or until ``timeout`` (False); raises if the server refused us."""
        ok = self._connected.wait(timeout)
        if self._error is not None:
            raise self._error
        return ok

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # sending: subclasses say what is waiting (called with self._cond held) and take it back after a failure
    def _has_outgoing(self) -> bool:
        raise NotImplementedError

    def _take_outgoing(self) -> Any:
        raise NotImplementedError

    def _encode_outgoing(self, item: Any) -> bytes | None:
        return item

    def _requeue(self, item: Any) -> None:
        raise NotImplementedError

    def _write_loop(self) -> None:
        while not self._closed.is_set():
            with self._cond:
                while not self._closed.is_set() and (self._conn is None or not self._has_outgoing()):
                    self._cond.wait(_POLL)
                if self._closed.is_set():
                    return
                conn = self._conn
                item = self._take_outgoing()
            data = self._encode_outgoing(item)
            if data is None or conn is None:
                continue
            try:
                conn.send_bytes(data)
            except (OSError, ValueError) as exc:
                log.info("%s %s: send failed (%s); will retry after reconnecting", self.role, self.name, exc)
                with self._cond:
                    self._requeue(item)
                self._closed.wait(_POLL)

    def _on_message(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        self._writer.join(timeout=2.0)


class LocalTrainerEndpoint(_LocalClient, TrainerEndpoint):
    role = "trainer"

    def __init__(self, transport: LocalTransport, name: str = "trainer") -> None:
        # decoded buffers, bounded (see ReceivedBuffers): when training falls behind, the reader stops reading,
        # and the server and then the workers wait in turn
        self._received = ReceivedBuffers(transport.max_pending_samples, transport.queue_bytes)
        self._weights: NewestSlot[bytes] = NewestSlot()
        self.rejected = 0
        super().__init__(transport, name)

    def send_weights(self, weights: Weights) -> None:
        data = codec.encode_weights(weights)
        if len(data) > self.t.max_bytes:
            raise TransportError(
                f"the actor's weights take {len(data)} bytes, more than server.max_message_bytes={self.t.max_bytes}"
            )
        with self._cond:
            self._weights.put(data)
            self._cond.notify_all()

    def receive_samples(self) -> list[Buffer]:
        with self._cond:
            received = self._received.take_all()
            self._cond.notify_all()
        return received

    def _on_message(self, data: bytes) -> None:
        try:
            buffer = codec.decode_buffer(data, max_bytes=self.t.max_bytes)
        except CodecError as exc:
            self.rejected += 1
            log.warning("trainer: rejected a buffer: %s", exc)
            return
        with self._cond:
            while self._received.full and not self._closed.is_set():
                self._cond.wait(_POLL)
            self._received.put(buffer, len(data))

    def _has_outgoing(self) -> bool:
        return bool(self._weights)

    def _take_outgoing(self) -> Any:
        return self._weights.take()

    def _requeue(self, item: Any) -> None:
        self._weights.put_back(item)


class LocalWorkerEndpoint(_LocalClient, WorkerEndpoint):
    role = "worker"

    def __init__(self, transport: LocalTransport, name: str) -> None:
        self._outbox: DropOldestQueue[Buffer] = DropOldestQueue(transport.max_pending_samples)
        self._reports = DropReports(name)
        self._weights: NewestSlot[bytes] = NewestSlot()  # the newest weights message, decoded on receive_weights
        self._weights_cond = threading.Condition()
        super().__init__(transport, name)

    @property
    def dropped_samples(self) -> int:
        """Samples dropped because the server could not take them in time (oldest first)."""
        return self._outbox.dropped_weight

    def send_samples(self, buffer: Buffer) -> None:
        # Encoding happens in the sender thread: the step loop only appends to a queue.
        copy = snapshot(buffer)
        with self._cond:
            self._reports.stamp(copy)
            dropped = self._outbox.put(copy)
            if dropped:
                # the count travels with the newest buffer (kept: it is this one), so the trainer's metrics show it
                lost = self._reports.lost(DROPPED_UNSENT, dropped)
                self._reports.stamp(copy)
                log.warning("worker %s: dropped %d unsent samples (%d so far)", self.name, lost, self.dropped_samples)
            self._cond.notify_all()

    def _has_outgoing(self) -> bool:
        return bool(self._outbox)

    def _take_outgoing(self) -> Any:
        return self._outbox.get()

    def _encode_outgoing(self, item: Any) -> bytes | None:
        try:
            data = codec.encode_buffer(item)
        except CodecError as exc:
            log.error("worker %s: cannot encode a buffer, dropped it: %s", self.name, exc)
            data = None
        else:
            if len(data) > self.t.max_bytes:
                log.error(
                    "worker %s: a buffer of %d bytes exceeds server.max_message_bytes; dropped", self.name, len(data)
                )
                data = None
        if data is None:  # reported with the next buffer
            with self._cond:
                self._reports.lost(DROPPED_UNSENDABLE, [item])
        return data

    def _requeue(self, item: Any) -> None:
        self._outbox.put_back(item)

    def _on_message(self, data: bytes) -> None:
        # Only the header is checked here: decoding waits for receive_weights (between episodes), so that weights
        # arriving faster than the worker loads them cost nothing while it is stepping a real-time environment.
        try:
            header = codec.read_header(data, max_bytes=self.t.max_bytes)
        except CodecError as exc:
            log.warning("worker %s: rejected a message: %s", self.name, exc)
            return
        if header.kind != codec.Kind.WEIGHTS:
            log.warning("worker %s: rejected a %s message (expected weights)", self.name, header.kind.name)
            return
        with self._weights_cond:
            self._weights.put(data)
            self._weights_cond.notify_all()

    def receive_weights(self, blocking: bool = False, timeout: float | None = None) -> Weights | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._weights_cond:
            while blocking and not self._weights and not self._closed.is_set():
                remaining = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
                if remaining <= 0:
                    break
                self._weights_cond.wait(remaining)
            data = self._weights.take()
        if data is None:
            return None
        try:
            return codec.decode_weights(data, max_bytes=self.t.max_bytes)
        except CodecError as exc:
            log.warning("worker %s: rejected weights: %s", self.name, exc)
            return None

    @property
    def pending_samples(self) -> int:
        """Samples queued and not yet handed to the socket."""
        with self._cond:
            return self._outbox.weight
