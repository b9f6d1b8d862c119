"""Where the work of a run goes on this machine's cores: the trainer's torch threads, and the float settings that
keep CPU training at full speed. Called by ``tmrl run`` and ``tmrl trainer``; users do not call
``torch.set_num_threads`` themselves (``training.threads`` overrides the choice).

Why (measured in ``benchmarks/bench_pipeline_rate.py``, see docs/benchmarks.md):

- A lockstep worker (``worker.max_env_steps_per_model > 0``, e.g. pendulum) acts while the trainer waits for its
  samples, so the two never compete: the trainer may use every core. Giving it all cores but one, as before, left
  one of two cores idle while the worker needed a tenth of it.
- A free-running worker (``run``) keeps one core busy, and a real-time worker must never miss a time step: each
  gets a core of its own, the trainer the rest (at least one).
- How many of those cores pay off is measured, not guessed (:class:`ThreadTuner`): for a 256x256 MLP on an idle
  machine, 2 threads train about 1.4x faster than 1 on 2 cores and 4 to 8 threads are best on 16 cores (16 are
  slower than 1); but when other programs keep the cores busy (a game, other jobs), torch's OpenMP threads spin
  waiting for each other and 2 threads train up to 15x slower than 1. The tuner tries 1, 2, 4, ... threads for a
  few training steps each, keeps the fastest, and measures again every few thousand steps or when steps slow down.
- Denormal floats (below ~1e-38) are tens of times slower on x86 CPUs; Adam's second moments decay into that range
  on quiet parameters, and the update slows down as training goes on. Flushing them to zero changes no result that
  matters (they are below float32's normal precision) and restores the speed.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tmrl_core.devices import resolve_device

if TYPE_CHECKING:
    from tmrl_core.settings import Settings

log = logging.getLogger("tmrl.placement")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or ``taskset``'s limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: Most torch threads the tuner tries: beyond this a small network's update only gets slower (measured on 16 cores).
MAX_TUNED_THREADS = 8


@dataclass(frozen=True)
class Placement:
    """The trainer's share of the machine, and why: ``threads`` is the most it may use; ``adaptive`` says whether a
    :class:`ThreadTuner` chooses how many of them pay off."""

    threads: int
    cpus: int
    reserved_for_workers: int
    reason: str
    adaptive: bool = False

    def tuner(self) -> ThreadTuner | None:
        """A tuner over 1, 2, 4, ... up to ``threads`` (at most :data:`MAX_TUNED_THREADS`), or None when fixed."""
        if not self.adaptive or self.threads <= 1:
            return None
        top = min(self.threads, MAX_TUNED_THREADS)
        candidates = [1]
        while candidates[-1] * 2 <= top:
            candidates.append(candidates[-1] * 2)
        if candidates[-1] != top:
            candidates.append(top)
        return ThreadTuner(candidates)


class ThreadTuner:
    """Chooses the training thread's torch threads by timing training steps.

    Each candidate (in increasing order) runs ``probe_steps`` steps after ``settle_steps`` unmeasured ones; the
    escalation stops at the first candidate slower than the best so far, and a candidate is dropped at once when one
    of its steps takes ``give_up`` times the best median (a busy machine makes spinning threads crawl). The fastest
    is then kept for ``first_exploit_steps`` steps, four times as many after each new measurement up to
    ``exploit_steps``, or until steps take ``give_up`` times longer than measured (the load changed), and the
    candidates are measured again. The first measurement is taken while the run starts (a worker importing torch
    beside the trainer, the allocator warming up) and can prefer fewer threads than the run's steady state does:
    measuring again soon corrects it for the cost of a few dozen steps.

    Call :meth:`record` after every training step with its duration, from the thread that trains.
    """

    def __init__(
        self,
        candidates: Sequence[int],
        *,
        probe_steps: int = 10,
        settle_steps: int = 2,
        exploit_steps: int = 3000,
        first_exploit_steps: int = 200,
        give_up: float = 2.0,
    ) -> None:
        self.candidates = sorted({max(1, int(c)) for c in candidates})
        self.probe_steps, self.settle_steps = probe_steps, settle_steps
        self.exploit_steps, self.give_up = exploit_steps, give_up
        self.first_exploit_steps = max(1, first_exploit_steps)
        self.step_seconds: dict[int, float] = {}  # median seconds per step of each candidate, last probe
        self.probes = 0
        self.current = self.candidates[0]
        self._begin_probe()

    @property
    def probing(self) -> bool:
        return self._queue is not None

    def _apply(self, threads: int) -> None:
        import torch

        self.current = threads
        torch.set_num_threads(threads)

    def _begin_probe(self) -> None:
        self.probes += 1
        self.step_seconds = {}
        self._queue: list[int] | None = list(self.candidates)
        self._times: list[float] = []
        self._apply(self._queue.pop(0))

    def _best(self) -> tuple[int, float] | None:
        if not self.step_seconds:
            return None
        threads = min(self.step_seconds, key=self.step_seconds.__getitem__)
        return threads, self.step_seconds[threads]

    def record(self, seconds: float) -> None:
        """The last training step took ``seconds``."""
        if self._queue is None:
            self._ema = 0.9 * self._ema + 0.1 * seconds
            self._left -= 1
            if self._left <= 0 or self._ema > self.give_up * self._chosen_seconds:
                self._begin_probe()
            return
        self._times.append(seconds)
        best = self._best()
        hopeless = best is not None and len(self._times) > 1 and seconds > self.give_up * best[1]
        if hopeless or len(self._times) >= self.settle_steps + self.probe_steps:
            measured = self._times[self.settle_steps :] or self._times[-1:]
            self.step_seconds[self.current] = statistics.median(measured)
            self._times = []
            slower = best is not None and self.step_seconds[self.current] >= best[1]
            if self._queue and not slower:
                self._apply(self._queue.pop(0))
            else:
                self._choose()

    def _choose(self) -> None:
        best = self._best()
        assert best is not None
        self._queue = None
        self._chosen_seconds = self._ema = best[1]
        self._left = min(self.exploit_steps, self.first_exploit_steps * 4 ** (self.probes - 1))
        self._apply(best[0])
        log.info(
            "trainer: %d torch thread(s) chosen (ms per training step: %s)",
            best[0],
            ", ".join(f"{t} thread(s) {1000 * s:.1f}" for t, s in sorted(self.step_seconds.items())),
        )


def plan_trainer_threads(
    cpus: int, local_workers: int, *, lockstep: bool, realtime: bool, requested: int = 0, device: str = "cpu"
) -> Placement:
    """The number of torch intra-op threads for a trainer sharing ``cpus`` CPUs with ``local_workers`` worker
    processes on the same machine.

    Args:
        cpus: CPUs available to the run (:func:`available_cpus`).
        local_workers: worker processes on this machine (0 for ``tmrl trainer``, whose workers run elsewhere).
        lockstep: workers wait for each new model (``worker.max_env_steps_per_model > 0``): acting and training
            take turns.
        realtime: the environment is real time (rtgym): a worker's time steps must never wait for a free core.
        requested: ``training.threads``; above 0 it wins.
        device: the training device; on a GPU the CPU threads only launch kernels.
    """
    if requested > 0:
        return Placement(requested, cpus, 0, "training.threads")
    if device.startswith("cuda"):
        # kernels are launched from one thread; more only make CPU-side tensor work (batches) contend with workers
        return Placement(1, cpus, local_workers, "training on a GPU")
    if lockstep and not realtime:
        return Placement(cpus, cpus, 0, "lockstep workers act while the trainer waits", adaptive=True)
    reserved = min(local_workers, cpus - 1)
    kind = "real-time" if realtime else "free-running"
    return Placement(max(1, cpus - reserved), cpus, reserved, f"one core per {kind} worker", adaptive=True)


def configure_torch(placement: Placement, *, flush_denormal: bool = True) -> None:
    """Apply ``placement`` to torch in the calling thread (the one that trains); call it before the first torch
    operation, so that torch's worker threads, created on first use, inherit the floating-point mode."""
    import torch

    # an adaptive placement starts at one thread, the tuner's first candidate
    torch.set_num_threads(1 if placement.adaptive else placement.threads)
    if flush_denormal and not torch.set_flush_denormal(True):
        log.debug("this CPU cannot flush denormals to zero")
    log.info(
        "trainer: up to %d torch thread(s) on %d CPU(s), %d kept for workers (%s)%s",
        placement.threads,
        placement.cpus,
        placement.reserved_for_workers,
        placement.reason,
        ", denormals flushed to zero" if flush_denormal else "",
    )


def place_trainer(settings: Settings, *, local_workers: int, lockstep: bool, realtime: bool) -> Placement:
    """Plan and apply the trainer's placement from the settings (``training.threads``, ``training.device``,
    ``training.flush_denormal``)."""
    ts = settings.training
    placement = plan_trainer_threads(
        available_cpus(),
        local_workers,
        lockstep=lockstep,
        realtime=realtime,
        requested=ts.threads,
        device=str(resolve_device(ts.device)),
    )
    configure_torch(placement, flush_denormal=ts.flush_denormal)
    return placement
