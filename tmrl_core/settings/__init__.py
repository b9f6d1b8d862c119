"""Settings: pydantic models, one section per concern, loaded with this precedence (lowest first):

defaults < the config file in the data folder < ``TMRL_*`` environment variables (nested with ``__``) < command-line
options (typed options, and the generic ``--set section.key=value``).

Plugins contribute their own sections: a component spec names a pydantic model (``settings=``) and its section is
kept raw until the component is chosen, then validated by :meth:`Settings.section`. A top-level key that is neither
a core section nor the section of an installed component is an error.

Every error names the dotted key, the bad value, what was expected and where the value came from (the config file,
the environment variable, ``--set`` or a command-line option), and suggests the closest known key.
:func:`settings_provenance` tells, for every key, its effective value and its source (``tmrl config show``).

The package is split by job: :mod:`~tmrl_core.settings.models` (the sections), :mod:`~tmrl_core.settings.sources`
(the layers and :func:`load_settings`), :mod:`~tmrl_core.settings.validation` (error messages),
:mod:`~tmrl_core.settings.provenance` (where values came from), :mod:`~tmrl_core.settings.files` (the config file)
and :mod:`~tmrl_core.settings.tree` (nested data). Everything public is importable from ``tmrl_core.settings``.

Every key of the original tmrl ``config.json`` has a home here; :mod:`tmrl_core.config_migration` converts an old
file (see ``docs/settings.md`` for the mapping).
"""

from __future__ import annotations

from tmrl_core.settings.files import (
    ORIGINAL_TOP_LEVEL_KEYS,
    backup_path,
    default_config,
    is_original_config,
    keys_without_default,
    read_config_file,
    write_config_file,
)
from tmrl_core.settings.models import (
    CONFIG_VERSION,
    CORE_SECTIONS,
    RUN_NAME_MAX_LENGTH,
    RUN_NAME_PATTERN,
    CheckpointSettings,
    LoggingSettings,
    RunSettings,
    Section,
    ServerSettings,
    Settings,
    TrainingSettings,
    WandbSettings,
    WorkerSettings,
)
from tmrl_core.settings.provenance import (
    CLI_SOURCE,
    DEFAULT_SOURCE,
    ENV_DELIMITER,
    ENV_PREFIX,
    SET_SOURCE,
    SettingOrigin,
    settings_provenance,
)
from tmrl_core.settings.rtgym import (
    ActBufLen,
    Benchmark,
    EpMaxLength,
    RtgymTiming,
    StartObsCapture,
    TimeStepDuration,
    TimeStepTimeoutFactor,
    WaitOnDone,
)
from tmrl_core.settings.sources import RESERVED_ENV_VARS, load_settings, plugin_settings_models, settings_or_load
from tmrl_core.settings.tree import MASK, KeyPath, is_secret_name, jsonable
from tmrl_core.settings.validation import SectionValues, coerce_section, validate_model

# The names below were private helpers of the single-module settings; tests and the CLI imported them.
_jsonable = jsonable
_is_secret_name = is_secret_name
_validate_model = validate_model

__all__ = [
    "ActBufLen",
    "Benchmark",
    "EpMaxLength",
    "StartObsCapture",
    "TimeStepDuration",
    "TimeStepTimeoutFactor",
    "WaitOnDone",
    "CLI_SOURCE",
    "CONFIG_VERSION",
    "CORE_SECTIONS",
    "DEFAULT_SOURCE",
    "ENV_DELIMITER",
    "ENV_PREFIX",
    "MASK",
    "ORIGINAL_TOP_LEVEL_KEYS",
    "RESERVED_ENV_VARS",
    "RUN_NAME_MAX_LENGTH",
    "RUN_NAME_PATTERN",
    "SET_SOURCE",
    "CheckpointSettings",
    "LoggingSettings",
    "KeyPath",
    "RtgymTiming",
    "RunSettings",
    "Section",
    "SectionValues",
    "ServerSettings",
    "SettingOrigin",
    "Settings",
    "TrainingSettings",
    "WandbSettings",
    "WorkerSettings",
    "backup_path",
    "coerce_section",
    "default_config",
    "is_original_config",
    "is_secret_name",
    "jsonable",
    "keys_without_default",
    "load_settings",
    "plugin_settings_models",
    "read_config_file",
    "settings_or_load",
    "settings_provenance",
    "validate_model",
    "write_config_file",
]
