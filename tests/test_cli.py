"""The ``tmrl`` command, run as real subprocesses (``run_tmrl``), plus ``main()``'s exit statuses in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import subprocess_env

from tmrl_core import __version__
from tmrl_core.cli import main
from tmrl_core.paths import SUBFOLDERS


def assert_one_clean_error(result, message: str) -> None:
    """A user error: non-zero exit, one 'Error:' line with the message, a hint, and no traceback."""
    assert result.returncode == 1, result
    assert f"Error: {message}" in result.stderr, result
    assert "Hint: " in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# -- basics ---------------------------------------------------------------------------------------------------------


def test_version(run_tmrl) -> None:
    result = run_tmrl("--version")
    assert (result.returncode, result.stdout) == (0, f"tmrl-core {__version__}\n")


def test_help_lists_the_commands(run_tmrl) -> None:
    result = run_tmrl("--help")
    assert result.returncode == 0, result
    for command in ("plugins", "config", "install", "example"):
        assert command in result.stdout


def test_usage_errors_exit_with_2(run_tmrl) -> None:
    bare = run_tmrl()
    assert bare.returncode == 2 and "Usage: tmrl" in bare.stdout + bare.stderr
    unknown = run_tmrl("nope")
    assert unknown.returncode == 2 and "No such command 'nope'" in unknown.stderr
    bad_option = run_tmrl("plugins", "--nope")
    assert bad_option.returncode == 2 and "No such option: --nope" in bad_option.stderr


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["config", "path"], 0),
        ([], 2),
        (["nope"], 2),
        (["config", "show", "--set", "training.batch_size=x"], 1),  # a TmrlError
        (["config", "show", "no_such_prefix"], 1),  # typer.Exit(1) returned, not raised, without standalone mode
    ],
)
def test_main_exit_statuses(tmrl_home: Path, argv: list[str], status: int, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == status
    assert "Traceback" not in capsys.readouterr().err


def test_install_creates_the_data_folder(run_tmrl, tmrl_home: Path) -> None:
    assert not tmrl_home.exists()
    result = run_tmrl("install")
    assert result.returncode == 0, result
    assert f"tmrl data folder: {tmrl_home}" in result.stdout
    assert sorted(p.name for p in tmrl_home.iterdir()) == sorted(SUBFOLDERS)


# -- plugins --------------------------------------------------------------------------------------------------------


def test_plugins_lists_everything_including_failures(run_tmrl) -> None:
    result = run_tmrl("plugins")
    assert result.returncode == 0, result
    out = result.stdout
    for line in ("tmrl-core  tmrl-core", "sac  tmrl-sac 0.1.0", "redq  tmrl-redq 0.1.0", "tlspyo  tmrl-tlspyo 0.1.0",
                 "trackmania  tmrl-trackmania 0.1.0", "example  tmrl-example 0.1.0 (third party)",
                 "broken  tmrl-broken 0.1.0 (failed)"):  # fmt: skip
        assert line in out
    for component in ("pendulum", "rc-drone", "example-env", "redqsac", "trackmania-lidar", "Move a point on a line"):
        assert component in out
    assert "broken (import): ImportError: tmrl-broken fails to import on purpose" in out


def test_plugins_json(run_tmrl) -> None:
    result = run_tmrl("plugins", "--json", env={"TESTS_DUPLICATE_PLUGIN": "1"})
    assert result.returncode == 0, result
    report = json.loads(result.stdout)
    plugins = {row["name"]: row for row in report["plugins"]}
    assert plugins["tmrl-core"]["first_party"] and plugins["sac"]["first_party"]
    assert {(c["kind"], c["name"]) for c in plugins["example"]["components"]} == {
        ("env", "example-env"),
        ("logger", "example-recorder"),
        ("logger", "example-faulty"),
        ("command", "example"),
    }
    assert plugins["broken"]["error"].startswith("ImportError: ")
    # a third party cannot take a name of the core: the core keeps it, the newcomer is refused by name with why
    [pendulum] = [c for c in plugins["duplicate"]["components"] if c["name"] == "pendulum"]
    assert pendulum["refused"] is True and pendulum["duplicate"] is False
    assert report["duplicates"] == []
    refusal = "env 'pendulum' of plugin 'duplicate' refused: the name belongs to plugin 'tmrl-core' (tmrl-core)"
    assert any(f["plugin"] == "duplicate" and f["error"].startswith(refusal) for f in report["failures"])
    stages = {(f["plugin"], f["stage"]) for f in report["failures"]}
    assert {
        ("duplicate", "register"),
        ("broken", "import"),
        ("duplicate", "command 'config'"),
        ("duplicate", "command 'duplicate-missing'"),
    } <= stages


def test_plugins_shows_a_refused_component_and_why(run_tmrl) -> None:
    result = run_tmrl("plugins", env={"TESTS_DUPLICATE_PLUGIN": "1", "COLUMNS": "250"})
    assert result.returncode == 0, result
    assert "pendulum (refused)" in result.stdout
    refusal = "duplicate (register): env 'pendulum' of plugin 'duplicate' refused: the name belongs to plugin"
    assert refusal in result.stdout


def test_a_plugin_command_group_that_fails_to_load(run_tmrl) -> None:
    env = {"TESTS_DUPLICATE_PLUGIN": "1"}
    result = run_tmrl("duplicate-missing", "anything", "--at-all", env=env)
    assert_one_clean_error(result, "the command group 'duplicate-missing' of plugin 'duplicate' failed to load")
    assert "TMRL_DISABLE_PLUGINS=duplicate" in result.stderr
    # The core's `config` wins over the plugin's clashing group, and the CLI keeps working.
    assert run_tmrl("config", "path", env=env).returncode == 0


def test_run_tmrl_can_isolate_the_plugin_under_test(run_tmrl) -> None:
    # tmrl-broken fails at import and tmrl-duplicate clashes: neither is loaded, nor reported, when not asked for
    result = run_tmrl("plugins", "--json", env={"TESTS_DUPLICATE_PLUGIN": "1"}, only_plugins=["tmrl-example", "sac"])
    assert result.returncode == 0, result
    report = json.loads(result.stdout)
    plugins = {row["name"]: row for row in report["plugins"]}
    loaded = {name for name, row in plugins.items() if not row["disabled"]}
    assert loaded == {"tmrl-core", "example", "sac"}
    assert report["failures"] == [] and report["duplicates"] == []
    assert run_tmrl("example", "describe", only_plugins=["example"]).returncode == 0


def test_disabling_plugins_from_the_environment(run_tmrl) -> None:
    result = run_tmrl("plugins", "--json", env={"TMRL_DISABLE_THIRD_PARTY_PLUGINS": "1"})
    plugins = {row["name"]: row for row in json.loads(result.stdout)["plugins"]}
    assert plugins["example"]["disabled"] and plugins["broken"]["disabled"] and not plugins["sac"]["disabled"]
    assert run_tmrl("example", "describe", env={"TMRL_DISABLE_PLUGINS": "example"}).returncode == 2


def test_plugin_settings_errors_are_clean(run_tmrl) -> None:
    result = run_tmrl("example", "describe", env={"TMRL_EXAMPLE_ENV__TARGET": "5"})
    assert_one_clean_error(
        result,
        "bad value for example_env.target: 5 (from environment variable TMRL_EXAMPLE_ENV__TARGET); "
        "expected less than or equal to 1",
    )


# -- config ---------------------------------------------------------------------------------------------------------


def test_config_path_does_not_create_anything(run_tmrl, tmrl_home: Path) -> None:
    result = run_tmrl("config", "path")
    assert result.stdout == f"{tmrl_home / 'config' / 'config.json'}\n"
    assert not tmrl_home.exists()


def test_config_init_refuses_to_overwrite_without_force(run_tmrl, tmrl_home: Path) -> None:
    path = tmrl_home / "config" / "config.json"
    first = run_tmrl("config", "init")
    assert first.returncode == 0 and f"wrote {path}" in first.stdout
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["training"]["batch_size"] == 256
    path.write_text(json.dumps({"version": 1, "run": {"name": "mine"}}))
    again = run_tmrl("config", "init")
    assert_one_clean_error(again, f"the config file {path} already exists")
    assert json.loads(path.read_text())["run"]["name"] == "mine"
    forced = run_tmrl("config", "init", "--force")
    assert forced.returncode == 0 and "config.json.bak" in forced.stdout
    assert json.loads((path.parent / "config.json.bak").read_text())["run"]["name"] == "mine"
    assert json.loads(path.read_text())["run"]["name"] == "default"


def test_config_init_with_the_plugins_sections(tmrl_home: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "init", "--plugins"])
    assert info.value.code == 0, capsys.readouterr().err
    data = json.loads((tmrl_home / "config" / "config.json").read_text())
    assert data["example_env"] == {"target": 0.5, "max_steps": 50, "step_size": 0.1}
    from tmrl_core.settings import load_settings

    assert load_settings().plugin_sections()["example_env"]["max_steps"] == 50


def test_config_show_tells_where_each_value_came_from(run_tmrl, tmrl_home: Path) -> None:
    path = tmrl_home / "config" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "run": {"name": "from-file"}, "server": {"password": "hunter2"}}))
    env = {"TMRL_TRAINING__BATCH_SIZE": "64"}
    result = run_tmrl("config", "show", "--set", "worker.count=3", env=env)
    assert result.returncode == 0, result
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if not line.startswith("#")}
    assert rows["run.name"] == ['"from-file"', str(path)]
    assert rows["training.batch_size"] == ["64", "TMRL_TRAINING__BATCH_SIZE"]
    assert rows["worker.count"] == ["3", "--set"]
    assert rows["training.epochs"] == ["10000", "default"]
    assert rows["server.password"] == ['"****"', str(path)]
    assert "hunter2" not in result.stdout + result.stderr

    as_json = json.loads(run_tmrl("config", "show", "training", "--json", env=env).stdout)
    entries = {e["key"]: e for e in as_json["settings"]}
    assert set(entries) == {key for key in rows if key.startswith("training.")}
    assert entries["training.batch_size"] == {
        "key": "training.batch_size",
        "value": 64,
        "source": "TMRL_TRAINING__BATCH_SIZE",
    }
    with_plugins = json.loads(run_tmrl("config", "show", "example_env", "--json").stdout)
    assert {e["key"]: e["value"] for e in with_plugins["settings"]} == {
        "example_env.target": 0.5,
        "example_env.max_steps": 50,
        "example_env.step_size": 0.1,
    }


def test_config_show_errors_are_one_message_and_debug_shows_the_traceback(run_tmrl) -> None:
    env = {"TMRL_TRAINING__BATCH_SIZE": "abc"}
    result = run_tmrl("config", "show", env=env)
    assert_one_clean_error(
        result,
        "bad value for training.batch_size: 'abc' (from environment variable TMRL_TRAINING__BATCH_SIZE); "
        "expected a valid integer",
    )
    debug = run_tmrl("--debug", "config", "show", env=env)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    unknown = run_tmrl("config", "show", "--set", "trainig.batch_size=3")
    assert_one_clean_error(unknown, "unknown settings section trainig (from --set)")
    assert "Hint: did you mean training?" in unknown.stderr


def test_config_migrate_an_original_file(run_tmrl, tmrl_home: Path) -> None:
    ORIGINAL_CONFIG = json.loads((Path(__file__).parent / "data" / "original-tmrl-config.json").read_text())
    path = tmrl_home / "config" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(ORIGINAL_CONFIG, indent=2))
    refused = run_tmrl("config", "show")
    assert_one_clean_error(refused, f"the config file {path} was written for the original tmrl (version 0.6.0)")
    assert "tmrl config migrate" in refused.stderr

    migrated = run_tmrl("config", "migrate")
    assert migrated.returncode == 0, migrated
    assert "MAX_EPOCHS -> training.epochs" in migrated.stdout
    assert "ALG.LR_ACTOR -> sac.lr_actor" in migrated.stdout
    assert "LOCAL_PORT_WORKER: dropped (the local transport needs no ports)" in migrated.stdout
    assert json.loads((path.parent / "config.json.bak").read_text()) == ORIGINAL_CONFIG
    shown = json.loads(run_tmrl("config", "show", "run", "--json").stdout)
    assert {e["key"]: e["value"] for e in shown["settings"]}["run.name"] == "SAC_4_imgs_pretrained"

    again = run_tmrl("config", "migrate")
    assert_one_clean_error(again, f"{path} is not a config file of the original tmrl")


def test_config_migrate_dry_run_prints_and_writes_nothing(tmrl_home: Path, capsys) -> None:
    path = tmrl_home / "config" / "config.json"
    path.parent.mkdir(parents=True)
    original = (Path(__file__).parent / "data" / "original-tmrl-config.json").read_text()
    path.write_text(original)
    with pytest.raises(SystemExit) as info:
        main(["config", "migrate", "--dry-run"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "RUN_NAME -> run.name" in out and '"name": "SAC_4_imgs_pretrained"' in out
    assert "YourRandomPasswordHere" not in out and '"password": "****"' in out
    assert path.read_text() == original and not path.with_name("config.json.bak").exists()


def test_a_newer_config_file_is_a_clear_error(run_tmrl, tmrl_home: Path) -> None:
    path = tmrl_home / "config" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 99}')
    assert_one_clean_error(run_tmrl("config", "show"), f"the config file {path} has format version 99")


# -- import weight --------------------------------------------------------------------------------------------------


def test_light_commands_do_not_import_torch(tmrl_home: Path) -> None:
    light = [["--help"], ["plugins"], ["plugins", "--json"], ["--version"], ["config", "path"], ["example", "--help"]]
    code = textwrap.dedent(
        """
        import json, sys
        from tmrl_core.cli import main
        seen = []
        for argv in json.loads(sys.argv[1]):
            try:
                main(argv)
            except SystemExit as exc:
                seen.append([argv, exc.code, "torch" in sys.modules])
        print("RESULT=" + json.dumps(seen), file=sys.stderr)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(light)],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(tmrl_home),
    )
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("RESULT=")]
    assert json.loads(line[len("RESULT=") :]) == [[argv, 0, False] for argv in light]


def test_a_missing_core_command_module_is_reported_not_skipped() -> None:
    # A packaging error that loses a command module must show up as that command failing, not as a missing command.
    code = (
        "import tmrl_core.cli as cli\n"
        "cli.CORE_COMMAND_MODULES = (*cli.CORE_COMMAND_MODULES, 'tmrl_core.cli.gone_cmd')\n"
        "cli.main()\n"
    )
    help_result = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    assert help_result.returncode == 0, help_result
    assert "gone" in help_result.stdout
    result = subprocess.run([sys.executable, "-c", code, "gone"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result
    assert "Error: the command module tmrl_core.cli.gone_cmd failed to load: ModuleNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr
