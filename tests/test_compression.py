"""History compressors: what travels, through the real wire codec, and what they refuse."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import image_buffers

from tmrl_core import codec
from tmrl_core.buffer import Buffer
from tmrl_core.compression import HistoryCompressor, history_compressor, no_compression
from tmrl_core.errors import ConfigError
from tmrl_core.memory import RingMemory
from tmrl_core.plugins import get_component
from tmrl_core.testing.image_env import make_image_env
from tmrl_core.testing.memory_contract import rollout


@pytest.fixture(scope="module")
def image_episodes() -> tuple[list[Buffer], list[Buffer]]:
    """The same rtgym image episodes (4 x 64 x 64 frames, action buffer of 2), raw and compressed."""
    out = []
    for compressor in (no_compression(), history_compressor(act_buf_len=2, history_index=1)):
        env = make_image_env(history=4, act_buf_len=2, size=64, max_episode_steps=40, seed=9)
        try:
            out.append(rollout(env, 240, compressor=compressor, crc_debug=False, seed=9))
        finally:
            env.close()
    return out[0], out[1]


def test_each_frame_travels_once_on_the_wire(image_episodes: tuple) -> None:
    raw, compressed = image_episodes
    samples = sum(len(b) for b in compressed)
    raw_bytes = sum(len(codec.encode_buffer(b)) for b in raw)
    wire_bytes = sum(len(codec.encode_buffer(b)) for b in compressed)
    frame = 64 * 64
    assert raw_bytes / samples > 4 * frame
    assert wire_bytes / samples < 1.1 * frame


def test_compressed_buffers_survive_the_codec_and_rebuild_exactly() -> None:
    buffers = image_buffers(150, seed=1, act_buf_len=2, history=3, size=16, max_episode_steps=12)
    memory = RingMemory(memory_size=1000, crc_debug=True, act_buf_len=2, history_index=1, seed=0)
    for buffer in buffers:
        memory.append(codec.decode_buffer(codec.encode_buffer(buffer)))
    assert len(memory) == sum(len(b) - 1 for b in buffers)
    memory.batch(np.arange(len(memory)))


def test_reset_histories_are_sent_whole_only_when_not_padded() -> None:
    compressor = HistoryCompressor(act_buf_len=2, history_index=0)
    padded = (np.full((3, 2), 7, np.uint8), np.zeros(1, np.float32), np.zeros(1, np.float32))
    cobs = compressor(np.zeros(1, np.float32), padded, 0.0, False, True, {})[1]
    assert cobs["reset"] and cobs["hist"][0].shape == (1, 2) and cobs["act_buf"].shape == (1, 1)
    assert cobs["hist_len"] == (3,)
    carried = (np.arange(6, dtype=np.uint8).reshape(3, 2), np.ones(1, np.float32), np.zeros(1, np.float32))
    cobs = compressor(np.zeros(1, np.float32), carried, 0.0, False, False, {})[1]
    assert cobs["reset"] and cobs["hist"][0].shape == (3, 2) and cobs["act_buf"].shape == (2, 1)
    cobs = compressor(np.ones(1, np.float32), carried, 0.0, False, False, {})[1]
    assert not cobs["reset"] and cobs["hist"][0].shape == (1, 2) and cobs["act_buf"] is None


def test_registered_compressors_take_the_env_component_options(tmrl_home: object) -> None:
    factory = get_component("compressor", "history").load()
    compressor = factory(observation_space=None, action_space=None, act_buf_len=2, history_index=3)
    assert compressor.layout.act_buf_len == 2
    assert get_component("compressor", "action-buffer").load()(act_buf_len=4).layout.act_buf_len == 4
    with pytest.raises(TypeError):  # the pipeline turns this into IncompatibleComponentsError
        get_component("compressor", "action-buffer").load()(act_buf_len=4, history_index=1)


@pytest.mark.parametrize(
    ("options", "obs", "match"),
    [
        ({"act_buf_len": 3}, (np.zeros(1), np.zeros(1)), "act_buf_len=3"),
        ({"history_index": 5}, (np.zeros((2, 2)), np.zeros(1)), "history_index 5"),
        ({"history_index": 0}, np.zeros((2, 2)), "tuple observations"),
    ],
)
def test_layouts_that_do_not_fit_the_observation_are_refused(options: dict, obs: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HistoryCompressor(**options)(np.zeros(1), obs, 0.0, False, False, {})


def test_negative_history_index_counts_before_the_action_buffer() -> None:
    compressor = HistoryCompressor(act_buf_len=1, history_index=-1)
    obs = (np.zeros(2, np.float32), np.zeros((2, 3), np.uint8), np.zeros(1, np.float32))
    cobs = compressor(np.zeros(1, np.float32), obs, 0.0, False, False, {})[1]
    assert len(cobs["obs"]) == 1 and cobs["hist"][0].shape == (1, 3)
