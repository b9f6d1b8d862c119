"""Throughput of the wire format against pickle, for the buffers a worker sends.

Two buffers of 1000 samples ``(act, obs, rew, terminated, truncated, info)``: (a) flat float32 observations,
(b) 4x64x64 uint8 image histories. For each: encode + decode throughput (MB/s of encoded message) of
``tmrl_core.codec`` and of ``pickle`` (highest protocol) in the same run, and the ratio codec / pickle (above 1: the
codec is faster).

Run: ``python benchmarks/bench_codec.py [--samples 1000] [--repeat 20]``
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tmrl_core import codec
from tmrl_core.buffer import Buffer


def make_buffer(samples: int, obs_shape: tuple[int, ...], dtype: Any, seed: int = 0) -> Buffer:
    rng = np.random.default_rng(seed)
    buffer = Buffer(maxlen=samples)
    for step in range(samples):
        if np.dtype(dtype) == np.uint8:
            obs = rng.integers(0, 256, obs_shape, dtype=np.uint8)
        else:
            obs = rng.standard_normal(obs_shape).astype(dtype)
        act = rng.uniform(-1, 1, 3).astype(np.float32)
        buffer.append_sample((act, obs, float(rng.standard_normal()), step % 200 == 199, False, {}))
    buffer.stat_train_return = 12.5
    buffer.stat_train_steps = 200
    return buffer


def best_of(repeat: int, function: Callable[[], Any]) -> float:
    """Fastest of ``repeat`` timings (the least disturbed by other processes), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def measure(name: str, buffer: Buffer, repeat: int) -> None:
    encoded = codec.encode_buffer(buffer)
    pickled = pickle.dumps(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    megabytes = len(encoded) / 1e6
    results = {}
    for label, encode, decode, data in (
        ("codec", lambda: codec.encode_buffer(buffer), lambda: codec.decode_buffer(encoded), encoded),
        (
            "pickle",
            lambda: pickle.dumps(buffer, protocol=pickle.HIGHEST_PROTOCOL),
            lambda: pickle.loads(pickled),
            pickled,
        ),
    ):
        t_encode = best_of(repeat, encode)
        t_decode = best_of(repeat, decode)
        results[label] = (t_encode, t_decode, len(data))
    print(f"\n{name}: {len(buffer)} samples, codec message {megabytes:.2f} MB, pickle {len(pickled) / 1e6:.2f} MB")
    print(f"{'':8} {'encode MB/s':>12} {'decode MB/s':>12} {'round trip MB/s':>16}")
    for label, (t_encode, t_decode, size) in results.items():
        print(
            f"{label:8} {size / 1e6 / t_encode:12.0f} {size / 1e6 / t_decode:12.0f} "
            f"{size / 1e6 / (t_encode + t_decode):16.0f}"
        )
    (ce, cd, _), (pe, pd, _) = results["codec"], results["pickle"]
    # ratios of throughput on the same payload (samples per second), so the message sizes do not skew them
    print(
        f"ratio codec/pickle (samples/s): encode {pe / ce:.2f}x, decode {pd / cd:.2f}x, round trip "
        f"{(pe + pd) / (ce + cd):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    measure("(a) flat float32 observations (20,)", make_buffer(args.samples, (20,), np.float32), args.repeat)
    measure("(b) uint8 images (4, 64, 64)", make_buffer(args.samples, (4, 64, 64), np.uint8), args.repeat)


if __name__ == "__main__":
    main()
