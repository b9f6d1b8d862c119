"""What the relay and the endpoints share: tlspyo's framing, and a Twisted network process driven through a local link.

tlspyo runs its Twisted reactor in a child process and talks to it through a TCP connection on 127.0.0.1 (the "local
link"). :class:`NetworkProcess` is that arrangement, written once for the relay and for every endpoint, with these
differences from tlspyo's ``Relay`` and ``Endpoint`` (which this plugin no longer subclasses, so it touches none of
their name-mangled private attributes):

- the link listens on a port the OS picks, so any number of relays and endpoints run on one machine (tlspyo uses the
  fixed ports 2096 and 2097), and accepts one connection only;
- starting fails with a :class:`~tmrl_core.errors.TransportError` after ``start_timeout`` seconds instead of hanging;
- stopping waits a bounded time for the process, then kills it (tlspyo joins forever).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from multiprocessing import Process
from socket import AF_INET, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET, socket
from threading import Lock
from typing import Any, Protocol

from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import ClientFactory
from twisted.internet.protocol import Protocol as TwistedProtocol

from tmrl_core.errors import CodecError, TransportError
from tmrl_tlspyo.serialization import Deserializer, serialize

HEADER_SIZE = 10
HEADER = re.compile(rb"[0-9]+ *")


def split_frames(inbox: bytearray, max_frame: int) -> tuple[list[bytes], int]:
    """Split complete ``header + body`` frames (no password) off the front of ``inbox``: ``(frames, consumed)``.

    Raises:
        CodecError: a malformed header, or a frame longer than ``max_frame``.
    """
    found = []
    start = 0
    while len(inbox) - start >= HEADER_SIZE:
        header = bytes(inbox[start : start + HEADER_SIZE])
        if not HEADER.fullmatch(header):
            raise CodecError("malformed frame header")
        length = int(header)
        if length > max_frame:
            raise CodecError(f"a frame of {length} bytes, over the limit of {max_frame}")
        end = start + HEADER_SIZE + length
        if len(inbox) < end:
            break
        found.append(bytes(inbox[start:end]))
        start = end
    return found, start


def ignore_interrupts() -> None:
    """In a network process: Ctrl-C in a terminal reaches the whole process group, but the process that started
    this one decides when it stops (through the local link), after delivering what it still holds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def tlspyo_options(link_port: int, max_frame: int, security: str | None, keys_dir: str | None) -> dict[str, object]:
    """What the relay's and the endpoints' tlspyo objects are built with alike: the core codec as serializer, the
    local link with its framing, and TCP or TLS."""
    return {
        "serializer": serialize,
        "deserializer": Deserializer(max_frame),
        "local_com_port": link_port,
        "header_size": HEADER_SIZE,
        "security": "TCP" if security is None else "TLS",
        "keys_dir": keys_dir,
    }


class NetworkSide(Protocol):
    """What runs in a network process (tlspyo's ``Client`` or ``Server``): the port of its local link, and its
    reactor while it runs."""

    _local_com_port: int
    _reactor: Any


class _LinkFactory(ClientFactory):
    """Builds ``protocol(side)`` for the local link (tlspyo's link factories build only their own protocols)."""

    def __init__(self, protocol: Callable[[Any], TwistedProtocol], side: NetworkSide) -> None:
        self._protocol = protocol
        self._side = side

    def buildProtocol(self, addr: object) -> TwistedProtocol:
        return self._protocol(self._side)


def run_reactor(side: NetworkSide, link_protocol: Callable[[Any], TwistedProtocol]) -> None:
    """The rest of a network process's body, once it has opened its network side: connect to the local link with
    ``link_protocol(side)``, then run the Twisted reactor until :func:`stop_reactor`."""
    from twisted.internet import reactor  # installs the reactor: only ever in the network process

    reactor.connectTCP(host="127.0.0.1", port=side._local_com_port, factory=_LinkFactory(link_protocol, side))
    side._reactor = reactor
    ignore_interrupts()
    reactor.run(installSignalHandlers=False)
    side._reactor = None


def stop_reactor(side: NetworkSide) -> None:
    """Stop the reactor of :func:`run_reactor` (from the reactor's thread), if it still runs."""
    if side._reactor is not None:
        try:
            side._reactor.stop()
        except ReactorNotRunning:
            pass


def open_link() -> tuple[socket, int]:
    """A listening socket for the local link on 127.0.0.1 and the port the OS gave it."""
    server = socket(AF_INET, SOCK_STREAM)
    server.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server, server.getsockname()[1]


class NetworkProcess:
    """A child process running ``target`` (a Twisted reactor) that connects back to ``link`` once.

    Args:
        target: the process's function; it connects to the link's port on 127.0.0.1.
        link: the listening socket from :func:`open_link`.
        name: the process's name.
        start_timeout: seconds to wait for the process to connect.
        what: how errors name the process ("the relay process").
    """

    def __init__(self, target: Callable[[], None], link: socket, *, name: str, start_timeout: float, what: str) -> None:
        self.process = Process(target=target, name=name, daemon=True)
        self.process.start()
        link.settimeout(start_timeout)
        try:
            self.conn, _ = link.accept()
        except OSError as exc:
            self.process.kill()
            raise TransportError(f"{what} did not start: {exc}", hint="see the log above for its error") from exc
        finally:
            link.close()  # one connection only: nobody else may take its place
        self.conn.settimeout(None)
        self._send_lock = Lock()
        self._stop_lock = Lock()
        self.stopped = False

    def send(self, *fields: Any) -> None:
        """Send one command (a tuple of codec values) to the process (raises OSError if it is gone)."""
        message = serialize(fields)
        with self._send_lock:
            self.conn.sendall(f"{len(message):<{HEADER_SIZE}}".encode() + message)

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def stop(self, stop_command: tuple, timeout: float) -> None:
        """Ask the process to stop with ``stop_command``, wait ``timeout`` seconds, then kill it; idempotent.

        Never blocks longer than that: a sender thread stuck writing to a process that does not read holds the link,
        and Ctrl-C must still end the program; the process is then killed without being asked."""
        with self._stop_lock:
            if self.stopped:
                return
            self.stopped = True
            if self._send_lock.acquire(timeout=1.0):
                try:
                    self.conn.settimeout(1.0)
                    message = serialize(stop_command)
                    self.conn.sendall(f"{len(message):<{HEADER_SIZE}}".encode() + message)
                except OSError:
                    pass
                finally:
                    self._send_lock.release()
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
            self.conn.close()

    def kill(self) -> None:
        """Kill the process at once, as a crash would (tests)."""
        self.process.kill()
        self.process.join(5)
