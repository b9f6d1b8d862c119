"""Settings: precedence of the four sources, provenance, every kind of bad input, the config file and migration."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tmrl_core import EnvSpec, hookimpl
from tmrl_core.config_migration import convert_original, migrate_file
from tmrl_core.errors import ConfigError
from tmrl_core.paths import config_file
from tmrl_core.settings import (
    CONFIG_VERSION,
    CORE_SECTIONS,
    Settings,
    default_config,
    load_settings,
    settings_provenance,
    write_config_file,
)

#: A config.json of the original tmrl (version 0.6.0), as its quick reference guide documents it.
ORIGINAL = json.loads((Path(__file__).parent / "data" / "original-tmrl-config.json").read_text())


class ToySettings(BaseModel):
    """A plugin section for the in-process plugin below."""

    model_config = ConfigDict(extra="forbid")

    speed: float = Field(1.0, gt=0, description="How fast (SPEED).")
    laps: int = Field(3, ge=1, description="How many laps.")
    token: SecretStr = Field(SecretStr("t0ken"), description="A secret.")
    colours: list[str] = Field(default_factory=lambda: ["red"], description="Colours.")


class ToyPlugin:
    @hookimpl
    def tmrl_register_envs(self, register: Callable[[EnvSpec], None]) -> None:
        register(EnvSpec(name="toy-env", factory="x:y", settings=ToySettings, settings_section="toy"))


def write_config(data: dict) -> Path:
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def message_of(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return str(exc.value)


# -- precedence and provenance --------------------------------------------------------------------------------------


def test_defaults_without_any_source(tmrl_home: Path) -> None:
    settings = load_settings()
    assert settings.model_dump() == Settings().model_dump()
    assert {entry.source for entry in settings_provenance(settings)} == {"default"}


def test_precedence_across_the_four_sources(tmrl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(
        {
            "version": 1,
            "run": {"name": "from-file"},
            "training": {"epochs": 7, "batch_size": 32, "memory_size": 5000, "rounds_per_epoch": 9},
        }
    )
    monkeypatch.setenv("TMRL_TRAINING__BATCH_SIZE", "64")
    monkeypatch.setenv("TMRL_TRAINING__MEMORY_SIZE", "6000")
    monkeypatch.setenv("TMRL_TRAINING__ROUNDS_PER_EPOCH", "10")
    settings = load_settings(
        sets=["training.memory_size=7000", "training.rounds_per_epoch=11"],
        overrides={"training": {"rounds_per_epoch": 12, "epochs": None}},
    )
    t = settings.training
    assert (t.epochs, t.batch_size, t.memory_size, t.rounds_per_epoch) == (7, 64, 7000, 12)
    assert settings.run.name == "from-file"
    assert settings.training.steps_per_round == 200
    assert settings.origin("training.epochs") == str(path)
    assert settings.origin("training.batch_size") == "TMRL_TRAINING__BATCH_SIZE"
    assert settings.origin("training.memory_size") == "--set"
    assert settings.origin("training.rounds_per_epoch") == "command line"
    assert settings.origin("training.steps_per_round") == "default"
    provenance = {entry.key: (entry.value, entry.source) for entry in settings_provenance(settings)}
    assert provenance["training.batch_size"] == (64, "TMRL_TRAINING__BATCH_SIZE")
    assert provenance["run.name"] == ("from-file", str(path))
    expected_keys = {f"{name}.{field}" for name, model in CORE_SECTIONS.items() for field in model.model_fields}
    assert set(provenance) == expected_keys


def test_component_defaults_sit_between_the_built_in_defaults_and_the_file(tmrl_home: Path) -> None:
    write_config({"training": {"batch_size": 32}})
    settings = load_settings(
        defaults={"training": {"batch_size": 64, "start_training": 100}}, defaults_source="env pendulum"
    )
    assert (settings.training.batch_size, settings.training.start_training) == (32, 100)
    assert settings.origin("training.start_training") == "env pendulum"


def test_env_vars_nest_with_double_underscores_and_take_whole_sections(tmrl_home: Path) -> None:
    settings = load_settings(
        environ={
            "TMRL_WORKER__COUNT": "3",
            "TMRL_SERVER": '{"port": 6000, "tls": true}',
            "TMRL_RUN__SEED": "null",
            "TMRL_WANDB__MODE": "offline",
        }
    )
    assert (settings.worker.count, settings.server.port, settings.server.tls) == (3, 6000, True)
    assert settings.run.seed is None and settings.wandb.mode == "offline"
    assert settings.origin("server.port") == "TMRL_SERVER"


def test_reserved_env_vars_are_not_settings(tmrl_home: Path) -> None:
    environ = {
        "TMRL_HOME": "/somewhere",
        "TMRL_DEBUG": "1",
        "TMRL_DISABLE_PLUGINS": "x",
        "TMRL_DISABLE_THIRD_PARTY_PLUGINS": "1",
        "TMRL_ONLY_PLUGINS": "sac",
        "TMRL_REQUIRE_DISPLAY": "1",  # .ci/run sets it around the whole suite
        "TMRL_TEST_WHEELS": "1",
        "UNRELATED": "1",
    }
    assert load_settings(environ=environ).model_dump() == Settings().model_dump()


def test_set_values_are_json_when_they_parse_else_text(tmrl_home: Path) -> None:
    settings = load_settings(
        sets=[
            "run.name=123",  # a string field: the JSON reading (123) does not fit, so the text is used
            "run.seed=42",
            "training.max_training_steps_per_env_step=2.5",
            "training.prefetch=true",
            "training.dataset_path=null",
            "server.host=example.org",
            'wandb.project="quoted"',
            "server.password=a=b=c",
        ]
    )
    assert settings.run.name == "123" and settings.run.seed == 42
    assert settings.training.max_training_steps_per_env_step == 2.5 and settings.training.prefetch is True
    assert settings.training.dataset_path is None
    assert settings.server.host == "example.org" and settings.wandb.project == "quoted"
    assert settings.server.password.get_secret_value() == "a=b=c"


def test_plugin_sections_are_kept_raw_and_validated_on_use(tmrl_home: Path, plugin_manager) -> None:
    plugin_manager(ToyPlugin())
    write_config({"toy": {"speed": 2.0}})
    settings = load_settings(environ={"TMRL_TOY__LAPS": "5", "TMRL_TOY__COLOURS": '["blue", "green"]'})
    assert settings.plugin_sections() == {"toy": {"speed": 2.0, "laps": 5, "colours": ["blue", "green"]}}
    toy = settings.section("toy", ToySettings)
    assert (toy.speed, toy.laps, toy.colours) == (2.0, 5, ["blue", "green"])
    assert settings.section("toy", None) is None
    assert settings.section("absent", ToySettings) == ToySettings()


def test_plugin_section_errors_name_key_value_expectation_and_source(tmrl_home: Path, plugin_manager) -> None:
    plugin_manager(ToyPlugin())
    settings = load_settings(environ={"TMRL_TOY__SPEED": "-1"})
    with pytest.raises(ConfigError) as info:
        settings.section("toy", ToySettings)
    assert info.value.message == (
        "bad value for toy.speed: -1 (from environment variable TMRL_TOY__SPEED); expected greater than 0"
    )
    settings = load_settings(sets=["toy.lapz=4"])
    with pytest.raises(ConfigError) as info:
        settings.section("toy", ToySettings)
    assert info.value.message == "unknown key toy.lapz (from --set)"
    assert info.value.hint == "did you mean toy.laps?"
    settings = load_settings(overrides={"toy": {"laps": "many"}})
    with pytest.raises(ConfigError, match=r"bad value for toy.laps: 'many' \(from a command-line option\)"):
        settings.section("toy", ToySettings)


def test_the_installed_example_plugin_contributes_its_section(tmrl_home: Path) -> None:
    from tmrl_example.env import ExampleEnvSettings

    settings = load_settings(environ={"TMRL_EXAMPLE_ENV__TARGET": "0.25"})
    assert settings.section("example_env", ExampleEnvSettings).target == 0.25


def test_provenance_lists_secrets_masked_and_plugin_sections(tmrl_home: Path, plugin_manager) -> None:
    plugin_manager(ToyPlugin())
    settings = load_settings(sets=["server.password=hunter2", "toy.laps=4"])
    raw = {e.key: e for e in settings_provenance(settings)}
    assert raw["server.password"].secret and raw["server.password"].shown_value() == "****"
    assert raw["server.password"].source == "--set"
    assert raw["toy.laps"].value == 4 and "toy.speed" not in raw
    full = {e.key: e for e in settings_provenance(settings, models={"toy": ToySettings})}
    assert (full["toy.speed"].value, full["toy.speed"].source) == (1.0, "default")
    assert (full["toy.laps"].value, full["toy.laps"].source) == (4, "--set")
    assert full["toy.token"].shown_value() == "****"
    assert "hunter2" not in json.dumps([e.shown_value() for e in full.values()])


def test_dump_with_secrets_loads_back_identically(tmrl_home: Path) -> None:
    settings = load_settings(sets=["server.password=s3cret", "run.name=x", "training.dataset_path=/data/d"])
    assert settings.dump()["server"]["password"] == "****"
    path = tmrl_home / "copy.json"
    write_config_file(path, settings.dump(reveal_secrets=True))
    again = load_settings(config_path=path)
    assert again.model_dump() == settings.model_dump()
    assert again.server.password.get_secret_value() == "s3cret"


# -- bad input: each kind gives its message --------------------------------------------------------------------------


def test_bad_value_in_the_file(tmrl_home: Path) -> None:
    path = write_config({"version": 1, "training": {"batch_size": "lots"}})
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message == (
        f"bad value for training.batch_size: 'lots' (from {path}); "
        "expected a valid integer, unable to parse string as an integer"
    )


def test_bad_value_from_an_env_var() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(read_file=False, environ={"TMRL_SERVER__PORT": "70000"})
    assert info.value.message == (
        "bad value for server.port: 70000 (from environment variable TMRL_SERVER__PORT); "
        "expected less than or equal to 65535"
    )


def test_bad_value_from_set_reports_the_json_reading() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(read_file=False, environ={}, sets=["training.batch_size=1.5", "wandb.mode=sometimes"])
    assert info.value.message.splitlines() == [
        "invalid settings:",
        "  - bad value for training.batch_size: 1.5 (from --set); expected a valid integer, got a number with a "
        "fractional part",
        "  - bad value for wandb.mode: 'sometimes' (from --set); expected 'online', 'offline' or 'disabled'",
    ]


def test_unknown_key_suggests_the_closest(tmrl_home: Path) -> None:
    path = write_config({"training": {"batchsize": 64}})
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message == f"unknown key training.batchsize (from {path})"
    assert info.value.hint == "did you mean training.batch_size?"
    with pytest.raises(ConfigError) as info:
        load_settings(read_file=False, environ={"TMRL_SERVER__ZZZ": "1"})
    assert "unknown key server.zzz (from environment variable TMRL_SERVER__ZZZ)" == info.value.message
    assert info.value.hint.startswith("known keys of server: bind, chunk_bytes")


def test_unknown_section_suggests_the_closest_and_lists_plugin_sections(tmrl_home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(read_file=False, environ={"TMRL_TRAINNG__BATCH_SIZE": "3"})
    assert info.value.message.startswith(
        "unknown settings section trainng (from environment variable TMRL_TRAINNG__BATCH_SIZE); known sections: run, "
        "server, worker, training, checkpoint, logging, wandb, "
    )
    assert "example_env" in info.value.message  # the installed example plugin's section
    assert info.value.hint == "did you mean training?"
    with pytest.raises(ConfigError) as info:
        load_settings(read_file=False, environ={}, sets=["qqqqq.x=1"])
    assert "(from --set)" in info.value.message
    assert "installed and enabled" in info.value.hint


def test_a_section_that_is_not_an_object(tmrl_home: Path) -> None:
    path = write_config({"training": 5})
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message == f"bad value for training: 5 (from {path}); expected an object of keys and values"


def test_invalid_json_names_line_and_column(tmrl_home: Path) -> None:
    path = config_file()
    path.parent.mkdir(parents=True)
    path.write_text('{\n  "run": {"name": "x",}\n}\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message.startswith(f"the config file {path} is not valid JSON: ")
    assert "(line 2, column 23)" in info.value.message


def test_a_file_that_is_not_an_object(tmrl_home: Path) -> None:
    path = config_file()
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"must hold a JSON object \(\{\.\.\.\}\), not list"):
        load_settings()


def test_a_file_of_the_original_tmrl_asks_for_migration(tmrl_home: Path) -> None:
    path = write_config(ORIGINAL)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message == (
        f"the config file {path} was written for the original tmrl (version 0.6.0); tmrl-core uses a new layout"
    )
    assert "tmrl config migrate" in info.value.hint


def test_a_newer_file_version_is_refused_clearly(tmrl_home: Path) -> None:
    path = write_config({"version": CONFIG_VERSION + 1})
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"{path} has format version {CONFIG_VERSION + 1}, newer than this tmrl-core" in info.value.message
    assert f"(up to {CONFIG_VERSION})" in info.value.message
    assert "upgrade tmrl-core" in info.value.hint


@pytest.mark.parametrize("version", ["1", 0, True, 1.5])
def test_an_invalid_file_version(tmrl_home: Path, version: object) -> None:
    write_config({"version": version})
    with pytest.raises(ConfigError, match="has an invalid version"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("TMRL_TRAINING____X", "cannot tell which setting it names"),
        ("TMRL__X", "cannot tell which setting it names"),
        ("TMRL_TRAINING___X", "cannot tell which setting it names"),
        ("TMRL_VERSION", "the config format version cannot be set"),
        ("TMRL_TRAINING", "a whole section must be a JSON object"),
    ],
)
def test_malformed_env_vars(name: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(read_file=False, environ={name: "nope"})
    assert info.value.message.startswith(f"environment variable {name}")
    assert expected in info.value.message


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("training.batch_size", "expected section.key=value"),
        ("batch_size=3", "is not a setting name of the form section.key"),
        ("training.=3", "is not a setting name of the form section.key"),
        ("version.x=2", "the config format version cannot be set"),
    ],
)
def test_malformed_set_items(item: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(read_file=False, environ={}, sets=[item])
    assert info.value.message.startswith(f"--set {item!r}")
    assert expected in info.value.message


# -- the config file ------------------------------------------------------------------------------------------------


def test_default_config_loads_back_as_the_defaults(tmrl_home: Path) -> None:
    data = default_config()
    assert data["version"] == CONFIG_VERSION and list(data)[1:] == list(CORE_SECTIONS)
    assert data["server"]["password"] == "change-this-password"
    write_config_file(config_file(), data)
    assert load_settings().model_dump() == Settings().model_dump()
    assert [p.name for p in config_file().parent.iterdir()] == ["config.json"]  # no temporary file left


# -- migration from the original tmrl -------------------------------------------------------------------------------


def test_convert_original_maps_every_documented_key() -> None:
    migration = convert_original(ORIGINAL, plugin_sections={"sac", "redqsac", "trackmania"})
    data = migration.data
    assert data["version"] == CONFIG_VERSION
    assert data["run"] == {"name": "SAC_4_imgs_pretrained", "reset_training": False}
    assert data["training"]["epochs"] == 10000 and data["training"]["device"] == "auto"
    assert data["worker"]["device"] == "cpu" and data["worker"]["model_history"] == 0
    assert data["server"]["password"] == "YourRandomPasswordHere" and "host" not in data["server"]
    assert data["server"]["max_message_bytes"] == 536870912
    assert data["sac"]["lr_actor"] == 0.00001 and data["sac"]["betas_critic"] == [0.997, 0.997]
    assert data["trackmania"]["time_step_duration"] == 0.05 and data["trackmania"]["end_of_track"] == 100.0
    moved = dict(migration.moved)
    assert moved["RUN_NAME"] == "run.name" and moved["MAX_EPOCHS"] == "training.epochs"
    assert moved["ALG.LR_ACTOR"] == "sac.lr_actor" and moved["ENV.IMG_HIST_LEN"] == "trackmania.img_hist_len"
    assert moved["ALG.REDQ_N"].startswith("redqsac.")
    dropped = dict(migration.dropped)
    assert set(dropped) >= {"__VERSION__", "LOCAL_PORT_WORKER", "HEADER_SIZE", "ALG.ALGORITHM", "ENV.RTGYM_INTERFACE"}
    assert "--algo" in dropped["ALG.ALGORITHM"]
    # Every original key is accounted for, once.
    original_keys = [k for k, v in ORIGINAL.items() if k not in ("ALG", "ENV")]
    original_keys += [f"ALG.{k}" for k in ORIGINAL["ALG"]]
    assert set(original_keys) <= set(moved) | set(dropped)


def test_convert_original_redqsac_and_a_remote_server() -> None:
    old = {
        "RUN_NAME": "r",
        "LOCALHOST_WORKER": False,
        "PUBLIC_IP_SERVER": "10.0.0.5",
        "ALG": {"ALGORITHM": "REDQSAC", "GAMMA": 0.99},
        "__VERSION__": "0.6.0",
    }
    migration = convert_original(old)
    assert migration.data["server"]["host"] == "10.0.0.5"
    assert migration.data["redqsac"]["gamma"] == 0.99


def test_convert_original_drops_sections_of_plugins_not_installed() -> None:
    migration = convert_original(ORIGINAL, plugin_sections=set())
    assert "sac" not in migration.data and "trackmania" not in migration.data
    assert "no installed plugin owns the section 'trackmania'" in dict(migration.dropped)["ENV.IMG_WIDTH"]


def test_convert_original_follows_the_plugin_model() -> None:
    class Described(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history_length: int = Field(4, description="Frames kept (IMG_HIST_LEN).")
        grayscale: bool = Field(True, description="Grey frames (IMG_GRAYSCALE, IMG_COLOR).")
        window_width: int = Field(256, ge=300, description="Window width.")
        end_of_track: float = 100.0

    class Custom(BaseModel):
        flag: bool = False

        @classmethod
        def migrate_original(cls, original: dict) -> dict:
            return {"flag": original["ALG"]["LEARN_ENTROPY_COEF"] is False}

    migration = convert_original(
        ORIGINAL, plugin_sections={"trackmania", "sac"}, models={"trackmania": Described, "sac": Custom}
    )
    assert migration.data["trackmania"] == {"history_length": 4, "grayscale": True, "end_of_track": 100.0}
    assert migration.data["sac"] == {"flag": True}
    dropped = dict(migration.dropped)
    assert dropped["ENV.IMG_WIDTH"] == "trackmania has no matching setting"
    assert dropped["ENV.WINDOW_WIDTH"].startswith("refused by trackmania: bad value for trackmania.window_width: 256")


def test_migrate_file_keeps_a_backup_and_the_result_loads(tmrl_home: Path) -> None:
    path = write_config(ORIGINAL)
    before = path.read_bytes()
    migration, backup = migrate_file(path, path)
    assert backup == path.with_name("config.json.bak") and backup.read_bytes() == before
    settings = load_settings()
    assert settings.run.name == "SAC_4_imgs_pretrained" and settings.training.device == "auto"
    assert settings.origin("run.name") == str(path)
    # A second migration of the backup does not overwrite the first backup.
    _, second = migrate_file(backup, path)
    assert second == path.with_name("config.json.bak1")
    with pytest.raises(ConfigError, match="already in tmrl-core's layout, version 1"):
        migrate_file(path, path)


def test_migrate_file_dry_run_writes_nothing(tmrl_home: Path) -> None:
    path = write_config(ORIGINAL)
    before = path.read_bytes()
    migration, backup = migrate_file(path, path, dry_run=True)
    assert backup is None and path.read_bytes() == before
    assert migration.data["run"]["name"] == "SAC_4_imgs_pretrained"


def test_migrate_file_errors(tmrl_home: Path) -> None:
    with pytest.raises(ConfigError, match="there is no config file to migrate"):
        migrate_file(tmrl_home / "nope.json", tmrl_home / "out.json")
    bad = tmrl_home / "bad.json"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("{'RUN_NAME': 1}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        migrate_file(bad, tmrl_home / "out.json")
    bad.write_text(json.dumps({**ORIGINAL, "BATCH_SIZE": -3}))
    with pytest.raises(ConfigError, match="bad value for training.batch_size: -3"):
        migrate_file(bad, tmrl_home / "out.json")
    assert not (tmrl_home / "out.json").exists()
