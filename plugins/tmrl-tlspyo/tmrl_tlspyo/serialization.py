"""tlspyo's serializer and deserializer: the core codec, never pickle.

tlspyo calls them on everything it sends: its own envelopes ``(stamp, cmd, dest, obj)``, acknowledgements, local
commands between an Endpoint and its network process, and the objects the transport sends (samples chunks, signed
weights, heartbeats). All are tuples of ints, strings, bytes, None and small dicts, which the codec carries.
"""

from __future__ import annotations

from typing import Any

from tmrl_core import codec


def serialize(obj: Any) -> bytes:
    """tlspyo's serializer: :func:`tmrl_core.codec.encode`."""
    return codec.encode(obj)


class Deserializer:
    """tlspyo's deserializer: :func:`tmrl_core.codec.decode` with a size limit (picklable, for tlspyo's processes).

    Raises:
        CodecError: for anything that is not a well-formed codec message of at most ``max_bytes`` bytes.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __call__(self, data: bytes) -> Any:
        return codec.decode(data, max_bytes=self.max_bytes)
