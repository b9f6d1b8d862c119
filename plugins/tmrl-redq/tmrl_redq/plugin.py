"""Hook implementations of tmrl-redq."""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import AgentSpec, hookimpl


@hookimpl
def tmrl_register_agents(register: Callable[[AgentSpec], None]) -> None:
    register(
        AgentSpec(
            name="redqsac",
            factory="tmrl_redq.agent:RedqSacAgent",
            actor="tmrl_sac:SacActor",
            settings="tmrl_redq.settings:RedqSettings",
            description="REDQ-SAC: an ensemble of N critics run as one batched computation, min over M targets.",
        )
    )
