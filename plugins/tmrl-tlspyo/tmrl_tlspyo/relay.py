"""The relay (server side of the tlspyo transport): tlspyo's Relay with a hardened protocol.

It keeps tlspyo's wire protocol (a 10-byte length header and the password before every frame, ``(stamp, cmd, dest,
obj)`` envelopes, acknowledgements) and its process model (the Twisted reactor runs in a child process that the
:class:`TmrlRelay` object starts and stops), with the core codec as serializer and deserializer, and replaces the
parts of tlspyo 0.3.0's ``ServerProtocol`` that cannot be made safe from outside:

- the password is compared in constant time and never logged (tlspyo logs the attempted password);
- a frame whose header declares more than ``max_frame_bytes`` is refused from its header, before it is read, and the
  receive buffer grows linearly (tlspyo re-copies it for every TCP segment: quadratic in the frame size);
- a connection that has not said a valid hello within ``handshake_timeout`` seconds is closed (tlspyo has no timeout);
- roles: a client joins as ``trainer`` (at most one) or as one of ``workers`` (at most ``max_workers``); only the
  trainer may broadcast to the workers (weights), workers may only send to the trainer (sample chunks), and anyone may
  ask for an echo (``dest == {"echo": -1}``: a heartbeat that tells a client its messages got through);
- memory bounds: chunks waiting for a trainer are bounded in bytes (oldest dropped and counted), at most a window of
  unacknowledged chunks is in flight to the trainer, and a worker that has not acknowledged its last weights gets only
  the newest weights once it has (newest wins, instead of an unbounded write buffer);
- nothing it has sent is kept after the receiver's connection is gone (tlspyo keeps every unacknowledged message).

Anything a client sends that breaks these rules is logged (with the peer address, never the password) and closes that
client's connection; the relay keeps serving the others.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from socket import AF_INET, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET, socket
from threading import Lock
from typing import Any

import tlspyo.api
import tlspyo.server
from tlspyo.local_protocol_for_server import LocalProtocolForServer, LocalProtocolForServerFactory

from tmrl_core import codec
from tmrl_core.errors import CodecError, TransportError
from tmrl_tlspyo.serialization import Deserializer, serialize

log = logging.getLogger("tmrl.transport.tlspyo")
# tlspyo logs every connection attempt at INFO through its own handler; ours say what matters
logging.getLogger("tlspyo").setLevel(logging.WARNING)

HEADER_SIZE = 10
_HEADER = re.compile(rb"[0-9]+ *")
TRAINER_GROUP = "trainer"
WORKERS_GROUP = "workers"
ECHO = "echo"


@dataclass(frozen=True)
class RelayPolicy:
    """What the relay accepts (picklable: it travels to the relay's process)."""

    password: str
    max_frame_bytes: int
    max_workers: int = -1
    handshake_timeout: float = 10.0
    #: bytes of chunks kept for the trainer while it is absent or slow; the oldest are dropped beyond
    pending_bytes: int = 64 * 1024 * 1024
    #: bytes sent to the trainer and not yet acknowledged
    trainer_window_bytes: int = 8 * 1024 * 1024


class _Protocol(tlspyo.server.ServerProtocol):
    """One client connection on the relay (see the module docstring for what differs from tlspyo)."""

    def __init__(self, server: GuardedServer, peer: str) -> None:
        super().__init__(server)
        self._server: GuardedServer = server
        self._policy = server.policy
        self._password_bytes = self._password.encode()
        self._inbox = bytearray()
        self.peer = peer
        self.role: str | None = None
        self._timer: Any = None
        self._stamps: set[int] = set()  # sent, not yet acknowledged
        self.unacked_bytes = 0
        self._weights_stamp: int | None = None  # workers: weights sent and not yet acknowledged
        self._weights_stale = False

    # -- connection life ---------------------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        from twisted.internet import reactor

        super().connectionMade()
        self._timer = reactor.callLater(self._policy.handshake_timeout, self._handshake_deadline)

    def _handshake_deadline(self) -> None:
        self._timer = None
        if self.role is None and self._state not in ("KILLED", "CLOSED", "DEAD"):
            self._refuse(f"no valid hello within {self._policy.handshake_timeout:g} s")

    def connectionLost(self, reason: Any) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for stamp in self._stamps:
            self._server.pending_acks.pop(stamp, None)
        self._stamps.clear()
        if self.role is not None:
            log.info("relay: %s %s disconnected", self.role, self.peer)
        if self._server.has_client(self._identifier):
            self._server.delete_client(self._identifier)
        self._identifier = None
        self._state = "DEAD"
        if self.role == TRAINER_GROUP:
            self._server.trainer = None

    def _refuse(self, why: str, level: int = logging.WARNING) -> None:
        log.log(level, "relay: closing the connection from %s: %s", self.peer, why)
        self._state = "KILLED"
        self.transport.abortConnection()

    # -- receiving ---------------------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state in ("KILLED", "CLOSED", "DEAD"):
            return
        inbox = self._inbox
        inbox += data
        start = 0
        prefix = HEADER_SIZE + len(self._password_bytes)
        while len(inbox) - start >= prefix:
            header = bytes(inbox[start : start + HEADER_SIZE])
            if not _HEADER.fullmatch(header):
                return self._refuse("malformed frame header (not a tlspyo client?)")
            password = bytes(inbox[start + HEADER_SIZE : start + prefix])
            if not hmac.compare_digest(password, self._password_bytes):
                return self._refuse("wrong password")
            length = int(header)
            if length > self._policy.max_frame_bytes:
                return self._refuse(
                    f"a frame of {length} bytes, over the limit of {self._policy.max_frame_bytes} "
                    "(server.max_message_bytes)"
                )
            end = start + prefix + length
            if len(inbox) < end:
                break
            frame = bytes(inbox[start + prefix : end])
            start = end
            self._handle(frame)
            if self._state in ("KILLED", "CLOSED", "DEAD"):
                return
        if start:
            del inbox[:start]

    def _handle(self, frame: bytes) -> None:
        try:
            envelope = codec.decode(frame, max_bytes=self._policy.max_frame_bytes)
        except CodecError as exc:
            return self._refuse(f"undecodable frame: {exc.message}")
        if type(envelope) is not tuple or len(envelope) != 4 or type(envelope[0]) is not int:
            return self._refuse("malformed envelope")
        stamp, cmd, dest, obj = envelope
        if cmd == "ACK":
            self._on_ack(stamp)
            return
        self.send_ack(stamp)
        if cmd == "HELLO":
            self._on_hello(obj)
        elif self.role is None:
            self._refuse(f"{cmd!r} before hello")
        elif cmd == "OBJ" and type(obj) is bytes and type(dest) is dict and len(dest) == 1:
            self._on_object(dest, obj)
        else:
            self._refuse(f"unexpected command {cmd!r} from a {self.role}")

    def _on_ack(self, stamp: int) -> None:
        entry = self._server.pending_acks.pop(stamp, None)
        if stamp not in self._stamps:
            return
        self._stamps.discard(stamp)
        if entry is not None:
            self.unacked_bytes -= entry[1]
        if stamp == self._weights_stamp:
            self._weights_stamp = None
            if self._weights_stale:
                self.offer_weights()
        if self.role == TRAINER_GROUP:
            self._server.pump_trainer()

    def _on_hello(self, groups: Any) -> None:
        if self.role is not None:
            return self._refuse("a second hello")
        if type(groups) is not tuple or len(groups) != 1 or groups[0] not in (TRAINER_GROUP, WORKERS_GROUP):
            return self._refuse(f"hello with groups {groups!r} (expected ('trainer',) or ('workers',))")
        role = groups[0]
        refusal = self._server.admit(role)
        if refusal:
            # tlspyo clients retry after a delay: log once per connection at INFO to keep the log readable
            self._state = "CLOSED"
            log.warning("relay: refused a %s from %s: %s", role, self.peer, refusal)
            self.transport.loseConnection()
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.role = role
        self._identifier = self._server.add_client(groups=groups, client=self)
        self._state = "ALIVE"
        log.info("relay: %s %s connected", role, self.peer)
        if role == TRAINER_GROUP:
            self._server.trainer = self
            self._server.pump_trainer()
        else:
            self.offer_weights()

    def _on_object(self, dest: dict[Any, Any], obj: bytes) -> None:
        ((group, count),) = dest.items()
        if group == ECHO and count == -1:
            self.send_obj(obj=obj)
        elif self.role == TRAINER_GROUP and group == WORKERS_GROUP and count == -1:
            self._server.broadcast_weights(obj)
        elif self.role == WORKERS_GROUP and group == TRAINER_GROUP and count == 1:
            self._server.queue_for_trainer(obj)
        else:
            self._refuse(f"a {self.role} may not send to {group!r} ({count})")

    # -- sending -----------------------------------------------------------------------------------------------------

    def send_obj(self, cmd: str = "OBJ", obj: Any = None) -> int:
        """Send ``obj`` (the sender's bytes, as they came) with an acknowledgement stamp; returns the stamp."""
        server = self._server
        server.ack_stamp += 1
        stamp = server.ack_stamp
        message = server.serializer((stamp, cmd, obj))
        size = len(message)
        # only the size is remembered until the acknowledgement (tlspyo keeps the whole message, forever if the
        # client is gone)
        server.pending_acks[stamp] = (time.monotonic(), size)
        self._stamps.add(stamp)
        self.unacked_bytes += size
        self.transport.writeSequence([f"{size:<{HEADER_SIZE}}".encode(), message])
        return stamp

    def offer_weights(self) -> None:
        """Send the newest weights to this worker unless its previous ones are unacknowledged (then later)."""
        latest = self._server.latest_weights
        if latest is None or self._state != "ALIVE":
            return
        if self._weights_stamp is not None:
            self._weights_stale = True
            return
        self._weights_stale = False
        self._weights_stamp = self.send_obj(obj=latest)


class _Factory(tlspyo.server.ServerProtocolFactory):
    def buildProtocol(self, addr: Any) -> _Protocol:
        peer = f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', '?')}"
        return _Protocol(self.server, peer)


class _LocalProtocol(LocalProtocolForServer):
    """The relay process's link to the process that started it: when that process dies, the relay stops too."""

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self._server.close(0)


class _LocalFactory(LocalProtocolForServerFactory):
    def buildProtocol(self, addr: Any) -> _LocalProtocol:
        return _LocalProtocol(self.server)


class GuardedServer(tlspyo.server.Server):
    """tlspyo's Server bookkeeping (clients, groups, acknowledgements) with the policy of :class:`RelayPolicy`."""

    def __init__(self, *, policy: RelayPolicy, bind: str, **kwargs: Any) -> None:
        super().__init__(password=policy.password, **kwargs)
        self.policy = policy
        self.bind = bind
        self.trainer: _Protocol | None = None
        self.latest_weights: bytes | None = None
        self.pending: collections.deque[bytes] = collections.deque()
        self.pending_size = 0
        self.dropped_chunks = 0

    def run(self) -> None:
        from twisted.internet import reactor, ssl

        factory = _Factory(self)
        if self._security == "TLS":
            key = os.path.join(self._keys_dir, "key.pem")
            certificate = os.path.join(self._keys_dir, "certificate.pem")
            context = ssl.DefaultOpenSSLContextFactory(key, certificate)
            reactor.listenSSL(self._port, factory, context, interface=self.bind)
        else:
            reactor.listenTCP(self._port, factory, interface=self.bind)
        reactor.connectTCP(host="127.0.0.1", port=self._local_com_port, factory=_LocalFactory(self))
        self._reactor = reactor
        _ignore_interrupts()
        reactor.run(installSignalHandlers=False)
        self._reactor = None

    def close(self, counter: int) -> None:
        """Stop at once: what clients sent and the relay did not deliver is lost either way when it stops."""
        from twisted.internet.error import ReactorNotRunning

        for identifier in list(self.to_clients):
            self.to_clients[identifier].transport.abortConnection()
        if self._reactor is not None:
            try:
                self._reactor.stop()
            except ReactorNotRunning:
                pass

    # -- policy ------------------------------------------------------------------------------------------------------

    def admit(self, role: str) -> str | None:
        """Why a new client of ``role`` is refused, or None."""
        members = len(self.group_info.get(role, {}).get("ids", ()))
        if role == TRAINER_GROUP and members >= 1:
            return "a trainer is already connected"
        if role == WORKERS_GROUP and 0 <= self.policy.max_workers <= members:
            return f"the server accepts at most {self.policy.max_workers} workers (server.max_workers)"
        return None

    def broadcast_weights(self, obj: bytes) -> None:
        self.latest_weights = obj
        group = self.group_info.get(WORKERS_GROUP)
        for identifier in list(group["ids"]) if group else ():
            self.to_clients[identifier].offer_weights()

    def queue_for_trainer(self, obj: bytes) -> None:
        self.pending.append(obj)
        self.pending_size += len(obj)
        while self.pending_size > self.policy.pending_bytes and len(self.pending) > 1:
            self.pending_size -= len(self.pending.popleft())
            self.dropped_chunks += 1
            if self.dropped_chunks in (1, 10, 100) or self.dropped_chunks % 1000 == 0:
                log.warning(
                    "relay: no trainer is taking samples; dropped the oldest waiting chunk (%d so far)",
                    self.dropped_chunks,
                )
        self.pump_trainer()

    def pump_trainer(self) -> None:
        """Send waiting chunks to the trainer while its unacknowledged bytes stay within the window."""
        trainer = self.trainer
        while trainer is not None and self.pending and trainer.unacked_bytes < self.policy.trainer_window_bytes:
            obj = self.pending.popleft()
            self.pending_size -= len(obj)
            trainer.send_obj(obj=obj)


class TmrlRelay(tlspyo.api.Relay):
    """tlspyo's Relay running a :class:`GuardedServer` (same process model; see the module docstring).

    Raises:
        TransportError: the port is taken, or the relay process did not start.
    """

    def __init__(
        self,
        *,
        port: int,
        bind: str,
        policy: RelayPolicy,
        security: str | None,
        keys_dir: str | None,
        start_timeout: float = 60.0,
    ) -> None:
        _check_port_free(bind, port)
        self._header_size = HEADER_SIZE
        # the local link listens on a port the OS picks: several relays and endpoints coexist on one machine
        self._local_com_srv = socket(AF_INET, SOCK_STREAM)
        self._local_com_srv.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        self._local_com_srv.bind(("127.0.0.1", 0))
        self._local_com_srv.listen()
        self._local_com_port = self._local_com_srv.getsockname()[1]
        self._server = GuardedServer(
            policy=policy,
            bind=bind,
            port=port,
            serializer=serialize,
            deserializer=Deserializer(policy.max_frame_bytes),
            local_com_port=self._local_com_port,
            header_size=HEADER_SIZE,
            security="TCP" if security is None else "TLS",
            keys_dir=keys_dir,
        )
        from multiprocessing import Process

        self._p = Process(target=self._server.run, name="tmrl-tlspyo-relay", daemon=True)
        self._p.start()
        self._local_com_srv.settimeout(start_timeout)
        try:
            self._local_com_conn, self._local_com_addr = self._local_com_srv.accept()
        except OSError as exc:
            self._p.kill()
            self._local_com_srv.close()
            raise TransportError(
                f"the relay process did not start on port {port}: {exc}", hint="see the log above for its error"
            ) from exc
        self._send_local("TEST")
        self._stop_lock = Lock()
        self._stopped = False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the relay process; idempotent."""
        lock = getattr(self, "_stop_lock", None)
        if lock is None:
            return
        with lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._send_local("STOP")
            except OSError:
                pass
            self._p.join(timeout)
            if self._p.is_alive():
                self._p.kill()
                self._p.join(5)
            self._local_com_conn.close()
            self._local_com_srv.close()

    def kill(self) -> None:
        """Stop the relay process at once, as a crash would (tests)."""
        self._p.kill()
        self._p.join(5)
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._p.pid


def _ignore_interrupts() -> None:
    """In a network process: Ctrl-C in a terminal reaches the whole process group, but the process that started
    this one decides when it stops (through the local link), after delivering what it still holds."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _check_port_free(bind: str, port: int) -> None:
    probe = socket(AF_INET, SOCK_STREAM)
    probe.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    try:
        probe.bind((bind, port))
    except OSError as exc:
        raise TransportError(
            f"cannot listen on {bind}:{port}: {exc.strerror or exc}",
            hint="is another server running? choose another server.port",
        ) from exc
    finally:
        probe.close()
