"""docs/examples/agent.py, the complete agent of docs/agents.md: it runs as written, and it meets the AgentContract
(registered in-process, isolated from the installed plugins), on a Box and on a Tuple observation space."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

from tmrl_core.testing import AgentContract

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "examples" / "agent.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("docs_example_agent", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


example = _load_example()


@pytest.mark.slow
def test_the_example_runs_as_written(tmrl_home: Path) -> None:
    env = subprocess_env(tmrl_home)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "300"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ddpg: best test return" in proc.stdout and "env steps    300" in proc.stdout


class TestExampleAgent(AgentContract):
    agent_name = "ddpg"
    env_name = "pendulum"
    sets = ["ddpg.hidden_sizes=[32,32]"]
    plugins = (example.DdpgPlugin(),)
    entry_points = False


class TestExampleAgentTupleObservations(TestExampleAgent):
    env_name = "rc-drone"


class ForgetfulAgent(example.DdpgAgent):
    """Resumes without its optimisers' state: a checkpoint would silently restart Adam's moments."""

    def load_state_dict(self, state):
        saved = self.actor_optimizer.state_dict(), self.critic_optimizer.state_dict()
        super().load_state_dict(state)
        self.actor_optimizer.load_state_dict(saved[0])
        self.critic_optimizer.load_state_dict(saved[1])


class SqueezingActor(example.DdpgActor):
    """Returns a squeezed action (shape () for pendulum's (1,))."""

    def act(self, obs, test=False):
        return super().act(obs, test).squeeze()


class NoisyTestActor(example.DdpgActor):
    def act(self, obs, test=False):
        return super().act(obs, test=False)


def test_the_contract_catches_broken_agents(plugin_manager, tmrl_home: Path, tmp_path: Path) -> None:
    from tmrl_core import AgentSpec, hookimpl
    from tmrl_core.pipeline import prepare

    class Broken:
        @hookimpl
        def tmrl_register_agents(self, register):
            for name, factory, actor in (
                ("forgetful", ForgetfulAgent, example.DdpgActor),
                ("squeezing", example.DdpgAgent, SqueezingActor),
                ("noisy", example.DdpgAgent, NoisyTestActor),
            ):
                register(AgentSpec(name=name, factory=factory, actor=actor, settings=example.DdpgSettings))

    plugin_manager(Broken(), entry_points=False)
    contract = AgentContract()
    sets = ["{}.hidden_sizes=[16]"]

    def build(name: str):
        p = prepare("pendulum", name, sets=[s.format(name) for s in sets])
        return p, contract.make_agent(p)

    p, agent = build("forgetful")
    with pytest.raises(AssertionError, match="trains differently|state differs"):
        contract.test_state_dict_round_trip_resumes_identically(p, agent, tmp_path)
    p, agent = build("squeezing")
    with pytest.raises(AssertionError, match=r"action shape \(\)"):
        contract.test_actions_fit_the_action_space(p, agent)
    p, agent = build("noisy")
    with pytest.raises(AssertionError, match="test=True must not sample"):
        contract.test_test_mode_is_deterministic(p, agent)


def test_the_page_quotes_the_tested_file() -> None:
    """Every excerpt of docs/agents.md taken from the example (indented code blocks) is in the file as written."""
    import re

    page = (SCRIPT.parents[1] / "agents.md").read_text()
    source = SCRIPT.read_text()
    excerpts = [block for block in re.findall(r"```python\n(.*?)```", page, re.S) if block.startswith("    ")]
    assert len(excerpts) >= 3
    for block in excerpts:
        assert block in source, f"docs/agents.md quotes code that is not in {SCRIPT.name}:\n{block}"
