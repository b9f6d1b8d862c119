"""``tmrl plugin new``: writes a complete plugin package that installs with ``pip install -e`` and whose tests pass
as generated (the core's contracts on each component).

The component modules come from ``templates/`` (the agent is docs/examples/agent.py's DDPG); the pyproject, the
``plugin.py`` with one hook per chosen kind, the tests and the README are written here, for the chosen kinds only.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from tmrl_core.__about__ import __version__
from tmrl_core.errors import ConfigError

__all__ = ["KINDS", "new_plugin"]

#: what ``tmrl plugin new`` can write, in the order of the generated files
KINDS = ("env", "agent", "memory", "transport", "command")

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _template(name: str, values: dict[str, str]) -> str:
    return _render(resources.files(__package__).joinpath("templates", name).read_text(), values)


def new_plugin(name: str, directory: str | Path, kinds: list[str] | tuple[str, ...]) -> Path:
    """Write ``tmrl-NAME/`` in ``directory`` with the components of ``kinds`` (see :data:`KINDS`); returns its path.

    Raises:
        ConfigError: the name is not lower case with ``-``, a kind is unknown, or the folder exists.
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"plugin name {name!r} is not lower case letters and digits separated by '-'",
            hint="e.g. tmrl plugin new my-robot --env",
        )
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown component kind(s): {', '.join(unknown)}", hint=f"choose among {', '.join(KINDS)}")
    chosen = [k for k in KINDS if k in kinds] or list(KINDS)
    pkg = "tmrl_" + name.replace("-", "_")
    root = Path(directory) / f"tmrl-{name}"
    if root.exists():
        raise ConfigError(f"{root} already exists", hint="choose another name or --dir, or remove the folder")
    values = {
        "name": name,
        "pkg": pkg,
        "section_env": f"{name.replace('-', '_')}_env",
        "section_agent": f"{name.replace('-', '_')}_agent",
        "core_version": __version__,
    }
    files: dict[str, str] = {
        "pyproject.toml": _pyproject(values, chosen),
        "README.md": _readme(values, chosen),
        f"{pkg}/__init__.py": _render('"""tmrl plugin tmrl-{{name}}."""\n', values),
        f"{pkg}/plugin.py": _plugin(values, chosen),
        f"tests/test_{pkg[5:]}.py": _tests(values, chosen),
    }
    modules = {"env": "env.py", "agent": "agent.py", "memory": "memory.py", "transport": "transport.py"}
    for kind in chosen:
        if kind == "command":
            files[f"{pkg}/cli.py"] = _template("cli.py.tmpl", values)
        else:
            files[f"{pkg}/{modules[kind]}"] = _template(f"{modules[kind]}.tmpl", values)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _pyproject(v: dict[str, str], kinds: list[str]) -> str:
    deps = [f"tmrl-core>={v['core_version']}", "gymnasium>=1.0", "numpy>=1.26", "pydantic>=2"]
    if "agent" in kinds:
        deps.append("torch>=2.2")
    if "command" in kinds:
        deps.append("typer>=0.12")
    dep_list = ", ".join(f'"{d}"' for d in deps)
    return _render(
        f"""[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "tmrl-{{{{name}}}}"
version = "0.1.0"
description = "A tmrl plugin: {', '.join(kinds)}."
requires-python = ">=3.10"
dependencies = [{dep_list}]

[project.optional-dependencies]
test = ["pytest>=8"]

# how tmrl finds the plugin: the `tmrl` entry-point group names the module with the hook implementations
[project.entry-points.tmrl]
{{{{name}}}} = "{{{{pkg}}}}.plugin"

[tool.hatch.build.targets.wheel]
packages = ["{{{{pkg}}}}"]
""",
        v,
    )


_HOOKS = {
    "env": '''
@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    register(
        EnvSpec(
            name="{{name}}-env",
            factory="{{pkg}}.env:make_env",
            settings="{{pkg}}.env:EnvSettings",  # the `{{section_env}}` settings section
            description="Move a point on a line towards a target (1 observation, 1 action).",
        )
    )
''',
    "agent": '''
@hookimpl
def tmrl_register_agents(register: Callable[[AgentSpec], None]) -> None:
    register(
        AgentSpec(
            name="{{name}}-agent",
            factory="{{pkg}}.agent:DdpgAgent",
            actor="{{pkg}}.agent:DdpgActor",  # what the workers run; it loads the trainer's actor weights
            settings="{{pkg}}.agent:DdpgSettings",  # the `{{section_agent}}` settings section
            description="DDPG: a deterministic actor and one critic.",
        )
    )
''',
    "memory": '''
@hookimpl
def tmrl_register_memories(register: Callable[[MemorySpec], None]) -> None:
    register(
        MemorySpec(
            name="{{name}}-memory",
            factory="{{pkg}}.memory:Float16Memory",
            description="Keeps float observations as float16 (pair it with the {{name}}-float16 compressor).",
        )
    )


@hookimpl
def tmrl_register_compressors(register: Callable[[CompressorSpec], None]) -> None:
    register(
        CompressorSpec(
            name="{{name}}-float16",
            factory="{{pkg}}.memory:make_compressor",
            description="Sends float observations as float16.",
        )
    )
''',
    "transport": '''
@hookimpl
def tmrl_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            name="{{name}}-transport",
            factory="{{pkg}}.transport:make_transport",
            description="The core's local transport under this plugin's name (replace it with yours).",
        )
    )
''',
    "command": '''
@hookimpl
def tmrl_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(CommandSpec(name="{{name}}", factory="{{pkg}}.cli:app", description="Commands of tmrl-{{name}}."))
''',
}

_SPECS = {
    "env": ["EnvSpec"],
    "agent": ["AgentSpec"],
    "memory": ["CompressorSpec", "MemorySpec"],
    "transport": ["TransportSpec"],
    "command": ["CommandSpec"],
}


def _plugin(v: dict[str, str], kinds: list[str]) -> str:
    names = sorted({n for k in kinds for n in _SPECS[k]} | {"hookimpl"}, key=lambda n: (n == "hookimpl", n))
    head = f'''"""Hook implementations of tmrl-{{{{name}}}}: specs only, with "module:attr" strings, so that
`tmrl plugins` and `tmrl --help` list the plugin without importing its code (nor torch).
"""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import {", ".join(names)}
'''
    return _render(head + "".join("\n" + _HOOKS[k] for k in kinds), v)


def _tests(v: dict[str, str], kinds: list[str]) -> str:
    imports = {k: f"{k.capitalize()}Contract" for k in ("env", "agent", "memory", "transport")}
    contracts = sorted(imports[k] for k in kinds if k in imports)
    parts = [
        '''"""Tests of tmrl-{{name}}, as generated: the core's contracts on each component (tmrl-core's
docs/plugins.md).

Run them with `pytest tests` once the plugin is installed (`pip install -e .`).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
'''
        + (f"\nfrom tmrl_core.testing import {', '.join(contracts)}\n" if contracts else "")
    ]
    if "env" in kinds:
        parts.append(
            '''

class TestEnv(EnvContract):
    env_name = "{{name}}-env"
'''
        )
    if "agent" in kinds:
        env = "{{name}}-env" if "env" in kinds else "pendulum"
        parts.append(
            f'''

class TestAgent(AgentContract):
    agent_name = "{{{{name}}}}-agent"
    env_name = "{env}"
    sets = ["{{{{section_agent}}}}.hidden_sizes=[32,32]"]  # small networks keep the checks fast
    learning_threshold = None  # set a return your agent must reach on learning_env (Pendulum-v1) to check learning
'''
        )
    if "memory" in kinds:
        parts.append(
            '''

class TestMemory(MemoryContract):
    memory_cls = "{{pkg}}.memory:Float16Memory"
    tolerance = 1e-3  # float16 keeps about 3 significant digits: the pair is lossy by design

    def make_compressor(self, env: Any) -> Any:
        from {{pkg}}.memory import make_compressor

        return make_compressor(env.observation_space, env.action_space)
'''
        )
    if "transport" in kinds:
        parts.append(
            '''

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestTransport(TransportContract):
    @pytest.fixture
    def make_transport(self, tmrl_home: Any) -> Any:
        from tmrl_core.settings import ServerSettings
        from {{pkg}}.transport import make_transport

        def make(**server_settings: Any) -> Any:
            settings = ServerSettings(**{"port": _free_port(), "password": "contract", **server_settings})
            return make_transport(settings, run_name="contract")

        return make
'''
        )
    parts.append(
        '''

def test_the_plugin_is_listed_without_problems(run_tmrl: Any) -> None:
    result = run_tmrl("plugins", "--json", only_plugins=["{{name}}"])
    assert result.returncode == 0, result
    assert '"name": "{{name}}"' in result.stdout and '"failures": []' in result.stdout
'''
    )
    if "command" in kinds:
        parts.append(
            '''

def test_the_command_group(run_tmrl: Any) -> None:
    result = run_tmrl("{{name}}", "hello", "--set", "run.name=generated", only_plugins=["{{name}}"])
    assert result.returncode == 0, result
    assert "hello from tmrl-{{name}}, run generated" in result.stdout
'''
        )
    return _render("".join(parts), v)


def _readme(v: dict[str, str], kinds: list[str]) -> str:
    lines = [
        "# tmrl-{{name}}",
        "",
        "A tmrl-core plugin, written by `tmrl plugin new`. It registers:",
        "",
    ]
    described = {
        "env": "- env `{{name}}-env` (`{{pkg}}/env.py`, settings section `{{section_env}}`)",
        "agent": "- agent `{{name}}-agent`, DDPG (`{{pkg}}/agent.py`, settings section `{{section_agent}}`)",
        "memory": "- memory `{{name}}-memory` and compressor `{{name}}-float16` (`{{pkg}}/memory.py`)",
        "transport": "- transport `{{name}}-transport` (`{{pkg}}/transport.py`)",
        "command": "- command group `tmrl {{name}}` (`{{pkg}}/cli.py`)",
    }
    lines += [described[k] for k in kinds]
    lines += [
        "",
        "```bash",
        "pip install -e .          # registers the plugin (entry point `tmrl` in pyproject.toml)",
        "tmrl plugins              # lists it",
        "pytest tests              # the core's contracts on each component",
    ]
    if "env" in kinds and "agent" in kinds:
        lines.append("tmrl run --env {{name}}-env --algo {{name}}-agent --env-steps 2000")
    lines += ["```", "", "`{{pkg}}/plugin.py` holds the hook implementations; each component has its own module.", ""]
    return _render("\n".join(lines), v)
