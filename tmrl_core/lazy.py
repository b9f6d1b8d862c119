"""Names a package imports on first use (PEP 562), so that importing the package stays cheap (no torch).

``tmrl_core``, ``tmrl_core.testing`` and plugin packages (``tmrl_sac``) list their public names with the module that
defines each one, and get their ``__getattr__`` and ``__dir__`` from :func:`lazy_exports`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str], namespace: dict[str, Any], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps each lazily imported name to the module that
    defines it; a name is imported on first access, then kept in ``namespace`` (the package's ``globals()``).
    ``public`` is what ``dir()`` shows (the package's ``__all__``).

    A name whose module is missing (an older or partial install) is an ``AttributeError`` that says which module.
    """
    listed = sorted(public)

    def __getattr__(name: str) -> Any:
        module_name = names.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise AttributeError(f"{package}.{name} is not available: its module {module_name} is missing") from exc
        value = getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__
