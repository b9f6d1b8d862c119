"""The core's built-in components, registered through the same hooks as any plugin (like llm's DEFAULT_PLUGINS).

Only specs live here: every factory is a ``"module:attr"`` string, so listing them imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tmrl_core.hookspecs import hookimpl
from tmrl_core.specs import CompressorSpec, EnvSpec, LoggerSpec, MemorySpec, TransportSpec

#: ``pendulum`` defaults: SAC-like lockstep (about one training step per env step, a fresh policy for every episode)
#: instead of letting a fast simulator run far ahead of training; learning is then the same on any machine.
PENDULUM_DEFAULT_SETTINGS: dict[str, Any] = {
    "training": {
        "rounds_per_epoch": 10,
        "steps_per_round": 200,
        "start_training": 200,
        "max_training_steps_per_env_step": 1.0,
        "update_model_interval": 200,
        "update_buffer_interval": 20,
    },
    "worker": {"max_env_steps_per_model": 200, "test_episode_interval": 5},
}

#: ``rc-drone`` defaults: a real-time env (20 steps/s) is never made to wait for the trainer.
RC_DRONE_DEFAULT_SETTINGS: dict[str, Any] = {
    "training": {
        "rounds_per_epoch": 10,
        "steps_per_round": 200,
        "start_training": 400,
        "max_training_steps_per_env_step": 2.0,
        "update_model_interval": 100,
        "update_buffer_interval": 50,
    },
    "worker": {"test_episode_interval": 10},
}


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    register(
        EnvSpec(
            name="pendulum",
            factory="tmrl_core.envs:make_pendulum",
            description="gymnasium Pendulum-v1: swing a pendulum up (3 observations, 1 action).",
            spaces="tmrl_core.envs:pendulum_spaces",
            default_settings=PENDULUM_DEFAULT_SETTINGS,
        )
    )
    register(
        EnvSpec(
            name="rc-drone",
            factory="tmrl_core.envs:make_rc_drone",
            description="The RC drone of rtgym's tutorial (own simulation): real-time, delayed, action buffer in obs.",
            settings="tmrl_core.envs:RcDroneSettings",
            realtime=True,
            compressor="action-buffer",
            spaces="tmrl_core.envs:rc_drone_spaces",
            component_options="tmrl_core.envs:rc_drone_component_options",
            default_settings=RC_DRONE_DEFAULT_SETTINGS,
        )
    )


@hookimpl
def tmrl_register_memories(register: Callable[[MemorySpec], None]) -> None:
    register(
        MemorySpec(
            name="default",
            factory="tmrl_core.memory.ring:RingMemory",
            description="The fast ring memory (= 'ring'): works with every built-in env and compressor.",
        )
    )
    register(
        MemorySpec(
            name="generic",
            factory="tmrl_core.memory:GenericTorchMemory",
            description="The straightforward per-sample memory (get_transition + collate), for reference.",
        )
    )
    register(
        MemorySpec(
            name="ring",
            factory="tmrl_core.memory.ring:RingMemory",
            description="Preallocated rings, vectorised batches; stores each history entry once (any compressor).",
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
    register(
        CompressorSpec(
            name="action-buffer",
            factory="tmrl_core.compression:action_buffer_compressor",
            description="rtgym envs: each action travels once, not again in every action buffer (act_buf_len).",
        )
    )
    register(
        CompressorSpec(
            name="history",
            factory="tmrl_core.compression:history_compressor",
            description="Image/LIDAR histories: each frame travels once (history_index), plus the action buffer.",
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


@hookimpl
def tmrl_register_loggers(register: Callable[[LoggerSpec], None]) -> None:
    register(
        LoggerSpec(
            name="jsonl",
            factory="tmrl_core.loggers:JsonlLogger",
            description="<data>/runs/<run>/metrics.jsonl, one JSON object per round (always on).",
        )
    )
    register(
        LoggerSpec(
            name="tensorboard",
            factory="tmrl_core.loggers:TensorBoardLogger",
            description="TensorBoard event files in the run's folder (tmrl-core[tensorboard]).",
        )
    )
    register(
        LoggerSpec(
            name="wandb",
            factory="tmrl_core.loggers:WandbLogger",
            # its settings are the core's `wandb` section (kept there: the original tmrl's config migrates into it)
            description="Weights & Biases, settings section wandb (tmrl-core[wandb]).",
        )
    )
