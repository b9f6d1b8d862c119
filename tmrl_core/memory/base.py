"""The replay-memory interface users of the original tmrl know: ``TorchMemory``.

Samples and transitions
-----------------------
A worker produces one *sample* per environment step, ``(act, obs, rew, terminated, truncated, info)``: ``obs`` is what
the environment returned after ``act`` was applied (after the worker's ``obs_preprocessor``). The first sample of
every episode is the *reset sample* ``(act0, obs0, 0.0, False, False, info0)`` where ``obs0`` is what ``reset()``
returned and ``act0`` is the action applied right after the reset: the environment's default action for real-time
(rtgym) environments, zeros for other environments (it is never the action of a transition).

The sample compressor (``f(act, obs, rew, terminated, truncated, info) -> compressed sample``) runs on the worker; the
memory stores compressed samples and rebuilds transitions from them.

A :class:`~tmrl_core.buffer.Buffer` always holds whole episodes: it starts with a reset sample and ends with a
terminated or truncated sample, so buffers from several workers can be appended in any order.

A *transition* ``(prev_obs, act, rew, new_obs, terminated, truncated, info)`` joins two consecutive samples of one
episode: sample ``k`` gives ``act, rew, new_obs, terminated, truncated, info`` and sample ``k - 1`` gives
``prev_obs``. There is no transition into a reset sample.

Batches
-------
``sample()`` returns ``(obs, act, rew, next_obs, terminated, truncated)`` as tensors on ``device`` with the batch
dimension first; observations keep the structure of the observation space (a tensor for a ``Box``, a tuple of
tensors for a ``Tuple``); ``rew``, ``terminated`` and ``truncated`` are float32 of shape ``(batch,)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tmrl_core.buffer import Buffer
from tmrl_core.compression import check_transition_crc

if TYPE_CHECKING:
    from gymnasium import spaces


class TorchMemory(ABC):
    """A replay memory. Subclasses implement :meth:`append_buffer`, :meth:`__len__` and :meth:`get_transition`;
    fast memories also override :meth:`sample` to gather a whole batch at once.

    Args:
        device: where batches are collated (set by the Trainer).
        nb_steps: batches yielded per iteration (``for batch in memory``; set by the Trainer).
        sample_preprocessor: optional ``f(prev_obs, act, rew, new_obs, terminated, truncated)`` applied to every
            transition (data augmentation).
        memory_size: the most transitions kept; the oldest are dropped.
        batch_size: transitions per batch.
        dataset_path: an offline dataset (array file, see ``docs/``) appended at start.
        crc_debug: check every rebuilt transition against the full one the worker stored in ``info``.
        seed: seed of the index sampler.
        observation_space, action_space: the environment's spaces (memories that rebuild observations need them).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        nb_steps: int = 1,
        sample_preprocessor: Callable[..., Any] | None = None,
        memory_size: int = 1_000_000,
        batch_size: int = 256,
        dataset_path: str | None = "",
        crc_debug: bool = False,
        seed: int | None = None,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.nb_steps = nb_steps
        self.sample_preprocessor = sample_preprocessor
        self.memory_size = memory_size
        self.batch_size = batch_size
        self.dataset_path = dataset_path or ""
        self.crc_debug = crc_debug
        self.rng = np.random.default_rng(seed)
        self.stat_train_return: float | None = None
        self.stat_test_return: float | None = None
        self.stat_train_steps: int | None = None
        self.stat_test_steps: int | None = None
        #: samples appended since creation (environment steps received)
        self.total_samples = 0
        #: free storage for subclasses, as in the original tmrl (the seed tutorial's memory keeps its lists here)
        self.data: list[Any] = []

    # -- what subclasses implement -------------------------------------------------------------------------------
    @abstractmethod
    def append_buffer(self, buffer: Buffer) -> None:
        """Store the (compressed) samples of ``buffer.memory``, trimming to ``memory_size``."""

    @abstractmethod
    def __len__(self) -> int:
        """How many transitions can be sampled: ``get_transition(i)`` is valid for ``0 <= i < len(self)``."""

    @abstractmethod
    def get_transition(self, item: int) -> tuple[Any, ...]:
        """Transition ``item`` rebuilt: ``(prev_obs, act, rew, new_obs, terminated, truncated, info)``."""

    # -- machinery -----------------------------------------------------------------------------------------------
    def append(self, buffer: Buffer) -> None:
        """Append a buffer received from a worker and keep its episode statistics."""
        if len(buffer) == 0:
            return
        for stat in ("stat_train_return", "stat_test_return", "stat_train_steps", "stat_test_steps"):
            value = getattr(buffer, stat, None)
            if value is not None:
                setattr(self, stat, value)
        self.total_samples += len(buffer)
        self.append_buffer(buffer)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for _ in range(self.nb_steps):
            yield self.sample()

    def sample_indices(self) -> np.ndarray:
        """``batch_size`` indices drawn uniformly from ``range(len(self))``."""
        return self.rng.integers(0, len(self), size=self.batch_size)

    def sample(self) -> tuple[Any, ...]:
        """One batch, the straightforward way: ``get_transition`` per index, then collate."""
        indices = self.sample_indices()
        transitions = [self[int(i)] for i in indices]
        return collate_transitions(transitions, self.device)

    def __getitem__(self, item: int) -> tuple[Any, ...]:
        prev_obs, act, rew, new_obs, terminated, truncated, info = self.get_transition(item)
        if self.crc_debug:
            check_transition_crc(prev_obs, act, rew, new_obs, terminated, truncated, info)
        if self.sample_preprocessor is not None:
            prev_obs, act, rew, new_obs, terminated, truncated = self.sample_preprocessor(
                prev_obs, act, rew, new_obs, terminated, truncated
            )
        return prev_obs, act, rew, new_obs, terminated, truncated

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The memory's contents as arrays and plain data (never pickled objects)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed (implement state_dict)")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed (implement load_state_dict)")


def _stack(items: list[Any], device: torch.device) -> Any:
    first = items[0]
    if isinstance(first, (tuple, list)):
        return tuple(_stack([it[j] for it in items], device) for j in range(len(first)))
    if isinstance(first, dict):
        return {k: _stack([it[k] for it in items], device) for k in first}
    arr = np.stack([np.asarray(it) for it in items])
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    return torch.from_numpy(arr).to(device)


def collate_transitions(transitions: list[tuple[Any, ...]], device: torch.device) -> tuple[Any, ...]:
    """Stack per-sample transitions ``(prev_obs, act, rew, new_obs, terminated, truncated)`` into a batch."""
    prev_obs, act, rew, new_obs, terminated, truncated = zip(*transitions, strict=False)
    return (
        _stack(list(prev_obs), device),
        _stack(list(act), device).float(),
        torch.as_tensor(np.asarray(rew, dtype=np.float32), device=device),
        _stack(list(new_obs), device),
        torch.as_tensor(np.asarray(terminated, dtype=np.float32), device=device),
        torch.as_tensor(np.asarray(truncated, dtype=np.float32), device=device),
    )
