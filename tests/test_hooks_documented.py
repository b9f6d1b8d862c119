"""Meta-tests in the manner of datasette: every hook has a test and a documented signature, doc examples are the
tested files themselves, every setting and every original config key is documented, every page is in the index."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from tmrl_core import hookspecs
from tmrl_core.config_migration import DROPPED, FIXED_PLUGIN_KEYS, TOP_LEVEL
from tmrl_core.plugins import HOOK_NAMES
from tmrl_core.settings import CORE_SECTIONS, ENV_DELIMITER, ENV_PREFIX, Settings, jsonable

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"


def hook_specs() -> dict[str, object]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if callable(fn) and getattr(fn, f"{hookspecs.PROJECT_NAME}_spec", None) is not None
    }


def signature(fn: object) -> str:
    """``name(arg: Annotation, ...) -> Return`` as written in the source (annotations are strings there)."""
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{fn.__name__}({params}) -> {sig.return_annotation}"  # type: ignore[attr-defined]


def test_the_hook_specs_are_found() -> None:
    assert set(hook_specs()) == set(HOOK_NAMES.values())


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_a_test(name: str) -> None:
    pattern = re.compile(rf"^\s*def test_hook_{name}\(", re.MULTILINE)
    holders = [p for p in TESTS.rglob("test_*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert holders, f"no test named test_hook_{name} under tests/"


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_is_documented_with_its_signature(name: str) -> None:
    doc = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert f"### `{name}`" in doc, f"docs/plugins.md has no section for {name}"
    assert signature(hook_specs()[name]) in doc, f"docs/plugins.md does not give the signature of {name}"


def test_the_docs_document_no_hook_that_does_not_exist() -> None:
    doc = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^### `(tmrl_\w+)`", doc, re.MULTILINE)) == set(hook_specs())


INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```\n", re.DOTALL)


def test_doc_examples_are_the_tested_files() -> None:
    doc = (DOCS / "plugins.md").read_text(encoding="utf-8")
    included = {m["path"]: m["body"] for m in INCLUDE.finditer(doc)}
    assert {
        "tests/plugins/tmrl-example/pyproject.toml",
        "tests/plugins/tmrl-example/tmrl_example/plugin.py",
        "tests/plugins/tmrl-example/tmrl_example/env.py",
        "tests/plugins/tmrl-example/tmrl_example/cli.py",
        "tests/plugins/tmrl-example/tmrl_example/logger.py",
    } <= set(included)
    for path, body in included.items():
        assert body == (ROOT / path).read_text(encoding="utf-8"), f"docs/plugins.md is out of date with {path}"


GENERATED = re.compile(
    r"<!-- generated: tmrl plugin new demo, (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```\n", re.DOTALL
)


def test_doc_examples_of_the_other_hooks_are_what_the_scaffold_writes(tmp_path: Path) -> None:
    """The memory, compressor, transport and agent hooks' examples are the generated plugin's files, which
    tests/test_scaffold.py installs and tests; this keeps the page equal to them."""
    from tmrl_core.scaffold import KINDS, new_plugin

    root = new_plugin("demo", tmp_path, list(KINDS))
    doc = (DOCS / "plugins.md").read_text(encoding="utf-8")
    generated = {m["path"]: m["body"] for m in GENERATED.finditer(doc)}
    assert {"tmrl_demo/plugin.py", "tmrl_demo/memory.py", "tmrl_demo/transport.py"} <= set(generated)
    for path, body in generated.items():
        assert body == (root / path).read_text(encoding="utf-8"), f"docs/plugins.md is out of date with {path}"
    plugin = generated["tmrl_demo/plugin.py"]
    for hook in hook_specs():
        if hook != "tmrl_register_loggers":  # tmrl-example's loggers are the logger hook's example
            assert f"def {hook}(" in plugin, f"the generated plugin.py has no example of {hook}"


def test_every_setting_is_documented_with_its_default_and_env_var() -> None:
    doc = (DOCS / "settings.md").read_text(encoding="utf-8")
    defaults = Settings().model_dump()
    for section, model in CORE_SECTIONS.items():
        for field in model.model_fields:
            key = f"{section}.{field}"
            env = f"{ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{field.upper()}"
            default = jsonable(defaults[section][field], reveal_secrets=True)
            shown = "null" if default is None else repr(default) if not isinstance(default, str) else f'"{default}"'
            if isinstance(default, bool):
                shown = str(default).lower()
            row = f"| `{key}` | `{shown}` | `{env}` |"
            assert row in doc, f"docs/settings.md lacks the row starting {row}"


def test_every_original_config_key_is_in_the_migration_table() -> None:
    doc = (DOCS / "settings.md").read_text(encoding="utf-8")
    for key in [*TOP_LEVEL, *DROPPED, *FIXED_PLUGIN_KEYS, "PUBLIC_IP_SERVER"]:
        assert f"| `{key}` |" in doc, f"docs/settings.md does not say what becomes of {key}"


def test_every_docs_page_is_in_the_index() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w./-]+\.md)\)", index))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")} - {"index.md"}
    assert pages <= linked, f"pages missing from docs/index.md: {sorted(pages - linked)}"
