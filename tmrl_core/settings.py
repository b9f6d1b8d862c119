"""Settings: pydantic models, one section per concern, loaded with this precedence (lowest first):

defaults < the config file in the data folder < ``TMRL_*`` environment variables (nested with ``__``) < command-line
options (typed options, and the generic ``--set section.key=value``).

Plugins contribute their own sections: a component spec names a pydantic model (``settings=``) and its section is
kept raw until the component is chosen, then validated by :meth:`Settings.section`. A top-level key that is neither
a core section nor the section of an installed component is an error.

Every error names the dotted key, the bad value, what was expected and where the value came from (the config file,
the environment variable, ``--set`` or a command-line option), and suggests the closest known key.
:func:`settings_provenance` tells, for every key, its effective value and its source (``tmrl config show``).

Every key of the original tmrl ``config.json`` has a home here; :mod:`tmrl_core.config_migration` converts an old
file (see ``docs/settings.md`` for the mapping).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretBytes, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tmrl_core import paths
from tmrl_core.__about__ import __version__
from tmrl_core.errors import ConfigError, TmrlError

if TYPE_CHECKING:
    from tmrl_core.plugins import PluginManager

#: Version of the config file layout written by ``tmrl config init`` (the file's ``"version"`` key).
CONFIG_VERSION = 1
ENV_PREFIX = "TMRL_"
ENV_DELIMITER = "__"
#: Environment variables that start with ``TMRL_`` but are not settings. Code that adds one registers it here.
RESERVED_ENV_VARS: set[str] = {
    paths.HOME_ENV,
    "TMRL_DEBUG",
    "TMRL_DISABLE_PLUGINS",
    "TMRL_DISABLE_THIRD_PARTY_PLUGINS",
}
#: Sources as :func:`settings_provenance` names them (besides a file path and an environment variable name).
DEFAULT_SOURCE = "default"
SET_SOURCE = "--set"
CLI_SOURCE = "command line"
#: How secrets are shown.
MASK = "****"


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSettings(Section):
    """What identifies a run."""

    name: str = Field("default", description="Run name: names the checkpoint, weights and metrics files (RUN_NAME).")
    reset_training: bool = Field(
        False, description="Start training from scratch even if a checkpoint exists for this run (RESET_TRAINING)."
    )
    seed: int | None = Field(None, description="Seed for numpy, torch and the environments (None: random).")


class ServerSettings(Section):
    """Where the Server is and how to reach it (used by every transport that crosses processes)."""

    transport: str = Field("local", description="Transport plugin carrying samples and weights (--transport).")
    host: str = Field("127.0.0.1", description="Address of the Server for workers and the trainer (PUBLIC_IP_SERVER).")
    bind: str = Field("0.0.0.0", description="Address the Server listens on.")
    port: int = Field(55555, ge=1, le=65535, description="Public port of the Server (PORT).")
    password: SecretStr = Field(
        SecretStr("change-this-password"), description="Shared password; must match on all machines (PASSWORD)."
    )
    tls: bool = Field(False, description="Encrypt and authenticate the server with TLS (TLS).")
    tls_hostname: str = Field("default", description="Host name in the TLS certificate (TLS_HOSTNAME).")
    tls_credentials_directory: Path | None = Field(
        None, description="Folder with the TLS key and certificate (default: <data>/tls) (TLS_CREDENTIALS_DIRECTORY)."
    )
    max_workers: int = Field(-1, ge=-1, description="Most workers the server accepts, -1 for no limit (NB_WORKERS).")
    max_message_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Largest message accepted, in bytes (BUFFER_SIZE)."
    )
    chunk_bytes: int = Field(1024 * 1024, ge=1024, description="Large messages travel in chunks of this many bytes.")
    connect_timeout: float = Field(
        0.0, ge=0.0, description="Seconds a client waits for the server at start; 0 waits forever."
    )
    local_buffer_max_samples: int = Field(
        100_000, ge=1, description="Samples a client keeps while disconnected; the oldest are dropped beyond this."
    )


class WorkerSettings(Section):
    """RolloutWorker settings."""

    count: int = Field(1, ge=1, description="Number of worker processes started by `tmrl run` (--workers).")
    device: str = Field("cpu", description="Device for inference: cpu, cuda, cuda:N, or auto (CUDA_INFERENCE).")
    buffers_maxlen: int = Field(
        500_000, ge=1, description="Most samples in a worker's local buffer before sending (BUFFERS_MAXLEN)."
    )
    max_samples_per_episode: int = Field(
        1000, ge=1, description="Episodes longer than this are truncated (RW_MAX_SAMPLES_PER_EPISODE)."
    )
    test_episode_interval: int = Field(10, ge=0, description="A test episode every N training episodes (0: never).")
    max_env_steps_per_model: int = Field(
        0, ge=0, description="run_synchronous: env steps collected per received model, 0 for no bound."
    )
    model_history: int = Field(
        0, ge=0, description="Keep a copy of every Nth received model in the weights folder, 0 for none."
    )
    expert: bool = Field(False, description="Send samples but ignore weights from the server (--expert).")
    crc_debug: bool = Field(False, description="Send full transitions along with samples and check rebuilt ones.")


class TrainingSettings(Section):
    """Trainer settings."""

    epochs: int = Field(10_000, ge=1, description="Epochs to train; a checkpoint ends every epoch (MAX_EPOCHS).")
    rounds_per_epoch: int = Field(100, ge=1, description="Rounds per epoch; metrics every round (ROUNDS_PER_EPOCH).")
    steps_per_round: int = Field(200, ge=1, description="Training steps per round (TRAINING_STEPS_PER_ROUND).")
    max_env_steps: int | None = Field(None, ge=1, description="Stop once this many env steps were received.")
    max_training_steps_per_env_step: float = Field(
        4.0, gt=0, description="Training pauses above this ratio of steps to received samples."
    )
    start_training: int = Field(
        1000, ge=0, description="Samples in memory before training starts (ENVIRONMENT_STEPS_BEFORE_TRAINING)."
    )
    update_model_interval: int = Field(200, ge=1, description="Send weights every N training steps.")
    update_buffer_interval: int = Field(200, ge=1, description="Collect received samples every N training steps.")
    memory_size: int = Field(1_000_000, ge=1, description="Replay memory capacity in transitions (MEMORY_SIZE).")
    batch_size: int = Field(256, ge=1, description="Training batch size (BATCH_SIZE).")
    device: str = Field("auto", description="Training device: auto, cpu, cuda, cuda:N (CUDA_TRAINING).")
    memory: str | None = Field(None, description="Replay memory plugin; None uses the environment's default.")
    compressor: str | None = Field(None, description="Sample compressor; None uses the environment's default.")
    dataset_path: Path | None = Field(None, description="Offline dataset that seeds the replay memory at start.")
    prefetch: bool = Field(False, description="Prepare the next batch in a background thread while training.")
    test_episodes: int = Field(1, ge=0, description="Test episodes run by `tmrl test`.")


class CheckpointSettings(Section):
    """What is saved, and when."""

    enabled: bool = Field(True, description="Write a checkpoint at the end of each epoch and on Ctrl-C.")
    keep_memory: bool = Field(True, description="Include the replay memory's contents in checkpoints.")


class WandbSettings(Section):
    """Weights & Biases logging (`--wandb`)."""

    enabled: bool = Field(False, description="Log metrics to wandb as well (--wandb).")
    project: str = Field("tmrl", description="wandb project (WANDB_PROJECT).")
    entity: str | None = Field(None, description="wandb entity (WANDB_ENTITY).")
    key: SecretStr | None = Field(None, description="wandb API key; prefer WANDB_API_KEY (WANDB_KEY).")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="wandb mode; None defers to WANDB_MODE."
    )


CORE_SECTIONS: dict[str, type[Section]] = {
    "run": RunSettings,
    "server": ServerSettings,
    "worker": WorkerSettings,
    "training": TrainingSettings,
    "checkpoint": CheckpointSettings,
    "wandb": WandbSettings,
}

#: A key path, e.g. ``("training", "batch_size")``.
KeyPath = tuple[str, ...]


class Settings(BaseSettings):
    """All settings: the core sections, plus plugin sections kept raw until their component is chosen.

    ``Settings()`` holds the defaults and ``Settings(run={"name": "x"})`` validates what it is given; neither reads
    the config file or the environment. :func:`load_settings` layers every source, and remembers where each value
    came from (:meth:`origin`, :func:`settings_provenance`).
    """

    model_config = SettingsConfigDict(
        extra="allow", validate_assignment=True, env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER
    )

    version: int = Field(CONFIG_VERSION, description="Config file format version (do not edit).")
    run: RunSettings = Field(default_factory=RunSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    wandb: WandbSettings = Field(default_factory=WandbSettings)

    _origins: dict[KeyPath, str] = PrivateAttr(default_factory=dict)
    _strings: dict[KeyPath, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Constructing Settings never reads the environment behind the caller's back: load_settings() layers the
        # config file, the TMRL_* variables and the command line itself, so that it knows where each value came from.
        return (init_settings,)

    def plugin_sections(self) -> dict[str, Any]:
        """The raw (not yet validated) plugin sections."""
        return dict(self.model_extra or {})

    def section(self, name: str, model: type[M] | None) -> M | None:
        """Validate and return the plugin section ``name`` against ``model`` (None if the component has none).

        Raises:
            ConfigError: a bad value or an unknown key in the section; the message names the key, the value, what
                was expected and where the value came from.
        """
        if model is None:
            return None
        raw = (self.model_extra or {}).get(name, {})
        if isinstance(raw, model):
            return raw
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            source = self._origins.get((name,), "the settings")
            raise ConfigError(
                f"settings section {name} must be an object of keys and values, got {raw!r} (from {source})",
                hint=f"set one key at a time, e.g. --set {name}.KEY=VALUE",
            )
        return _validate_model(model, raw, self._origins, self._strings, prefix=(name,))

    def origin(self, key: str) -> str:
        """Where the setting ``key`` (dotted, e.g. ``"training.batch_size"``) came from: ``"default"``, the config
        file's path, an environment variable's name, ``"--set"`` or ``"command line"``."""
        path = tuple(key.split("."))
        if path in self._origins:
            return self._origins[path]
        for other, source in self._origins.items():
            if other[: len(path)] == path:
                return source
        return DEFAULT_SOURCE

    def dump(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The settings as JSON-compatible data (secrets masked unless ``reveal_secrets``); plugin sections raw.

        With ``reveal_secrets=True`` the result loads back into the same settings, e.g. in a child process.
        """
        data = self.model_dump(mode="python")
        return _jsonable(data, reveal_secrets=reveal_secrets)


M = TypeVar("M", bound=BaseModel)


def _jsonable(value: Any, *, reveal_secrets: bool) -> Any:
    if isinstance(value, (SecretStr, SecretBytes)):
        if not reveal_secrets:
            return MASK
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, BaseModel):
        return _jsonable(value.model_dump(mode="python"), reveal_secrets=reveal_secrets)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, reveal_secrets=reveal_secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, reveal_secrets=reveal_secrets) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


# -- sources --------------------------------------------------------------------------------------------------------


class _Layer(PydanticBaseSettingsSource):
    """One source of settings as a nested dict, with where each leaf came from.

    ``strings`` keeps the original text of values that were typed as text (environment variables, ``--set``) and
    parsed as JSON: when the JSON reading does not fit the field (``--set run.name=123``), the text is used instead.
    """

    def __init__(self) -> None:
        super().__init__(Settings)
        self.data: dict[str, Any] = {}
        self.origins: dict[KeyPath, str] = {}
        self.strings: dict[KeyPath, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data

    def put(self, path: KeyPath, value: Any, source: str, *, text: str | None = None) -> None:
        """Set ``path`` to ``value``; every leaf below it is recorded as coming from ``source``."""
        _assign(self.data, self.origins, self.strings, path, value, source)
        if text is not None and not isinstance(value, dict):
            self.strings[path] = text


def _leaves(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every leaf of a nested dict (an empty dict is a leaf)."""
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, (*path, str(key)))
    elif path:
        yield path, value


def _forget(origins: dict[KeyPath, Any], path: KeyPath) -> None:
    """Drop what is recorded at, above or below ``path`` (it is being replaced)."""
    n = len(path)
    for other in list(origins):
        if other[:n] == path or path[: len(other)] == other:
            del origins[other]


def _assign(
    data: dict[str, Any],
    origins: dict[KeyPath, str],
    strings: dict[KeyPath, str],
    path: KeyPath,
    value: Any,
    source: str,
) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    _forget(origins, path)
    _forget(strings, path)
    node[path[-1]] = copy.deepcopy(value)
    for leaf, _ in _leaves(value, path):
        origins[leaf] = source


def _parse_text(text: str) -> Any:
    """A value typed as text: JSON when it parses (numbers, true/false, null, lists, objects), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _is_original_format(data: dict[str, Any]) -> bool:
    return "__VERSION__" in data or any(key in ORIGINAL_TOP_LEVEL_KEYS for key in data)


#: Top-level keys of the original tmrl config.json (their presence marks a file to migrate).
ORIGINAL_TOP_LEVEL_KEYS = frozenset(
    {"RUN_NAME", "RESET_TRAINING", "BUFFERS_MAXLEN", "CUDA_TRAINING", "CUDA_INFERENCE", "ALG", "ENV", "MEMORY_SIZE"}
)


def read_config_file(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None if the file does not exist), checked for its format version.

    Raises:
        ConfigError: unreadable file, invalid JSON, a file of the original tmrl (to migrate), or a newer version.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the config file {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            hint="fix it in a text editor (JSON has no comments and no trailing commas), or replace it with "
            "`tmrl config init --force`",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"the config file {path} must hold a JSON object ({{...}}), not {type(data).__name__}",
            hint="replace it with `tmrl config init --force`",
        )
    if _is_original_format(data):
        old = data.get("__VERSION__", "unknown")
        raise ConfigError(
            f"the config file {path} was written for the original tmrl (version {old}); tmrl-core uses a new layout",
            hint="run `tmrl config migrate` to convert it (the old file is kept as a backup)",
        )
    version = data.get("version", CONFIG_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"the config file {path} has an invalid version {version!r}: expected a positive integer "
            f"(this tmrl-core writes {CONFIG_VERSION})",
            hint=f'set "version": {CONFIG_VERSION} if the rest of the file is in the current layout',
        )
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"the config file {path} has format version {version}, newer than this tmrl-core ({__version__}) "
            f"supports (up to {CONFIG_VERSION})",
            hint="upgrade tmrl-core (pip install -U tmrl-core), or point TMRL_HOME at another data folder",
        )
    return data


def _file_layer(path: Path) -> _Layer:
    layer = _Layer()
    data = read_config_file(path)
    for key, value in (data or {}).items():
        if key == "version":
            continue
        layer.put((key,), value, str(path))
    return layer


_ENV_PART = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV_VARS:
            continue
        text = environ[name]
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_DELIMITER))
        if not all(_ENV_PART.fullmatch(part) for part in path):
            raise ConfigError(
                f"environment variable {name}: cannot tell which setting it names",
                hint="use TMRL_SECTION__KEY=value with two underscores between the parts, "
                "e.g. TMRL_TRAINING__BATCH_SIZE=64",
            )
        if path == ("version",):
            raise ConfigError(
                f"environment variable {name}: the config format version cannot be set",
                hint=f"unset {name}",
            )
        if len(path) == 1:
            value = _parse_text(text)
            if not isinstance(value, dict):
                raise ConfigError(
                    f"environment variable {name}={text!r}: a whole section must be a JSON object",
                    hint=f"set one key with {name}__KEY=value, or write {name}='{{\"key\": value}}'",
                )
            layer.put(path, value, name)
        else:
            layer.put(path, _parse_text(text), name, text=text)
    return layer


def _split_dotted(key: str, *, what: str) -> KeyPath:
    path = tuple(part.strip() for part in key.split("."))
    if len(path) < 2 or not all(path):
        raise ConfigError(
            f"{what}: {key!r} is not a setting name of the form section.key",
            hint="e.g. --set training.batch_size=64 (`tmrl config show` lists every key)",
        )
    if path[0] == "version":
        raise ConfigError(f"{what}: the config format version cannot be set")
    return path


def _cli_layer(overrides: Mapping[str, Any] | None, sets: Iterable[str]) -> _Layer:
    layer = _Layer()
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--set {item!r}: expected section.key=value",
                hint="e.g. --set training.batch_size=64 (values are read as JSON when they parse, else as text)",
            )
        path = _split_dotted(key, what=f"--set {item!r}")
        value = _parse_text(text)
        layer.put(path, value, SET_SOURCE, text=text)
    # Explicit options are more specific than the generic --set, so they are applied last.
    for path, value in _leaves(dict(overrides or {})):
        if value is None or value == {}:
            continue  # an option (or a whole group of options) that was not given
        full: KeyPath = tuple(part for key in path for part in key.split("."))
        layer.put(full, value, CLI_SOURCE)
    return layer


# -- validation and error messages ----------------------------------------------------------------------------------


def _is_secret_name(path: KeyPath) -> bool:
    return bool(path) and bool(_SECRET_NAME.search(path[-1]))


_SECRET_NAME = re.compile(r"(^|_)(password|passwd|secret|token|key|api_key)($|_)", re.IGNORECASE)


def _field_model(model: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Model``, ``Model | None``), or None."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    for arg in get_args(model):
        found = _field_model(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel] | None, path: KeyPath) -> type[BaseModel] | None:
    for key in path:
        if model is None or key not in model.model_fields:
            return None
        model = _field_model(model.model_fields[key].annotation)
    return model


def _is_secret_field(model: type[BaseModel] | None, path: KeyPath) -> bool:
    parent = _model_at(model, path[:-1])
    if parent is not None and path and path[-1] in parent.model_fields:
        annotation = parent.model_fields[path[-1]].annotation
        return any(t in (SecretStr, SecretBytes) for t in (annotation, *get_args(annotation)))
    return _is_secret_name(path)


def _walk(data: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow ``loc`` (a pydantic error location) into ``data`` as far as it goes; (walked part, value there)."""
    walked: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        walked.append(part)
    return tuple(walked), node


def _source_of(origins: Mapping[KeyPath, str], path: KeyPath) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    for other, source in origins.items():
        if other[: len(path)] == path:
            return source
    return DEFAULT_SOURCE


def _describe_source(source: str) -> str:
    if source == DEFAULT_SOURCE:
        return "the default"
    if source == SET_SOURCE:
        return "--set"
    if source == CLI_SOURCE:
        return "a command-line option"
    if source.startswith(ENV_PREFIX):
        return f"environment variable {source}"
    return source


def _expected(message: str) -> str:
    for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    return message


def _config_error(
    errors: list[tuple[dict[str, Any], dict[str, Any]]],
    model: type[BaseModel],
    origins: Mapping[KeyPath, str],
    prefix: KeyPath,
) -> ConfigError:
    """One :class:`ConfigError` for pydantic errors, each given with the data it was raised on."""
    problems: list[str] = []
    hints: list[str] = []
    for err, data in errors:
        loc = tuple(err["loc"])
        walked, value = _walk(data, loc)
        if err["type"] == "missing":
            walked = loc[: len(walked) + 1]
        path = tuple(str(part) for part in walked)
        dotted = ".".join((*prefix, *path))
        source = _describe_source(_source_of(origins, (*prefix, *path)))
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, path[:-1])
            known = sorted(parent.model_fields) if parent is not None else []
            close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.5)
            where = ".".join((*prefix, *path[:-1]))
            problems.append(f"unknown key {dotted} (from {source})")
            if close:
                hints.append(f"did you mean {'.'.join((*prefix, *path[:-1], close[0]))}?")
            elif known:
                hints.append(f"known keys of {where}: {', '.join(known)}")
        elif err["type"] == "missing":
            problems.append(f"missing key {dotted}: it has no default and must be set")
        else:
            shown = MASK if _is_secret_field(model, path) else repr(value)
            problems.append(f"bad value for {dotted}: {shown} (from {source}); expected {_expected(err['msg'])}")
    if len(problems) == 1:
        message = problems[0]
    else:
        message = "invalid settings:\n" + "\n".join(f"  - {p}" for p in problems)
    if not hints:
        hints.append("`tmrl config show` lists every key, its value and where it came from")
    return ConfigError(message, hint="; ".join(dict.fromkeys(hints)))


def _validate_model(
    model: type[M],
    data: dict[str, Any],
    origins: Mapping[KeyPath, str],
    strings: Mapping[KeyPath, str],
    *,
    prefix: KeyPath = (),
) -> M:
    """``model.model_validate(data)``, retrying typed-as-text values as plain text, errors as :class:`ConfigError`.

    A value typed as text (``--set run.name=123``) is first read as JSON (123); if the field refuses that, it gets
    the text itself ("123"). If both fail, the error reported is the one about the JSON reading.
    """
    original = copy.deepcopy(data)
    data = copy.deepcopy(data)
    first_errors: dict[KeyPath, dict[str, Any]] = {}
    as_text: set[KeyPath] = set()
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
        retry = False
        for err in errors:
            walked, _ = _walk(data, tuple(err["loc"]))
            full = (*prefix, *(str(part) for part in walked))
            for path, text in strings.items():
                if path[: len(prefix)] != prefix or path in as_text:
                    continue
                if full[: len(path)] == path or path[: len(full)] == full:
                    node = data
                    for key in path[len(prefix) : -1]:
                        node = node[key]
                    node[path[-1]] = text
                    as_text.add(path)
                    first_errors[path] = err
                    retry = True
        if retry:
            continue
        reported: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for err in errors:
            walked, _ = _walk(data, tuple(err["loc"]))
            full = (*prefix, *(str(part) for part in walked))
            retried = next((p for p in as_text if full[: len(p)] == p), None)
            if retried is not None:
                reported.append((first_errors[retried], original))
            else:
                reported.append((err, data))
        raise _config_error(reported, model, origins, prefix)


def _check_sections(data: dict[str, Any], origins: Mapping[KeyPath, str], plugin_sections: Iterable[str]) -> None:
    plugin_sections = set(plugin_sections)
    known = [*CORE_SECTIONS, *sorted(plugin_sections - set(CORE_SECTIONS))]
    for key, value in data.items():
        source = _describe_source(_source_of(origins, (key,)))
        if key in CORE_SECTIONS or key in plugin_sections:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"bad value for {key}: {value!r} (from {source}); expected an object of keys and values",
                    hint=f"set one key at a time, e.g. --set {key}.KEY=VALUE",
                )
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else (
                "a plugin's section is accepted when the plugin that owns it is installed and enabled (`tmrl plugins`)"
            )
        )
        raise ConfigError(
            f"unknown settings section {key} (from {source}); known sections: {', '.join(known)}",
            hint=hint,
        )


def _known_plugin_sections(manager: PluginManager | None) -> set[str]:
    if manager is None:
        from tmrl_core.plugins import get_plugin_manager

        manager = get_plugin_manager()
    return set(manager.settings_sections())


def load_settings(
    *,
    overrides: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    manager: PluginManager | None = None,
    read_file: bool = True,
    defaults: Mapping[str, Any] | None = None,
    defaults_source: str = "component defaults",
) -> Settings:
    """The effective settings: defaults < config file < ``TMRL_*`` environment variables < command line.

    Args:
        overrides: values from typed command-line options, as a nested dict (``{"training": {"epochs": 5}}``);
            ``None`` values mean "option not given" and are skipped. They win over ``sets``.
        sets: ``"section.key=value"`` items of ``--set``; the value is read as JSON when it parses, else as text.
        config_path: the config file (default: ``<data folder>/config/config.json``; a missing file is fine).
        environ: the environment (default: ``os.environ``); ``TMRL_HOME``, ``TMRL_DEBUG`` and the plugin switches
            are not settings.
        manager: the plugin manager whose components' sections are accepted (default: the process-wide one).
        read_file: False ignores the config file.
        defaults: values that replace the built-in defaults but lose to every other source, as a nested dict (e.g.
            an environment's ``EnvSpec.default_settings``); shown as coming from ``defaults_source``.

    Raises:
        ConfigError: a bad value, an unknown key or section, or an unreadable, old or newer config file. The message
            names the key, the value, what was expected and where the value came from.
    """
    path = Path(config_path) if config_path is not None else paths.config_file()
    base = _Layer()
    for leaf, value in _leaves(dict(defaults or {})):
        base.put(leaf, value, defaults_source)
    layers = [
        base,
        _file_layer(path) if read_file else _Layer(),
        _env_layer(os.environ if environ is None else environ),
        _cli_layer(overrides, sets),
    ]
    data: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    strings: dict[KeyPath, str] = {}
    for layer in layers:
        for leaf, value in _leaves(layer.data):
            _assign(data, origins, strings, leaf, value, layer.origins[leaf])
        strings.update(layer.strings)

    extra = {key: value for key, value in data.items() if key not in CORE_SECTIONS}
    _check_sections(data, origins, _known_plugin_sections(manager) if extra else ())
    settings = _validate_model(Settings, data, origins, strings)
    settings._origins = origins
    settings._strings = strings
    return settings


# -- provenance -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingOrigin:
    """One leaf setting: its dotted key, its effective value, where it came from, and whether it is a secret."""

    key: str
    value: Any
    source: str
    secret: bool = False

    def shown_value(self) -> Any:
        """The value as printed: secrets masked as ``****``, paths as text."""
        if self.secret and self.value is not None:
            return MASK
        return _jsonable(self.value, reveal_secrets=False)


def _model_leaves(instance: BaseModel, path: KeyPath) -> Iterator[tuple[KeyPath, Any, bool]]:
    for name, info in type(instance).model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            yield from _model_leaves(value, (*path, name))
            continue
        annotation = info.annotation
        secret = any(t in (SecretStr, SecretBytes) for t in (annotation, *get_args(annotation)))
        yield (*path, name), value, secret
    for name, value in (instance.model_extra or {}).items():
        for leaf, sub in _leaves(value, (*path, name)):
            yield leaf, sub, _is_secret_name(leaf)


def settings_provenance(
    settings: Settings, *, models: Mapping[str, type[BaseModel]] | None = None
) -> list[SettingOrigin]:
    """Every leaf setting with its effective value and where it came from.

    Core sections are listed in full (defaults included). A plugin section is listed in full when its model is in
    ``models`` (validated with :meth:`Settings.section`, which may raise :class:`ConfigError`), else as it was given.
    """
    entries: list[SettingOrigin] = []
    for name in CORE_SECTIONS:
        for path, value, secret in _model_leaves(getattr(settings, name), (name,)):
            entries.append(SettingOrigin(".".join(path), value, _source_of(settings._origins, path), secret))
    raw = settings.plugin_sections()
    for name in sorted(set(raw) | set(models or {})):
        model = (models or {}).get(name)
        if model is not None:
            validated = settings.section(name, model)
            assert validated is not None
            leaves: Iterable[tuple[KeyPath, Any, bool]] = _model_leaves(validated, (name,))
        else:
            leaves = ((path, value, _is_secret_name(path)) for path, value in _leaves(raw[name], (name,)))
        for path, value, secret in leaves:
            entries.append(SettingOrigin(".".join(path), value, _source_of(settings._origins, path), secret))
    return entries


def plugin_settings_models(
    manager: PluginManager | None = None, *, sections: Iterable[str] | None = None
) -> tuple[dict[str, type[BaseModel]], list[str]]:
    """The settings model of every plugin section (or of ``sections``) whose model imports, and a message for each
    one that does not.

    This imports the plugins' settings modules (which may import heavy code, even torch); listing plugins does not.
    """
    if manager is None:
        from tmrl_core.plugins import get_plugin_manager

        manager = get_plugin_manager()
    wanted = None if sections is None else set(sections)
    models: dict[str, type[BaseModel]] = {}
    problems: list[str] = []
    for section, specs in sorted(manager.settings_sections().items()):
        if wanted is not None and section not in wanted:
            continue
        for spec in specs:
            try:
                model = spec.load_settings_model()
            except Exception as exc:  # noqa: BLE001 - one plugin's broken model must not hide the others
                error = exc.message if isinstance(exc, TmrlError) else f"{type(exc).__name__}: {exc}"
                problems.append(f"section {section} ({spec.kind} {spec.name!r} of plugin {spec.plugin!r}): {error}")
                continue
            if isinstance(model, type) and issubclass(model, BaseModel):
                models.setdefault(section, model)
                break
            problems.append(
                f"section {section} ({spec.kind} {spec.name!r} of plugin {spec.plugin!r}): "
                f"{model!r} is not a pydantic model"
            )
    return models, problems


# -- the config file ------------------------------------------------------------------------------------------------


def default_config(*, models: Mapping[str, type[BaseModel]] | None = None) -> dict[str, Any]:
    """The content of a default config file: the version, every core section, and the sections in ``models``."""
    data: dict[str, Any] = {"version": CONFIG_VERSION}
    defaults = Settings().dump(reveal_secrets=True)
    for name in CORE_SECTIONS:
        data[name] = defaults[name]
    for name, model in sorted((models or {}).items()):
        data[name] = _jsonable(model(), reveal_secrets=True)
    return data


def write_config_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a crash leaves the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def backup_path(path: Path) -> Path:
    """A free name beside ``path`` for its backup: ``config.json.bak``, then ``config.json.bak1``, ..."""
    candidate = path.with_name(path.name + ".bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak{n}")
        n += 1
    return candidate
