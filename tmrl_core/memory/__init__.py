"""Replay memories: the ``TorchMemory`` interface and the built-in implementations."""

from tmrl_core.memory.base import TorchMemory, collate_transitions
from tmrl_core.memory.generic import GenericTorchMemory
from tmrl_core.memory.ring import RingMemory

__all__ = ["TorchMemory", "GenericTorchMemory", "RingMemory", "collate_transitions"]
