"""What a transport provides: the Server side, and the trainer and worker sides of the clients.

Workers send :class:`~tmrl_core.buffer.Buffer` objects to the trainer through the server; the trainer sends the
actor's weights (a ``state_dict`` of tensors) to every worker through the server. The worker, server and trainer code
only sees these interfaces and never knows which transport it has. Every transport that crosses a process boundary
encodes with :mod:`tmrl_core.codec` (never pickle).

A transport is registered with ``tmrl_register_transports`` and built as ``Transport(settings, run_name=...)``.
The endpoints are protocols (they share no code: what they share, the bounded queues, is in
:mod:`tmrl_core.transport.queues`); :class:`Transport` is a base class because it keeps the settings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from tmrl_core.buffer import Buffer

#: An actor's weights: parameter name -> tensor (or numpy array).
Weights = Mapping[str, Any]


@runtime_checkable
class ServerEndpoint(Protocol):
    """The rendezvous point: relays samples from any number of workers to the trainer, weights to every worker."""

    def start(self) -> None:
        """Start relaying in the background and return at once."""

    def stop(self) -> None:
        """Stop relaying and release every resource (sockets, threads); idempotent."""

    @property
    def address(self) -> str:
        """Where clients reach this server (for logs)."""


@runtime_checkable
class TrainerEndpoint(Protocol):
    """The trainer's connection to the server."""

    def send_weights(self, weights: Weights) -> None:
        """Broadcast the actor's weights to every worker (newest wins; never blocks training for long)."""

    def receive_samples(self) -> list[Buffer]:
        """Every buffer received since the last call (possibly none); never blocks. A transport holds a bounded
        amount (``server.queue_bytes``): a trainer that calls this less often than buffers arrive slows the workers
        down instead of growing."""

    def close(self) -> None:
        """Disconnect; idempotent."""


@runtime_checkable
class WorkerEndpoint(Protocol):
    """A worker's connection to the server."""

    def send_samples(self, buffer: Buffer) -> None:
        """Send a buffer to the trainer; never blocks the worker's step loop (queued if disconnected, bounded)."""

    def receive_weights(self, blocking: bool = False, timeout: float | None = None) -> Weights | None:
        """The newest weights received since the last call, or None. ``blocking`` waits up to ``timeout`` seconds
        (forever if None) for new weights."""

    def close(self) -> None:
        """Disconnect; idempotent."""


class Transport(ABC):
    """A way for workers, server and trainer to talk.

    Args:
        settings: the ``server`` settings section (address, port, password, TLS, limits).
        run_name: the run's name (a transport may use it to keep runs apart, e.g. a socket path).
    """

    def __init__(self, settings: Any, *, run_name: str = "default", **options: Any) -> None:
        self.settings = settings
        self.run_name = run_name
        self.options = options

    @abstractmethod
    def server(self) -> ServerEndpoint:
        """The server side (not started)."""

    @abstractmethod
    def trainer(self) -> TrainerEndpoint:
        """A trainer-side client (connects, waiting for the server if it is not up yet)."""

    @abstractmethod
    def worker(self, name: str | None = None) -> WorkerEndpoint:
        """A worker-side client; ``name`` tells workers apart in the server's logs."""
