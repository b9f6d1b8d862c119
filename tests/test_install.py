"""Installing: tmrl-core alone says which package brings an algorithm; the first-party component map is true; the
README's test command is the one CI runs (the wheels themselves: tests/test_wheels.py, ``nox -s wheels``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tmrl_core.errors import UnknownComponentError
from tmrl_core.plugins import FIRST_PARTY_PROVIDERS

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_alone_names_the_package_to_install(plugin_manager) -> None:
    manager = plugin_manager()  # the core's built-ins only, as after `pip install tmrl-core`
    with pytest.raises(UnknownComponentError) as info:
        manager.get("agent", "sac")
    assert "comes with the plugin tmrl-sac, which is not installed" in info.value.message
    assert info.value.hint == "pip install tmrl-sac"
    with pytest.raises(UnknownComponentError) as info:
        manager.get("env", "trackmania-full")
    assert info.value.hint == "pip install tmrl-trackmania"
    with pytest.raises(UnknownComponentError) as info:
        manager.get("agent", "td3")
    assert "pip install tmrl-sac" in str(info.value.hint) and "no algorithm is installed" in str(info.value.hint)


def test_the_first_party_map_matches_what_the_plugins_register(plugin_manager) -> None:
    manager = plugin_manager(entry_points=True)
    for (kind, name), distribution in FIRST_PARTY_PROVIDERS.items():
        spec = manager.get(kind, name)
        assert manager.infos[spec.plugin].distribution == distribution, (kind, name)


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 ")]
    assert [line.replace(" --quiet", "") for line in ci] == [command]
    assert "wheels" in command  # the wheel install test is part of it


def test_trackmania_brings_the_algorithm_its_docs_use() -> None:
    tomllib = pytest.importorskip("tomllib")  # python >= 3.11

    project = tomllib.loads((ROOT / "plugins" / "tmrl-trackmania" / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("tmrl-redq") for dep in project["dependencies"])
    redq = tomllib.loads((ROOT / "plugins" / "tmrl-redq" / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("tmrl-sac") for dep in redq["dependencies"])
