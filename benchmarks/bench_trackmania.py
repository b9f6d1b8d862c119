"""Per time step costs of trackmania-full and trackmania-lidar on the simulated game.

For each environment: an episode is driven in real time (50 ms steps) by the simulator's autopilot, its samples kept
the way a worker keeps them; then, on the frames of that episode:

- capture + preprocessing: grabbing the window (here: the simulator rendering it; mss on the real game) and, for
  trackmania-full, grayscale + resizing with OpenCV, against resizing the four-channel frame first;
- LIDAR: the vectorised 19-beam reading against the per-beam, per-pixel walk (same results);
- policy inference: the SAC actor with the env's encoder on one observation, one torch thread, as in a worker;
- bytes sent per sample: the episode's buffer encoded with the wire codec, with the env's default compressor
  (``history``: each frame/reading and action once) against no compression, and the raw observation's array bytes.

Run: ``python benchmarks/bench_trackmania.py [--steps 200] [--repeat 200]``; with ``--realtime``, instead: the share of
time steps that time out while driving in real time, alone and beside one CPU-bound process per core (the figure
the end-to-end tests leave to this benchmark, since it depends on the machine's load).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np


def per_call(function: Callable[[], Any], repeat: int) -> float:
    """Median seconds per call over ``repeat`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def obs_nbytes(obs: Any) -> int:
    return sum(np.asarray(part).nbytes for part in obs)


def collect_episode(env: Any, steps: int) -> list[tuple[Any, ...]]:
    """Samples ``(act, obs, rew, terminated, truncated, info)`` of one episode, reset sample first."""
    from tmrl_core.envs import reset_action

    obs, info = env.reset()
    samples = [(reset_action(env), obs, 0.0, False, False, info)]
    act = np.zeros(3, dtype=np.float32)  # the autopilot drives; actions are recorded all the same
    for _ in range(steps):
        obs, rew, terminated, truncated, info = env.step(act)
        samples.append((act, obs, float(rew), bool(terminated), bool(truncated), info))
        if terminated or truncated:
            break
    return samples


def encoded_bytes(samples: list[tuple[Any, ...]], compressor: Callable[..., Any] | None) -> int:
    from tmrl_core.buffer import Buffer
    from tmrl_core.codec import encode_buffer

    buffer = Buffer(maxlen=len(samples))
    for sample in samples:
        buffer.append_sample(compressor(*sample) if compressor is not None else sample)
    return len(encode_buffer(buffer))


def bench_env(env_name: str, steps: int, repeat: int) -> None:
    import torch
    from tmrl_trackmania.capture import Preprocessor
    from tmrl_trackmania.envs import make_full, make_lidar
    from tmrl_trackmania.lidar import read_lidar_loop

    from tmrl_core.pipeline import prepare

    sets = ["trackmania.backend=simulated", "trackmania.sleep_time_at_reset=0", "trackmania.sim.autopilot=true"]
    p = prepare(env_name, "sac", sets=sets)
    settings = p.env_settings
    make = make_full if env_name == "trackmania-full" else make_lidar
    env = make(settings.model_copy(update={"ep_max_length": steps}))
    interface = env.tm_interface
    try:
        t0 = time.perf_counter()
        samples = collect_episode(env, steps)
        wall = time.perf_counter() - t0
        timing = interface.timing
        frames = [interface.link.frames.grab() for _ in range(8)]
    finally:
        env.close()
    n = len(samples) - 1
    print(f"\n{env_name}: {n} steps in {wall:.1f} s ({wall / max(n, 1) * 1e3:.1f} ms per step, "
          f"{timing.timed_out} of {timing.steps} time steps timed out)")

    # capture + preprocessing -------------------------------------------------------------------------------
    from tmrl_trackmania.sim.game import SimulatedGame

    game = SimulatedGame(settings.sim)  # not started: its renderer only, on the episode's last state
    grab = per_call(lambda: game.render(settings.window_width, settings.window_height), repeat)
    frame = frames[-1]
    print(f"  capture (simulated window {settings.window_width}x{settings.window_height}): {grab * 1e6:8.1f} us")
    if env_name == "trackmania-full":
        import cv2

        pre = Preprocessor(settings.img_width, settings.img_height, settings.grayscale)
        ours = per_call(lambda: pre(frame), repeat)

        code = cv2.COLOR_BGRA2GRAY if settings.grayscale else cv2.COLOR_BGRA2RGB

        def resize_then_convert() -> np.ndarray:
            small = cv2.resize(frame, (settings.img_width, settings.img_height), interpolation=cv2.INTER_AREA)
            return cv2.cvtColor(small, code)

        naive = per_call(resize_then_convert, repeat)
        print(f"  preprocessing (convert, then resize): {ours * 1e6:8.1f} us   resize the BGRA frame first: "
              f"{naive * 1e6:8.1f} us   ratio {naive / ours:.2f}x")
        print(f"  capture + preprocessing per step:       {(grab + ours) * 1e6:8.1f} us")
    else:
        lidar = interface.lidar
        fast = per_call(lambda: lidar.read(frame), repeat)
        slow = per_call(lambda: read_lidar_loop(frame, lidar), max(10, repeat // 10))
        assert all(np.array_equal(lidar.read(f), read_lidar_loop(f, lidar)) for f in frames)
        print(f"  LIDAR (vectorised): {fast * 1e6:8.1f} us   per-pixel walk: {slow * 1e6:8.1f} us   "
              f"ratio {slow / fast:.1f}x")
        print(f"  capture + LIDAR per step: {(grab + fast) * 1e6:8.1f} us")

    # policy inference ---------------------------------------------------------------------------------------
    torch.set_num_threads(1)
    actor = p.actor_factory()(observation_space=p.observation_space, action_space=p.action_space)
    obs = samples[-1][1]
    with torch.no_grad():
        infer = per_call(lambda: actor.act_(obs, test=False), repeat)
    print(f"  policy inference (sac actor, 1 thread): {infer * 1e6:8.1f} us")

    # bytes per sample -----------------------------------------------------------------------------------------
    raw_obs = obs_nbytes(obs)
    plain = encoded_bytes(samples, None) / len(samples)
    compressed = encoded_bytes(samples, p.compressor()) / len(samples)
    print(f"  bytes per sample on the wire: {compressed:9.0f} with the '{p.env.compressor}' compressor, "
          f"{plain:9.0f} uncompressed (raw observation {raw_obs} B): ratio {plain / compressed:.1f}x")


def _hog(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def realtime_share(env_name: str, steps: int, hogs: int) -> tuple[int, int, float]:
    """``(steps, timed-out steps, mean step seconds)`` of ``steps`` real-time steps of ``env_name`` on the simulated
    game, a policy-sized pause (2 ms) per step, with ``hogs`` CPU-bound processes running meanwhile."""
    import multiprocessing

    from tmrl_trackmania.envs import make_full, make_lidar

    make = make_full if env_name == "trackmania-full" else make_lidar
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_hog, args=(stop,), daemon=True) for _ in range(hogs)]
    for proc in procs:
        proc.start()
    env = make(backend="simulated", sleep_time_at_reset=0.0, ep_max_length=steps + 10, min_steps=steps + 10)
    try:
        env.reset()
        for _ in range(steps):
            time.sleep(0.002)
            env.step(np.array([1.0, 0.0, 0.0], dtype=np.float32))
        timing = env.tm_interface.timing
        return timing.steps, timing.timed_out, timing.seconds / max(1, timing.intervals)
    finally:
        env.close()
        stop.set()
        for proc in procs:
            proc.join(5)


def bench_realtime(env_name: str, steps: int) -> None:
    cores = os.cpu_count() or 1
    print(f"\n{env_name}: real-time stepping, {steps} steps of 50 ms")
    for hogs in (0, cores):
        n, late, mean = realtime_share(env_name, steps, hogs)
        print(f"  with {hogs} CPU-bound processes ({cores} cores): {late} of {n} steps timed out ({late / n:.1%}), "
              f"mean step {mean * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="time steps driven per environment (50 ms each)")
    parser.add_argument("--repeat", type=int, default=200, help="calls per timing")
    parser.add_argument("--env", choices=["trackmania-full", "trackmania-lidar"], action="append")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="instead: the share of timed-out steps alone and beside a CPU hog per core",
    )
    args = parser.parse_args()
    os.environ.setdefault("TMRL_HOME", tempfile.mkdtemp(prefix="tmrl-bench-"))  # never touch the user's data
    warnings.simplefilter("ignore")  # rtgym warns on timed-out steps; they are counted and printed instead
    for env_name in args.env or ["trackmania-full", "trackmania-lidar"]:
        if args.realtime:
            bench_realtime(env_name, args.steps)
        else:
            bench_env(env_name, args.steps, args.repeat)


if __name__ == "__main__":
    main()
