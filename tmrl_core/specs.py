"""Component specs: what a plugin registers through the ``tmrl_register_*`` hooks.

A spec is cheap to build: every factory may be given as a ``"module:attr"`` string that is imported only when the
component is used (:meth:`ComponentSpec.load`), so listing plugins never imports torch or a plugin's heavy code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tmrl_core.errors import PluginError

#: A factory, or a ``"package.module:attribute"`` path to one, resolved on first use.
Ref = str | Callable[..., Any]

__all__ = [
    "Ref",
    "resolve",
    "ComponentSpec",
    "EnvSpec",
    "AgentSpec",
    "MemorySpec",
    "CompressorSpec",
    "TransportSpec",
    "CommandSpec",
    "LoggerSpec",
]


def resolve(ref: Ref, *, what: str = "factory") -> Any:
    """Import ``"module:attr"`` (dotted attributes allowed) or return ``ref`` itself if it is already an object."""
    if not isinstance(ref, str):
        return ref
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise PluginError(f"{what} {ref!r} is not of the form 'package.module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"cannot import {module_name!r} for {what} {ref!r}: {exc}",
            hint="is the plugin that provides it installed with all its dependencies?",
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise PluginError(
                f"{what} {ref!r}: module {module_name!r} has no attribute {attr_path!r}",
                hint="is the plugin that provides it installed with all its dependencies, and in a version that has"
                " it? (otherwise its registration names the wrong attribute)",
            ) from exc
    return obj


@dataclass(frozen=True)
class ComponentSpec:
    """What every component registration has in common.

    Attributes:
        name: the name users type (``tmrl run --env NAME``); lowercase, ``-`` separated.
        factory: builds the component (a class or a function), or its ``"module:attr"`` path.
        description: one line shown by ``tmrl plugins``.
        settings: an optional pydantic model (or its path) for this component's settings section; validated only
            when the component is chosen.
        settings_section: the name of that section in the config (defaults to the component's name).
    """

    kind: ClassVar[str] = "component"

    name: str
    factory: Ref
    description: str = ""
    settings: Ref | None = None
    settings_section: str | None = None
    #: Filled in by the registry: the plugin (pluggy name) that registered this spec.
    plugin: str = field(default="", compare=False)

    def load(self) -> Any:
        """The factory itself, imported on first use."""
        return resolve(self.factory, what=f"{self.kind} {self.name!r}")

    def load_settings_model(self) -> Any | None:
        """The settings model class, or ``None``."""
        if self.settings is None:
            return None
        return resolve(self.settings, what=f"settings of {self.kind} {self.name!r}")

    @property
    def section(self) -> str:
        """The settings section name of this component."""
        return self.settings_section or self.name.replace("-", "_")


@dataclass(frozen=True)
class EnvSpec(ComponentSpec):
    """An environment.

    ``factory(settings, **kwargs) -> gymnasium.Env`` where ``settings`` is the env's validated settings section (or
    ``None``). The env spec also supplies what depends on its observations, so that an algorithm never names an env:

    Attributes:
        encoder: ``encoder(observation_space, **kwargs) -> torch.nn.Module`` mapping a batch of observations to a
            flat feature tensor, with an ``out_features`` attribute (``None``: the core's flatten + MLP encoder).
        memory: the name of the default memory for this env.
        compressor: the name of the default sample compressor for this env.
        realtime: True for rtgym environments (the last action before a reset is never applied).
        spaces: optional ``spaces(settings) -> (observation_space, action_space)`` that describes the spaces without
            starting the environment (the trainer never needs a live env).
        component_options: optional ``f(settings) -> dict`` of keyword arguments given to this env's compressor and
            memory factories (e.g. ``{"act_buf_len": 4}``), next to ``observation_space`` and ``action_space``.
        default_settings: optional nested mapping of settings this env changes by default (e.g.
            ``{"training": {"start_training": 500}}``), applied above the built-in defaults and below the config file,
            environment variables and command-line options (see ``docs/pipeline.md``). Core sections and the env's
            own section always apply; an agent's section (e.g. ``{"sac": {"lr_critic": 3e-4}}``) applies when that
            agent runs and is ignored otherwise, so an env can tune agents that may not be installed.
        random_steps: the default of ``training.random_steps`` for this env: env steps of uniform random actions
            before the policy acts (``None``: as many as ``training.start_training``, like Stable-Baselines3's
            ``learning_starts``; 0 for an env where random actions are useless or unsafe).
    """

    kind: ClassVar[str] = "env"

    encoder: Ref | None = None
    memory: str = "default"
    compressor: str = "none"
    realtime: bool = False
    spaces: Ref | None = None
    component_options: Ref | None = None
    default_settings: Mapping[str, Any] | None = None
    random_steps: int | None = None


@dataclass(frozen=True)
class AgentSpec(ComponentSpec):
    """A training algorithm.

    ``factory(observation_space, action_space, device, encoder, settings) -> TrainingAgent``.

    Attributes:
        actor: ``actor(observation_space, action_space, encoder, settings) -> TorchActorModule`` that the workers run.
        action_space: the kind of action space it supports (``"box"`` for continuous actions).
    """

    kind: ClassVar[str] = "agent"

    actor: Ref | None = None
    action_space: str = "box"


@dataclass(frozen=True)
class MemorySpec(ComponentSpec):
    """A replay memory: ``factory(observation_space=..., action_space=..., device=..., nb_steps=..., memory_size=...,
    batch_size=..., dataset_path=..., crc_debug=..., seed=..., **env_component_options) -> TorchMemory``."""

    kind: ClassVar[str] = "memory"


@dataclass(frozen=True)
class CompressorSpec(ComponentSpec):
    """A sample compressor: ``factory(observation_space=..., action_space=..., **env_component_options)`` returns
    ``f(act, obs, rew, terminated, truncated, info) -> compressed sample``."""

    kind: ClassVar[str] = "compressor"


@dataclass(frozen=True)
class TransportSpec(ComponentSpec):
    """A transport between workers, server and trainer: ``factory`` is a :class:`tmrl_core.transport.Transport`."""

    kind: ClassVar[str] = "transport"


@dataclass(frozen=True)
class CommandSpec(ComponentSpec):
    """A CLI command group added by a plugin: ``factory`` is a ``typer.Typer`` (or its path), mounted as
    ``tmrl NAME ...``. The module that holds it must import heavy code only inside command bodies."""

    kind: ClassVar[str] = "command"


@dataclass(frozen=True)
class LoggerSpec(ComponentSpec):
    """A metrics sink (``--log NAME``, ``logging.loggers``): ``factory(run, settings) -> logger`` where ``run`` is a
    :class:`tmrl_core.loggers.RunInfo` (name, folder, env, algo, settings) and ``settings`` the logger's validated
    settings section (or ``None``). The logger has ``log(record)``, called with every round's record, and
    ``close()``, called once at the end (see :class:`tmrl_core.loggers.Logger`)."""

    kind: ClassVar[str] = "logger"


SPEC_TYPES: dict[str, type[ComponentSpec]] = {
    cls.kind: cls for cls in (EnvSpec, AgentSpec, MemorySpec, CompressorSpec, TransportSpec, CommandSpec, LoggerSpec)
}
