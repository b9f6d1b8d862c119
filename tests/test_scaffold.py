"""``tmrl plugin new``: the generated package installs with pip (its pyproject, its entry point), its tests pass as
generated, and ``tmrl run`` trains with its env and agent.

The package is installed with ``pip install --no-deps --target`` into a folder put on ``PYTHONPATH``: a real build
and install of the generated pyproject (entry points included) without touching the shared environment. The full
journey in a fresh virtual environment (``pip install -e``, torch from the pinned wheel) is the ``scaffold`` nox
session, which .ci/run also runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tmrl_core.testing import tmrl_command


def generate(tmp_path: Path, *flags: str, name: str = "demo") -> Path:
    proc = subprocess.run(
        [*tmrl_command(), "plugin", "new", name, *flags, "--dir", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {tmp_path / f'tmrl-{name}'}" in proc.stdout
    return tmp_path / f"tmrl-{name}"


def install(package: Path, target: Path) -> dict[str, str]:
    """pip-install ``package`` into ``target``; the environment that sees it (and the core under test)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(package)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


@pytest.mark.slow
@pytest.mark.timeout(900)  # took 270 s on the shared 2-core machine under heavy load
def test_a_plugin_of_every_kind_installs_passes_its_tests_and_runs(tmp_path: Path) -> None:
    package = generate(tmp_path, "--env", "--agent", "--memory", "--transport", "--command")
    pkg = package / "tmrl_demo"
    assert sorted(p.name for p in pkg.iterdir()) == [
        "__init__.py", "agent.py", "cli.py", "env.py", "memory.py", "plugin.py", "transport.py"
    ]  # fmt: skip
    assert 'demo = "tmrl_demo.plugin"' in (package / "pyproject.toml").read_text()
    assert "tmrl run --env demo-env --algo demo-agent" in (package / "README.md").read_text()
    env = install(package, tmp_path / "site")

    listed = subprocess.run([*tmrl_command(), "plugins", "--json"], env=env, capture_output=True, text=True)
    report = json.loads(listed.stdout)
    [row] = [r for r in report["plugins"] if r["name"] == "demo"]
    assert {(c["kind"], c["name"]) for c in row["components"]} == {
        ("env", "demo-env"), ("agent", "demo-agent"), ("memory", "demo-memory"), ("compressor", "demo-float16"),
        ("transport", "demo-transport"), ("command", "demo"),
    }  # fmt: skip
    assert not row["error"] and not [f for f in report["failures"] if f["plugin"] == "demo"]

    # its tests, as generated (the contracts of env, agent, memory and transport, its command, its listing)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
        env=env, capture_output=True, text=True, timeout=900, cwd=package,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout and "error" not in tests.stdout.lower()

    # and a run with its env and agent, ended by its budget
    home = tmp_path / "home"
    run = subprocess.run(
        [*tmrl_command(), "run", "--env", "demo-env", "--algo", "demo-agent", "--env-steps", "300",
         "--run-name", "generated", "--set", "demo_agent.hidden_sizes=[16,16]",
         "--set", "training.start_training=100", "--set", "training.batch_size=16"],
        env={**env, "TMRL_HOME": str(home), "TMRL_ONLY_PLUGINS": "demo"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "run generated finished" in run.stdout
    assert (home / "weights" / "generated.safetensors").is_file()


def test_only_the_chosen_kinds_are_written(tmp_path: Path) -> None:
    package = generate(tmp_path, "--memory", name="half")
    assert sorted(p.name for p in (package / "tmrl_half").iterdir()) == ["__init__.py", "memory.py", "plugin.py"]
    plugin = (package / "tmrl_half" / "plugin.py").read_text()
    assert "tmrl_register_memories" in plugin and "tmrl_register_envs" not in plugin
    assert "torch" not in (package / "pyproject.toml").read_text()  # no agent, no torch dependency
    compile(plugin, "plugin.py", "exec")
    compile((package / "tests" / "test_half.py").read_text(), "test_half.py", "exec")


def test_mistakes_are_one_clear_error(tmp_path: Path) -> None:
    for args, message in (
        (["plugin", "new", "Bad_Name"], "plugin name 'Bad_Name' is not lower case"),
        (["plugin", "new", "twice", "--dir", str(tmp_path)], "already exists"),
    ):
        if "twice" in args:
            generate(tmp_path, "--command", name="twice")
        proc = subprocess.run([*tmrl_command(), *args], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 1, proc
        assert message in proc.stderr and "Hint:" in proc.stderr and "Traceback" not in proc.stderr
