"""Hook implementations of tmrl-example.

Only specs live here: the factories are "module:attr" strings, so `tmrl plugins` and `tmrl --help` list this plugin
without importing gymnasium, numpy or the environment's module.
"""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import CommandSpec, EnvSpec, LoggerSpec, hookimpl


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    register(
        EnvSpec(
            name="example-env",
            factory="tmrl_example.env:make_env",
            settings="tmrl_example.env:ExampleEnvSettings",  # the `example_env` section of the settings
            description="Move a point on a line towards a target (1 observation, 1 action).",
        )
    )


@hookimpl
def tmrl_register_loggers(register: Callable[[LoggerSpec], None]) -> None:
    register(
        LoggerSpec(
            name="example-recorder",
            factory="tmrl_example.logger:RecorderLogger",
            description="Keeps the run's info and every record in files of the run's folder.",
        )
    )
    register(
        LoggerSpec(
            name="example-faulty",
            factory="tmrl_example.logger:FaultyLogger",
            settings="tmrl_example.logger:FaultySettings",  # the `example_faulty` section
            description="Raises after fail_after records (tests that a broken sink does not stop a run).",
        )
    )


@hookimpl
def tmrl_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(
        CommandSpec(
            name="example",
            factory="tmrl_example.cli:app",
            description="Commands of the example plugin.",
        )
    )
