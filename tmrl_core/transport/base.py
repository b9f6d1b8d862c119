"""What a transport provides: the Server side, and the trainer and worker sides of the clients.

Workers send :class:`~tmrl_core.buffer.Buffer` objects to the trainer through the server; the trainer sends the
actor's weights (a ``state_dict`` of tensors) to every worker through the server. The worker, server and trainer code
only sees these interfaces and never knows which transport it has. Every transport that crosses a process boundary
encodes with :mod:`tmrl_core.codec` (never pickle).

A transport is registered with ``tmrl_register_transports`` and built as ``Transport(settings, run_name=...)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from tmrl_core.buffer import Buffer

#: An actor's weights: parameter name -> tensor (or numpy array).
Weights = Mapping[str, Any]


class ServerEndpoint(ABC):
    """The rendezvous point: relays samples from any number of workers to the trainer, weights to every worker."""

    @abstractmethod
    def start(self) -> None:
        """Start relaying in the background and return at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop relaying and release every resource (sockets, threads); idempotent."""

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach this server (for logs)."""


class TrainerEndpoint(ABC):
    """The trainer's connection to the server."""

    @abstractmethod
    def send_weights(self, weights: Weights) -> None:
        """Broadcast the actor's weights to every worker (newest wins; never blocks training for long)."""

    @abstractmethod
    def receive_samples(self) -> list[Buffer]:
        """Every buffer received since the last call (possibly none); never blocks."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect; idempotent."""


class WorkerEndpoint(ABC):
    """A worker's connection to the server."""

    @abstractmethod
    def send_samples(self, buffer: Buffer) -> None:
        """Send a buffer to the trainer; never blocks the worker's step loop (queued if disconnected, bounded)."""

    @abstractmethod
    def receive_weights(self, blocking: bool = False, timeout: float | None = None) -> Weights | None:
        """The newest weights received since the last call, or None. ``blocking`` waits up to ``timeout`` seconds
        (forever if None) for new weights."""

    @abstractmethod
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
