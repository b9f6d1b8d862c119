"""RingMemory's parts: no import cycles, no reach-ins into private attributes, and each part usable alone."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import tmrl_core
from tmrl_core.buffer import Buffer
from tmrl_core.checkpoint import load_state, save_state
from tmrl_core.errors import CheckpointError
from tmrl_core.memory import RingMemory
from tmrl_core.memory.rows import History, RowStore
from tmrl_core.memory.sampler import PrefetchSampler
from tmrl_core.memory.storage import RingStorage
from tmrl_core.memory.structure import MAX_DEPTH, assemble, check_structure, flatten

CORE = Path(tmrl_core.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, known: set[str]) -> set[str]:
    """Modules of ``known`` imported anywhere in ``tree`` (function bodies included), except under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found & known


def _core_import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in CORE.rglob("*.py")}
    known = set(files)
    return {name: _imports(ast.parse(path.read_text()), known) - {name} for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_the_cycle_finder_finds_a_function_level_cycle() -> None:
    a = ast.parse("def f():\n    from pkg.b import g\n")
    b = ast.parse("import pkg.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\n")
    c = ast.parse("x = 1\n")
    known = {"pkg.a", "pkg.b", "pkg.c"}
    graph = {"pkg.a": _imports(a, known), "pkg.b": _imports(b, known), "pkg.c": _imports(c, known)}
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]  # the TYPE_CHECKING import of pkg.c is not an edge


def test_the_core_has_no_import_cycle_even_through_function_level_imports() -> None:
    graph = _core_import_graph()
    assert "tmrl_core.memory.storage" in graph["tmrl_core.memory.dataset"]  # the graph sees real edges
    assert _cycles(graph) == []


def _private_reach_ins(tree: ast.AST) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls``, and ``from x import _name``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_the_reach_in_finder_sees_one() -> None:
    assert _private_reach_ins(ast.parse("def f(m):\n    return m._hist, self._ok\n")) == ["line 2: m._hist"]


@pytest.mark.parametrize("module", sorted(p.name for p in (CORE / "memory").glob("*.py")))
def test_memory_modules_use_each_other_through_public_interfaces_only(module: str) -> None:
    assert _private_reach_ins(ast.parse((CORE / "memory" / module).read_text())) == []


# -- each part alone ----------------------------------------------------------------------------------------------


def test_structure_round_trip_and_validation() -> None:
    obs = (np.zeros(3), {"a": 1.0, "b": [np.ones(2), 2]})
    leaves: list = []
    node = flatten(obs, leaves)
    assert check_structure(node) == (4, 0)
    rebuilt = assemble(node, leaves, [], False)
    assert rebuilt[1]["b"][1] == 2 and rebuilt[0] is leaves[0]
    deep: list = ["leaf", 0]
    for _ in range(MAX_DEPTH + 1):
        deep = ["tuple", [deep]]
    for bad in (deep, ["leaf", -1], ["hist", 0], ["tuple", "x"], ["leaf", 1], ["what", 0], "leaf", ["leaf", True]):
        with pytest.raises(ValueError):
            check_structure(bad, histories=0)


def test_row_store_grows_keeps_live_rows_and_round_trips() -> None:
    store = RowStore((2,), np.int32, capacity=4)
    store.write(np.arange(6, dtype=np.int32).reshape(3, 2))
    store.reserve(oldest_needed=1, n_new=4)  # rows 1..6 must fit: it grows
    store.write(np.arange(6, 14, dtype=np.int32).reshape(4, 2))
    assert store.capacity >= 6 and store.take(np.array([1, 6]))[:, 0].tolist() == [2, 12]
    copy = RowStore((2,), np.int32, capacity=2)
    copy.load_state_dict(store.state_dict(first=1))
    assert np.array_equal(copy.take(np.arange(1, 7)), store.take(np.arange(1, 7))) and copy.head == 7


def test_history_windows_pad_with_the_floor() -> None:
    hist = History(3, (), np.int64, capacity=4)
    hist.store.write(np.array([10, 11, 12, 13]))
    hist.newest[:2] = [0, 3]
    hist.floor[:2] = [0, 2]  # slot 1: an episode that started at row 2
    assert hist.windows(np.array([0, 1])).tolist() == [[10, 10, 10], [12, 12, 13]]
    assert hist.windows(np.array([1]), extra=1).tolist() == [[12, 12, 12, 13]]


def test_ring_storage_alone_stores_gathers_and_round_trips() -> None:
    storage = RingStorage(capacity=6)
    samples = [(np.float32(k), np.array([k, -k], dtype=np.float32), float(k), False, k == 4, {}) for k in range(9)]
    storage.append(samples)
    assert storage.stored_samples == 6 and storage.tail == 3 and storage.head == 9
    positions = storage.transition_positions(np.arange(len(storage)))
    obs, act, rew, next_obs, *_ = storage.transition(storage.gather(positions), 0)
    assert obs.tolist() == [positions[0] - 1, 1 - positions[0]] and next_obs[0] == positions[0] == rew
    clone = RingStorage(capacity=4)  # smaller: the newest samples that fit are kept
    clone.load_state_dict(storage.state_dict())
    assert clone.stored_samples == 4 and clone.head == 9
    assert clone.observations(np.arange(5, 9)).tolist() == storage.observations(np.arange(5, 9)).tolist()


def test_prefetch_sampler_rewinds_a_dropped_batch() -> None:
    rng = np.random.default_rng(0)
    sampler: PrefetchSampler = PrefetchSampler(rng, prefetch=True)

    def draw() -> int:
        return int(rng.integers(1000))

    first = [sampler.sample(draw, lambda k: k), sampler.sample(draw, lambda k: k)]
    sampler.drop()  # the batch in flight is drawn again
    again = sampler.sample(draw, lambda k: k)
    sampler.close()
    reference = np.random.default_rng(0)
    expected = [int(reference.integers(1000)) for _ in range(3)]
    assert first + [again] == expected


def test_a_damaged_memory_state_is_refused_and_the_memory_unchanged(tmp_path: Path) -> None:
    memory = RingMemory(memory_size=50, seed=0, history_index=0)
    buffer = Buffer()
    for k in range(20):
        buffer.append_sample((np.float32(k), (np.full((2, 3), k, dtype=np.uint8),), 0.0, False, k % 7 == 6, {}))
    memory.append(buffer)
    path = save_state(tmp_path / "m.safetensors", {"memory": memory.state_dict()})
    good = load_state(path)["memory"]
    before = memory.batch(np.arange(len(memory)))

    def damaged(edit) -> dict:
        state = load_state(path)["memory"]
        edit(state)
        return state

    edits = {
        "negative head": lambda s: s["meta"].update(head=-5),
        "tail after head": lambda s: s["meta"].update(tail=s["meta"]["head"] + 1),
        "unknown key": lambda s: s["meta"].update(evil=1),
        "stats not a dict": lambda s: s["meta"].update(stats=[1, 2]),
        "structure bogus": lambda s: s["meta"].update(structure=["tuple", [["hist", 7]]]),
        "structure deep": lambda s: s["meta"].update(structure=_nested(200)),
        "rng not json": lambda s: s["meta"].update(rng="{"),
        "rows missing": lambda s: s["arrays"].pop("hist.0.rows"),
        "newest outside rows": lambda s: s["arrays"]["hist.0.newest"].__setitem__(0, 10**9),
        "hist counters": lambda s: s["meta"]["hist"][0].update(first_row=0, head=10**6),
        "leaf short": lambda s: s["arrays"].update({"act": s["arrays"]["act"][1:]}),
        "meta missing": lambda s: s.pop("meta"),
    }
    for name, edit in edits.items():
        with pytest.raises(CheckpointError, match="replay memory state|act_buf_len") as info:
            memory.load_state_dict(damaged(edit))
        assert info.value.hint, name
        after = memory.batch(np.arange(len(memory)))
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(after[1:], before[1:], strict=True))
    memory.load_state_dict(good)


def _nested(depth: int) -> list:
    node: list = ["leaf", 0]
    for _ in range(depth):
        node = ["tuple", [node]]
    return node


def test_a_dropped_memory_is_freed_at_once_without_the_garbage_collector() -> None:
    import gc
    import weakref

    memory = RingMemory(memory_size=10, seed=0, prefetch=True)
    buffer = Buffer()
    for k in range(8):
        buffer.append_sample((np.float32(k), np.float32(k), 0.0, False, False, {}))
    memory.append(buffer)
    memory.sample()
    memory.close()
    ref = weakref.ref(memory)
    gc.disable()
    try:
        del memory
        assert ref() is None, "a reference cycle keeps the memory (and its arrays) alive until a collection"
    finally:
        gc.enable()
