"""Small helpers users of the original tmrl know: ``partial``, ``prod``, ``cached_property``, and for models
``no_grad`` and ``copy_shared`` (torch is not imported by this module)."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any, TypeVar

T = TypeVar("T")


def partial(func: Callable[..., T], *args: Any, **kwargs: Any) -> functools.partial[T]:
    """Partially initialise a class or function: ``partial(MyMemory, batch_size=64)(device="cpu")``.

    Unlike a bare lambda, the result keeps its target and keyword arguments inspectable (``.func``, ``.keywords``).
    """
    return functools.partial(func, *args, **kwargs)


def prod(iterable: Iterable[int | float]) -> int | float:
    """The product of the elements (1 for an empty iterable)."""
    return math.prod(iterable)


def no_grad(model: T) -> T:
    """Turn off gradients for every parameter of a ``torch.nn.Module``; returns the module (e.g. target networks)."""
    for p in model.parameters():  # type: ignore[attr-defined]
        p.requires_grad = False
    return model


def copy_shared(model: T) -> T:
    """A copy of a ``torch.nn.Module`` whose parameters and buffers share their storage with the original: it sees
    every update of ``model``, but it can be given different ``requires_grad`` flags (see :func:`no_grad`)."""
    other = copy.deepcopy(model)
    originals = model.state_dict(keep_vars=True)  # type: ignore[attr-defined]
    for name, tensor in other.state_dict(keep_vars=True).items():  # type: ignore[attr-defined]
        tensor.data = originals[name].data
    return other


__all__ = ["cached_property", "copy_shared", "no_grad", "partial", "prod"]
