"""Offline datasets: written from a memory or from raw samples, read back into any memory, never unpickled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import image_buffers

from tmrl_core.errors import CheckpointError, ConfigError
from tmrl_core.memory import GenericTorchMemory, RingMemory
from tmrl_core.memory.dataset import load_dataset, read_dataset, save_dataset, write_dataset
from tmrl_core.testing.image_env import make_image_env
from tmrl_core.testing.memory_contract import rollout


def same_transition(a: tuple, b: tuple) -> bool:
    def eq(x: object, y: object) -> bool:
        if isinstance(x, (tuple, list)):
            return len(x) == len(y) and all(eq(p, q) for p, q in zip(x, y, strict=True))
        return np.array_equal(np.asarray(x), np.asarray(y))

    return all(eq(x, y) for x, y in zip(a[:6], b[:6], strict=True))


@pytest.fixture(scope="module")
def realtime_buffers() -> list:
    return image_buffers(250, seed=2, act_buf_len=2, history=3, size=16, max_episode_steps=11)


def test_a_dataset_written_from_a_memory_seeds_another_with_the_same_transitions(
    realtime_buffers: list, tmp_path: Path
) -> None:
    source = RingMemory(memory_size=120, act_buf_len=2, history_index=1, seed=0)  # wrapped: starts mid-episode
    for buffer in realtime_buffers:
        source.append(buffer)
    path = save_dataset(source, tmp_path / "drive.npz")
    seeded = RingMemory(memory_size=1000, act_buf_len=2, history_index=1, dataset_path=str(path), seed=0)
    assert len(seeded) == len(source)
    assert all(same_transition(seeded.get_transition(i), source.get_transition(i)) for i in range(len(source)))
    # the dataset ends mid-episode for all we know: live samples start a new episode
    seeded.append(realtime_buffers[0])
    assert len(seeded) == len(source) + len(realtime_buffers[0]) - 1
    generic = GenericTorchMemory(memory_size=1000)
    load_dataset(path, generic)
    assert len(generic) == len(source)
    assert all(same_transition(generic.get_transition(i), source.get_transition(i)) for i in range(len(source)))


def test_raw_samples_round_trip_through_a_dataset(tmp_path: Path) -> None:
    env = make_image_env(history=2, size=8, max_episode_steps=6, seed=4)
    buffers = rollout(env, 60, seed=4, crc_debug=False)
    samples = [s for b in buffers for s in b.memory]
    generic = GenericTorchMemory(memory_size=1000)
    for buffer in buffers:
        generic.append(buffer)
    path = save_dataset(generic, tmp_path / "raw.npz", compress=True)
    read, resets = read_dataset(path)
    assert len(read) == len(samples) and sum(resets) == len(buffers)
    for (a, o, r, te, tr, _), original in zip(read, samples, strict=True):
        assert same_transition(
            (o, a, r, o, te, tr),
            (original[1], original[0], np.float32(original[2]), original[1], original[3], original[4]),
        )
    with np.load(path, allow_pickle=False) as data:
        assert {"meta", "act", "rew", "terminated", "truncated", "reset", "obs.0", "obs.1"} <= set(data.files)
        assert data["obs.1"].shape == (len(samples), 2, 8, 8) and data["obs.1"].dtype == np.uint8


def test_compressed_samples_are_not_a_raw_dataset(realtime_buffers: list, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="raw samples"):
        write_dataset(tmp_path / "x.npz", realtime_buffers[0].memory)


def test_bad_dataset_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        RingMemory(memory_size=10, dataset_path=str(tmp_path / "missing.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError):
        read_dataset(garbage)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.frombuffer(b'{"format": "something-else"}', dtype=np.uint8))
    with pytest.raises(CheckpointError, match="not a tmrl-dataset"):
        read_dataset(other)
    marker = tmp_path / "unpickled"
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([_Boom(marker)], dtype=object))
    with pytest.raises(CheckpointError):
        read_dataset(pickled)
    assert not marker.exists()


class _Boom:
    """Creates a file if it is ever unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))
