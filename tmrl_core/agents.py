"""The actor and training-agent interfaces.

- :class:`ActorModule`: what a RolloutWorker runs (``act(obs, test) -> action``).
- :class:`TorchActorModule`: an ``ActorModule`` that is a ``torch.nn.Module``; the trainer trains it and its
  ``state_dict()`` travels to the workers.
- :class:`TrainingAgent`: what the Trainer drives (``train(batch) -> metrics``, ``get_actor()``).

Observations: a batch holds observations in the structure of the observation space: a tensor for a ``Box``, a tuple
of tensors for a ``Tuple`` space (batch dimension first). ``act`` takes one observation in the structure the
environment returns (numpy arrays) and returns a numpy action.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from gymnasium import spaces


class ActorModule(ABC):
    """A policy the RolloutWorker can run.

    Subclasses take at least ``observation_space`` and ``action_space`` as constructor arguments.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space

    @abstractmethod
    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        """The action for one observation; ``test=True`` asks for the deterministic (evaluation) action."""


class TorchActorModule(ActorModule, torch.nn.Module, ABC):
    """An :class:`ActorModule` that is a ``torch.nn.Module``.

    Implement ``forward(obs, test=False, with_logprob=True)`` for training and ``act`` for acting: ``act`` receives
    a batch of one observation (tensors on the module's device, see :func:`collate_observation`) and returns the
    action, either unbatched (shaped like ``action_space.shape``) or as a batch of one. The worker calls
    :meth:`act_`, which does the batching and the unbatching.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        torch.nn.Module.__init__(self)
        ActorModule.__init__(self, observation_space, action_space)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def act_(self, obs: Any, test: bool = False) -> np.ndarray:
        """``act`` on one raw observation (as the environment returns it), as a numpy action.

        The observation becomes a batch of one on the module's device; a result of shape ``(1, *action_space.shape)``
        loses its batch dimension. Any other shape that is not the action space's is returned unchanged: the worker
        refuses it (:class:`~tmrl_core.errors.ActionShapeError`) rather than guess how to reshape it.
        """
        batch = collate_observation(obs, self.device)
        action = self.act(batch, test=test)
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        action = np.asarray(action)
        shape = getattr(self.action_space, "shape", None)
        if shape is not None and action.shape == (1, *shape):
            action = action[0]
        return action


def collate_observation(obs: Any, device: torch.device | str = "cpu") -> Any:
    """One observation (array, or tuple/list of arrays) -> the same structure of tensors with a batch dim of 1."""
    if isinstance(obs, (tuple, list)):
        return tuple(collate_observation(o, device) for o in obs)
    if isinstance(obs, dict):
        return {k: collate_observation(v, device) for k, v in obs.items()}
    arr = np.asarray(obs)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return torch.as_tensor(arr, device=device).unsqueeze(0)


class TrainingAgent(ABC):
    """A training algorithm driven by the Trainer.

    Args:
        observation_space: the environment's observation space (after the worker's preprocessor).
        action_space: the environment's action space.
        device: where the models live and where batches arrive.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, device: str | torch.device) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = device

    #: ``train`` calls that make one training step of the Trainer (REDQ: ``G`` critic updates per actor update).
    #: The Trainer's intervals and its ``max_training_steps_per_env_step`` count training steps, so they keep one
    #: meaning whatever the agent.
    updates_per_step: int = 1

    @abstractmethod
    def train(self, batch: tuple[Any, ...]) -> dict[str, float]:
        """One training step on ``(obs, act, rew, next_obs, terminated, truncated)``; returns metrics to log."""

    @abstractmethod
    def get_actor(self) -> TorchActorModule:
        """The current actor, whose ``state_dict()`` is broadcast to the workers."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training (models, targets, optimisers, counters); tensors and plain data."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints (implement state_dict)")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints (implement load_state_dict)")
