"""Sample compressors (worker side) and CRC debugging of rebuilt transitions (both sides).

Compressors
-----------
A compressor factory is called as ``factory(observation_space=..., action_space=..., **component_options)`` and
returns ``f(act, obs, rew, terminated, truncated, info) -> compressed sample``. The built-ins:

- :func:`no_compression`: samples travel as they are.
- :func:`action_buffer_compressor`: for rtgym environments whose observation ends with an action buffer of
  ``act_buf_len`` actions: each action travels once (it is already the sample's ``act``).
- :func:`history_compressor`: the same, plus histories (e.g. the last K frames, oldest first along axis 0) at the
  top-level observation positions ``history_index``: each frame travels once.

Both history compressors are **stateful per worker**: they must see every sample of an episode, in order, starting
with the reset sample. The first sample a compressor sees, and every sample that follows a terminated or truncated
one, is taken as a reset sample (call :meth:`HistoryCompressor.start_episode` before the reset sample of an episode
whose previous one was abandoned without a terminated/truncated sample). See ``docs/memory.md`` for the format.

CRC debug
---------
With ``crc_debug=True`` the worker records the full, uncompressed transition in the info dict of every sample
(:class:`CrcRecorder`, or :func:`attach_crc`) *before* compressing it; the memory rebuilds transitions and
:func:`check_transition_crc` compares them with that record, raising :class:`CrcError` with a report on the first
difference. This module imports numpy only (no torch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tmrl_core.errors import ConfigError, TmrlError

if TYPE_CHECKING:
    import gymnasium

logger = logging.getLogger(__name__)

#: Key of the CRC record in a sample's info dict.
CRC_KEY = "tmrl_crc"
#: Version of the compressed-observation format of :class:`HistoryCompressor` (the ``"v"`` entry).
HISTORY_FORMAT_VERSION = 1


#: a sample as the worker records it: ``(act, obs, rew, terminated, truncated, info)``
Sample = tuple[Any, Any, float, bool, bool, dict[str, Any]]
#: the sample compressor signature: ``f(act, obs, rew, terminated, truncated, info) -> compressed sample``
SampleCompressor = Callable[[Any, Any, float, bool, bool, dict[str, Any]], Sample]


def no_compression(**_: object) -> SampleCompressor:
    """The identity compressor: samples travel as they are."""

    def compress(act: Any, obs: Any, rew: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> Sample:
        return act, obs, rew, terminated, truncated, info

    return compress


# ---------------------------------------------------------------------------------------------------------------------
# Histories in observations
# ---------------------------------------------------------------------------------------------------------------------


def history_indices(history_index: int | Sequence[int] | None) -> tuple[int, ...]:
    """``history_index`` option (None, one index or several) as a sorted tuple of top-level indices."""
    if history_index is None:
        return ()
    if isinstance(history_index, (int, np.integer)):
        return (int(history_index),)
    return tuple(sorted(int(i) for i in history_index))


class HistoryLayout:
    """Where the histories are in a top-level observation tuple.

    Args:
        act_buf_len: the observation ends with this many actions (rtgym's action buffer, oldest first).
        history_index: top-level indices of history arrays (newest entry last along axis 0); negative indices count
            from the end of the observation *without* its action buffer.
    """

    def __init__(self, act_buf_len: int = 0, history_index: int | Sequence[int] | None = None) -> None:
        if act_buf_len < 0:
            raise ConfigError(f"act_buf_len must be >= 0, got {act_buf_len}")
        self.act_buf_len = int(act_buf_len)
        self._raw_history = history_indices(history_index)

    @property
    def active(self) -> bool:
        """True when observations hold something to de-duplicate."""
        return self.act_buf_len > 0 or bool(self._raw_history)

    def resolve(self, n_elements: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(history indices, kept indices)`` for an observation tuple of ``n_elements`` top-level elements."""
        n_core = n_elements - self.act_buf_len
        if n_core < 0:
            raise ConfigError(
                f"act_buf_len={self.act_buf_len} but the observation has only {n_elements} elements",
                hint="act_buf_len must match the rtgym config of the environment (and act_in_obs must be True)",
            )
        hist = []
        for i in self._raw_history:
            j = i + n_core if i < 0 else i
            if not 0 <= j < n_core:
                raise ConfigError(
                    f"history_index {i} is outside the observation (it has {n_core} elements before the action buffer)"
                )
            hist.append(j)
        hist_t = tuple(sorted(set(hist)))
        kept = tuple(i for i in range(n_core) if i not in hist_t)
        return hist_t, kept

    def check(self, obs: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Validate one observation against the layout; returns :meth:`resolve` for it."""
        if not isinstance(obs, (tuple, list)):
            raise ConfigError(
                f"this compressor/memory expects tuple observations, got {type(obs).__name__}",
                hint="act_buf_len and history_index only apply to Tuple observation spaces",
            )
        hist, kept = self.resolve(len(obs))
        for i in hist:
            arr = np.asarray(obs[i])
            if arr.ndim < 1 or arr.shape[0] < 1:
                raise ConfigError(f"observation element {i} is not a history (shape {arr.shape})")
        return hist, kept


def _all_rows_equal_last(stack: np.ndarray) -> bool:
    return bool(np.all(stack == stack[-1]))


class HistoryCompressor:
    """Sends each history entry (frame, action of the action buffer) once; see the module docstring.

    A compressed sample is ``(act, cobs, rew, terminated, truncated, info)`` where ``cobs`` is a dict:

    - ``"v"``: format version (:data:`HISTORY_FORMAT_VERSION`);
    - ``"reset"``: True for the reset sample of an episode;
    - ``"obs"``: tuple of the top-level observation elements that are neither histories nor the action buffer;
    - ``"hist_len"``: tuple with the length K of each history;
    - ``"hist"``: tuple with one array per history element: its newest row (shape ``(1, *row)``), or at a reset
      sample the whole history (``(K, *row)``) unless every row equals the newest (the environment padded the history
      by repeating its first entry: then one row);
    - ``"act_buf"``: ``None``, except at a reset sample: the whole action buffer ``(L, *act_shape)``, or one row when
      every action in it equals the newest. After a reset, the newest action of each observation's buffer is the
      sample's ``act`` (rtgym appends the action given to ``step``), so it does not travel twice.
    """

    def __init__(self, act_buf_len: int = 0, history_index: int | Sequence[int] | None = None) -> None:
        self.layout = HistoryLayout(act_buf_len, history_index)
        self._expect_reset = True
        self._resolved: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def start_episode(self) -> None:
        """Treat the next sample as a reset sample (only needed after an episode abandoned without a done sample)."""
        self._expect_reset = True

    def compress_obs(self, act: Any, obs: Any, is_reset: bool) -> dict[str, Any]:
        """The compressed observation of one sample (also used by memories that receive raw samples)."""
        if self._resolved is None:
            self._resolved = self.layout.check(obs)
        hist, kept = self._resolved
        history = []
        for i in hist:
            stack = np.asarray(obs[i])
            if is_reset and not _all_rows_equal_last(stack):
                history.append(np.array(stack, copy=True))
            else:
                history.append(np.array(stack[-1:], copy=True))
        act_buf = None
        n = self.layout.act_buf_len
        if is_reset and n > 0:
            buf = np.stack([np.asarray(a) for a in obs[len(obs) - n :]])
            act_buf = buf if not _all_rows_equal_last(buf) else buf[-1:].copy()
        return {
            "v": HISTORY_FORMAT_VERSION,
            "reset": bool(is_reset),
            "obs": tuple(obs[i] for i in kept),
            "hist_len": tuple(int(np.shape(obs[i])[0]) for i in hist),
            "hist": tuple(history),
            "act_buf": act_buf,
        }

    def __call__(
        self, act: Any, obs: Any, rew: float, terminated: bool, truncated: bool, info: dict[str, Any]
    ) -> tuple[Any, ...]:
        cobs = self.compress_obs(act, obs, self._expect_reset)
        self._expect_reset = bool(terminated or truncated)
        return act, cobs, rew, terminated, truncated, info


def is_history_compressed(obs: object) -> bool:
    """True if ``obs`` is a compressed observation produced by :class:`HistoryCompressor`."""
    return isinstance(obs, dict) and obs.get("v") == HISTORY_FORMAT_VERSION and "hist" in obs and "reset" in obs


def action_buffer_compressor(
    observation_space: gymnasium.Space | None = None, action_space: gymnasium.Space | None = None, act_buf_len: int = 0
) -> HistoryCompressor:
    """Action-buffer removal for rtgym environments (``act_buf_len`` from the env's component options)."""
    if act_buf_len <= 0:
        raise ConfigError(
            "the action-buffer compressor needs act_buf_len > 0",
            hint="use the 'none' compressor for environments without an action buffer in the observation",
        )
    return HistoryCompressor(act_buf_len=act_buf_len)


def history_compressor(
    observation_space: gymnasium.Space | None = None,
    action_space: gymnasium.Space | None = None,
    act_buf_len: int = 0,
    history_index: int | Sequence[int] | None = None,
) -> HistoryCompressor:
    """Frame-history de-duplication (``history_index``), plus the action buffer when ``act_buf_len > 0``."""
    if not history_indices(history_index) and act_buf_len <= 0:
        raise ConfigError(
            "the history compressor needs history_index (and/or act_buf_len)",
            hint="set the env's component_options, e.g. {'history_index': 1, 'act_buf_len': 2}",
        )
    return HistoryCompressor(act_buf_len=act_buf_len, history_index=history_index)


# ---------------------------------------------------------------------------------------------------------------------
# CRC debug
# ---------------------------------------------------------------------------------------------------------------------


class CrcError(TmrlError):
    """A rebuilt transition differs from the one the worker recorded (``crc_debug``).

    Attributes:
        component: which part differs, e.g. ``"new_obs[5]"``.
        original / rebuilt: the two values of that part.
        step: the worker's time step of the transition's sample; ``since_reset``: steps since its episode's reset.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        component: str = "",
        original: Any = None,
        rebuilt: Any = None,
        step: int | None = None,
        since_reset: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.component = component
        self.original = original
        self.rebuilt = rebuilt
        self.step = step
        self.since_reset = since_reset


def _copy_value(value: Any) -> Any:
    """A deep copy of an observation/action made of arrays, scalars, tuples, lists and dicts."""
    if isinstance(value, tuple):
        return tuple(_copy_value(v) for v in value)
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.copy()
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        return value.detach().cpu().numpy().copy()
    return value


def attach_crc(
    info: dict[str, Any] | None,
    prev_obs: Any,
    act: Any,
    obs: Any,
    rew: float,
    terminated: bool,
    truncated: bool,
    *,
    step: int,
    since_reset: int,
) -> dict[str, Any]:
    """A copy of ``info`` holding the full, uncompressed transition under :data:`CRC_KEY`.

    Args:
        prev_obs: the observation the action was computed from (``None`` for a reset sample).
        act, obs, rew, terminated, truncated: the sample, before compression.
        step: the worker's time step counter; since_reset: steps since the episode's reset (0 for the reset sample).
    """
    out = dict(info) if info else {}
    out[CRC_KEY] = {
        "prev_obs": _copy_value(prev_obs),
        "act": _copy_value(act),
        "obs": _copy_value(obs),
        "rew": float(rew),
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "step": int(step),
        "since_reset": int(since_reset),
    }
    return out


class CrcRecorder:
    """Worker side of CRC debug: ``info = recorder(act, obs, rew, terminated, truncated, info)`` on every sample,
    before the compressor. Like the compressors, it takes the first sample and every sample after a terminated or
    truncated one as a reset sample (:meth:`start_episode` forces it)."""

    def __init__(self) -> None:
        self.step = 0
        self._since_reset = 0
        self._prev_obs: Any = None
        self._expect_reset = True

    def start_episode(self) -> None:
        """Treat the next sample as a reset sample."""
        self._expect_reset = True

    def __call__(
        self, act: Any, obs: Any, rew: float, terminated: bool, truncated: bool, info: dict[str, Any] | None
    ) -> dict[str, Any]:
        if self._expect_reset:
            self._since_reset = 0
            prev_obs = None
        else:
            self._since_reset += 1
            prev_obs = self._prev_obs
        out = attach_crc(
            info, prev_obs, act, obs, rew, terminated, truncated, step=self.step, since_reset=self._since_reset
        )
        self._prev_obs = out[CRC_KEY]["obs"]
        self._expect_reset = bool(terminated or truncated)
        self.step += 1
        return out

    record = __call__


def _as_numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def _first_difference(
    original: Any, rebuilt: Any, path: str, rtol: float = 0.0, atol: float = 0.0
) -> tuple[str, Any, Any] | None:
    """``(path, original, rebuilt)`` of the first leaf that differs (beyond ``atol + rtol * |original|`` for floating
    point leaves), or None."""
    rebuilt = _as_numpy(rebuilt)
    if isinstance(original, (tuple, list)):
        if not isinstance(rebuilt, (tuple, list)) or len(rebuilt) != len(original):
            return path, original, rebuilt
        for i, (o, r) in enumerate(zip(original, rebuilt, strict=True)):
            diff = _first_difference(o, r, f"{path}[{i}]", rtol, atol)
            if diff is not None:
                return diff
        return None
    if isinstance(original, dict):
        if not isinstance(rebuilt, dict) or set(rebuilt) != set(original):
            return path, original, rebuilt
        for k in original:
            diff = _first_difference(original[k], rebuilt[k], f"{path}[{k!r}]", rtol, atol)
            if diff is not None:
                return diff
        return None
    if original is None or rebuilt is None:
        return None if original is rebuilt else (path, original, rebuilt)
    a, b = np.asarray(original), np.asarray(rebuilt)
    if a.shape != b.shape:
        return path, original, rebuilt
    if bool((a == b).all()):
        return None
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        if np.array_equal(a, b, equal_nan=True):
            return None
        if (rtol or atol) and np.allclose(b, a, rtol=rtol, atol=atol, equal_nan=True):
            return None
    return path, original, rebuilt


def _render(value: object) -> tuple[str, np.ndarray | None]:
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged tuples
        return repr(value), None
    if arr.dtype == object:
        return repr(value), None
    return np.array2string(arr, threshold=200), arr


def _describe(original: object, rebuilt: object) -> str:
    text_a, a = _render(original)
    text_b, b = _render(rebuilt)
    lines = [f"original: {text_a}", f"rebuilt:  {text_b}"]
    if a is not None and b is not None:
        if a.shape != b.shape:
            lines.append(f"shapes: original {a.shape}, rebuilt {b.shape}")
        elif a.ndim >= 2:
            rows = np.flatnonzero(np.any((a != b).reshape(a.shape[0], -1), axis=1))
            lines.append(f"rows that differ along axis 0: {rows.tolist()} of {a.shape[0]}")
    return "\n".join(lines)


def check_transition_crc(
    prev_obs: Any,
    act: np.ndarray,
    rew: float,
    new_obs: Any,
    terminated: bool,
    truncated: bool,
    info: dict[str, Any] | None,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> None:
    """Compare a rebuilt transition with the worker's record in ``info``; raise :class:`CrcError` on a difference.

    Observations and actions must be equal value for value and shape for shape; the reward is compared in float32
    (memories store rewards as float32). ``rtol``/``atol`` accept floating-point values within
    ``atol + rtol * |original|`` (for lossy compressor/memory pairs, e.g. float16 storage); shapes, integers and
    the terminated/truncated flags stay exact.
    """
    record = info.get(CRC_KEY) if isinstance(info, dict) else None
    if record is None:
        raise CrcError(
            "CRC check impossible: the sample's info holds no CRC record",
            hint="set crc_debug=True on the worker as well as on the memory",
        )
    step, since = record.get("step"), record.get("since_reset")
    where = f"time step: {step}, since reset: {since}"
    if record.get("prev_obs") is None:
        raise CrcError(
            f"CRC check failed: the memory returned a transition into a reset sample ({where})",
            hint="a memory must never sample the reset sample of an episode as the end of a transition",
            component="prev_obs",
            step=step,
            since_reset=since,
        )
    parts = (
        ("prev_obs", record["prev_obs"], prev_obs),
        ("act", record["act"], act),
        ("rew", np.float32(record["rew"]), np.float32(_as_numpy(rew))),
        ("new_obs", record["obs"], new_obs),
        ("terminated", bool(record["terminated"]), bool(_as_numpy(terminated))),
        ("truncated", bool(record["truncated"]), bool(_as_numpy(truncated))),
    )
    for name, original, rebuilt in parts:
        diff = _first_difference(original, rebuilt, name, rtol, atol)
        if diff is not None:
            component, o, r = diff
            raise CrcError(
                f"CRC check failed: {component} differs ({where})\n{_describe(o, r)}",
                hint="the memory does not rebuild what the worker sent: check the compressor/memory pair (for rtgym "
                "environments, the last action of an episode is never applied and the default action follows a reset)",
                component=component,
                original=o,
                rebuilt=r,
                step=step,
                since_reset=since,
            )
    logger.debug("CRC check passed. Time step: %s, since reset: %s", step, since)
