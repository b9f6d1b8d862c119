"""The client side of the tlspyo transport: a tlspyo-compatible endpoint with a hardened network process.

Same process model and wire protocol as tlspyo 0.3.0's ``Endpoint`` (an object in the caller's process, a Twisted
process that talks to the relay and reconnects when the link drops; see :mod:`tmrl_tlspyo.link`), with the core
codec as serializer and deserializer and these differences:

- receive buffers grow linearly with the frame size (tlspyo re-copies them for every read: quadratic);
- flow control: what arrives waits in a bounded queue; when the caller does not take it, the network process stops
  reading from the relay (Twisted's producer/consumer), so the relay's window to this client fills and the relay
  holds, then slows, the senders (tlspyo queues without limit and acknowledges at once);
- the network process stops when the process that started it dies (tlspyo's would keep reconnecting forever), and
  the endpoint's reader stops when the network process dies (tlspyo's spins);
- nothing sent is kept after the link to the relay is lost, and closing does not wait for acknowledgements that can
  no longer come (tlspyo waits up to 10 s);
- frames that do not decode are dropped with a log line instead of killing the receiving thread.

What the endpoint receives is handed over as raw bytes (tlspyo's "synchronous" mode): the transport decodes it.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import tlspyo.client
from tlspyo.local_protocol_for_client import LocalProtocolForClient

from tmrl_core.errors import CodecError
from tmrl_tlspyo.link import (
    HEADER_SIZE,
    NetworkProcess,
    open_link,
    run_reactor,
    split_frames,
    stop_reactor,
    tlspyo_options,
)
from tmrl_tlspyo.serialization import serialize

log = logging.getLogger("tmrl.transport.tlspyo")

#: frames (at most ``server.chunk_bytes`` each, or one weights message) waiting for the caller, at most
RECEIVE_QUEUE = 16


class _ClientProtocol(tlspyo.client.ClientProtocol):
    """The network process's connection to the relay."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox = bytearray()
        self._client: _Client

    def connectionMade(self) -> None:
        super().connectionMade()
        self._client.link_flow()

    def connectionLost(self, reason: Any) -> None:
        self._client.unlink_flow()
        super().connectionLost(reason)
        self._client.pending_acks.clear()  # what was not acknowledged will not be, on this connection

    def dataReceived(self, data: bytes) -> None:
        self._inbox += data
        try:
            frames, consumed = split_frames(self._inbox, self._client.max_frame)
        except CodecError as exc:
            log.warning("tlspyo client: bad data from the relay (%s); reconnecting", exc)
            self.transport.abortConnection()
            return
        del self._inbox[:consumed]
        for frame in frames:
            try:
                envelope = self._client.deserializer(frame[HEADER_SIZE:])
                stamp, cmd, _ = envelope
            except (CodecError, TypeError, ValueError) as exc:
                log.warning("tlspyo client: dropped an undecodable frame from the relay: %s", exc)
                continue
            if cmd == "ACK":
                self._client.pending_acks.pop(stamp, None)
                continue
            self.send_ack(stamp)
            if cmd == "HELLO":
                self.send_obj(cmd="HELLO", obj=self._groups)
                self._state = "ALIVE"
                store, self._client.store = self._client.store, []
                for cmd_, dest, obj in store:
                    self.send_obj(cmd=cmd_, dest=dest, obj=obj)
            elif cmd == "OBJ" and self._client.endpoint is not None:
                self._client.endpoint.transport.write(frame)

    def send_obj(self, cmd: str = "OBJ", dest: Any = None, obj: Any = None) -> None:
        self._client.ack_stamp += 1
        message = self._client.serializer((self._client.ack_stamp, cmd, dest, obj))
        self._client.pending_acks[self._client.ack_stamp] = len(message)  # the size only, not a copy
        self.transport.writeSequence([f"{len(message):<{HEADER_SIZE}}{self._password}".encode(), message])


class _ClientFactory(tlspyo.client.TLSClientFactory):
    def buildProtocol(self, addr: Any) -> _ClientProtocol:
        self.resetDelay()
        return _ClientProtocol(
            client=self._client, password=self.password, groups=self._groups, header_size=self._header_size
        )

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        log.debug("tlspyo client: connection failed: %s", reason.getErrorMessage())
        tlspyo.client.ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)


class _LocalProtocol(LocalProtocolForClient):
    """The network process's link to its Endpoint: linear buffering; when the Endpoint's process dies, stop."""

    def __init__(self, client: _Client) -> None:
        super().__init__(client)
        self._inbox = bytearray()

    def connectionMade(self) -> None:
        super().connectionMade()
        self._client.link_flow()

    def dataReceived(self, data: bytes) -> None:
        self._inbox += data
        try:
            frames, consumed = split_frames(self._inbox, self._client.max_frame)
        except CodecError as exc:
            log.error("tlspyo client: bad data from its endpoint (%s)", exc)
            self.transport.abortConnection()
            return
        del self._inbox[:consumed]
        for frame in frames:
            cmd, dest, obj = self._client.deserializer(frame[HEADER_SIZE:])
            if cmd == "STOP":
                self.transport.loseConnection()  # connectionLost closes the client
            elif cmd in ("OBJ", "NTF"):
                server = self._client.to_server
                if server is not None and server.get_state() == "ALIVE":
                    server.send_obj(cmd=cmd, dest=dest, obj=obj)
                else:
                    self._client.store.append((cmd, dest, obj))

    def connectionLost(self, reason: Any) -> None:
        self._client.unlink_flow()
        super().connectionLost(reason)
        self._client.close(1)


class _Client(tlspyo.client.Client):
    """The network process of a :class:`TmrlEndpoint`."""

    def __init__(self, *, max_frame: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_frame = max_frame
        self._flow: Any = None  # the relay connection, registered as the producer of the link to the endpoint

    def link_flow(self) -> None:
        """Once both connections are up: when the endpoint stops reading the link, stop reading from the relay
        (the relay's window then bounds what is in flight; nothing piles up in this process)."""
        relay, link = self.to_server, self.endpoint
        if relay is None or link is None or self._flow is not None:
            return
        link.transport.registerProducer(relay.transport, True)
        self._flow = relay

    def unlink_flow(self) -> None:
        if self._flow is None:
            return
        self._flow = None
        if self.endpoint is not None:
            self.endpoint.transport.unregisterProducer()

    def run(self) -> None:
        from twisted.internet import reactor, ssl

        factory = _ClientFactory(client=self)
        if self._security == "TLS":
            with open(f"{self._keys_dir}/certificate.pem", "rb") as file:
                authority = ssl.Certificate.loadPEM(file.read())
            options = ssl.optionsForClientTLS(hostname=self._hostname, trustRoot=authority)
            reactor.connectSSL(host=self._ip_server, port=self._port_server, factory=factory, contextFactory=options)
        else:
            reactor.connectTCP(host=self._ip_server, port=self._port_server, factory=factory)
        run_reactor(self, _LocalProtocol)

    def close(self, counter: int) -> None:
        """Stop once what was sent is acknowledged, or after about a second (``counter`` counts quarter seconds)."""
        from twisted.internet import reactor

        if self.check_acks() or counter >= 4:
            if self.to_server is not None:
                self.to_server.transport.loseConnection()
            stop_reactor(self)
        else:
            reactor.callLater(0.25, self.close, counter + 1)


class TmrlEndpoint:
    """A tlspyo endpoint with the network process of :class:`_Client` (see the module docstring).

    :meth:`send_object` sends a codec value to a tlspyo destination (``{group: count}``); :meth:`receive` returns
    what arrives as raw codec messages.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        password: str,
        group: str,
        security: str | None,
        keys_dir: str | None,
        hostname: str,
        max_frame: int,
        reconnect_delay: float = 0.5,
        reconnect_max_delay: float = 5.0,
        start_timeout: float = 60.0,
        receive_queue: int = RECEIVE_QUEUE,
    ) -> None:
        self._max_frame = max_frame
        link, link_port = open_link()
        self._client = _Client(
            max_frame=max_frame,
            ip_server=host,
            port_server=port,
            password=password,
            groups=(group,),
            hostname=hostname,
            recon_max_delay=reconnect_max_delay,
            recon_initial_delay=reconnect_delay,
            recon_factor=1.5,
            recon_jitter=0.1,
            **tlspyo_options(link_port, max_frame, security, keys_dir),
        )
        self._process = NetworkProcess(
            self._client.run,
            link,
            name=f"tmrl-tlspyo-{group}",
            start_timeout=start_timeout,
            what="the tlspyo network process",
        )
        self._process.send("TEST", None, serialize(None))
        self._received: queue.Queue[bytes] = queue.Queue(maxsize=receive_queue)
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read_local, name="tmrl-tlspyo-read", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        """Whether the network process runs."""
        return self._process.alive

    def send_object(self, obj: Any, destination: dict[str, int]) -> None:
        """Send ``obj`` (a codec value) to ``destination`` through the relay (raises OSError if the network process
        is gone)."""
        self.send_encoded(serialize(obj), destination)

    def send_encoded(self, data: bytes, destination: dict[str, int]) -> None:
        """Send bytes that the receiver will decode as a codec value (tests send anything they like this way)."""
        self._process.send("OBJ", destination, data)

    def _read_local(self) -> None:
        inbox = bytearray()
        deserialize = self._client.deserializer
        conn = self._process.conn
        while not self._closing.is_set():
            try:
                data = conn.recv(1 << 20)
            except OSError:
                return
            if not data:
                return  # the network process is gone
            inbox += data
            try:
                found, consumed = split_frames(inbox, self._max_frame + 256)
            except CodecError as exc:
                log.error("tlspyo endpoint: bad data from its network process (%s)", exc)
                return
            del inbox[:consumed]
            for frame in found:
                try:
                    _, cmd, obj = deserialize(frame[HEADER_SIZE:])
                except (CodecError, TypeError, ValueError) as exc:
                    log.warning("tlspyo endpoint: dropped an undecodable frame: %s", exc)
                    continue
                if cmd == "OBJ" and type(obj) is bytes and not self._put(obj):
                    return

    def _put(self, obj: bytes) -> bool:
        """Queue ``obj`` for :meth:`receive`, waiting while the queue is full (this is what stops the network
        process from reading: see the module docstring); False if the endpoint closed meanwhile."""
        while not self._closing.is_set():
            try:
                self._received.put(obj, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def receive(self, timeout: float | None = None) -> bytes | None:
        """The next raw message received (a codec message, not yet decoded), or None after ``timeout`` seconds."""
        try:
            return self._received.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the network process (waiting at most about a second for acknowledgements); idempotent."""
        self._process.stop(("STOP", None, serialize(None)), timeout)
        self._closing.set()
        self._reader.join(timeout)
