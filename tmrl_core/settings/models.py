"""The settings models: one pydantic section per concern, and :class:`Settings` that holds them all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tmrl_core.errors import ConfigError
from tmrl_core.settings.provenance import DEFAULT_SOURCE, ENV_DELIMITER, ENV_PREFIX
from tmrl_core.settings.tree import KeyPath, jsonable
from tmrl_core.settings.validation import M, validate_model

#: Version of the config file layout written by ``tmrl config init`` (the file's ``"version"`` key).
CONFIG_VERSION = 1

#: A torch device as the settings name it; whether it exists on this machine is checked before a run starts
#: (:func:`tmrl_core.devices.check_device`), since that needs torch.
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def _device_name(value: str) -> str:
    if not _DEVICE.fullmatch(value.strip()):
        raise ValueError("a device name: auto, cpu, cuda, cuda:N (N a GPU index) or mps")
    return value.strip()


Device = Annotated[str, AfterValidator(_device_name)]


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: Run names become file names (checkpoint, weights, the run's folder): no path separators, no leading dot.
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
RUN_NAME_MAX_LENGTH = 100


class RunSettings(Section):
    """What identifies a run."""

    name: str = Field(
        "default",
        description="Run name: names the checkpoint, weights and metrics files; letters, digits, '.', '_' and '-', "
        "starting with a letter or digit (RUN_NAME; `tmrl run` defaults it to <env>-<algo>).",
    )
    reset_training: bool = Field(
        False, description="Start training from scratch even if a checkpoint exists for this run (RESET_TRAINING)."
    )
    # numpy's global generator takes seeds below 2**32; a negative seed is refused by numpy and gymnasium alike.
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Seed for numpy, torch and the environments (None: random)."
    )
    shutdown_grace: float = Field(
        90.0,
        gt=0,
        description="Seconds a server or worker may take to close after Ctrl-C or SIGTERM; one still running then is "
        "stuck: it prints every thread's stack and exits with status 1.",
    )

    @field_validator("name")
    @classmethod
    def _valid_run_name(cls, name: str) -> str:
        if not re.fullmatch(RUN_NAME_PATTERN, name) or len(name) > RUN_NAME_MAX_LENGTH:
            raise ValueError(
                f"a run name of 1 to {RUN_NAME_MAX_LENGTH} letters, digits, '.', '_' or '-', starting with a letter "
                f"or a digit (it names files and folders)"
            )
        return name


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
        100_000,
        ge=1,
        description="Samples a client holds: a worker's unsent ones (the oldest are dropped beyond), the trainer's "
        "received ones not yet in memory (it stops reading beyond).",
    )
    queue_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Bytes of samples each hop (server, trainer) holds for the trainer; beyond, senders wait.",
    )


class WorkerSettings(Section):
    """RolloutWorker settings."""

    count: int = Field(1, ge=1, description="Number of worker processes started by `tmrl run` (--workers).")
    device: Device = Field("cpu", description="Device for inference: cpu, cuda, cuda:N, mps or auto (CUDA_INFERENCE).")
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

    @model_validator(mode="after")
    def _episode_fits_in_buffer(self) -> WorkerSettings:
        # A worker sends whole episodes: a buffer shorter than one would drop the oldest samples of every episode.
        needed = self.max_samples_per_episode + 1  # the reset sample, then one per step
        if self.buffers_maxlen < needed:
            raise ValueError(
                f"worker.buffers_maxlen ({self.buffers_maxlen}) must hold a whole episode: at least "
                f"worker.max_samples_per_episode + 1 = {needed} samples (the reset sample and one per step)"
            )
        return self


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
    random_steps: int | None = Field(
        None,
        ge=0,
        description="Warm-up: the first N env steps (shared by the workers) take uniform random actions, as "
        "Stable-Baselines3's learning_starts; None: the environment's default (usually start_training).",
    )
    update_model_interval: int = Field(200, ge=1, description="Send weights every N training steps.")
    update_buffer_interval: int = Field(200, ge=1, description="Collect received samples every N training steps.")
    memory_size: int = Field(1_000_000, ge=1, description="Replay memory capacity in transitions (MEMORY_SIZE).")
    batch_size: int = Field(256, ge=1, description="Training batch size (BATCH_SIZE).")
    device: Device = Field("auto", description="Training device: auto, cpu, cuda, cuda:N, mps (CUDA_TRAINING).")
    memory: str | None = Field(None, description="Replay memory plugin; None uses the environment's default.")
    compressor: str | None = Field(None, description="Sample compressor; None uses the environment's default.")
    dataset_path: Path | None = Field(None, description="Offline dataset that seeds the replay memory at start.")
    prefetch: bool = Field(False, description="Prepare the next batch in a background thread while training.")
    threads: int = Field(
        0, ge=0, description="Torch threads of the trainer; 0 chooses from the cores and the local workers."
    )
    flush_denormal: bool = Field(
        True, description="Flush denormal floats to zero on CPU (they slow training down tens of times)."
    )
    when_behind: Literal["continue", "wait"] = Field(
        "continue",
        description="Trainer slower than max_training_steps_per_env_step: 'continue' collects at the env's pace"
        " (the ratio falls), 'wait' holds workers between episodes until training catches up.",
    )
    test_episodes: int = Field(1, ge=0, description="Test episodes run by `tmrl test`.")

    @model_validator(mode="after")
    def _batch_fits_in_memory(self) -> TrainingSettings:
        if self.batch_size > self.memory_size:
            raise ValueError(
                f"training.batch_size ({self.batch_size}) cannot exceed training.memory_size ({self.memory_size}): "
                "a batch is drawn from the replay memory"
            )
        return self


class CheckpointSettings(Section):
    """What is saved, and when."""

    enabled: bool = Field(True, description="Write a checkpoint at the end of each epoch and on Ctrl-C.")
    keep_memory: bool = Field(True, description="Include the replay memory's contents in checkpoints.")


class LoggingSettings(Section):
    """Where every round's metrics go, besides <data>/runs/<run>/metrics.jsonl (always written)."""

    loggers: list[str] = Field(
        default_factory=list,
        description='Metrics sinks (see `tmrl plugins`), e.g. ["tensorboard"]; jsonl is always on (--log NAME).',
    )


class WandbSettings(Section):
    """Weights & Biases logging (`--wandb`)."""

    enabled: bool = Field(False, description="Log metrics to wandb as well (--wandb, = --log wandb).")
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
    "logging": LoggingSettings,
    "wandb": WandbSettings,
}


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
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
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
        return validate_model(model, raw, self._origins, self._strings, prefix=(name,))

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
        return jsonable(data, reveal_secrets=reveal_secrets)
