"""The plugin-facing API: first-party plugins use only what a third party may use (docs/api.md).

A plugin may import ``tmrl_core``'s own names (``tmrl_core.__all__``) and, from each module in
``tmrl_core.PUBLIC_MODULES``, the names in its ``__all__``; a plugin that depends on another plugin may use that
plugin's top-level package names (its ``__all__``), never its modules. Checked on the source (ast), tests included,
as a third party's tests would have to.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import tmrl_core

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
PUBLIC = {"tmrl_core", *tmrl_core.PUBLIC_MODULES}


def public_names(module: str) -> set[str]:
    return set(importlib.import_module(module).__all__)


def violations(path: Path, own: str) -> list[str]:
    """``module:name`` references in ``path`` that reach past the public API (``own``: the plugin's package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    module_aliases: dict[str, str] = {}  # local name -> public module it is bound to

    def check_module(module: str, lineno: int) -> bool:
        root = module.split(".")[0]
        if root == own or not root.startswith("tmrl_"):
            return False
        if root == "tmrl_core":
            if module not in PUBLIC:
                found.append(f"{path.relative_to(ROOT)}:{lineno}: module {module} is not public")
                return False
            return True
        if module != root:  # another plugin: its top-level package only
            found.append(f"{path.relative_to(ROOT)}:{lineno}: {module} is a private module of plugin {root}")
            return False
        return True

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not check_module(node.module, node.lineno):
                continue
            allowed = public_names(node.module)
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in PUBLIC:
                    module_aliases[alias.asname or alias.name] = submodule
                elif alias.name not in allowed:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name} is not public")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if check_module(alias.name, node.lineno) and alias.asname:
                    module_aliases[alias.asname] = alias.name
    for node in ast.walk(tree):  # codec.encode, after `from tmrl_core import codec`
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module_aliases:
            module = module_aliases[node.value.id]
            if node.attr not in public_names(module):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module}.{node.attr} is not public")
    return found


@pytest.mark.parametrize("plugin_dir", PLUGIN_DIRS, ids=lambda p: p.name)
def test_first_party_plugins_use_only_the_public_api(plugin_dir: Path) -> None:
    own = plugin_dir.name.replace("-", "_")
    found = [v for path in sorted(plugin_dir.rglob("*.py")) for v in violations(path, own)]
    assert not found, "reaching past the plugin API (docs/api.md):\n" + "\n".join(found)


def test_specs_name_factories_through_public_paths() -> None:
    """A spec's ``"module:attr"`` strings follow the same rule (tmrl-redq names SAC's actor as ``tmrl_sac:...``)."""
    pattern = re.compile(r"\"(tmrl_[a-z_]+(?:\.[a-z_]+)*):[A-Za-z_.]+\"")
    for plugin_dir in PLUGIN_DIRS:
        own = plugin_dir.name.replace("-", "_")
        for path in plugin_dir.glob(f"{own}/**/*.py"):
            for module in pattern.findall(path.read_text()):
                root = module.split(".")[0]
                assert root == own or module in PUBLIC or module == root, f"{path}: {module} is not public"


def test_the_checker_catches_a_private_reach(tmp_path: Path) -> None:
    sample = ROOT / "plugins" / "tmrl-sac" / "tests" / "_api_probe.py"
    sample.write_text(
        "from tmrl_core import hookimpl, codec\nfrom tmrl_core.worker import RolloutWorker\n"
        "from tmrl_core.nn import mlp, _private\nfrom tmrl_redq.agent import RedqSacAgent\n"
        "import tmrl_core.pipeline\ncodec.encode(1)\ncodec._Encoder()\n"
    )
    try:
        found = violations(sample, "tmrl_sac")
    finally:
        sample.unlink()
    text = "\n".join(found)
    assert len(found) == 5, text
    for bad in ("tmrl_core.worker", "tmrl_core.nn._private", "tmrl_redq.agent", "tmrl_core.pipeline", "codec._Encoder"):
        assert bad in text


def test_the_api_page_lists_every_public_module() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    for module in sorted(PUBLIC):
        assert f"`{module}`" in page, f"docs/api.md does not list {module}"
    for name in tmrl_core.__all__:
        assert f"`{name}`" in page, f"docs/api.md does not list tmrl_core.{name}"


def test_every_user_error_is_public() -> None:
    import tmrl_core.errors as errors

    defined = {n for n, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, errors.TmrlError)}
    assert defined <= set(errors.__all__)
