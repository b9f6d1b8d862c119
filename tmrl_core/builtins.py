"""The core's built-in components, registered through the same hooks as any plugin (like llm's DEFAULT_PLUGINS).

Only specs live here: every factory is a ``"module:attr"`` string, so listing them imports nothing heavy.
"""

from __future__ import annotations

from typing import Callable

from tmrl_core.hookspecs import hookimpl
from tmrl_core.specs import CompressorSpec, EnvSpec, MemorySpec, TransportSpec


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    register(
        EnvSpec(
            name="pendulum",
            factory="tmrl_core.envs:make_pendulum",
            description="gymnasium Pendulum-v1: swing a pendulum up (3 observations, 1 action).",
        )
    )
    register(
        EnvSpec(
            name="rc-drone",
            factory="tmrl_core.envs:make_rc_drone",
            description="rtgym's dummy RC drone: real-time, delayed, with an action buffer in the observation.",
            settings="tmrl_core.envs:RcDroneSettings",
            realtime=True,
        )
    )


@hookimpl
def tmrl_register_memories(register: Callable[[MemorySpec], None]) -> None:
    register(
        MemorySpec(
            name="default",
            factory="tmrl_core.memory:GenericTorchMemory",
            description="Stores whole transitions; works with any environment and no compressor.",
        )
    )
    register(
        MemorySpec(
            name="generic",
            factory="tmrl_core.memory:GenericTorchMemory",
            description="The straightforward per-sample memory (get_transition + collate), for reference.",
        )
    )


@hookimpl
def tmrl_register_compressors(register: Callable[[CompressorSpec], None]) -> None:
    register(
        CompressorSpec(
            name="none",
            factory="tmrl_core.compression:no_compression",
            description="Sends samples as they are.",
        )
    )


@hookimpl
def tmrl_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            name="local",
            factory="tmrl_core.transport.local:LocalTransport",
            description="Server, trainer and workers on one machine, without a network port.",
        )
    )
