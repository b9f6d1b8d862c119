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
- backpressure: each worker's chunks wait for the trainer in that worker's own queue; the relay stops reading from a
  worker whose queue holds ``worker_queue_bytes`` (or when all queues together hold ``pending_bytes``) and reads it
  again once the trainer took half, so a flooding sender is slowed down (its own bounded queue then drops and counts
  its oldest samples) while the others keep their turn: the trainer gets the workers' chunks in rotation, at most a
  window of unacknowledged bytes at a time;
- output: a client whose connection does not take what the relay writes (Twisted's write buffer is full) is not read
  either (so it cannot ask for more), and one that has not read for ``stalled_timeout`` seconds is disconnected
  (the trainer excepted: its window bounds what it is sent); echo requests are at most ``max_echo_bytes``; a worker
  that has not acknowledged its last weights gets only the newest weights once it has (newest wins);
- weights: only weights whose signature verifies with the trainer's public key (``weights-signing-public.pem``) and
  whose sequence number is newer are kept as the latest and broadcast; a client sending others is disconnected;
- nothing it has sent is kept after the receiver's connection is gone (tlspyo keeps every unacknowledged message).

Anything a client sends that breaks these rules is logged (with the peer address, never the password) and closes that
client's connection; the relay keeps serving the others.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from socket import AF_INET, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET, socket
from typing import Any

import tlspyo.server
from tlspyo.local_protocol_for_server import LocalProtocolForServer

from tmrl_core import codec
from tmrl_core.errors import CodecError, TransportError
from tmrl_tlspyo import credentials
from tmrl_tlspyo.link import HEADER, HEADER_SIZE, NetworkProcess, open_link, run_reactor, stop_reactor, tlspyo_options

log = logging.getLogger("tmrl.transport.tlspyo")
# tlspyo logs every connection attempt at INFO through its own handler; ours say what matters
logging.getLogger("tlspyo").setLevel(logging.WARNING)

_HEADER = HEADER
TRAINER_GROUP = "trainer"
WORKERS_GROUP = "workers"
ECHO = "echo"


@dataclass(frozen=True)
class RelayPolicy:
    """What the relay accepts (picklable: it travels to the relay's process)."""

    password: str
    max_frame_bytes: int
    #: the folder holding ``weights-signing-public.pem`` (weights are checked before they are kept)
    keys_dir: str
    max_workers: int = -1
    handshake_timeout: float = 10.0
    #: bytes of chunks all workers' queues hold together for the trainer; beyond, no worker is read
    pending_bytes: int = 64 * 1024 * 1024
    #: bytes of chunks one worker's queue holds; beyond, that worker is not read until the trainer took half
    worker_queue_bytes: int = 4 * 1024 * 1024
    #: bytes sent to the trainer and not yet acknowledged
    trainer_window_bytes: int = 8 * 1024 * 1024
    #: seconds a client other than the trainer may leave the relay's writes unread before it is disconnected
    stalled_timeout: float = 30.0
    #: largest echo request (heartbeats are a few bytes)
    max_echo_bytes: int = 1024


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
        # workers: chunks waiting for the trainer (bytes), and why this connection is not read at the moment
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued_bytes = 0
        self._paused: set[str] = set()
        self._stall_timer: Any = None

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
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
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

    # -- reading paused: a full queue for the trainer, or output the client does not take ------------------------

    def pause_reading(self, reason: str) -> None:
        if not self._paused and self._state not in ("KILLED", "CLOSED", "DEAD"):
            self.transport.pauseProducing()
        self._paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self._state not in ("KILLED", "CLOSED", "DEAD"):
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """The client does not read what the relay writes: stop reading it (no more echoes, no more acks), and
        disconnect it if that lasts (unless it is the trainer, whose window bounds what it is sent)."""
        from twisted.internet import reactor

        self.pause_reading("output")
        if self.role != TRAINER_GROUP and self._stall_timer is None:
            self._stall_timer = reactor.callLater(self._policy.stalled_timeout, self._stalled)

    def resumeProducing(self) -> None:
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
        self._stall_timer = None
        self.resume_reading("output")

    def stopProducing(self) -> None:
        pass

    def _stalled(self) -> None:
        self._stall_timer = None
        if self._state not in ("KILLED", "CLOSED", "DEAD"):
            self._refuse(f"it has not read what the relay sent for {self._policy.stalled_timeout:g} s")

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
        if stamp not in self._stamps:
            return  # not ours (a client acknowledging another connection's stamp must not open its window)
        entry = self._server.pending_acks.pop(stamp, None)
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
        # From now on, Twisted calls pauseProducing when this connection's write buffer is full and resumeProducing
        # when it drained (not before: until the TLS handshake ends, TLS holds the first writes and would pause it)
        self.transport.registerProducer(self, True)
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
            if len(obj) > self._policy.max_echo_bytes:
                return self._refuse(f"an echo request of {len(obj)} bytes (at most {self._policy.max_echo_bytes})")
            self.send_obj(obj=obj)
        elif self.role == TRAINER_GROUP and group == WORKERS_GROUP and count == -1:
            refusal = self._server.broadcast_weights(obj)
            if refusal:
                self._refuse(f"weights refused, the relay keeps its latest ones: {refusal}")
        elif self.role == WORKERS_GROUP and group == TRAINER_GROUP and count == 1:
            self._server.queue_for_trainer(obj, self)
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


class GuardedServer(tlspyo.server.Server):
    """tlspyo's Server bookkeeping (clients, groups, acknowledgements) with the policy of :class:`RelayPolicy`."""

    def __init__(self, *, policy: RelayPolicy, bind: str, **kwargs: Any) -> None:
        super().__init__(password=policy.password, **kwargs)
        self.policy = policy
        self.bind = bind
        self.trainer: _Protocol | None = None
        self.latest_weights: bytes | None = None
        self.latest_sequence = 0
        self._verifier: credentials.WeightsVerifier | None = None  # loaded in the relay's process
        # workers with chunks waiting, in the order the trainer gets them (one chunk each in turn)
        self.senders: collections.OrderedDict[int, _Protocol] = collections.OrderedDict()
        self.pending_size = 0

    def run(self) -> None:
        from twisted.internet import reactor, ssl

        self._verifier = credentials.WeightsVerifier(Path(self.policy.keys_dir))
        factory = _Factory(self)
        if self._security == "TLS":
            key = os.path.join(self._keys_dir, "key.pem")
            certificate = os.path.join(self._keys_dir, "certificate.pem")
            context = ssl.DefaultOpenSSLContextFactory(key, certificate)
            reactor.listenSSL(self._port, factory, context, interface=self.bind)
        else:
            reactor.listenTCP(self._port, factory, interface=self.bind)
        run_reactor(self, _LocalProtocol)

    def close(self, counter: int) -> None:
        """Stop at once: what clients sent and the relay did not deliver is lost either way when it stops."""
        for identifier in list(self.to_clients):
            self.to_clients[identifier].transport.abortConnection()
        stop_reactor(self)

    # -- policy ------------------------------------------------------------------------------------------------------

    def admit(self, role: str) -> str | None:
        """Why a new client of ``role`` is refused, or None."""
        members = len(self.group_info.get(role, {}).get("ids", ()))
        if role == TRAINER_GROUP and members >= 1:
            return "a trainer is already connected"
        if role == WORKERS_GROUP and 0 <= self.policy.max_workers <= members:
            return f"the server accepts at most {self.policy.max_workers} workers (server.max_workers)"
        return None

    def broadcast_weights(self, obj: bytes) -> str | None:
        """Keep ``obj`` as the latest weights and offer it to every worker, if it is genuine and newer; else why not.

        Checked here as the workers check it (signature, then sequence), so that a client holding the password and
        the free trainer slot cannot make the relay keep, and hand every new worker, weights nobody can load."""
        try:
            message = codec.decode(obj, max_bytes=self.policy.max_frame_bytes)
        except CodecError as exc:
            return f"undecodable: {exc.message}"
        if not (
            type(message) is tuple
            and len(message) == 5
            and message[0] == "weights"
            and type(message[1]) is str
            and type(message[2]) is int
            and type(message[3]) is bytes
            and type(message[4]) is bytes
        ):
            return "not a weights message"
        _, run, sequence, signature, payload = message
        assert self._verifier is not None
        if not self._verifier.verify(signature, credentials.signed_bytes(run, sequence, payload)):
            return "the signature does not verify with weights-signing-public.pem"
        if sequence <= self.latest_sequence:
            return f"older than the latest ones (#{sequence} <= #{self.latest_sequence})"
        self.latest_weights, self.latest_sequence = obj, sequence
        group = self.group_info.get(WORKERS_GROUP)
        for identifier in list(group["ids"]) if group else ():
            self.to_clients[identifier].offer_weights()
        return None

    def queue_for_trainer(self, obj: bytes, sender: _Protocol) -> None:
        """Queue a chunk from ``sender`` for the trainer; stop reading ``sender`` while its queue (or all queues
        together) is full."""
        sender.queue.append(obj)
        sender.queued_bytes += len(obj)
        self.pending_size += len(obj)
        self.senders.setdefault(id(sender), sender)
        if sender.queued_bytes >= self.policy.worker_queue_bytes or self.pending_size >= self.policy.pending_bytes:
            sender.pause_reading("queue")
        self.pump_trainer()

    def pump_trainer(self) -> None:
        """Send waiting chunks to the trainer, one per worker in turn, while its unacknowledged bytes stay within
        the window; read again the workers whose queues made room."""
        trainer = self.trainer
        while trainer is not None and self.senders and trainer.unacked_bytes < self.policy.trainer_window_bytes:
            key, sender = next(iter(self.senders.items()))
            obj = sender.queue.popleft()
            sender.queued_bytes -= len(obj)
            self.pending_size -= len(obj)
            if sender.queue:
                self.senders.move_to_end(key)
            else:
                del self.senders[key]
            trainer.send_obj(obj=obj)
        if self.pending_size < self.policy.pending_bytes // 2:
            for identifier in list(self.group_info.get(WORKERS_GROUP, {}).get("ids", ())):
                worker = self.to_clients[identifier]
                if worker.queued_bytes < self.policy.worker_queue_bytes // 2:
                    worker.resume_reading("queue")


class TmrlRelay:
    """A :class:`GuardedServer` in its own process, driven through a local link (see :mod:`tmrl_tlspyo.link`).

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
        link, link_port = open_link()
        self._server = GuardedServer(
            policy=policy,
            bind=bind,
            port=port,
            **tlspyo_options(link_port, policy.max_frame_bytes, security, keys_dir),
        )
        self._process = NetworkProcess(
            self._server.run,
            link,
            name="tmrl-tlspyo-relay",
            start_timeout=start_timeout,
            what=f"the relay process on port {port}",
        )
        self._process.send("TEST", None)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the relay process; idempotent."""
        self._process.stop(("STOP", None), timeout)

    def kill(self) -> None:
        """Stop the relay process at once, as a crash would (tests)."""
        self._process.kill()
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid


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
