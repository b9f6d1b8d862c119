"""Small helpers users of the original tmrl know: ``partial`` and ``prod``."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")


def partial(func: Callable[..., T], *args: Any, **kwargs: Any) -> functools.partial[T]:
    """Partially initialise a class or function: ``partial(MyMemory, batch_size=64)(device="cpu")``.

    Unlike a bare lambda, the result keeps its target and keyword arguments inspectable (``.func``, ``.keywords``).
    """
    return functools.partial(func, *args, **kwargs)


def prod(iterable: Iterable[int | float]) -> int | float:
    """The product of the elements (1 for an empty iterable)."""
    return math.prod(iterable)
