"""``MemoryContract``: what every replay memory must do, as a pytest class that memory authors subclass.

Example (in a plugin's tests)::

    from tmrl_core.testing import MemoryContract
    from my_plugin.memory import MyMemory

    class TestMyMemory(MemoryContract):
        memory_cls = MyMemory                        # or its "my_plugin.memory:MyMemory" path, as in a spec
        compressor = "my-compressor"                 # a registered compressor name (default "none")
        tolerance = 1e-3                             # optional: a lossy pair (float16 storage) rebuilds within it
        component_options = {"act_buf_len": 2}       # what the env spec would give compressor and memory

        def make_env(self):                          # optional: the env whose samples are stored
            return make_my_env()

Samples are collected with :func:`rollout` the way a RolloutWorker collects them (reset sample with the reset action,
``crc_debug`` records, the compressor), so every transition can be CRC-checked.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import gymnasium
import numpy as np
import pytest
import torch

from tmrl_core.buffer import Buffer
from tmrl_core.compression import CrcError, CrcRecorder, SampleCompressor, check_transition_crc, no_compression
from tmrl_core.envs import reset_action
from tmrl_core.memory.base import TorchMemory
from tmrl_core.plugins import get_component
from tmrl_core.specs import resolve
from tmrl_core.testing.image_env import FrameHistory, SyntheticImageEnv

#: an environment's (observation space, action space)
EnvSpaces = tuple[gymnasium.Space, gymnasium.Space]
#: the buffers of two workers, and their env's spaces
WorkerBuffers = tuple[EnvSpaces, list[list[Buffer]]]
#: a memory holding the workers' buffers, its number of transitions, and the number of samples appended
Filled = tuple[TorchMemory, int, int]


def rollout(
    env: gymnasium.Env,
    n_steps: int,
    *,
    compressor: SampleCompressor | None = None,
    crc_debug: bool = True,
    seed: int | None = 0,
    max_samples_per_episode: int | None = None,
    episodes_per_buffer: int = 1,
) -> list[Buffer]:
    """Run ``env`` with uniformly random actions for at least ``n_steps`` steps (whole episodes) and return the
    buffers a RolloutWorker would send: each starts with a reset sample (action: :func:`tmrl_core.envs.reset_action`)
    and ends with a terminated or truncated sample; ``max_samples_per_episode`` truncates like the worker does."""
    rng = np.random.default_rng(seed)
    compress = compressor if compressor is not None else no_compression()
    recorder = CrcRecorder() if crc_debug else None
    space = env.action_space
    buffers: list[Buffer] = []
    buffer = Buffer(maxlen=10**9)
    episodes = steps = 0

    def record(act: Any, obs: Any, rew: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        if recorder is not None:
            info = recorder(act, obs, rew, terminated, truncated, info)
        buffer.append_sample(compress(act, obs, rew, terminated, truncated, info))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rtgym warns about time-step timeouts on a loaded machine
        while steps < n_steps:
            obs, info = env.reset(seed=seed if episodes == 0 else None)
            record(reset_action(env), obs, 0.0, False, False, dict(info))
            t = 0
            while True:
                act = rng.uniform(space.low, space.high).astype(space.dtype)
                obs, rew, terminated, truncated, info = env.step(act)
                t += 1
                steps += 1
                terminated, truncated = bool(terminated), bool(truncated)
                if max_samples_per_episode is not None and t >= max_samples_per_episode and not terminated:
                    truncated = True
                record(act, obs, float(rew), terminated, truncated, dict(info))
                if terminated or truncated:
                    break
            episodes += 1
            if episodes % episodes_per_buffer == 0:
                buffers.append(buffer)
                buffer = Buffer(maxlen=10**9)
    if len(buffer):
        buffers.append(buffer)
    return buffers


def interleave(*workers: list[Buffer]) -> list[Buffer]:
    """Buffers of several workers in the order a server might relay them (round robin)."""
    out: list[Buffer] = []
    for i in range(max(len(w) for w in workers)):
        out.extend(w[i] for w in workers if i < len(w))
    return out


def _check_batch_structure(
    batch_obs: torch.Tensor | tuple, space: gymnasium.Space, batch_size: int, where: str
) -> None:
    if isinstance(space, gymnasium.spaces.Tuple):
        assert isinstance(batch_obs, tuple), f"{where}: a Tuple space gives a tuple of tensors"
        assert len(batch_obs) == len(space.spaces), f"{where}: {len(batch_obs)} elements, space has {len(space.spaces)}"
        for i, (o, s) in enumerate(zip(batch_obs, space.spaces, strict=True)):
            _check_batch_structure(o, s, batch_size, f"{where}[{i}]")
        return
    assert isinstance(batch_obs, torch.Tensor), f"{where}: expected a tensor, got {type(batch_obs).__name__}"
    assert tuple(batch_obs.shape) == (batch_size, *space.shape), f"{where}: shape {tuple(batch_obs.shape)}"


class MemoryContract:
    """Subclass with ``memory_cls`` set (and optionally ``compressor``, ``component_options``, ``make_env``)."""

    #: the memory class (called like the trainer calls memory factories), or its ``"module:attr"`` path
    memory_cls: ClassVar[Any] = None
    #: a lossy compressor/memory pair rebuilds floating-point values within ``tolerance * (1 + |original|)``; the
    #: transitions are then checked by the contract (with that tolerance) rather than by the memory's exact CRC
    #: debug; None: exact
    tolerance: ClassVar[float | None] = None
    #: registered compressor name the samples go through
    compressor: ClassVar[str] = "none"
    #: env component options given to both the compressor and the memory
    component_options: ClassVar[dict[str, Any]] = {}
    #: environment steps collected per worker (two workers)
    n_steps: ClassVar[int] = 400
    #: memory_size of the memories that wrap around
    small_memory_size: ClassVar[int] = 97

    # -- what subclasses may override ------------------------------------------------------------------------------
    def make_env(self) -> gymnasium.Env:
        """The environment whose samples are stored (default: small synthetic frame histories)."""
        return FrameHistory(SyntheticImageEnv(size=8, max_episode_steps=23, terminate_prob=0.05, seed=3), history=3)

    def make_compressor(self, env: gymnasium.Env) -> SampleCompressor:
        factory = get_component("compressor", self.compressor).load()
        return factory(observation_space=env.observation_space, action_space=env.action_space, **self.component_options)

    def make_memory(self, env_spaces: EnvSpaces, **kwargs: Any) -> TorchMemory:
        observation_space, action_space = env_spaces
        options = {
            "device": "cpu",
            "nb_steps": 1,
            "memory_size": 100_000,
            "batch_size": 32,
            "dataset_path": "",
            "crc_debug": True,
            "seed": 0,
            **kwargs,
        }
        if self.memory_cls is None:
            pytest.fail("a MemoryContract subclass must set memory_cls")

        memory_cls = resolve(self.memory_cls, what="memory_cls")
        if self.tolerance is not None:
            options["crc_debug"] = False  # the memory's own check is exact; check_crc() applies the tolerance
        return memory_cls(
            observation_space=observation_space, action_space=action_space, **options, **self.component_options
        )

    def check_crc(self, transition: tuple[Any, ...]) -> None:
        """The CRC check of one rebuilt transition, within :attr:`tolerance` when set."""
        tol = self.tolerance or 0.0
        check_transition_crc(*transition, rtol=tol, atol=tol)

    # -- fixtures ------------------------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def worker_buffers(cls) -> WorkerBuffers:
        """Buffers of two workers (their own env and compressor each), and the spaces."""
        self = cls()
        workers = []
        spaces = None
        for seed in (0, 1):
            env = self.make_env()
            try:
                spaces = (env.observation_space, env.action_space)
                workers.append(
                    rollout(env, self.n_steps, compressor=self.make_compressor(env), seed=seed, crc_debug=True)
                )
            finally:
                env.close()
        return spaces, workers

    @pytest.fixture
    def filled(self, worker_buffers: WorkerBuffers) -> Filled:
        """A memory holding every sample of both workers: ``(memory, samples, episodes)``."""
        spaces, workers = worker_buffers
        memory = self.make_memory(spaces)
        samples = episodes = 0
        for buffer in interleave(*workers):
            memory.append(buffer)
            samples += len(buffer)
            episodes += sum(1 for s in buffer.memory if s[3] or s[4])
        return memory, samples, episodes

    # -- the contract --------------------------------------------------------------------------------------------
    def test_empty_memory_has_no_transition(self, worker_buffers: WorkerBuffers) -> None:
        spaces, _ = worker_buffers
        assert len(self.make_memory(spaces)) == 0

    def test_len_counts_transitions_not_reset_samples(self, filled: Filled) -> None:
        memory, samples, episodes = filled
        assert len(memory) == samples - episodes

    def test_every_transition_is_rebuilt_exactly(self, filled: Filled) -> None:
        memory, _, _ = filled
        for i in range(len(memory)):
            self.check_crc(memory.get_transition(i))

    def test_sampled_batches_pass_crc_and_have_the_batch_format(
        self, filled: Filled, worker_buffers: WorkerBuffers
    ) -> None:
        memory, _, _ = filled
        (observation_space, action_space), _ = worker_buffers
        for _ in range(3):
            obs, act, rew, next_obs, terminated, truncated = memory.sample()  # crc_debug checks every transition
            b = memory.batch_size
            _check_batch_structure(obs, observation_space, b, "obs")
            _check_batch_structure(next_obs, observation_space, b, "next_obs")
            assert act.dtype == torch.float32 and tuple(act.shape) == (b, *action_space.shape)
            for name, x in (("rew", rew), ("terminated", terminated), ("truncated", truncated)):
                assert x.dtype == torch.float32 and tuple(x.shape) == (b,), name
            assert set(torch.unique(terminated).tolist()) <= {0.0, 1.0}

    def test_iterating_yields_nb_steps_batches(self, worker_buffers: WorkerBuffers) -> None:
        spaces, workers = worker_buffers
        memory = self.make_memory(spaces, nb_steps=3, crc_debug=False)
        for buffer in workers[0]:
            memory.append(buffer)
        assert sum(1 for _ in memory) == 3

    def test_wraparound_keeps_the_newest_transitions(self, worker_buffers: WorkerBuffers) -> None:
        spaces, workers = worker_buffers
        memory = self.make_memory(spaces, memory_size=self.small_memory_size)
        for buffer in interleave(*workers):
            memory.append(buffer)
            assert len(memory) <= self.small_memory_size
        assert len(memory) > 0
        for i in range(len(memory)):
            self.check_crc(memory.get_transition(i))
        memory.sample()
        # the newest transition is the last sample received
        last = interleave(*workers)[-1].memory[-1]
        newest = memory.get_transition(len(memory) - 1)
        assert newest[6]["tmrl_crc"]["step"] == last[5]["tmrl_crc"]["step"]

    def test_crc_catches_a_corrupted_transition(self, filled: Filled) -> None:
        memory, _, _ = filled
        prev_obs, act, rew, new_obs, terminated, truncated, info = memory.get_transition(len(memory) // 2)
        with pytest.raises(CrcError) as err:
            self.check_crc((prev_obs, np.asarray(act) + 1, rew, new_obs, terminated, truncated, info))
        assert err.value.component.startswith("act")

    def test_state_dict_resumes_with_identical_batches(self, filled: Filled, worker_buffers: WorkerBuffers) -> None:
        memory, _, _ = filled
        try:
            state = memory.state_dict()
        except NotImplementedError:
            pytest.skip(f"{type(memory).__name__} does not implement state_dict")
        spaces, _ = worker_buffers
        resumed = self.make_memory(spaces, seed=12345)
        resumed.load_state_dict(state)
        assert len(resumed) == len(memory)
        for _ in range(3):
            _assert_batches_equal(memory.sample(), resumed.sample())


def _assert_batches_equal(a: Any, b: Any) -> None:
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_batches_equal(x, y)
        return
    assert torch.equal(a, b)
