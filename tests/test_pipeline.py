"""The pipeline on one machine, in one process (threads) and across processes: transport, worker conventions,
trainer pacing and budget, env x algo assembly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from helpers import train_with_local_server, wait_until

from tmrl_core import partial
from tmrl_core.agents import TorchActorModule
from tmrl_core.buffer import Buffer
from tmrl_core.errors import CheckpointError, ConfigError, IncompatibleComponentsError, TransportError
from tmrl_core.settings import ServerSettings, Settings

SMALL = ["sac.hidden_sizes=[16,16]", "training.batch_size=16"]


def _buffer(n_steps: int, tag: float) -> Buffer:
    buffer = Buffer()
    buffer.append_sample((np.zeros(1, np.float32), np.full(3, tag, np.float32), 0.0, False, False, {}))
    for k in range(n_steps):
        last = k == n_steps - 1
        buffer.append_sample((np.ones(1, np.float32), np.full(3, tag + k, np.float32), -1.0, False, last, {"k": k}))
    buffer.stat_train_return = -float(n_steps)
    return buffer


# -- the local transport ---------------------------------------------------------------------------------------------


def test_local_transport_relays_buffers_and_broadcasts_weights(tmrl_home: Path) -> None:
    from tmrl_core.transport.local import LocalTransport

    transport = LocalTransport(ServerSettings(password="pw"), run_name="relay")
    early = transport.worker("early")  # started before the server: waits for it
    time.sleep(0.3)
    server = transport.server()
    server.start()
    late = transport.worker("late")
    trainer = transport.trainer()
    try:
        assert early.wait_connected(10) and late.wait_connected(10) and trainer.wait_connected(10)
        for i in range(5):
            early.send_samples(_buffer(3, 10.0 * i))
            late.send_samples(_buffer(4, 100.0 + i))
        received: list[Buffer] = []
        wait_until(
            lambda: received.extend(trainer.receive_samples()) or len(received) == 10, 30, "10 buffers", poll=0.02
        )
        assert sorted(len(b) for b in received) == [4] * 5 + [5] * 5
        assert {b.stat_train_return for b in received} == {-3.0, -4.0}
        one = next(b for b in received if len(b) == 4)
        assert one.memory[-1][4] is True and one.memory[-1][5] == {"k": 2}

        trainer.send_weights({"w": torch.full((2, 2), 1.0)})
        trainer.send_weights({"w": torch.full((2, 2), 2.0)})  # newest wins
        for worker in (early, late):
            got = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                w = worker.receive_weights(blocking=True, timeout=1.0)
                got = w if w is not None else got
                if got is not None and float(got["w"][0, 0]) == 2.0:
                    break
            assert got is not None and torch.equal(got["w"], torch.full((2, 2), 2.0))
        assert server.worker_count == 2 and server.trainer_connected
    finally:
        for client in (early, late, trainer):
            client.close()
        server.stop()
    assert not Path(transport.address).exists()


def test_local_transport_refuses_a_wrong_password(tmrl_home: Path) -> None:
    from tmrl_core.transport.local import LocalTransport

    good = LocalTransport(ServerSettings(password="right"), run_name="pw")
    server = good.server()
    server.start()
    intruder = LocalTransport(ServerSettings(password="wrong"), run_name="pw").worker("intruder")
    try:
        with pytest.raises(TransportError, match="password"):
            intruder.wait_connected(10)
        assert server.worker_count == 0
    finally:
        intruder.close()
        server.stop()


def test_a_second_server_for_the_same_run_is_refused(tmrl_home: Path) -> None:
    from tmrl_core.transport.local import LocalTransport

    transport = LocalTransport(ServerSettings(password="pw"), run_name="twice")
    first = transport.server()
    first.start()
    try:
        with pytest.raises(TransportError, match="already listening"):
            transport.server().start()
    finally:
        first.stop()
    second = transport.server()  # the address is free again
    second.start()
    second.stop()


def test_local_transport_between_processes(tmrl_home: Path) -> None:
    """A worker in another process (started first) reaches the server; nothing is pickled on the way."""
    from tmrl_core.transport.local import LocalTransport

    script = textwrap.dedent(
        """
        import sys, numpy as np
        from tmrl_core.buffer import Buffer
        from tmrl_core.settings import ServerSettings
        from tmrl_core.transport.local import LocalTransport
        worker = LocalTransport(ServerSettings(password="pw"), run_name="procs").worker("child")
        assert worker.wait_connected(60)
        for i in range(20):
            b = Buffer()
            b.append_sample((np.zeros(2, np.float32), (np.full(2, i, np.float32),), 0.0, False, False, {}))
            b.append_sample((np.ones(2, np.float32), (np.full(2, i + 1, np.float32),), 1.0, True, False, {}))
            worker.send_samples(b)
        weights = worker.receive_weights(blocking=True, timeout=60)
        print(float(weights["bias"].sum()), flush=True)
        worker.close()
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    transport = LocalTransport(ServerSettings(password="pw"), run_name="procs")
    server = transport.server()
    server.start()
    trainer = transport.trainer()
    try:
        got: list[Buffer] = []
        wait_until(lambda: got.extend(trainer.receive_samples()) or len(got) == 20, 90, "20 buffers", poll=0.02)
        assert [float(b.memory[0][1][0][0]) for b in got] == [float(i) for i in range(20)]
        trainer.send_weights({"bias": torch.full((3,), 2.0)})
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
        assert out.decode().strip() == "6.0"
    finally:
        if child.poll() is None:
            child.kill()
        trainer.close()
        server.stop()


# -- the worker ------------------------------------------------------------------------------------------------------


class ConstantActor(TorchActorModule):
    """Always the same action: one learnable parameter, so that weights can travel."""

    def __init__(self, observation_space, action_space, value: float = 0.5):
        super().__init__(observation_space, action_space)
        self.value = torch.nn.Parameter(torch.full(action_space.shape, value))

    def forward(self, obs, test=False, with_logprob=True):
        return self.value, None

    def act(self, obs, test=False):
        return self.value.detach().numpy().copy()


def _settings(**sections) -> Settings:
    return Settings(**sections)


def test_worker_records_whole_episodes_with_reset_sample_and_truncation(tmrl_home: Path) -> None:
    from tmrl_core import GenericGymEnv, RolloutWorker

    worker = RolloutWorker(
        env_cls=partial(GenericGymEnv, id="Pendulum-v1"),
        actor_module_cls=ConstantActor,
        max_samples_per_episode=5,
        standalone=True,
        settings=_settings(),
        seed=0,
    )
    ret, steps = worker.collect_train_episode()
    samples = worker.buffer.memory
    assert steps == 5 and len(samples) == 6
    act0, obs0, rew0, term0, trunc0, _ = samples[0]
    assert np.array_equal(act0, np.zeros(1, np.float32)) and rew0 == 0.0 and not term0 and not trunc0
    assert all(np.allclose(s[0], 0.5) for s in samples[1:])
    assert [s[4] for s in samples] == [False] * 5 + [True]  # truncated by max_samples_per_episode...
    assert not any(s[3] for s in samples)  # ...not terminated
    assert worker.buffer.stat_train_return == pytest.approx(sum(s[2] for s in samples[1:]))
    assert worker.buffer.stat_train_steps == 5

    test_ret, test_steps = worker.run_episode(7, train=False)
    assert test_steps == 7 and len(worker.buffer) == 6  # test episodes are not recorded
    assert worker.buffer.stat_test_return == test_ret
    worker.close()


def test_reset_sample_of_an_rtgym_env_carries_the_default_action(tmrl_home: Path) -> None:
    from tmrl_core import GenericGymEnv, RolloutWorker
    from tmrl_core.envs import DummyRCDroneInterface, RcDroneSettings, rc_drone_config

    class Shifted(DummyRCDroneInterface):
        def get_default_action(self):
            return np.array([0.25, -0.75], dtype=np.float32)

    drones: list = []  # stopped at the end: a drone left running takes CPU from every later test
    settings = RcDroneSettings(time_step_duration=0.01, start_obs_capture=0.01, ep_max_length=4)
    config = rc_drone_config(settings, drones=drones)
    config["interface"] = Shifted
    config["time_step_timeout_factor"] = 100.0
    worker = RolloutWorker(
        env_cls=partial(GenericGymEnv, id="real-time-gym-ts-v1", gym_kwargs={"config": config}),
        actor_module_cls=ConstantActor,
        standalone=True,
        settings=_settings(),
    )
    for _ in range(2):  # the second reset follows an episode whose last action was never applied
        worker.buffer = Buffer()
        worker.collect_train_episode()
        act0, obs0 = worker.buffer.memory[0][:2]
        assert np.array_equal(act0, [0.25, -0.75])
        assert np.array_equal(obs0[-1], act0)  # the newest entry of the reset observation's action buffer
        assert worker.buffer.memory[-1][4] and not worker.buffer.memory[-1][3]  # rtgym truncates at ep_max_length
    worker.close()
    assert len(drones) == 1
    drones[0].stop()


def test_worker_loads_weights_at_start_saves_received_ones_and_keeps_a_history(tmrl_home: Path) -> None:
    from tmrl_core import GenericGymEnv, RolloutWorker, Server
    from tmrl_core.checkpoint import load_weights, save_weights

    settings = _settings(run={"name": "weights"}, server={"password": "pw"})
    weights_dir = tmrl_home / "weights"
    save_weights(weights_dir / "weights.safetensors", {"value": torch.tensor([1.25])})
    server = Server(settings=settings)
    worker = RolloutWorker(
        env_cls=partial(GenericGymEnv, id="Pendulum-v1"),
        actor_module_cls=ConstantActor,
        model_history=2,
        settings=settings,
    )
    expert = RolloutWorker(
        env_cls=partial(GenericGymEnv, id="Pendulum-v1"),
        actor_module_cls=ConstantActor,
        expert=True,
        settings=settings,
        name="expert",
        save_weights=False,
    )
    trainer = server.transport.trainer()
    try:
        assert float(worker.actor.value.detach()) == 1.25  # loaded from <data>/weights/<run>.safetensors
        assert worker.endpoint.wait_connected(10) and expert.endpoint.wait_connected(10)
        wait_until(lambda: server.endpoint.worker_count == 2, 30, "two workers", poll=0.02)
        for k in (2.0, 3.0):
            trainer.send_weights({"value": torch.tensor([k])})
            assert worker.update_actor_weights(blocking=True, timeout=10)
        assert float(worker.actor.value.detach()) == 3.0
        assert float(load_weights(weights_dir / "weights.safetensors")["value"]) == 3.0
        assert float(load_weights(weights_dir / "weights_2.safetensors")["value"]) == 3.0  # every 2nd model
        trainer.send_weights({"other": torch.zeros(3)})  # weights of another actor: ignored, acting goes on
        assert not worker.update_actor_weights(blocking=True, timeout=10)
        assert float(worker.actor.value.detach()) == 3.0 and worker.models_received == 2
        assert not expert.update_actor_weights(blocking=True, timeout=0.5)  # experts ignore weights
        assert float(expert.actor.value.detach()) == 1.25
    finally:
        trainer.close()
        worker.close()
        expert.close()
        server.stop()


def test_weights_that_do_not_fit_the_actor_are_a_clear_error(tmrl_home: Path) -> None:
    from tmrl_core import GenericGymEnv, RolloutWorker
    from tmrl_core.checkpoint import save_weights

    save_weights(tmrl_home / "weights" / "default.safetensors", {"other": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="do not fit"):
        RolloutWorker(
            env_cls=partial(GenericGymEnv, id="Pendulum-v1"),
            actor_module_cls=ConstantActor,
            standalone=True,
            settings=_settings(),
        )


# -- assembling env x algo -----------------------------------------------------------------------------------------


def test_env_defaults_sit_between_the_built_in_defaults_and_the_user(tmrl_home: Path) -> None:
    from tmrl_core.pipeline import prepare

    assert Settings().training.max_training_steps_per_env_step == 4.0
    p = prepare("pendulum", "sac")
    assert p.settings.training.max_training_steps_per_env_step == 1.0  # pendulum's default
    assert p.settings.worker.max_env_steps_per_model == 200 and p.synchronous
    p = prepare("pendulum", "sac", sets=["training.max_training_steps_per_env_step=3"])
    assert p.settings.training.max_training_steps_per_env_step == 3.0
    config = tmrl_home / "config" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"version": 1, "worker": {"max_env_steps_per_model": 0}}))
    p = prepare("pendulum", "sac")
    assert p.settings.worker.max_env_steps_per_model == 0 and not p.synchronous
    assert not prepare("rc-drone", "sac").synchronous  # real time: never made to wait


def test_any_gymnasium_id_is_an_env_and_incompatible_pairs_are_refused(tmrl_home: Path) -> None:
    from tmrl_core.pipeline import build_worker, prepare

    p = prepare("gym:MountainCarContinuous-v0", "sac", sets=SMALL)
    assert p.observation_space.shape == (2,) and p.action_space.shape == (1,)
    worker = build_worker(p, standalone=True)
    assert worker.run_episodes(max_samples_per_episode=10, nb_episodes=2) and worker.env_steps == 0
    worker.close()
    with pytest.raises(IncompatibleComponentsError, match="box"):
        prepare("gym:CartPole-v1", "sac")
    with pytest.raises(ConfigError):
        prepare("gym:NoSuchEnv-v9", "sac")


def test_rc_drone_spaces_are_described_without_starting_it(tmrl_home: Path) -> None:
    from tmrl_core.envs import make_rc_drone
    from tmrl_core.pipeline import prepare

    p = prepare("rc-drone", "sac", sets=["rc_drone.act_buf_len=2"])
    assert len(p.observation_space.spaces) == 4 + 2 and p.component_options == {"act_buf_len": 2}
    env = make_rc_drone(p.env_settings)
    assert env.observation_space == p.observation_space and env.action_space == p.action_space
    assert isinstance(p.action_space, spaces.Box)


# -- trainer pacing, budget and metrics (threads) ------------------------------------------------------------------


def test_threaded_pipeline_paces_training_and_ends_at_the_budget(tmrl_home: Path, one_torch_thread) -> None:
    """Server, trainer and a synchronous worker in one process: the trainer never gets more than
    max_training_steps_per_env_step ahead, the worker waits for models, and the run ends at --env-steps."""
    from tmrl_core.metrics import read_metrics
    from tmrl_core.pipeline import build_trainer, prepare

    p = prepare(
        "pendulum",
        "sac",
        sets=[
            *SMALL,
            "run.name=paced",
            "training.max_env_steps=1000",
            "training.start_training=200",
            "training.steps_per_round=50",
            "training.update_model_interval=50",
            "training.max_training_steps_per_env_step=0.5",
            "worker.max_env_steps_per_model=200",
            "worker.test_episode_interval=2",
        ],
    )
    sent_steps: list[tuple[int, int]] = []
    trainer = build_trainer(p)
    original = trainer.interface.broadcast_model

    def spy(actor):
        sent_steps.append((trainer.training.total_updates, trainer.training.env_steps))
        original(actor)

    trainer.interface.broadcast_model = spy
    history, worker = train_with_local_server(p, trainer)
    t = trainer.training
    assert t.finished and t.env_steps >= 1000
    assert t.total_updates <= 0.5 * t.env_steps
    for record in history:
        assert record["training_steps"] <= 0.5 * record["env_steps"] + 1
    # the synchronous worker: at most one episode (200 steps) beyond max_env_steps_per_model per model
    assert worker.models_received >= 2
    assert t.env_steps <= 200 * 2 + (worker.models_received + 1) * 200
    records = read_metrics("paced")
    assert len(records) == len(history) >= 2
    assert {"loss_actor", "loss_critic", "return_train", "idle_time", "training_time", "env_steps"} <= set(
        records[-1]
    ) | set(records[-2])
    assert any(r.get("return_test") is not None for r in records)
    assert (tmrl_home / "weights" / "paced.safetensors").is_file()
    checkpoint = tmrl_home / "checkpoints" / "paced.safetensors"
    written = checkpoint.stat().st_mtime_ns

    again = build_trainer(p)  # the same run, its budget spent: resumes and ends at once
    assert again.resumed and again.training.env_steps == t.env_steps
    assert again.run() == [] and checkpoint.stat().st_mtime_ns == written


class _CountingAgent:
    """A TrainingAgent stand-in that counts its train calls (REDQ-like: several calls per training step)."""

    updates_per_step = 3

    def __init__(self, observation_space, action_space, device) -> None:
        self.calls = 0
        self.actor = torch.nn.Linear(3, 1)

    def train(self, batch) -> dict[str, float]:
        self.calls += 1
        return {"calls": float(self.calls)}

    def get_actor(self):
        return self.actor


def test_a_training_step_is_updates_per_step_agent_updates(tmrl_home: Path) -> None:
    """REDQ's G critic updates per actor update: the trainer makes `updates_per_step` train calls per training step,
    so the steps-per-env-step ratio and the intervals keep one meaning for every agent."""
    from tmrl_core.memory import GenericTorchMemory
    from tmrl_core.trainer import TorchTrainingOffline

    obs_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    training = TorchTrainingOffline(
        env_cls=(obs_space, act_space),
        memory_cls=partial(GenericTorchMemory, batch_size=4),
        training_agent_cls=_CountingAgent,
        epochs=1,
        rounds=2,
        steps=5,
        max_training_steps_per_env_step=1.0,
        start_training=1,
        device="cpu",
        settings=Settings(),
    )
    training.memory.append(_buffer(40, 0.0))
    training.env_steps = 40
    stats = training.run_epoch()
    assert [record["training_steps"] for record in stats] == [5, 10]
    assert training.agent.calls == 3 * 10


def test_a_worker_process_ends_after_its_atexit_handlers_without_the_interpreter_teardown(tmp_path: Path) -> None:
    """What `tmrl worker` and the workers of `tmrl run` end with: the atexit handlers run and what was printed is
    flushed, but the teardown (module finalizers, the last garbage collection: seconds of CPU with torch loaded)
    is skipped."""
    script = "\n".join(
        [
            "import atexit, pathlib",
            "from tmrl_core.pipeline import exit_without_teardown",
            f"atexit.register(lambda: pathlib.Path({str(tmp_path / 'atexit')!r}).write_text('ran'))",
            "class Finalized:",
            f"    def __del__(self): pathlib.Path({str(tmp_path / 'teardown')!r}).write_text('ran')",
            "kept = Finalized()",
            "print('last words', end='')",
            "exit_without_teardown(3)",
        ]
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout) == (3, "last words"), result.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()
    # the same script ending normally runs the finalizer: the check above can tell
    normal = script.replace("exit_without_teardown(3)", "")
    assert subprocess.run([sys.executable, "-c", normal], timeout=300).returncode == 0
    assert (tmp_path / "teardown").read_text() == "ran"
