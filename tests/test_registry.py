"""The plugin registry: in-process plugins, and the real third-party test plugins installed from tests/plugins/.

The installed test plugins: tmrl-example (env ``example-env``, command group ``example``), tmrl-broken (fails at
import) and tmrl-duplicate (registers env ``pendulum`` again while ``TESTS_DUPLICATE_PLUGIN=1``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from tmrl_core import AgentSpec, CommandSpec, CompressorSpec, EnvSpec, MemorySpec, TransportSpec, hookimpl
from tmrl_core.errors import DuplicateComponentError, PluginError, UnknownComponentError
from tmrl_core.plugins import HOOK_NAMES, PluginManager, Registry, get_component
from tmrl_core.specs import SPEC_TYPES

# -- in-process plugins ---------------------------------------------------------------------------------------------


class EnvPlugin:
    @hookimpl
    def tmrl_register_envs(self, register: Callable[[EnvSpec], None]) -> None:
        register(EnvSpec(name="line", factory="somewhere.not_imported:make", description="A line.", realtime=True))


def test_hook_tmrl_register_envs(plugin_manager) -> None:
    manager = plugin_manager(EnvPlugin())
    spec = manager.get("env", "line")
    assert isinstance(spec, EnvSpec)
    assert (spec.name, spec.plugin, spec.description, spec.realtime) == ("line", "EnvPlugin", "A line.", True)
    assert "line" in manager.registry("env").names()
    assert "pendulum" in manager.registry("env").names()  # the core's built-ins come through the same hook
    assert manager.get("env", "pendulum").plugin == "tmrl-core"


def test_hook_tmrl_register_agents(plugin_manager) -> None:
    class AgentPlugin:
        @hookimpl
        def tmrl_register_agents(self, register: Callable[[AgentSpec], None]) -> None:
            register(AgentSpec(name="td3", factory="x:Agent", actor="x:Actor", settings="x:Settings"))

    manager = plugin_manager(AgentPlugin())
    spec = manager.get("agent", "td3")
    assert (spec.kind, spec.actor, spec.section, spec.plugin) == ("agent", "x:Actor", "td3", "AgentPlugin")
    assert manager.settings_sections()["td3"] == [spec]


def test_hook_tmrl_register_memories(plugin_manager) -> None:
    class MemoryPlugin:
        @hookimpl
        def tmrl_register_memories(self, register: Callable[[MemorySpec], None]) -> None:
            register(MemorySpec(name="plugin-memory", factory="tmrl_core.memory:GenericTorchMemory"))

    manager = plugin_manager(MemoryPlugin())
    assert manager.get("memory", "plugin-memory").kind == "memory"
    assert {"default", "generic", "ring", "plugin-memory"} <= set(manager.registry("memory").names())


def test_hook_tmrl_register_compressors(plugin_manager) -> None:
    class CompressorPlugin:
        @hookimpl
        def tmrl_register_compressors(self, register: Callable[[CompressorSpec], None]) -> None:
            register(CompressorSpec(name="same", factory="tmrl_core.compression:no_compression"))

    manager = plugin_manager(CompressorPlugin())
    spec = manager.get("compressor", "same")
    from tmrl_core.compression import no_compression

    assert spec.load() is no_compression


def test_hook_tmrl_register_transports(plugin_manager) -> None:
    class TransportPlugin:
        @hookimpl
        def tmrl_register_transports(self, register: Callable[[TransportSpec], None]) -> None:
            register(TransportSpec(name="pigeon", factory="x:Pigeon", settings_section="pigeon_post", settings="x:S"))

    manager = plugin_manager(TransportPlugin())
    spec = manager.get("transport", "pigeon")
    assert spec.section == "pigeon_post"
    assert "local" in manager.registry("transport")


def test_hook_tmrl_register_commands(plugin_manager, run_tmrl) -> None:
    class CommandPlugin:
        @hookimpl
        def tmrl_register_commands(self, register: Callable[[CommandSpec], None]) -> None:
            register(CommandSpec(name="hello", factory="x.cli:app", description="Say hello."))

    manager = plugin_manager(CommandPlugin())
    assert manager.get("command", "hello").description == "Say hello."
    # End to end: the installed tmrl-example mounts its group as `tmrl example ...`.
    result = run_tmrl("example", "describe", "--target", "0.25")
    assert result.returncode == 0, result
    assert "target: 0.25" in result.stdout
    assert "Box(-1.0, 1.0, (1,), float32)" in result.stdout
    assert "Commands of the example plugin." in run_tmrl("--help").stdout


def test_unknown_name_lists_known_names_and_the_closest(plugin_manager) -> None:
    manager = plugin_manager()
    with pytest.raises(UnknownComponentError) as info:
        manager.get("env", "pendulm")
    assert "unknown env 'pendulm'" in info.value.message
    assert "pendulum" in info.value.message and "rc-drone" in info.value.message
    assert info.value.hint == "did you mean 'pendulum'?"
    with pytest.raises(UnknownComponentError) as info:
        manager.get("agent", "anything")
    assert "known agents: none" in info.value.message


def test_unknown_kind(plugin_manager) -> None:
    with pytest.raises(UnknownComponentError) as info:
        plugin_manager().registry("envs")
    assert "known kinds: env, agent, memory, compressor, transport, logger, command" in info.value.message
    assert info.value.hint == "did you mean 'env'?"


def _env_plugin(env_name: str) -> object:
    class Plugin:
        @hookimpl
        def tmrl_register_envs(self, register: Callable[[EnvSpec], None]) -> None:
            register(EnvSpec(name=env_name, factory="x:y"))

    return Plugin()


def test_duplicate_names_fail_naming_both_plugins_and_only_that_name(plugin_manager) -> None:
    manager = plugin_manager(("first", _env_plugin("twin")), ("second", _env_plugin("twin")), EnvPlugin())
    with pytest.raises(DuplicateComponentError) as info:
        manager.get("env", "twin")
    assert "env 'twin' is registered more than once: by plugin 'first' and by plugin 'second'" in info.value.message
    assert "TMRL_DISABLE_PLUGINS=second" in (info.value.hint or "")
    assert manager.get("env", "line").plugin == "EnvPlugin"  # everything else keeps working
    assert [exc.message for exc in manager.duplicates()] == [info.value.message]
    assert {spec.plugin for spec in manager.registry("env").conflicts()["twin"]} == {"first", "second"}


def test_a_third_party_cannot_take_a_core_name(plugin_manager) -> None:
    manager = plugin_manager(("mine", _env_plugin("pendulum")), ("other", _env_plugin("own-name")))
    assert manager.get("env", "pendulum").plugin == "tmrl-core"  # the earlier owner keeps it
    assert manager.duplicates() == []
    [refused] = manager.refused
    assert (refused.spec.plugin, refused.owner.plugin) == ("mine", "tmrl-core")
    assert refused.reason == (
        "env 'pendulum' of plugin 'mine' refused: the name belongs to plugin 'tmrl-core' (tmrl-core), which keeps it;"
        " rename the component in plugin 'mine'"
    )
    assert [(f.plugin, f.stage, f.error) for f in manager.failures] == [("mine", "register", refused.reason)]
    assert manager.get("env", "own-name").plugin == "other"
    assert {spec.name for spec in manager.components_of("mine")} == {"pendulum"}  # listed, as refused
    manager.add_plugin(_env_plugin("later"), name="later")  # registries are rebuilt: reported once
    assert manager.get("env", "pendulum").plugin == "tmrl-core" and len(manager.refused) == 1


def test_a_third_party_cannot_take_a_first_party_plugin_name(plugin_manager) -> None:
    class FakeSac:
        @hookimpl
        def tmrl_register_agents(self, register: Callable[[AgentSpec], None]) -> None:
            register(AgentSpec(name="sac", factory="x:y"))

    manager = plugin_manager(FakeSac(), entry_points=True)
    spec = manager.get("agent", "sac")
    assert spec.plugin == "sac" and manager.infos[spec.plugin].distribution == "tmrl-sac"
    assert [r.spec.plugin for r in manager.refused] == ["FakeSac"]


def test_three_registrations_name_all_three(plugin_manager) -> None:
    manager = plugin_manager(*[(name, _env_plugin("same")) for name in ("a", "b", "c")])
    with pytest.raises(DuplicateComponentError, match="by plugin 'a' and by plugin 'b' and by plugin 'c'"):
        manager.get("env", "same")


def test_a_hook_that_raises_is_reported_and_the_others_work(plugin_manager) -> None:
    class Faulty:
        @hookimpl
        def tmrl_register_envs(self, register: Callable[[EnvSpec], None]) -> None:
            register(EnvSpec(name="half-registered", factory="x:y"))
            raise RuntimeError("the hook broke")

        @hookimpl
        def tmrl_register_memories(self, register: Callable[[MemorySpec], None]) -> None:
            register(MemorySpec(name="faulty-but-fine", factory="x:y"))

    manager = plugin_manager(Faulty(), EnvPlugin())
    assert manager.get("env", "line").plugin == "EnvPlugin"
    assert manager.get("memory", "faulty-but-fine").plugin == "Faulty"
    # What the failing hook registered before raising is discarded, not half-kept.
    with pytest.raises(UnknownComponentError):
        manager.get("env", "half-registered")
    [failure] = manager.failures
    assert (failure.plugin, failure.stage) == ("Faulty", "tmrl_register_envs")
    assert failure.error == "RuntimeError: the hook broke"
    assert "RuntimeError" in failure.traceback
    assert manager.infos["Faulty"].error == "tmrl_register_envs raised RuntimeError: the hook broke"


def test_registering_the_wrong_kind_is_reported(plugin_manager) -> None:
    class WrongKind:
        @hookimpl
        def tmrl_register_envs(self, register: Callable[[EnvSpec], None]) -> None:
            register(MemorySpec(name="not-an-env", factory="x:y"))

    manager = plugin_manager(WrongKind())
    manager.registry("env")
    [failure] = manager.failures
    assert "expects EnvSpec objects, got MemorySpec" in failure.error


def test_a_misspelt_hook_refuses_the_plugin(plugin_manager) -> None:
    class Typo:
        @hookimpl
        def tmrl_register_env(self, register: Callable[[EnvSpec], None]) -> None:
            register(EnvSpec(name="typo", factory="x:y"))

    manager = plugin_manager(Typo(), EnvPlugin())
    [failure] = manager.failures
    assert failure.stage == "validate"
    assert "unknown hook 'tmrl_register_env' (did you mean 'tmrl_register_envs'?)" in failure.error
    assert manager.get("env", "line").plugin == "EnvPlugin"


def test_a_hook_with_a_wrong_argument_name_is_refused(plugin_manager) -> None:
    class BadArgs:
        @hookimpl
        def tmrl_register_envs(self, callback: Callable[[EnvSpec], None]) -> None:
            callback(EnvSpec(name="bad", factory="x:y"))

    class Misspelt:
        @hookimpl
        def tmrl_register_agents(self, registr: Callable[[EnvSpec], None]) -> None:
            pass

    manager = plugin_manager(BadArgs(), Misspelt())
    bad, misspelt = manager.failures
    assert bad.stage == "validate" and bad.plugin == "BadArgs"
    assert bad.error == (
        "hook 'tmrl_register_envs' takes argument 'callback', which the hook does not pass; it passes: register"
    )
    assert misspelt.error == (
        "hook 'tmrl_register_agents' takes argument 'registr', which the hook does not pass (did you mean 'register'?);"
        " it passes: register"
    )
    assert manager.infos["Misspelt"].error == misspelt.error  # what `tmrl plugins` shows
    assert manager.get("env", "pendulum").plugin == "tmrl-core"


def test_a_hook_may_take_fewer_arguments(plugin_manager) -> None:
    calls = []

    class NoArgs:
        @hookimpl
        def tmrl_register_envs(self) -> None:
            calls.append("called")

    manager = plugin_manager(NoArgs())
    manager.registry("env")
    assert calls == ["called"] and manager.failures == []


def test_registered_specs_are_copies_stamped_with_the_plugin(plugin_manager) -> None:
    spec = EnvSpec(name="shared", factory="x:y")

    class Plugin:
        @hookimpl
        def tmrl_register_envs(self, register: Callable[[EnvSpec], None]) -> None:
            register(spec)

    manager = plugin_manager(Plugin())
    assert manager.get("env", "shared").plugin == "Plugin"
    assert spec.plugin == ""


def test_plugin_names_are_unique(plugin_manager) -> None:
    manager = plugin_manager(EnvPlugin())
    with pytest.raises(PluginError, match="already registered"):
        manager.add_plugin(EnvPlugin())


def test_the_manager_fixture_installs_the_process_wide_manager(plugin_manager) -> None:
    plugin_manager(EnvPlugin())
    assert get_component("env", "line").plugin == "EnvPlugin"


def test_factories_resolve_lazily(plugin_manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "lazy_factory_module_for_registry_test"
    (tmp_path / f"{module}.py").write_text("LOADED = True\n\ndef make(settings=None):\n    return 'built'\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Plugin:
        @hookimpl
        def tmrl_register_envs(self, register: Callable[[EnvSpec], None]) -> None:
            register(EnvSpec(name="lazy", factory=f"{module}:make"))
            register(EnvSpec(name="missing", factory="no_such_module_anywhere:make"))
            register(EnvSpec(name="no-attr", factory=f"{module}:nope"))
            register(EnvSpec(name="not-a-path", factory="just_a_name"))

    manager = plugin_manager(Plugin())
    spec = manager.get("env", "lazy")
    manager.collect_all()
    assert module not in sys.modules  # registering, listing and looking up import nothing
    assert spec.load()() == "built"
    assert module in sys.modules
    with pytest.raises(PluginError, match="cannot import 'no_such_module_anywhere'"):
        manager.get("env", "missing").load()
    with pytest.raises(PluginError, match="has no attribute 'nope'"):
        manager.get("env", "no-attr").load()
    with pytest.raises(PluginError, match="not of the form 'package.module:attribute'"):
        manager.get("env", "not-a-path").load()


# -- the installed third-party test plugins (entry points) ----------------------------------------------------------


def test_entry_points_are_discovered_with_distribution_and_version(tmrl_home: Path) -> None:
    manager = PluginManager()
    example = manager.infos["example"]
    assert (example.distribution, example.version, example.module) == ("tmrl-example", "0.1.0", "tmrl_example.plugin")
    assert not example.first_party and example.error is None
    for name, dist in [
        ("sac", "tmrl-sac"),
        ("redq", "tmrl-redq"),
        ("tlspyo", "tmrl-tlspyo"),
        ("trackmania", "tmrl-trackmania"),
    ]:
        assert manager.infos[name].distribution == dist and manager.infos[name].first_party
    spec = manager.get("env", "example-env")
    assert (spec.plugin, spec.section) == ("example", "example_env")
    assert manager.get("command", "example").plugin == "example"
    assert [s.name for s in manager.components_of("example")] == [
        "example-env",
        "example-recorder",
        "example-faulty",
        "example",
    ]


def test_the_example_env_builds_and_steps(tmrl_home: Path) -> None:
    from gymnasium.utils.env_checker import check_env

    spec = PluginManager().get("env", "example-env")
    model = spec.load_settings_model()
    env = spec.load()(model(target=-0.5, max_steps=3))
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=1)
    for _ in range(3):
        observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert truncated or terminated
    assert reward == pytest.approx(-abs(observation[0]), abs=1e-6)


def test_listing_imports_no_factory_module(tmrl_home: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from tmrl_core.plugins import PluginManager
        manager = PluginManager()
        manager.collect_all()
        manager.get("env", "example-env")
        watched = ["tmrl_example.env", "tmrl_example.cli", "gymnasium", "torch", "tmrl_core.envs"]
        print(json.dumps({name: name in sys.modules for name in watched}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == dict.fromkeys(
        ["tmrl_example.env", "tmrl_example.cli", "gymnasium", "torch", "tmrl_core.envs"], False
    )


def test_a_plugin_that_fails_to_import_is_reported_by_name(tmrl_home: Path) -> None:
    manager = PluginManager()
    broken = manager.infos["broken"]
    assert broken.distribution == "tmrl-broken"
    assert broken.error == "ImportError: tmrl-broken fails to import on purpose (stands for a missing dependency)"
    [failure] = [f for f in manager.failures if f.plugin == "broken"]
    assert failure.stage == "import" and "tmrl_broken/plugin.py" in failure.traceback
    assert manager.get("env", "example-env").plugin == "example"
    assert manager.get("agent", "sac").plugin == "sac"


def test_an_installed_third_party_cannot_take_a_core_name(tmrl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert PluginManager().get("env", "pendulum").plugin == "tmrl-core"  # inactive: the name is not taken twice
    monkeypatch.setenv("TESTS_DUPLICATE_PLUGIN", "1")
    manager = PluginManager()
    assert manager.get("env", "pendulum").plugin == "tmrl-core"  # the installed third party's pendulum is refused
    assert [(r.spec.plugin, r.spec.name) for r in manager.refused] == [("duplicate", "pendulum")]
    assert manager.get("compressor", "duplicate-passthrough").plugin == "duplicate"
    assert manager.get("env", "rc-drone").plugin == "tmrl-core"
    assert manager.get("env", "example-env").plugin == "example"


def test_disable_one_plugin_by_name_or_distribution(tmrl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTS_DUPLICATE_PLUGIN", "1")
    monkeypatch.setenv("TMRL_DISABLE_PLUGINS", "duplicate, tmrl-broken")
    manager = PluginManager()
    assert manager.infos["duplicate"].disabled and manager.infos["broken"].disabled
    assert not [f for f in manager.failures if f.plugin in ("broken", "duplicate")]
    assert manager.get("env", "pendulum").plugin == "tmrl-core"
    with pytest.raises(UnknownComponentError):
        manager.get("compressor", "duplicate-passthrough")
    assert manager.get("env", "example-env").plugin == "example"


def test_disable_every_third_party_plugin(tmrl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMRL_DISABLE_THIRD_PARTY_PLUGINS", "1")
    manager = PluginManager()
    assert all(manager.infos[name].disabled for name in ("example", "broken", "duplicate"))
    assert not any(manager.infos[name].disabled for name in ("sac", "redq", "tlspyo", "trackmania", "tmrl-core"))
    assert manager.get("agent", "sac").plugin == "sac"
    with pytest.raises(UnknownComponentError, match="unknown env 'example-env'"):
        manager.get("env", "example-env")


def test_every_kind_lists_despite_the_broken_and_duplicate_plugins(tmrl_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("TESTS_DUPLICATE_PLUGIN", "1")
    manager = PluginManager()
    for kind in HOOK_NAMES:
        names = manager.registry(kind).names()
        assert names == sorted(names)
    assert {"pendulum", "rc-drone", "example-env"} <= set(manager.registry("env").names())
    assert "sac" in manager.registry("agent")


def test_lookups_are_typed_for_every_kind() -> None:
    # get_component / get / registry have one overload per kind returning that kind's spec type (for type checkers):
    # a new kind without its overload would silently type as the base ComponentSpec.
    for function in (get_component, PluginManager.get, PluginManager.registry):
        typed = {}
        for overload in typing.get_overloads(function):
            hints = typing.get_type_hints(overload)
            kind = typing.get_args(hints["kind"])
            if kind:
                typed[kind[0]] = hints["return"]
        assert set(typed) == set(HOOK_NAMES), function
        for kind, returned in typed.items():
            expected = Registry[SPEC_TYPES[kind]] if function is PluginManager.registry else SPEC_TYPES[kind]
            assert returned == expected, (function, kind)
