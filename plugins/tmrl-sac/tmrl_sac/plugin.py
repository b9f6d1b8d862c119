"""Hook implementations of tmrl-sac."""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import AgentSpec, hookimpl


@hookimpl
def tmrl_register_agents(register: Callable[[AgentSpec], None]) -> None:
    register(
        AgentSpec(
            name="sac",
            factory="tmrl_sac.agent:SacAgent",
            actor="tmrl_sac:SacActor",
            settings="tmrl_sac.settings:SacSettings",
            description="Soft Actor-Critic: twin critics, polyak targets, fixed or learned entropy coefficient.",
        )
    )
