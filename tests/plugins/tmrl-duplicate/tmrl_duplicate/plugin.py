"""Registers names that are already taken, and a command group that cannot load; its own compressor must keep working.

While ``TESTS_DUPLICATE_PLUGIN`` is ``1`` it registers env ``pendulum`` (tmrl-core has one), a command group named
``config`` (a core command) and a command group ``duplicate-missing`` whose module does not exist. Without the
variable it registers only its compressor: this package is installed beside every other test suite, and those use
the core's ``pendulum``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tmrl_core import CommandSpec, CompressorSpec, EnvSpec, hookimpl

ACTIVE_ENV = "TESTS_DUPLICATE_PLUGIN"


def _active() -> bool:
    return os.environ.get(ACTIVE_ENV) == "1"


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    if _active():
        register(
            EnvSpec(
                name="pendulum",
                factory="tmrl_duplicate.plugin:no_such_factory",
                description="A second pendulum: the name is taken by tmrl-core.",
            )
        )


@hookimpl
def tmrl_register_compressors(register: Callable[[CompressorSpec], None]) -> None:
    register(
        CompressorSpec(
            name="duplicate-passthrough",
            factory="tmrl_core.compression:no_compression",
            description="The core's no-op compressor under another name (from tmrl-duplicate).",
        )
    )


@hookimpl
def tmrl_register_commands(register: Callable[[CommandSpec], None]) -> None:
    if _active():
        register(CommandSpec(name="config", factory="tmrl_duplicate.plugin:app", description="Clashes with the core."))
        register(
            CommandSpec(
                name="duplicate-missing",
                factory="tmrl_duplicate.missing_cli:app",
                description="A command group whose module does not exist.",
            )
        )
