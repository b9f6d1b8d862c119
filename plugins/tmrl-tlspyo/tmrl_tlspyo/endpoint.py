"""The client side of the tlspyo transport: tlspyo's Endpoint with its network process hardened.

Same process model and wire protocol as tlspyo 0.3.0 (an Endpoint object in the caller's process, a Twisted process
that talks to the relay and reconnects when the link drops), with the core codec as serializer and deserializer and
these differences:

- the link between the Endpoint and its network process listens on a port the OS picks, so any number of workers run
  on one machine without choosing ports (tlspyo uses the fixed port 2097 by default);
- receive buffers grow linearly with the frame size (tlspyo re-copies them for every read: quadratic);
- the network process stops when the process that started it dies (tlspyo's would keep reconnecting forever), and
  the Endpoint's reader stops when the network process dies (tlspyo's spins);
- nothing sent is kept after the link to the relay is lost, and closing does not wait for acknowledgements that can
  no longer come (tlspyo waits up to 10 s);
- frames that do not decode are dropped with a log line instead of killing the receiving thread.

What the Endpoint receives is handed over as raw bytes (tlspyo's "synchronous" mode): the transport decodes it.
"""

from __future__ import annotations

import logging
import queue
import threading
from multiprocessing import Process
from socket import AF_INET, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET, socket
from threading import Lock
from typing import Any

import tlspyo.api
import tlspyo.client
from tlspyo.local_protocol_for_client import LocalProtocolForClient, LocalProtocolForClientFactory

from tmrl_core.errors import CodecError, TransportError
from tmrl_tlspyo.relay import _HEADER, HEADER_SIZE, _ignore_interrupts
from tmrl_tlspyo.serialization import Deserializer, serialize

log = logging.getLogger("tmrl.transport.tlspyo")


def _frames(inbox: bytearray, max_frame: int) -> tuple[list[bytes], int]:
    """Split complete ``header + body`` frames (no password) off the front of ``inbox``: ``(frames, consumed)``.

    Raises:
        CodecError: a malformed header, or a frame longer than ``max_frame``.
    """
    frames = []
    start = 0
    while len(inbox) - start >= HEADER_SIZE:
        header = bytes(inbox[start : start + HEADER_SIZE])
        if not _HEADER.fullmatch(header):
            raise CodecError("malformed frame header")
        length = int(header)
        if length > max_frame:
            raise CodecError(f"a frame of {length} bytes, over the limit of {max_frame}")
        end = start + HEADER_SIZE + length
        if len(inbox) < end:
            break
        frames.append(bytes(inbox[start:end]))
        start = end
    return frames, start


class _ClientProtocol(tlspyo.client.ClientProtocol):
    """The network process's connection to the relay."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox = bytearray()
        self._client: _Client

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self._client.pending_acks.clear()  # what was not acknowledged will not be, on this connection

    def dataReceived(self, data: bytes) -> None:
        self._inbox += data
        try:
            frames, consumed = _frames(self._inbox, self._client.max_frame)
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

    def dataReceived(self, data: bytes) -> None:
        self._inbox += data
        try:
            frames, consumed = _frames(self._inbox, self._client.max_frame)
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
        super().connectionLost(reason)
        self._client.close(1)


class _LocalFactory(LocalProtocolForClientFactory):
    def buildProtocol(self, addr: Any) -> _LocalProtocol:
        return _LocalProtocol(self.client)


class _Client(tlspyo.client.Client):
    """The network process of a :class:`TmrlEndpoint`."""

    def __init__(self, *, max_frame: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_frame = max_frame

    def run(self) -> None:
        from twisted.internet import reactor, ssl

        reactor.connectTCP(host="127.0.0.1", port=self._local_com_port, factory=_LocalFactory(self))
        factory = _ClientFactory(client=self)
        if self._security == "TLS":
            with open(f"{self._keys_dir}/certificate.pem", "rb") as file:
                authority = ssl.Certificate.loadPEM(file.read())
            options = ssl.optionsForClientTLS(hostname=self._hostname, trustRoot=authority)
            reactor.connectSSL(host=self._ip_server, port=self._port_server, factory=factory, contextFactory=options)
        else:
            reactor.connectTCP(host=self._ip_server, port=self._port_server, factory=factory)
        self._reactor = reactor
        _ignore_interrupts()
        reactor.run(installSignalHandlers=False)
        self._reactor = None

    def close(self, counter: int) -> None:
        """Stop once what was sent is acknowledged, or after about a second (``counter`` counts quarter seconds)."""
        from twisted.internet import reactor
        from twisted.internet.error import ReactorNotRunning

        if self.check_acks() or counter >= 4:
            if self.to_server is not None:
                self.to_server.transport.loseConnection()
            if self._reactor is not None:
                try:
                    self._reactor.stop()
                except ReactorNotRunning:
                    pass
        else:
            reactor.callLater(0.25, self.close, counter + 1)


class TmrlEndpoint(tlspyo.api.Endpoint):
    """A tlspyo Endpoint with the network process of :class:`_Client` (see the module docstring).

    Objects are sent with tlspyo's ``send_object``/``broadcast``/``produce`` (encoded with the codec); what arrives
    is read with :meth:`receive` as raw codec messages.
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
    ) -> None:
        # tlspyo.api.Endpoint.__init__ is not called: it binds a fixed local port and starts tlspyo's Client; this
        # sets the same attributes (tlspyo's methods send_object, broadcast, produce and _send_local use them).
        self._Endpoint__obj_buffer: queue.Queue[bytes] = queue.Queue()
        self._Endpoint__socket_closed_lock = Lock()
        self._Endpoint__socket_closed_flag = False
        self._header_size = HEADER_SIZE
        self._max_frame = max_frame
        self._deserialize_locally = True
        self._local_com_srv = socket(AF_INET, SOCK_STREAM)
        self._local_com_srv.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        self._local_com_srv.bind(("127.0.0.1", 0))
        self._local_com_srv.listen()
        self._local_com_port = self._local_com_srv.getsockname()[1]
        self._client = _Client(
            max_frame=max_frame,
            ip_server=host,
            port_server=port,
            password=password,
            serializer=serialize,
            deserializer=Deserializer(max_frame),
            groups=(group,),
            local_com_port=self._local_com_port,
            header_size=HEADER_SIZE,
            security="TCP" if security is None else "TLS",
            keys_dir=keys_dir,
            hostname=hostname,
            recon_max_delay=reconnect_max_delay,
            recon_initial_delay=reconnect_delay,
            recon_factor=1.5,
            recon_jitter=0.1,
        )
        self._p = Process(target=self._client.run, name=f"tmrl-tlspyo-{group}", daemon=True)
        self._p.start()
        self._local_com_srv.settimeout(start_timeout)
        try:
            self._local_com_conn, self._local_com_addr = self._local_com_srv.accept()
        except OSError as exc:
            self._p.kill()
            self._local_com_srv.close()
            raise TransportError(f"the tlspyo network process did not start: {exc}") from exc
        self._local_com_srv.close()  # one connection only: nobody else may take its place
        self._local_com_conn.settimeout(None)
        self._send_local(cmd="TEST")
        self._t_manage_received_objects = threading.Thread(
            target=self._read_local, name="tmrl-tlspyo-read", daemon=True
        )
        self._t_manage_received_objects.start()
        self._stop_lock = Lock()
        self._stopped = False

    @property
    def alive(self) -> bool:
        """Whether the network process runs."""
        return self._p.is_alive()

    def _read_local(self) -> None:
        inbox = bytearray()
        deserialize = self._client.deserializer
        while not self._Endpoint__socket_closed_flag:
            try:
                data = self._local_com_conn.recv(1 << 20)
            except OSError:
                return
            if not data:
                return  # the network process is gone
            inbox += data
            try:
                frames, consumed = _frames(inbox, self._max_frame + 256)
            except CodecError as exc:
                log.error("tlspyo endpoint: bad data from its network process (%s)", exc)
                return
            del inbox[:consumed]
            for frame in frames:
                try:
                    _, cmd, obj = deserialize(frame[HEADER_SIZE:])
                except (CodecError, TypeError, ValueError) as exc:
                    log.warning("tlspyo endpoint: dropped an undecodable frame: %s", exc)
                    continue
                if cmd == "OBJ" and type(obj) is bytes:
                    self._Endpoint__obj_buffer.put(obj)

    def receive(self, timeout: float | None = None) -> bytes | None:
        """The next raw message received (a codec message, not yet decoded), or None after ``timeout`` seconds."""
        try:
            return self._Endpoint__obj_buffer.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the network process (waiting at most about a second for acknowledgements); idempotent."""
        lock = getattr(self, "_stop_lock", None)
        if lock is None:
            return
        with lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._send_local(cmd="STOP", dest=None, obj=None)
            except OSError:
                pass
            self._p.join(timeout)
            if self._p.is_alive():
                self._p.kill()
                self._p.join(5)
            self._Endpoint__socket_closed_flag = True
            self._local_com_conn.close()
            self._t_manage_received_objects.join(timeout)
