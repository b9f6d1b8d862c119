"""Transports between workers, server and trainer."""

from tmrl_core.transport.base import ServerEndpoint, TrainerEndpoint, Transport, Weights, WorkerEndpoint

__all__ = ["Transport", "ServerEndpoint", "TrainerEndpoint", "WorkerEndpoint", "Weights"]
