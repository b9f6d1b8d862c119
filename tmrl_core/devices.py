"""Torch devices named in the settings (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``).

The settings check a device's name; whether it exists needs torch, which is imported only here and only when a
device has to be resolved or checked, so that reading the settings stays light.
"""

from __future__ import annotations

from tmrl_core.errors import ConfigError


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def check_device(key: str, device: str, source: str) -> None:
    """Refuse a device this machine does not have, naming the setting ``key`` and where its value came from.

    Raises:
        ConfigError: ``cuda`` or ``cuda:N`` without CUDA, ``cuda:N`` beyond the GPUs present, ``mps`` without MPS.
    """
    if device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key} is {device!r} (from {source}), but CUDA is not available on this machine",
                hint=f"set {key}=cpu (or auto: CUDA when there is one), or install a CUDA build of torch",
            )
        index = int(device.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            present = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ConfigError(
                f"{key} is {device!r} (from {source}), but this machine has {count} CUDA device"
                f"{'' if count == 1 else 's'}: {present}",
                hint=f"set {key} to one of them, or to auto",
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"{key} is 'mps' (from {source}), but MPS is not available on this machine",
            hint=f"set {key}=cpu or auto",
        )
