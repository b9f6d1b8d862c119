"""Replay memory benchmark: RingMemory against the straightforward per-sample memory, in the same run.

Prints, at batch size 256:

(a) batches/s for flat observations (17 floats): RingMemory.sample() against GenericTorchMemory.sample()
    (get_transition per sample + collate);
(b) batches/s for 4 x 64 x 64 uint8 frame histories plus an action buffer of 2: RingMemory.sample() against the
    per-sample rebuild of the same de-duplicated storage (TorchMemory.sample: get_transition + collate), and against
    GenericTorchMemory holding raw samples (every stack stored whole);
(c) bytes stored per transition in (b), against one frame;
(d) the share of a SAC training step (tmrl_sac's SacAgent when installed, else a plain 256x256 MLP update) spent
    waiting for the batch, for each memory, and with prefetch.

Timings alternate between the contenders in short rounds and report medians, so a loaded machine slows both alike.

    python benchmarks/bench_memory.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_memory.py --quick    # smaller memories, fewer rounds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from tmrl_core.buffer import Buffer
from tmrl_core.compression import history_compressor
from tmrl_core.memory import GenericTorchMemory, RingMemory, TorchMemory

BATCH = 256
FRAME = (64, 64)
K = 4
ACT_BUF = 2
ACT_DIM = 3


def flat_buffers(n: int, episode: int, rng: np.random.Generator) -> Buffer:
    obs = rng.normal(size=(n, 17)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 6)).astype(np.float32)
    rew = rng.normal(size=n)
    buffer = Buffer(maxlen=n)
    for k in range(n):
        buffer.append_sample((act[k], obs[k], float(rew[k]), False, k % episode == episode - 1, {}))
    return buffer


def image_buffers(n: int, episode: int, rng: np.random.Generator) -> tuple[Buffer, Buffer, spaces.Tuple]:
    """The same rtgym-like samples raw and compressed: frame history padded with the first frame after a reset,
    action buffer carried over resets with the last action replaced by the default one."""
    frames = rng.integers(0, 256, size=(n, *FRAME), dtype=np.uint8)
    actions = rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32)
    speeds = rng.normal(size=(n, 3)).astype(np.float32)
    default = np.zeros(ACT_DIM, dtype=np.float32)
    compress = history_compressor(act_buf_len=ACT_BUF, history_index=1)
    raw, compressed = Buffer(maxlen=n), Buffer(maxlen=n)
    history: list[np.ndarray] = []
    act_buf = [default] * ACT_BUF
    for k in range(n):
        t = k % episode
        if t == 0:
            history = [frames[k]] * K
            act_buf = [*act_buf[:-1], default]
            act = default
        else:
            history = [*history[1:], frames[k]]
            act = actions[k]
            act_buf = [*act_buf[1:], act]
        obs = (speeds[k], np.stack(history), *act_buf)
        sample = (act, obs, float(speeds[k, 0]), False, t == episode - 1, {})
        raw.append_sample(sample)
        compressed.append_sample(compress(*sample))
    space = spaces.Tuple(
        (
            spaces.Box(-np.inf, np.inf, (3,), np.float32),
            spaces.Box(0, 255, (K, *FRAME), np.uint8),
            *[spaces.Box(-1, 1, (ACT_DIM,), np.float32)] * ACT_BUF,
        )
    )
    return raw, compressed, space


def per_sample(memory: TorchMemory) -> Callable[[], Any]:
    """The straightforward path of any TorchMemory: get_transition per index, then collate."""
    return lambda: TorchMemory.sample(memory)


def race(contenders: dict[str, Callable[[], Any]], rounds: int, seconds: float) -> dict[str, float]:
    """Median seconds per call of each contender, measured in alternating rounds of about ``seconds`` each."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for f in contenders.values():
        f()  # warm up (allocations, first-touch page faults)
    for _ in range(rounds):
        for name, f in contenders.items():
            calls, t0 = 0, time.perf_counter()
            while True:
                f()
                calls += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds:
                    break
            times[name].append(elapsed / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def report_race(title: str, result: dict[str, float], reference: str) -> None:
    print(f"\n{title}")
    for name, seconds in result.items():
        ratio = result[name] / result[reference]
        extra = "" if name == reference else f"   ({ratio:5.1f}x the time of {reference})"
        print(f"  {name:<40s} {1 / seconds:9.1f} batches/s  {seconds * 1e3:8.3f} ms/batch{extra}")


# -- (d) training-step share -----------------------------------------------------------------------------------------


def make_agent(observation_space: Any, action_space: Any, encoder: Any) -> Any:
    try:
        from tmrl_sac.agent import SacAgent
    except ImportError:
        return PlainSacLikeUpdate(observation_space, action_space)
    return SacAgent(observation_space, action_space, device="cpu", encoder=encoder)


class PlainSacLikeUpdate:
    """Fallback without tmrl-sac: actor and twin critics, 256x256 MLPs on flattened observations, one Adam step."""

    def __init__(self, observation_space: Any, action_space: Any) -> None:
        from tmrl_core.nn import FlattenEncoder

        self.encoder = FlattenEncoder(observation_space)
        n, a = self.encoder.out_features, int(np.prod(action_space.shape))

        def mlp(i: int, o: int) -> torch.nn.Module:
            return torch.nn.Sequential(
                torch.nn.Linear(i, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, o),
            )

        self.actor, self.q1, self.q2 = mlp(n, 2 * a), mlp(n + a, 1), mlp(n + a, 1)
        params = [*self.actor.parameters(), *self.q1.parameters(), *self.q2.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=1e-3)

    def train(self, batch: tuple[Any, ...]) -> dict[str, float]:
        o, a, r, o2, d, _ = batch
        x, x2 = self.encoder(o), self.encoder(o2)
        with torch.no_grad():
            a2 = torch.tanh(self.actor(x2)[:, : a.shape[1]])
            target = r + 0.99 * (1 - d) * torch.min(
                self.q1(torch.cat([x2, a2], 1)), self.q2(torch.cat([x2, a2], 1))
            ).squeeze(1)
        q_loss = sum(((q(torch.cat([x, a], 1)).squeeze(1) - target) ** 2).mean() for q in (self.q1, self.q2))
        pi = torch.tanh(self.actor(x)[:, : a.shape[1]])
        pi_loss = -self.q1(torch.cat([x, pi], 1)).mean()
        self.optimizer.zero_grad()
        (q_loss + pi_loss).backward()
        self.optimizer.step()
        return {}


def waiting_share(
    memory: TorchMemory, agent: Any, steps: int, sample: Callable[[], Any] | None = None
) -> tuple[float, float]:
    """``(share of the step spent getting the batch, seconds per step)`` over ``steps`` training steps."""
    get = sample or memory.sample
    agent.train(get())
    waiting = total = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = get()
        t1 = time.perf_counter()
        agent.train(batch)
        t2 = time.perf_counter()
        waiting += t1 - t0
        total += t2 - t0
    return waiting / total, total / steps


def report_share(title: str, rows: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}")
    for name, (share, step) in rows.items():
        print(f"  {name:<40s} waiting {100 * share:5.1f}% of a {step * 1e3:7.1f} ms training step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller memories and fewer rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: a loaded machine makes more threads much slower)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flat_n, image_n = (20_000, 4_000) if args.quick else (100_000, 12_000)
    rounds, seconds = (3, 0.3) if args.quick else (5, 1.0)
    flat_steps, image_steps = (30, 2) if args.quick else (150, 5)
    rng = np.random.default_rng(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch size {BATCH}")

    # (a) flat observations ------------------------------------------------------------------------------------------
    buffer = flat_buffers(flat_n, episode=1000, rng=rng)
    fast = RingMemory(memory_size=flat_n, batch_size=BATCH, seed=args.seed)
    generic = GenericTorchMemory(memory_size=flat_n, batch_size=BATCH, seed=args.seed)
    fast.append(buffer)
    generic.append(buffer)
    result = race(
        {"RingMemory.sample": fast.sample, "GenericTorchMemory (per sample)": generic.sample}, rounds, seconds
    )
    report_race(f"(a) flat observations (17 floats), {flat_n} samples", result, "RingMemory.sample")
    ratio_a = result["GenericTorchMemory (per sample)"] / result["RingMemory.sample"]

    # (b) image histories + action buffer ----------------------------------------------------------------------------
    raw, compressed, image_space = image_buffers(image_n, episode=400, rng=rng)
    fast_img = RingMemory(memory_size=image_n, batch_size=BATCH, seed=args.seed, act_buf_len=ACT_BUF, history_index=1)
    generic_img = GenericTorchMemory(memory_size=image_n, batch_size=BATCH, seed=args.seed)
    fast_img.append(compressed)
    generic_img.append(raw)
    result = race(
        {
            "RingMemory.sample": fast_img.sample,
            "same storage, per-sample rebuild": per_sample(fast_img),
            "GenericTorchMemory (raw stacks)": generic_img.sample,
        },
        rounds,
        seconds,
    )
    report_race(
        f"(b) {K}x{FRAME[0]}x{FRAME[1]} uint8 frame histories + action buffer of {ACT_BUF}, {image_n} samples",
        result,
        "RingMemory.sample",
    )
    ratio_b = result["same storage, per-sample rebuild"] / result["RingMemory.sample"]
    ratio_b_generic = result["GenericTorchMemory (raw stacks)"] / result["RingMemory.sample"]

    # (c) bytes per transition ---------------------------------------------------------------------------------------
    frame_bytes = FRAME[0] * FRAME[1]
    stored = fast_img.nbytes() / fast_img.memory_size
    raw_arrays = sum(np.asarray(x).nbytes for x in raw.memory[0][1]) + raw.memory[0][0].nbytes + 8
    print(f"\n(c) bytes stored per transition in (b): RingMemory {stored:.0f} B = {stored / frame_bytes:.3f} frames")
    print(f"    (raw samples hold {raw_arrays} B of arrays each = {raw_arrays / frame_bytes:.2f} frames)")

    # (d) share of a training step spent waiting for the batch ------------------------------------------------------

    flat_space = spaces.Box(-np.inf, np.inf, (17,), np.float32)
    flat_act = spaces.Box(-1, 1, (6,), np.float32)
    agent = make_agent(flat_space, flat_act, None)
    prefetching = RingMemory(memory_size=flat_n, batch_size=BATCH, seed=args.seed, prefetch=True)
    prefetching.append(buffer)
    rows = {
        "GenericTorchMemory (per sample)": waiting_share(generic, agent, flat_steps),
        "RingMemory": waiting_share(fast, agent, flat_steps),
        "RingMemory, prefetch=True": waiting_share(prefetching, agent, flat_steps),
    }
    prefetching.close()
    report_share(f"(d) {type(agent).__name__} step on (a), {flat_steps} steps", rows)

    try:
        import tmrl_trackmania.models  # noqa: F401

        encoder = "tmrl_trackmania.models:ImageHistoryEncoder"
    except ImportError:
        encoder = None
    img_agent = make_agent(image_space, spaces.Box(-1, 1, (ACT_DIM,), np.float32), encoder)
    prefetching_img = RingMemory(
        memory_size=image_n, batch_size=BATCH, seed=args.seed, act_buf_len=ACT_BUF, history_index=1, prefetch=True
    )
    prefetching_img.append(compressed)
    rows = {
        "same storage, per-sample rebuild": waiting_share(fast_img, img_agent, image_steps, per_sample(fast_img)),
        "RingMemory": waiting_share(fast_img, img_agent, image_steps),
        "RingMemory, prefetch=True": waiting_share(prefetching_img, img_agent, image_steps),
    }
    prefetching_img.close()
    report_share(
        f"(d) {type(img_agent).__name__} step on (b) (encoder {encoder or 'flatten'}), {image_steps} steps", rows
    )

    print("\nsummary")
    print(f"  (a) flat:   RingMemory {ratio_a:5.1f}x faster than per-sample get_transition + collate (target >= 8x)")
    print(f"  (b) images: RingMemory {ratio_b:5.1f}x faster than per-sample rebuild (target >= 20x), ", end="")
    print(f"{ratio_b_generic:.1f}x faster than GenericTorchMemory with raw stacks")
    print(f"  (c) {stored / frame_bytes:.3f} frames stored per transition (target <= 1.1)")


if __name__ == "__main__":
    main()
