"""Registers env ``pendulum`` a second time, and a compressor of its own that must keep working.

The duplicate is registered only while ``TESTS_DUPLICATE_PLUGIN`` is ``1``: this package is installed in the same
environment as every other test suite, and those use the core's ``pendulum``. The tests of duplicate handling set
the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tmrl_core import CompressorSpec, EnvSpec, hookimpl

ACTIVE_ENV = "TESTS_DUPLICATE_PLUGIN"


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    if os.environ.get(ACTIVE_ENV) == "1":
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
