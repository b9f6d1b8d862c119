"""A testing kit for plugin authors: fixtures (via the ``tmrl`` pytest plugin) and contract test classes.

Fixtures (available in every pytest run once tmrl-core is installed, through the ``pytest11`` entry point):

- ``tmrl_home``: a fresh, empty data folder (``TMRL_HOME``) and no ``TMRL_*`` variable from outside;
- ``plugin_manager``: a factory of isolated plugin managers with in-process plugins;
- ``run_tmrl``: runs the ``tmrl`` command as a subprocess in that data folder.

Contract test classes (``AgentContract``, ``EnvContract``, ``MemoryContract``, ``TransportContract``) are
subclassed by a plugin's tests to check its component against what the core expects. They are imported on first
use, so that importing this package stays cheap (and needs neither pytest nor torch).
"""

from __future__ import annotations

from tmrl_core.lazy import lazy_exports

#: name -> module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "AgentContract": "tmrl_core.testing.agent_contract",
    "EnvContract": "tmrl_core.testing.env_contract",
    "MemoryContract": "tmrl_core.testing.memory_contract",
    "TransportContract": "tmrl_core.testing.transport_contract",
    "TmrlResult": "tmrl_core.testing.pytest_plugin",
    "tmrl_command": "tmrl_core.testing.pytest_plugin",
    "run_learning": "tmrl_core.testing.learning",
    "seed_everything": "tmrl_core.testing.learning",
    "LearningResult": "tmrl_core.testing.learning",
    "make_buffer": "tmrl_core.testing.transport_contract",
    "make_weights": "tmrl_core.testing.transport_contract",
    "weights_version": "tmrl_core.testing.transport_contract",
    "wait_for": "tmrl_core.testing.transport_contract",
    "ensemble_member": "tmrl_core.testing.ensembles",
    "load_ensemble_members": "tmrl_core.testing.ensembles",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)
