"""Checkpoints and weights files: safetensors on disk, never pickle, always written atomically.

A *state* is a nested structure of dicts, lists and tuples whose leaves are torch tensors, numpy arrays, numpy
scalars, Python scalars, strings, bytes or None (what ``state_dict()`` methods return: models, optimisers with
their integer-keyed ``state``, memories, RNG states). :func:`save_state` writes it as one safetensors file: every
tensor and array becomes a safetensors tensor, and the structure around them is a JSON "skeleton" in the file's
metadata, next to a digest of the whole content (the metadata and every tensor's bytes) so that corruption or an
edit anywhere is detected on load.

Writing is atomic (:func:`tmrl_core.files.atomic_write`): a temporary file in the same folder, flushed and fsynced,
then ``os.replace``: a crash leaves either the old file or the new one, never half of one. A file that does not load
raises
:class:`~tmrl_core.errors.CheckpointError` with a clear message; nothing here overwrites or deletes it
(:func:`quarantine` moves it aside when the user asks for a fresh start).

Actor weights files (:func:`save_weights` / :func:`load_weights`) are plain safetensors files of a ``state_dict``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmrl_core.errors import CheckpointError
from tmrl_core.files import atomic_write

log = logging.getLogger("tmrl.checkpoint")

__all__ = [
    "atomic_write",  # kept importable from here: it was defined here before tmrl_core.files
    "auto_load_state_dict",
    "auto_state_dict",
    "damaged",
    "load_state",
    "load_state_into",
    "load_weights",
    "quarantine",
    "rng_state",
    "save_state",
    "save_weights",
    "set_rng_state",
    "state_of",
]

FORMAT = "tmrl-state"
#: 2: the digest covers the metadata too (version 1 files, whose digest covered the tensors only, are refused)
FORMAT_VERSION = 2
#: skeletons nested deeper than this are refused (states nest a few levels; this bounds the recursion on load)
MAX_SKELETON_DEPTH = 64


# -- files ---------------------------------------------------------------------------------------------------------


def quarantine(path: str | os.PathLike[str], reason: str = "corrupt") -> Path:
    """Move ``path`` aside as ``<name>.<reason>-<timestamp>`` (never deleted); return the new path."""
    path = Path(path)
    target = path.with_name(f"{path.name}.{reason}-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{reason}-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    os.replace(path, target)
    return target


# -- nested state <-> (skeleton, tensors) ----------------------------------------------------------------------------

_MARK = "$"  # keys of the skeleton's special objects start with this


class _Flattener:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[tuple[int, int]] = set()

    def _store(self, tensor: torch.Tensor, where: str) -> str:
        key = where or "value"
        if key in self.tensors:
            n = 1
            while f"{key}#{n}" in self.tensors:
                n += 1
            key = f"{key}#{n}"
        tensor = tensor.detach().cpu().contiguous()
        # safetensors refuses tensors sharing memory (views, tied weights): each gets its own copy
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and ident in self._storages:
            tensor = tensor.clone()
        self._storages.add((tensor.untyped_storage().data_ptr(), tensor.storage_offset()))
        self.tensors[key] = tensor
        return key

    def flatten(self, obj: Any, where: str) -> Any:
        if isinstance(obj, torch.Tensor):
            return {"$tensor": self._store(obj, where)}
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject or obj.dtype.kind not in "biuf":
                what = where or "the state"
                raise CheckpointError(f"cannot save {what}: arrays of dtype {obj.dtype} are not supported")
            array = np.ascontiguousarray(obj.astype(obj.dtype.newbyteorder("="), copy=False))
            return {"$ndarray": self._store(torch.from_numpy(array), where)}
        if isinstance(obj, np.generic):
            return {"$scalar": obj.dtype.str, "v": obj.item()}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, (bytes, bytearray)):
            return {"$bytes": base64.b64encode(bytes(obj)).decode()}
        if isinstance(obj, torch.Size):
            return {"$tuple": list(obj)}
        if isinstance(obj, tuple):
            return {"$tuple": [self.flatten(v, f"{where}.{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.flatten(v, f"{where}.{i}") for i, v in enumerate(obj)]
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) and not k.startswith(_MARK) for k in obj):
                return {k: self.flatten(v, f"{where}.{k}" if where else k) for k, v in obj.items()}
            return {
                "$items": [
                    [self.flatten(k, f"{where}.key{i}"), self.flatten(v, f"{where}.{k}")]
                    for i, (k, v) in enumerate(obj.items())
                ]
            }
        raise CheckpointError(
            f"cannot save {where or 'the state'}: objects of type {type(obj).__name__} are not supported",
            hint="state_dict() methods must return tensors, arrays and plain data",
        )


def _unflatten(node: Any, tensors: Mapping[str, torch.Tensor], depth: int) -> Any:
    if depth > MAX_SKELETON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_SKELETON_DEPTH}")
    depth += 1
    if isinstance(node, list):
        return [_unflatten(v, tensors, depth) for v in node]
    if not isinstance(node, dict):
        return node
    if "$tensor" in node:
        return tensors[node["$tensor"]]
    if "$ndarray" in node:
        return tensors[node["$ndarray"]].numpy()
    if "$scalar" in node:
        dtype = np.dtype(node["$scalar"])
        if dtype.kind not in "biuf":
            raise ValueError(f"scalar of dtype {dtype}")
        return dtype.type(node["v"])
    if "$bytes" in node:
        return base64.b64decode(node["$bytes"], validate=True)
    if "$tuple" in node:
        return tuple(_unflatten(v, tensors, depth) for v in node["$tuple"])
    if "$items" in node:
        return {_hashable(_unflatten(k, tensors, depth)): _unflatten(v, tensors, depth) for k, v in node["$items"]}
    return {k: _unflatten(v, tensors, depth) for k, v in node.items()}


def _hashable(key: Any) -> Any:
    key = tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key
    hash(key)  # a dict or an array as a key: TypeError, reported as a bad structure
    return key


def _digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """A digest of the whole file's content: every metadata entry but the digest itself (the JSON skeleton with the
    counters, the kind, the version), then every tensor's name, dtype, shape and bytes."""
    h = hashlib.blake2b(digest_size=16)
    fields = {k: v for k, v in metadata.items() if k != "digest"}
    h.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            h.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# -- public API --------------------------------------------------------------------------------------------------


def save_state(
    path: str | os.PathLike[str], state: Mapping[str, Any], *, kind: str = "checkpoint", fsync: bool = True
) -> Path:
    """Write ``state`` (see the module docstring) to ``path`` atomically, as safetensors + a JSON skeleton."""
    import safetensors.torch

    flat = _Flattener()
    skeleton = flat.flatten(dict(state), "")
    metadata = {
        "format": FORMAT,
        "version": str(FORMAT_VERSION),
        "kind": kind,
        "skeleton": json.dumps(skeleton, separators=(",", ":")),
    }

    def write(tensors: dict[str, torch.Tensor]) -> Path:
        metadata["digest"] = _digest(tensors, metadata)
        return atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata), fsync=fsync)

    written = write(flat.tensors)
    if _digest(flat.tensors, metadata) == metadata["digest"]:
        return written
    # Some tensor changed while it was hashed and written (another thread writes into a live buffer of the state):
    # the file's digest would not match its contents and it could never be loaded. Write a private copy instead.
    log.warning("%s %s: its state changed while it was written; writing a copy of it", kind, written)
    return write({name: tensor.clone() for name, tensor in flat.tensors.items()})


def load_state(path: str | os.PathLike[str], *, kind: str = "checkpoint") -> dict[str, Any]:
    """Read a file written by :func:`save_state`.

    Raises:
        CheckpointError: the file is missing, truncated, corrupted, of another kind, or of an unknown version.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {kind} file at {path}")
    what = f"{kind} {path}"
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{what} is not a tmrl {kind} file")
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # safe_open is not a dict
    except CheckpointError:
        raise
    except BaseException as exc:  # safetensors' Rust panics derive from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise damaged(what, f"{type(exc).__name__}: {exc}") from None
    if metadata.get("version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{what} has format version {metadata.get('version')}, this tmrl-core reads version {FORMAT_VERSION}",
            hint="use the tmrl-core version that wrote it, or start the run afresh (--reset)",
        )
    if _digest(tensors, metadata) != metadata.get("digest"):
        raise damaged(what, "its contents do not match their digest")
    if metadata.get("kind") != kind:
        raise CheckpointError(f"{what} holds a {metadata.get('kind')!r}, not a {kind!r}")
    try:
        skeleton = json.loads(metadata["skeleton"])
        return _unflatten(skeleton, tensors, 0)
    except RecursionError:
        raise damaged(what, "bad structure: nested too deeply") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise damaged(what, f"bad structure: {type(exc).__name__}: {exc}") from None


def damaged(what: str, detail: str) -> CheckpointError:
    """The one error for a file that cannot be trusted, whatever is wrong with it (``what``: which file)."""
    return CheckpointError(
        f"{what} is damaged: corrupted, truncated or edited ({detail})",
        hint="it was left untouched: move it away, or pass --reset to keep it aside and start afresh",
    )


def save_weights(path: str | os.PathLike[str], state_dict: Mapping[str, Any], *, fsync: bool = False) -> Path:
    """Write an actor's ``state_dict`` as a plain safetensors file, atomically."""
    import safetensors.torch

    flat = _Flattener()
    for name, value in state_dict.items():
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise CheckpointError(f"weights {name!r} is a {type(value).__name__}, not a tensor")
        flat.flatten(value, name)
    tensors = flat.tensors
    metadata = {"format": "tmrl-weights", "version": str(FORMAT_VERSION)}
    return atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata), fsync=fsync)


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file written by :func:`save_weights` (any safetensors file of tensors works)."""
    import safetensors.torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}", hint="train first (tmrl run), or check --run-name")
    try:
        return dict(safetensors.torch.load_file(str(path)))
    except BaseException as exc:  # safetensors' Rust panics derive from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise damaged(f"weights file {path}", f"{type(exc).__name__}: {exc}") from None


# -- RNG states ----------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global RNG states of Python, numpy and torch (as plain data and arrays)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])


# -- state of objects without their own state_dict (e.g. the seed tutorial's agent) -------------------------------


def auto_state_dict(obj: Any) -> dict[str, Any]:
    """The state of ``obj``'s modules, optimisers, tensors and plain attributes (for agents without ``state_dict``)."""
    state: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if isinstance(value, (torch.nn.Module, torch.optim.Optimizer)):
            state[name] = value.state_dict()
        elif isinstance(value, torch.Tensor):
            state[name] = value
        elif isinstance(value, (bool, int, float, str)) or value is None:
            state[name] = value
    return state


def auto_load_state_dict(obj: Any, state: Mapping[str, Any]) -> None:
    """Restore what :func:`auto_state_dict` returned (tensors are copied in place, keeping optimiser references)."""
    for name, saved in state.items():
        current = getattr(obj, name, None)
        if isinstance(current, (torch.nn.Module, torch.optim.Optimizer)):
            current.load_state_dict(saved)
        elif isinstance(current, torch.Tensor) and isinstance(saved, torch.Tensor):
            with torch.no_grad():
                current.copy_(saved)
        elif not isinstance(current, torch.Tensor):
            setattr(obj, name, saved)


def state_of(obj: Any) -> dict[str, Any]:
    """``obj.state_dict()``, or, when it raises ``NotImplementedError``, :func:`auto_state_dict` marked as such."""
    try:
        return obj.state_dict()
    except NotImplementedError:
        return {"__auto__": auto_state_dict(obj)}


def load_state_into(obj: Any, state: Mapping[str, Any]) -> None:
    """Restore what :func:`state_of` returned."""
    if "__auto__" in state:
        auto_load_state_dict(obj, state["__auto__"])
    else:
        obj.load_state_dict(state)
