"""Checkpoints are never trusted blindly (issue 15): the digest covers the whole file, the metadata fits a schema,
temporary files left by a kill are removed, and a resumed run continues its metrics without duplicate rows.

Real files throughout: edited with a hex editor's means (bytes), re-signed with a recomputed digest (what a buggy
writer or a deliberate editor could produce), and real trainers reading them back.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import feed, pendulum_training

from tmrl_core.checkpoint import load_state, save_state
from tmrl_core.errors import CheckpointError

DAMAGED = "is damaged: corrupted, truncated or edited"


def _edit_skeleton_text(path: Path, old: str, new: str) -> None:
    """Replace text inside the JSON part of the file, keeping its length (what an editor does to a digit)."""
    assert len(old) == len(new)
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + n]
    assert header.count(old.encode()) >= 1, (old, header[:300])
    path.write_bytes(data[:8] + header.replace(old.encode(), new.encode(), 1) + data[8 + n :])


def test_editing_the_json_part_is_detected(tmp_path: Path) -> None:
    path = save_state(tmp_path / "ck.safetensors", {"training": {"epoch": 15, "w": torch.ones(3)}})
    # the skeleton is JSON inside the header's JSON: its quotes are escaped
    _edit_skeleton_text(path, r'\"epoch\":15', r'\"epoch\":95')
    with pytest.raises(CheckpointError, match=DAMAGED):
        load_state(path)


def test_editing_the_kind_or_the_version_is_detected(tmp_path: Path) -> None:
    path = save_state(tmp_path / "ck.safetensors", {"epoch": 1})
    _edit_skeleton_text(path, '"kind":"checkpoint"', '"kind":"checkpoinX"')
    with pytest.raises(CheckpointError, match=DAMAGED):
        load_state(path)


def test_a_version_1_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = save_state(tmp_path / "ck.safetensors", {"epoch": 1})
    _edit_skeleton_text(path, '"version":"2"', '"version":"1"')
    with pytest.raises(CheckpointError, match="format version 1") as info:
        load_state(path)
    assert "--reset" in (info.value.hint or "")


def test_a_deeply_nested_skeleton_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    path = save_state(tmp_path / "deep.safetensors", {"x": deep})
    with pytest.raises(CheckpointError, match=DAMAGED + r".*nested"):
        load_state(path)


# -- a real trainer reading crafted checkpoints --------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real checkpoint's state (pendulum, SAC, a ring memory holding two episodes)."""
    import os

    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("TMRL_HOME")
    os.environ["TMRL_HOME"] = str(home)
    try:
        from tmrl_core.trainer import Trainer, _Interface

        p, training_cls, worker = pendulum_training("source", start_training=10, steps_per_round=3)
        trainer = Trainer(training_cls, settings=p.settings, transport=False)
        feed(trainer.training, worker, episodes=1)
        feed(trainer.training, worker, episodes=1)
        trainer.training.run_round(_Interface())
        trainer.save_checkpoint()
        trainer.close()
        return load_state(home / "checkpoints" / "source.safetensors")
    finally:
        if old is None:
            os.environ.pop("TMRL_HOME", None)
        else:
            os.environ["TMRL_HOME"] = old


def _deep(depth: int) -> list:
    node: list = ["leaf", 0]
    for _ in range(depth):
        node = ["tuple", [node]]
    return node


CRAFTED = {
    "epoch edited to 95 and re-signed": None,  # the one edit that passes: counters that fit the schema are accepted
    "negative epoch": lambda s: s["training"].update(epoch=-3),
    "negative env steps": lambda s: s["training"].update(env_steps=-1),
    "training is a number": lambda s: s.update(training=5),
    "unknown top-level key": lambda s: s.update(extra={"a": 1}),
    "meta holds a dict": lambda s: s.update(meta={"run": {"nested": 1}}),
    "epoch is text": lambda s: s["training"].update(epoch="many"),
    "memory head negative": lambda s: s["training"]["memory"]["meta"].update(head=-5),
    "memory structure bogus": lambda s: s["training"]["memory"]["meta"].update(structure=["hist", 3]),
    "memory structure nested deeply": lambda s: s["training"]["memory"]["meta"].update(structure=_deep(60)),
    "memory arrays missing": lambda s: s["training"]["memory"].update(arrays={}),
    "rng states bogus": lambda s: s["training"].update(rng={"python": 1, "numpy": 2, "torch": 3}),
    "metrics rows negative": lambda s: s.update(metrics_rows=-1),
}


@pytest.mark.parametrize("edit", sorted(CRAFTED))
def test_crafted_metadata_gives_the_damaged_checkpoint_error(tmrl_home: Path, saved_checkpoint, edit: str) -> None:
    import copy

    from tmrl_core.trainer import Trainer

    state = copy.deepcopy(saved_checkpoint)
    state["meta"]["run"] = "crafted"
    p, training_cls, _ = pendulum_training("crafted", start_training=10, steps_per_round=3)
    path = tmrl_home / "checkpoints" / "crafted.safetensors"
    if CRAFTED[edit] is None:
        state["training"]["epoch"] = 95
        save_state(path, state)
        trainer = Trainer(training_cls, settings=p.settings, transport=False)
        assert trainer.training.epoch == 95  # a well-formed file: nothing to tell it from a real one
        trainer.close()
        return
    CRAFTED[edit](state)
    save_state(path, state)  # a valid digest over bad content
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=DAMAGED) as info:
        Trainer(training_cls, settings=p.settings, transport=False)
    assert "crafted.safetensors" in info.value.message and "--reset" in (info.value.hint or "")
    assert path.read_bytes() == before  # left untouched


def test_a_state_changed_by_another_thread_while_saved_still_loads(tmp_path) -> None:
    """A tensor of the state that another thread keeps changing during the save (a plugin's live buffer, a network
    thread) must not leave a file whose contents and digest disagree: that checkpoint could never be resumed."""
    import threading

    import torch

    from tmrl_core.checkpoint import load_state, save_state

    live = torch.zeros(4_000_000)
    stop = threading.Event()

    def mutate() -> None:
        while not stop.is_set():
            live.add_(1.0)  # releases the GIL: runs while the saver hashes and writes

    thread = threading.Thread(target=mutate, daemon=True)
    thread.start()
    try:
        for i in range(5):
            path = save_state(tmp_path / f"s{i}.safetensors", {"buffer": live}, fsync=False)
            saved = load_state(path)["buffer"]  # raises CheckpointError if the digest does not match
            assert saved.shape == live.shape
    finally:
        stop.set()
        thread.join()
