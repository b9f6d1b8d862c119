"""The hook specifications of tmrl: one register-callback hook per component kind.

Each hook receives a ``register`` callback and calls it once per component the plugin provides; the core owns the
resulting registry. New keyword options can be added to the spec classes without breaking existing plugins.

A plugin is a module (or package) exposing hook implementations marked with :data:`tmrl_core.hookimpl`, announced in
its ``pyproject.toml``::

    [project.entry-points.tmrl]
    myplugin = "tmrl_myplugin.plugin"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from tmrl_core.specs import (
    AgentSpec,
    CommandSpec,
    CompressorSpec,
    EnvSpec,
    LoggerSpec,
    MemorySpec,
    TransportSpec,
)

PROJECT_NAME = "tmrl"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    """Register environments.

    Called once, when the registry is first used. Call ``register(EnvSpec(...))`` for each environment: its name,
    its factory, and what depends on its observations (encoder, default memory and compressor, real-time flag).
    """


@hookspec
def tmrl_register_agents(register: Callable[[AgentSpec], None]) -> None:
    """Register training algorithms.

    Called once, when the registry is first used. Call ``register(AgentSpec(...))`` for each algorithm: its name,
    the factory of its ``TrainingAgent``, the factory of the actor the workers run, and its settings model.
    """


@hookspec
def tmrl_register_memories(register: Callable[[MemorySpec], None]) -> None:
    """Register replay memories.

    Called once, when the registry is first used. Call ``register(MemorySpec(...))`` for each ``TorchMemory``
    subclass; environments name their default memory, and ``--memory`` overrides it.
    """


@hookspec
def tmrl_register_compressors(register: Callable[[CompressorSpec], None]) -> None:
    """Register sample compressors.

    Called once, when the registry is first used. Call ``register(CompressorSpec(...))`` for each compressor: a
    factory returning ``f(act, obs, rew, terminated, truncated, info) -> compressed sample``. A compressor is paired
    with a memory that rebuilds the transitions.
    """


@hookspec
def tmrl_register_transports(register: Callable[[TransportSpec], None]) -> None:
    """Register transports.

    Called once, when the registry is first used. Call ``register(TransportSpec(...))`` for each transport that
    carries samples from workers to the trainer and weights from the trainer to the workers (``--transport``).
    """


@hookspec
def tmrl_register_loggers(register: Callable[[LoggerSpec], None]) -> None:
    """Register metrics sinks (loggers).

    Called once, when the registry is first used. Call ``register(LoggerSpec(...))`` for each sink: the trainer
    builds the chosen ones (``--log NAME``, ``logging.loggers``) before training starts, gives each one every round's
    record, and closes them at the end. ``jsonl`` (always on), ``tensorboard`` and ``wandb`` are the core's.
    """


@hookspec
def tmrl_register_commands(register: Callable[[CommandSpec], None]) -> None:
    """Register CLI command groups.

    Called when the ``tmrl`` command starts. Call ``register(CommandSpec(name="x", factory="pkg.cli:app"))`` to
    mount a ``typer.Typer`` as ``tmrl x ...``. Keep heavy imports inside the command bodies so ``tmrl --help``
    stays instant.
    """
