"""Errors a user can cause, rendered by the CLI as one message with a hint (no traceback)."""

from __future__ import annotations

__all__ = [
    "TmrlError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "PluginError",
    "ActionShapeError",
    "MissingExtraError",
    "ConfigError",
    "CheckpointError",
    "DamagedStateError",
    "CodecError",
    "TransportError",
    "IncompatibleComponentsError",
    "ComponentError",
]


class TmrlError(Exception):
    """Base class of every error a user can cause and fix.

    ``hint`` says what to do about it; the CLI prints ``message`` and ``hint`` and exits non-zero.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class UnknownComponentError(TmrlError, LookupError):
    """A component name that no loaded plugin registered."""


class DuplicateComponentError(TmrlError):
    """Two plugins registered the same (kind, name)."""


class PluginError(TmrlError):
    """A plugin could not be loaded or its component could not be built."""


class ActionShapeError(PluginError):
    """An actor returned an action that does not fit the environment's action space (a plugin's bug)."""


class MissingExtraError(PluginError):
    """A feature needs an optional dependency that is not installed (the hint gives the ``pip install`` line)."""


class ConfigError(TmrlError):
    """A setting has a bad value, an unknown key, or the config file cannot be read."""


class CheckpointError(TmrlError):
    """A checkpoint or weights file is missing, corrupted, truncated or incompatible."""


class DamagedStateError(CheckpointError):
    """A state read back from a file does not fit its schema (written wrong, or edited): never trusted."""


class CodecError(TmrlError):
    """Bytes that do not decode under the wire format (never fatal for the receiver)."""


class TransportError(TmrlError):
    """A transport could not connect, authenticate, or deliver."""


class IncompatibleComponentsError(TmrlError):
    """An environment and an algorithm that cannot work together (e.g. discrete actions for SAC)."""


class ComponentError(TmrlError):
    """An exception raised inside a plugin's component (an agent's ``train()``, an env's factory or ``step()``...).

    The message names the component and the plugin it came from, so that the user knows whom to ask; the original
    exception is the ``__cause__`` (``--debug`` shows its traceback).
    """

    def __init__(self, kind: str, name: str, plugin: str, error: BaseException) -> None:
        self.kind, self.name, self.plugin, self.error = kind, name, plugin, error
        super().__init__(
            f"error in {kind} {name!r} from plugin {plugin}: {type(error).__name__}: {error}",
            hint=f"this is a problem of the plugin {plugin} (or of its settings); --debug shows the traceback",
        )
