"""Transports between workers, server and trainer, and the queues they share."""

from tmrl_core.buffer import DROPPED_IN_BUFFER, DROPPED_ON_SERVER, DROPPED_UNSENDABLE, DROPPED_UNSENT
from tmrl_core.transport.base import ServerEndpoint, TrainerEndpoint, Transport, Weights, WorkerEndpoint
from tmrl_core.transport.queues import DropOldestQueue, DropReports, NewestSlot, ReceivedBuffers, snapshot, worker_name

__all__ = [
    "Transport",
    "ServerEndpoint",
    "TrainerEndpoint",
    "WorkerEndpoint",
    "Weights",
    "DropOldestQueue",
    "DropReports",
    "NewestSlot",
    "ReceivedBuffers",
    "snapshot",
    "worker_name",
    "DROPPED_IN_BUFFER",
    "DROPPED_ON_SERVER",
    "DROPPED_UNSENDABLE",
    "DROPPED_UNSENT",
]
