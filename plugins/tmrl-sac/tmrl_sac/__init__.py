"""tmrl plugin: the Soft Actor-Critic agent (sac).

Public names (for plugins that build on SAC, as tmrl-redq does): the agent, its actor, settings and critic ensemble,
imported on first use so that ``tmrl plugins`` (which imports ``tmrl_sac.plugin``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmrl_core import lazy_exports

_LAZY: dict[str, str] = {
    **{
        name: "tmrl_sac.agent"
        for name in (
            "EnsembleCritic",
            "EntropyCoefficient",
            "SacActor",
            "SacAgent",
            "build_optimizer",
            "check_action_space",
            "metrics_to_floats",
        )
    },
    "SacSettings": "tmrl_sac.settings",  # without torch: settings are validated before the workers start
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tmrl_sac import EnsembleCritic as EnsembleCritic
    from tmrl_sac import SacActor as SacActor
    from tmrl_sac import SacAgent as SacAgent
    from tmrl_sac import SacSettings as SacSettings
