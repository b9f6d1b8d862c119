"""Timing in alternating blocks, for the benchmarks that compare implementations of one computation.

Each block times every side in turn, so a change in the machine's load (other jobs, CPU frequency) reaches all sides
alike; the medians of the blocks are compared."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def alternating_rates(
    calls: Mapping[str, Callable[[], object]], blocks: int, per_block: int, sync: Callable[[], None] = lambda: None
) -> dict[str, list[float]]:
    """Calls per second of each of ``calls``, one figure per block (``sync`` waits for queued GPU work)."""
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(blocks):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(per_block):
                call()
            sync()
            rates[name].append(per_block / (time.perf_counter() - start))
    return rates


def print_rates(rates: Mapping[str, list[float]], unit: str, width: int = 10) -> dict[str, float]:
    """Print each side's median rate with its range over the blocks; return the medians."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        low, high = min(values), max(values)
        print(f"  {name:{width}s} {medians[name]:8.1f} {unit} (median of blocks; min {low:.1f}, max {high:.1f})")
    return medians
