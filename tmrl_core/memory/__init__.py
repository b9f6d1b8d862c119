"""Replay memories: the ``TorchMemory`` interface and the built-in implementations."""

from tmrl_core.memory.base import TorchMemory, collate_transitions
from tmrl_core.memory.generic import GenericTorchMemory

__all__ = ["TorchMemory", "GenericTorchMemory", "collate_transitions"]
