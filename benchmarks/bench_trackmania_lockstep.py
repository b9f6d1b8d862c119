"""The TrackMania learning parts without the pipeline: how many env steps sac or redqsac need on the simulated game
when nothing but the learning itself costs time. For trying settings on a machine too slow for
``bench_trackmania_learning.py`` (which runs ``tmrl run``, the figures that count).

One process steps the simulated car (the plugin's ``Car``, rendered frame, ``Lidar``, ``RewardFunction``, settings
and encoder; the agent of ``tmrl_sac`` or ``tmrl_redq``) and trains in lockstep: each env step is 50 ms of game time
with the observation taken 40 ms into it, as rtgym does with the default ``start_obs_capture``, and is followed by
``--utd`` training steps once ``--start`` samples are stored (``training.start_training``), as the plugin's default
``training.when_behind=wait`` holds ``tmrl run``. A deterministic test episode every ``--test-every`` training
episodes. What this leaves out: the worker's and trainer's processes, rtgym's threads and the transport, so a figure
here is what an idealised ``tmrl run`` would reach, not a substitute for its figures.

    python benchmarks/bench_trackmania_lockstep.py [--algo sac] [--track default] [--seed 0] [--env-steps 20000]
        [--start 1000] [--random 0] [--utd 1] [--test-every 5] [--set sac.KEY=JSON] [--set trackmania.KEY=JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np


def parse_sets(items: list[str]) -> dict[str, dict]:
    """``section.key=JSON`` pairs as ``{section: {key: value}}``."""
    out: dict[str, dict] = {}
    for item in items:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = json.loads(value)
    return out


class Lockstep:
    """The simulated game, the LIDAR, the reward and a replay memory, stepped by the caller."""

    def __init__(self, track: str, trackmania: dict, capacity: int, seed: int) -> None:
        from tmrl_trackmania.envs import _make_lidar, load_trajectory, spaces_lidar
        from tmrl_trackmania.reward import RewardFunction
        from tmrl_trackmania.settings import SimSettings, coerce_settings
        from tmrl_trackmania.sim.game import SimulatedGame

        self.s = s = coerce_settings({"backend": "simulated", "sim": {"track": track}, **trackmania})
        self.observation_space, self.action_space = spaces_lidar(s)
        self.lidar = _make_lidar(s)
        self.reward = RewardFunction(
            load_trajectory(s), check_forward=s.check_forward, check_backward=s.check_backward,
            failure_countdown=s.failure_countdown, min_steps=s.min_steps, max_stray=s.max_stray,
            constant_penalty=s.constant_penalty, end_of_track=s.end_of_track,
        )  # fmt: skip
        self.game = SimulatedGame(SimSettings(track=track))
        self.car = self.game.car
        k, a = s.history_length, s.act_buf_len
        shapes = {"speed": (1,), "lidar": (k, 19), "acts": (a, 3)}
        self.obs = {name: np.zeros((capacity, *shape), np.float32) for name, shape in shapes.items()}
        self.next_obs = {name: np.zeros((capacity, *shape), np.float32) for name, shape in shapes.items()}
        self.act = np.zeros((capacity, 3), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.size = 0
        self.rng = np.random.default_rng(seed)

    def _physics(self, seconds: float) -> None:
        for _ in range(int(round(seconds / 0.01))):  # the simulator's physics tick
            self.car.step(0.01)

    def _reading(self) -> np.ndarray:
        return self.lidar.read(self.game.render(self.s.window_width, self.s.window_height))

    def episode(self, policy, store: bool, on_step=None) -> tuple[float, float, int, bool]:
        """One episode; returns (return, progress, steps, finished)."""
        s, car = self.s, self.car
        car.respawn()
        car.set_inputs(0.0, 0.0, 0.0)
        self.reward.reset()
        history = [self._reading()] * s.history_length
        acts = [np.zeros(3, np.float32)] * s.act_buf_len
        obs = (np.array([car.state.speed_kmh], np.float32), np.stack(history), np.stack(acts))
        ret, steps = 0.0, 0
        while True:
            action = policy(obs)
            car.set_inputs(max(0.0, float(action[0])), max(0.0, float(action[1])), float(action[2]))
            self._physics(s.start_obs_capture)
            st = car.state
            rew, terminated = self.reward.step(np.array([st.x, 0.0, st.z]), finished=st.finished)
            history = [*history[1:], self._reading()]
            acts = [*acts[1:], np.asarray(action, np.float32)]
            new_obs = (np.array([st.speed_kmh], np.float32), np.stack(history), np.stack(acts))
            self._physics(s.time_step_duration - s.start_obs_capture)
            steps += 1
            ret += rew
            if store:
                i = self.size
                for name, value in zip(("speed", "lidar", "acts"), obs, strict=True):
                    self.obs[name][i] = value
                for name, value in zip(("speed", "lidar", "acts"), new_obs, strict=True):
                    self.next_obs[name][i] = value
                self.act[i], self.rew[i], self.done[i] = action, rew, terminated
                self.size += 1
                if on_step is not None:
                    on_step()
            obs = new_obs
            if terminated or steps >= s.ep_max_length:
                return ret, self.reward.progress, steps, st.finished

    def batch(self, size: int):
        import torch

        idx = self.rng.integers(0, self.size, size)

        def parts(store: dict) -> tuple:
            acts = torch.as_tensor(store["acts"][idx])
            return (torch.as_tensor(store["speed"][idx]), torch.as_tensor(store["lidar"][idx]), *acts.unbind(1))

        return (parts(self.obs), torch.as_tensor(self.act[idx]), torch.as_tensor(self.rew[idx]), parts(self.next_obs),
                torch.as_tensor(self.done[idx]), torch.zeros(size))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["sac", "redqsac"], default="sac")
    parser.add_argument("--track", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-steps", type=int, default=20000)
    parser.add_argument("--start", type=int, default=1000, help="training.start_training")
    parser.add_argument("--random", type=int, default=0, help="training.random_steps (the plugin's default: 0)")
    parser.add_argument("--utd", type=float, default=1.0, help="training steps per env step")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--test-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="SECTION.KEY=JSON (sac, redqsac, trackmania)")
    args = parser.parse_args()

    import os

    os.environ.setdefault("TMRL_HOME", tempfile.mkdtemp(prefix="tmrl-lockstep-"))  # no recorded reward file
    import torch
    from tmrl_trackmania.models import LidarHistoryEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sets = parse_sets(args.set)
    sim = Lockstep(args.track, sets.get("trackmania", {}), args.env_steps + 2000, args.seed)
    if args.algo == "sac":
        from tmrl_sac.agent import SacAgent as Agent
    else:
        from tmrl_redq.agent import RedqSacAgent as Agent
    agent = Agent(sim.observation_space, sim.action_space, "cpu", LidarHistoryEncoder, sets.get(args.algo, {}))
    actor = agent.get_actor()
    rng = np.random.default_rng(args.seed)
    state = {"random_left": args.random, "updates": 0, "metrics": {}}

    def policy(test: bool):
        def act(obs):
            if not test and state["random_left"] > 0:
                state["random_left"] -= 1
                return rng.uniform(-1.0, 1.0, 3).astype(np.float32)
            with torch.no_grad():
                speed, lidar, acts = (torch.as_tensor(x)[None] for x in obs)
                return actor.act((speed, lidar, *acts.unbind(1)), test=test)

        return act

    def train() -> None:
        while sim.size >= args.start and state["updates"] < (sim.size - args.start + 1) * args.utd:
            state["metrics"] = agent.train(sim.batch(args.batch_size))
            state["updates"] += 1

    print(json.dumps(vars(args)), flush=True)
    print("   env steps | training steps | test return | test progress | train progress | seconds", flush=True)
    t0, episodes, first, train_progress = time.perf_counter(), 0, None, []
    while sim.size < args.env_steps:
        _, progress, _, _ = sim.episode(policy(False), store=True, on_step=train)
        train_progress.append(progress)
        episodes += 1
        if args.test_every and episodes % args.test_every == 0:
            ret, progress, steps, finished = sim.episode(policy(True), store=False)
            if finished and first is None:
                first = sim.size
            print(f"   {sim.size:9d} | {state['updates']:14d} | {ret:11.1f} | {progress:13.3f} | "
                  f"{np.mean(train_progress):14.3f} | {time.perf_counter() - t0:7.0f}", flush=True)
            train_progress.clear()
    print(f"first finished deterministic lap: {first or 'not within the budget'} env steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
