"""tmrl-core: distributed, real-time reinforcement learning, with plugins.

Importing ``tmrl_core`` is cheap: the library API below is imported lazily on first attribute access, so plugins
and the ``tmrl`` command can use ``tmrl_core.hookimpl`` and the spec classes without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmrl_core.__about__ import __version__
from tmrl_core.errors import TmrlError
from tmrl_core.hookspecs import hookimpl
from tmrl_core.lazy import lazy_exports
from tmrl_core.specs import AgentSpec, CommandSpec, CompressorSpec, EnvSpec, LoggerSpec, MemorySpec, TransportSpec

# name -> module that defines it (imported on first use)
_LAZY: dict[str, str] = {
    "Server": "tmrl_core.server",
    "RolloutWorker": "tmrl_core.worker",
    "Trainer": "tmrl_core.trainer",
    "TorchTrainingOffline": "tmrl_core.trainer",
    "Buffer": "tmrl_core.buffer",
    "TorchMemory": "tmrl_core.memory",
    "GenericTorchMemory": "tmrl_core.memory",
    "TrainingAgent": "tmrl_core.agents",
    "TorchActorModule": "tmrl_core.agents",
    "ActorModule": "tmrl_core.agents",
    "GenericGymEnv": "tmrl_core.envs",
    "partial": "tmrl_core.util",
    "prod": "tmrl_core.util",
    "Settings": "tmrl_core.settings",
    "load_settings": "tmrl_core.settings",
    "get_plugin_manager": "tmrl_core.plugins",
    "get_component": "tmrl_core.plugins",
}

#: The modules a plugin may import besides this package itself, each within its ``__all__`` (docs/api.md lists
#: them; tests/test_public_api.py holds the first-party plugins to them). Everything else is internal and may change.
PUBLIC_MODULES: tuple[str, ...] = (
    "tmrl_core.cli",
    "tmrl_core.codec",
    "tmrl_core.config_migration",
    "tmrl_core.errors",
    "tmrl_core.loggers",
    "tmrl_core.memory",
    "tmrl_core.metrics",
    "tmrl_core.nn",
    "tmrl_core.paths",
    "tmrl_core.settings",
    "tmrl_core.specs",
    "tmrl_core.testing",
    "tmrl_core.transport",
)

__all__ = [
    "__version__",
    "hookimpl",
    "TmrlError",
    "AgentSpec",
    "CommandSpec",
    "CompressorSpec",
    "EnvSpec",
    "LoggerSpec",
    "MemorySpec",
    "TransportSpec",
    "PUBLIC_MODULES",
    "lazy_exports",
    *_LAZY,
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tmrl_core.agents import ActorModule as ActorModule
    from tmrl_core.agents import TorchActorModule as TorchActorModule
    from tmrl_core.agents import TrainingAgent as TrainingAgent
    from tmrl_core.buffer import Buffer as Buffer
    from tmrl_core.envs import GenericGymEnv as GenericGymEnv
    from tmrl_core.memory import GenericTorchMemory as GenericTorchMemory
    from tmrl_core.memory import TorchMemory as TorchMemory
    from tmrl_core.plugins import get_component as get_component
    from tmrl_core.plugins import get_plugin_manager as get_plugin_manager
    from tmrl_core.server import Server as Server
    from tmrl_core.settings import Settings as Settings
    from tmrl_core.settings import load_settings as load_settings
    from tmrl_core.trainer import TorchTrainingOffline as TorchTrainingOffline
    from tmrl_core.trainer import Trainer as Trainer
    from tmrl_core.util import partial as partial
    from tmrl_core.util import prod as prod
    from tmrl_core.worker import RolloutWorker as RolloutWorker
