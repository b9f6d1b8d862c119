"""Checkpoints: the file format (no pickle), atomic writes, damaged files, and resuming a training loop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import feed, pendulum_training

from tmrl_core.checkpoint import (
    atomic_write,
    load_state,
    load_weights,
    quarantine,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
)
from tmrl_core.errors import CheckpointError


def _trained_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.8, 0.95), weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_nested_state_round_trips_exactly(tmp_path: Path) -> None:
    model, opt = _trained_optimizer()
    generator = np.random.default_rng(7)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),  # integer keys, tuples (betas), None values
        "counters": {"epoch": 3, "round": 0, "ratio": 0.5, "name": "x", "flag": True, "none": None},
        "arrays": [np.arange(6, dtype=np.uint8).reshape(2, 3), np.float32(1.5), np.zeros((0, 2), np.float64)],
        "generator": generator.bit_generator.state,  # 128-bit integers
        "raw": b"\x00\x01",
        "$odd key": {1: "int key", (2, 3): "tuple key"},
    }
    path = save_state(tmp_path / "ck.safetensors", state)
    back = load_state(path)

    for key, tensor in model.state_dict().items():
        assert torch.equal(back["model"][key], tensor)
    restored = torch.optim.AdamW(model.parameters())
    restored.load_state_dict(back["optimizer"])
    assert restored.param_groups[0]["betas"] == (0.8, 0.95)
    assert restored.param_groups[0]["weight_decay"] == 0.1
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(restored.state_dict()["state"][0][k], v)
    assert back["counters"] == state["counters"]
    assert back["arrays"][0].dtype == np.uint8 and np.array_equal(back["arrays"][0], state["arrays"][0])
    assert back["arrays"][1] == np.float32(1.5) and isinstance(back["arrays"][1], np.float32)
    assert back["arrays"][2].shape == (0, 2)
    assert back["generator"] == state["generator"]
    assert back["raw"] == b"\x00\x01"
    assert back["$odd key"] == {1: "int key", (2, 3): "tuple key"}


def test_rng_states_round_trip(tmp_path: Path) -> None:
    import random

    saved = rng_state()
    save_state(tmp_path / "rng.safetensors", {"rng": saved})
    expected = (np.random.rand(), torch.rand(1).item())
    random.random()
    set_rng_state(load_state(tmp_path / "rng.safetensors")["rng"])
    # (python's generator is compared by state: other tests' rtgym drone threads draw from it in the background)
    assert random.getstate()[1][:10] == saved["python"][1][:10]
    assert (np.random.rand(), torch.rand(1).item()) == expected


def test_the_file_is_plain_safetensors_without_pickle(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = save_state(tmp_path / "ck.safetensors", {"w": torch.ones(2), "epoch": 1})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert json.loads(meta["skeleton"])["epoch"] == 1
        assert sorted(f.keys()) == ["w"]
    assert b"\x80\x04" not in path.read_bytes()[:16]  # no pickle protocol header anywhere near the start


def test_objects_that_are_not_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not supported"):
        save_state(tmp_path / "ck.safetensors", {"bad": object()})
    with pytest.raises(CheckpointError, match="dtype"):
        save_state(tmp_path / "ck.safetensors", {"bad": np.array(["a"], dtype=object)})
    assert not (tmp_path / "ck.safetensors").exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = save_state(tmp_path / "ck.safetensors", {"epoch": 1})
    before = path.read_bytes()

    def failing(tmp: str) -> None:
        Path(tmp).write_bytes(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temporary file left behind


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:-3] + bytes(x ^ 0xFF for x in b[-3:]), id="flipped-data-bytes"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"\xff" * 64, id="garbage"),
    ],
)
def test_damaged_checkpoints_raise_a_clear_error(tmp_path: Path, damage) -> None:
    path = save_state(tmp_path / "ck.safetensors", {"w": torch.arange(100.0), "epoch": 2})
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    with pytest.raises(CheckpointError, match="is damaged: corrupted, truncated or edited") as info:
        load_state(path)
    assert "--reset" in (info.value.hint or "")
    assert path.read_bytes() == damaged  # left untouched


def test_a_weights_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    weights = save_weights(tmp_path / "w.safetensors", {"a": torch.ones(2)})
    with pytest.raises(CheckpointError, match="not a tmrl checkpoint"):
        load_state(weights)
    assert torch.equal(load_weights(weights)["a"], torch.ones(2))
    with pytest.raises(CheckpointError, match="no weights file"):
        load_weights(tmp_path / "missing.safetensors")


def test_quarantine_moves_the_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "ck.safetensors"
    path.write_bytes(b"x")
    moved = quarantine(path, "corrupt")
    assert not path.exists() and moved.read_bytes() == b"x" and ".corrupt-" in moved.name


# -- the trainer with checkpoints ----------------------------------------------------------------------------------


def test_trainer_resumes_epoch_memory_and_optimiser_state(tmrl_home: Path) -> None:
    from tmrl_core.trainer import Trainer, _Interface

    p, training_cls, worker = pendulum_training(
        "resume",
        rounds_per_epoch=2,
        steps_per_round=5,
        start_training=20,
        max_training_steps_per_env_step=10,
    )
    first = Trainer(training_cls, settings=p.settings, transport=False)
    feed(first.training, worker, episodes=3)
    first.training.run_epoch()  # offline: trains on what the memory holds
    first.training.run_round(_Interface())
    assert (first.training.epoch, first.training.round) == (1, 1)
    first.save_checkpoint()
    first.close()
    saved = first.training
    critic_state = saved.agent.state_dict()

    second = Trainer(training_cls, settings=p.settings, transport=False)
    t = second.training
    assert second.resumed
    assert (t.epoch, t.round, t.total_updates, t.env_steps) == (1, 1, 15, saved.env_steps)
    assert len(t.memory) == len(saved.memory) == 90
    batch_a, batch_b = saved.memory.sample(), t.memory.sample()  # same contents, same sampler state
    for a, b in zip(batch_a, batch_b, strict=True):
        assert torch.equal(a, b)
    restored = t.agent.state_dict()
    assert set(restored) == set(critic_state)

    def leaves(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from leaves(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from leaves(v)
        else:
            yield x

    for a, b in zip(leaves(critic_state), leaves(restored), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)  # weights and optimiser moments
        else:
            assert a == b
    second.close()


def test_a_corrupted_checkpoint_stops_the_trainer_and_stays_untouched(tmrl_home: Path) -> None:
    from tmrl_core.trainer import Trainer

    p, training_cls, _ = pendulum_training("corrupt")
    path = tmrl_home / "checkpoints" / "corrupt.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="is damaged: corrupted, truncated or edited"):
        Trainer(training_cls, settings=p.settings, transport=False)
    assert path.read_bytes() == before

    p.settings.run.reset_training = True  # --reset: keep it aside, start afresh
    trainer = Trainer(training_cls, settings=p.settings, transport=False)
    assert not trainer.resumed and not path.exists()
    kept = [f for f in path.parent.iterdir() if f.name.startswith("corrupt.safetensors.old-")]
    assert len(kept) == 1 and kept[0].read_bytes() == before
    trainer.close()


def test_a_checkpoint_of_another_env_or_algo_is_refused(tmrl_home: Path) -> None:
    from tmrl_core.trainer import Trainer

    p, training_cls, _ = pendulum_training("mismatch")
    trainer = Trainer(training_cls, settings=p.settings, transport=False, checkpoint_meta={"env": "pendulum"})
    trainer.save_checkpoint()
    trainer.close()
    with pytest.raises(CheckpointError, match="env='pendulum'"):
        Trainer(training_cls, settings=p.settings, transport=False, checkpoint_meta={"env": "rc-drone"})


def test_no_temporary_files_are_left_in_the_checkpoints_folder(tmrl_home: Path) -> None:
    from tmrl_core.trainer import Trainer

    p, training_cls, worker = pendulum_training("tidy", start_training=10)
    trainer = Trainer(training_cls, settings=p.settings, transport=False)
    feed(trainer.training, worker, episodes=1)
    for _ in range(3):
        trainer.save_checkpoint()
    trainer.close()
    assert sorted(os.listdir(tmrl_home / "checkpoints")) == ["tidy.safetensors"]
    assert sorted(os.listdir(tmrl_home / "weights")) == ["tidy.safetensors"]
