"""Hook implementations of tmrl-faulty."""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import AgentSpec, EnvSpec, hookimpl


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    register(
        EnvSpec(
            name="faulty-env",
            factory="tmrl_faulty.env:make_faulty_env",
            settings="tmrl_faulty.env:FaultyEnvSettings",
            spaces="tmrl_faulty.env:faulty_spaces",
            description="A point to move to 0, with no pacing defaults; fails in its factory or step on request.",
        )
    )
    register(
        EnvSpec(
            name="needs-key-env",
            factory="tmrl_faulty.env:make_faulty_env",
            settings="tmrl_faulty.env:NeedsKeySettings",
            spaces="tmrl_faulty.env:faulty_spaces",
            description="Like faulty-env, with a setting that has no default.",
        )
    )


@hookimpl
def tmrl_register_agents(register: Callable[[AgentSpec], None]) -> None:
    register(
        AgentSpec(
            name="boom",
            factory="tmrl_faulty.agent:BoomAgent",
            actor="tmrl_sac:SacActor",
            settings="tmrl_sac:SacSettings",
            settings_section="sac",
            description="SAC whose train() raises RuntimeError('boom').",
        )
    )
    register(
        AgentSpec(
            name="boom-actor",
            factory="tmrl_sac:SacAgent",
            actor="tmrl_faulty.agent:BoomActor",
            settings="tmrl_sac:SacSettings",
            settings_section="sac",
            description="SAC whose actor raises RuntimeError when the workers build it.",
        )
    )
