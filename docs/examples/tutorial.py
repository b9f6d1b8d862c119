"""The seed tutorial's pipeline ("TMRL as a Python library"), written against tmrl-core.

A custom real-time environment (rtgym's dummy RC drone), a custom actor, a sample compressor, a custom memory that
rebuilds the action buffers (with the reset-transition fix from the tutorial's CRC section), and a custom SAC
training agent; the server and the trainer run in this script, the worker in a thread.

Only the imports differ from the tutorial (``tmrl.*`` -> ``tmrl_core``), plus the file paths, which come from the
data folder instead of the original ``config_constants``. ``tests/test_tutorial.py`` runs it with ``--short
--crc-debug`` (several test episodes, which the worker runs without recording them and without letting their actions
reach the next recorded reset) and checks that it trains and that the CRC check passes.

Run it:  python docs/examples/tutorial.py            (the tutorial's settings: a few minutes)
         python docs/examples/tutorial.py --short    (about 20 seconds)
"""

import argparse
import itertools
import logging
import random
from copy import deepcopy
from threading import Thread

import gymnasium.spaces as spaces
import numpy as np
import torch
import torch.nn.functional as F
from rtgym import DEFAULT_CONFIG_DICT, DummyRCDrone, RealTimeGymInterface
from torch.optim import Adam

from tmrl_core import (
    GenericGymEnv,
    RolloutWorker,
    Server,
    TorchActorModule,
    TorchMemory,
    TorchTrainingOffline,
    Trainer,
    TrainingAgent,
    partial,
    prod,
)
from tmrl_core.paths import subdir
from tmrl_core.util import cached_property, copy_shared, no_grad

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--short", action="store_true", help="a short run with faster time steps (for tests)")
parser.add_argument("--crc-debug", action="store_true", help="check every rebuilt transition against the original")
args = parser.parse_args()

# === Networking ======================================================================================================

security = None  # "TLS" with the tlspyo transport; the local transport never opens a network port
password = "A Secure Password"  # change this to a random password
server_ip_for_trainer = "127.0.0.1"
server_ip_for_worker = "127.0.0.1"
server_port = 6666

# === Files ===========================================================================================================

my_run_name = "tutorial"
weights_folder = subdir("weights")
checkpoints_folder = subdir("checkpoints")
model_path = str(weights_folder / (my_run_name + ".safetensors"))
model_path_history = str(weights_folder / (my_run_name + "_"))
model_history = 10
checkpoints_path = str(checkpoints_folder / (my_run_name + "_t.safetensors"))
model_path_trainer = str(weights_folder / (my_run_name + "_t.safetensors"))

# === Training parameters =============================================================================================

epochs = 10  # maximum number of epochs, usually set this to np.inf
rounds = 10  # number of rounds per epoch
steps = 1000  # number of training steps per round
update_buffer_interval = 100
update_model_interval = 100
max_training_steps_per_env_step = 2.0
start_training = 400
device = None  # automatic
memory_size = 1000000
batch_size = 32
hidden_sizes = (256, 256)
crc_debug = args.crc_debug
if args.short:  # several test episodes (one every 10 training episodes) before training ends
    epochs, rounds, steps = 1, 2, 25
    update_buffer_interval = update_model_interval = 25
    start_training = 400
    hidden_sizes = (32, 32)

# === The environment: rtgym's dummy RC drone =========================================================================


class DummyRCDroneInterface(RealTimeGymInterface):
    def __init__(self):
        self.rc_drone = None
        self.target = np.array([0.0, 0.0], dtype=np.float32)
        self.initialized = False

    def get_observation_space(self):
        pos_x_space = spaces.Box(low=-1.0, high=1.0, shape=(1,))
        pos_y_space = spaces.Box(low=-1.0, high=1.0, shape=(1,))
        tar_x_space = spaces.Box(low=-0.5, high=0.5, shape=(1,))
        tar_y_space = spaces.Box(low=-0.5, high=0.5, shape=(1,))
        return spaces.Tuple((pos_x_space, pos_y_space, tar_x_space, tar_y_space))

    def get_action_space(self):
        return spaces.Box(low=-2.0, high=2.0, shape=(2,))

    def get_default_action(self):
        return np.array([0.0, 0.0], dtype="float32")

    def send_control(self, control):
        vel_x = control[0]
        vel_y = control[1]
        self.rc_drone.send_control(vel_x, vel_y)

    def reset(self, seed=None, options=None):
        if not self.initialized:
            self.rc_drone = DummyRCDrone()
            self.initialized = True
        pos_x, pos_y = self.rc_drone.get_observation()
        self.target[0] = np.random.uniform(-0.5, 0.5)
        self.target[1] = np.random.uniform(-0.5, 0.5)
        return [
            np.array([pos_x], dtype="float32"),
            np.array([pos_y], dtype="float32"),
            np.array([self.target[0]], dtype="float32"),
            np.array([self.target[1]], dtype="float32"),
        ], {}

    def get_obs_rew_terminated_info(self):
        pos_x, pos_y = self.rc_drone.get_observation()
        tar_x = self.target[0]
        tar_y = self.target[1]
        obs = [
            np.array([pos_x], dtype="float32"),
            np.array([pos_y], dtype="float32"),
            np.array([tar_x], dtype="float32"),
            np.array([tar_y], dtype="float32"),
        ]
        rew = -np.linalg.norm(np.array([pos_x, pos_y], dtype=np.float32) - self.target)
        terminated = rew > -0.01
        info = {}
        return obs, rew, terminated, info

    def wait(self):
        pass


my_config = DEFAULT_CONFIG_DICT.copy()
my_config["interface"] = DummyRCDroneInterface
my_config["time_step_duration"] = 0.05
my_config["start_obs_capture"] = 0.05
my_config["time_step_timeout_factor"] = 1.0
my_config["ep_max_length"] = 100
my_config["act_buf_len"] = 4
my_config["reset_act_buf"] = False
my_config["benchmark"] = True
my_config["benchmark_polyak"] = 0.2
if args.short:
    my_config["time_step_duration"] = 0.02
    my_config["start_obs_capture"] = 0.02
    my_config["time_step_timeout_factor"] = 5.0  # a loaded test machine may be late
    my_config["ep_max_length"] = 10

env_cls = partial(GenericGymEnv, id="real-time-gym-ts-v1", gym_kwargs={"config": my_config})

# === The actor ========================================================================================================

LOG_STD_MAX = 2
LOG_STD_MIN = -20


def mlp(sizes, activation, output_activation=torch.nn.Identity):
    layers = []
    for j in range(len(sizes) - 1):
        act = activation if j < len(sizes) - 2 else output_activation
        layers += [torch.nn.Linear(sizes[j], sizes[j + 1]), act()]
    return torch.nn.Sequential(*layers)


class MyActorModule(TorchActorModule):
    """Directly adapted from the Spinup implementation of SAC."""

    def __init__(self, observation_space, action_space, hidden_sizes=hidden_sizes, activation=torch.nn.ReLU):
        super().__init__(observation_space, action_space)
        dim_obs = sum(prod(s for s in space.shape) for space in observation_space)
        dim_act = action_space.shape[0]
        act_limit = action_space.high[0]
        self.net = mlp([dim_obs] + list(hidden_sizes), activation, activation)
        self.mu_layer = torch.nn.Linear(hidden_sizes[-1], dim_act)
        self.log_std_layer = torch.nn.Linear(hidden_sizes[-1], dim_act)
        self.act_limit = act_limit

    def forward(self, obs, test=False, with_logprob=True):
        net_out = self.net(torch.cat(obs, -1))
        mu = self.mu_layer(net_out)
        log_std = self.log_std_layer(net_out)
        log_std = torch.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX)
        std = torch.exp(log_std)
        pi_distribution = torch.distributions.normal.Normal(mu, std)
        if test:
            pi_action = mu
        else:
            pi_action = pi_distribution.rsample()
        if with_logprob:
            logp_pi = pi_distribution.log_prob(pi_action).sum(axis=-1)
            logp_pi -= (2 * (np.log(2) - pi_action - F.softplus(-2 * pi_action))).sum(axis=1)
        else:
            logp_pi = None
        pi_action = torch.tanh(pi_action)
        pi_action = self.act_limit * pi_action
        pi_action = pi_action.squeeze()
        return pi_action, logp_pi

    def act(self, obs, test=False):
        with torch.no_grad():
            a, _ = self.forward(obs, test, False)
            return a.cpu().numpy()


actor_module_cls = partial(MyActorModule)

# === Sample compression ==============================================================================================


def my_sample_compressor(act, obs, rew, terminated, truncated, info):
    """Removes the action buffer from observations: every action already travels as the sample's action."""
    act_mod, obs_mod, rew_mod, terminated_mod, truncated_mod, info_mod = act, obs, rew, terminated, truncated, info
    obs_mod = obs_mod[:4]
    return act_mod, obs_mod, rew_mod, terminated_mod, truncated_mod, info_mod


sample_compressor = my_sample_compressor
max_samples_per_episode = 1000
obs_preprocessor = None

# === The memory: rebuilds both action buffers, also across reset transitions =========================================


def last_true_in_list(li):
    """Returns the index of the last True element in list li, or None."""
    for i in reversed(range(len(li))):
        if li[i]:
            return i
    return None


class MyMemory(TorchMemory):
    def __init__(
        self,
        act_buf_len=None,
        device=None,
        nb_steps=None,
        sample_preprocessor=None,
        memory_size=1000000,
        batch_size=32,
        dataset_path="",
        crc_debug=False,
    ):
        self.act_buf_len = act_buf_len  # length of the action buffer
        super().__init__(
            device=device,
            nb_steps=nb_steps,
            sample_preprocessor=sample_preprocessor,
            memory_size=memory_size,
            batch_size=batch_size,
            dataset_path=dataset_path,
            crc_debug=crc_debug,
        )

    def append_buffer(self, buffer):
        """buffer.memory is a list of compressed (act, new_obs, rew, terminated, truncated, info) samples."""
        list_action = [b[0] for b in buffer.memory]
        list_x_position = [b[1][0] for b in buffer.memory]
        list_y_position = [b[1][1] for b in buffer.memory]
        list_x_target = [b[1][2] for b in buffer.memory]
        list_y_target = [b[1][3] for b in buffer.memory]
        list_reward = [b[2] for b in buffer.memory]
        list_terminated = [b[3] for b in buffer.memory]
        list_truncated = [b[4] for b in buffer.memory]
        list_info = [b[5] for b in buffer.memory]
        list_done = [b[3] or b[4] for b in buffer.memory]

        if self.__len__() > 0:
            self.data[0] += list_action
            self.data[1] += list_x_position
            self.data[2] += list_y_position
            self.data[3] += list_x_target
            self.data[4] += list_y_target
            self.data[5] += list_reward
            self.data[6] += list_terminated
            self.data[7] += list_info
            self.data[8] += list_truncated
            self.data[9] += list_done
        else:
            self.data.append(list_action)
            self.data.append(list_x_position)
            self.data.append(list_y_position)
            self.data.append(list_x_target)
            self.data.append(list_y_target)
            self.data.append(list_reward)
            self.data.append(list_terminated)
            self.data.append(list_info)
            self.data.append(list_truncated)
            self.data.append(list_done)

        to_trim = self.__len__() - self.memory_size
        if to_trim > 0:
            for i in range(10):
                self.data[i] = self.data[i][to_trim:]

    def __len__(self):
        if len(self.data) == 0:
            return 0  # self.data is empty
        result = len(self.data[0]) - self.act_buf_len - 1
        if result < 0:
            return 0  # not enough samples to reconstruct the action buffer
        else:
            return result  # we can reconstruct that many samples

    def get_transition(self, item):
        """Returns the full transition (last_obs, new_act, rew, new_obs, terminated, truncated, info)."""
        while True:  # this enables modifying item in edge cases
            # if item corresponds to a transition from a terminal state to a reset state
            if self.data[9][item + self.act_buf_len - 1]:
                # this wouldn't make sense in RL, so we replace item by a neighbour transition
                if item == 0:  # if first item of the buffer
                    item += 1
                elif item == self.__len__() - 1:  # if last item of the buffer
                    item -= 1
                elif random.random() < 0.5:  # otherwise, sample randomly
                    item += 1
                else:
                    item -= 1

            idx_last = item + self.act_buf_len - 1  # index of previous observation
            idx_now = item + self.act_buf_len  # index of new observation

            # rebuild the action buffer of both observations:
            actions = self.data[0][item : (item + self.act_buf_len + 1)]
            last_act_buf = actions[:-1]  # action buffer of previous observation
            new_act_buf = actions[1:]  # action buffer of new observation

            # correct the action buffer when it goes over a reset transition:
            # (NB: we have eliminated the case where the transition *is* the reset transition)
            eoe = last_true_in_list(self.data[9][item : (item + self.act_buf_len)])  # the last one is not important
            if eoe is not None:
                # either one or both action buffers are passing over a reset transition
                if eoe < self.act_buf_len - 1:
                    # last_act_buf is concerned
                    if item == 0:
                        # we have a problem: the previous action has been discarded; we cannot recover the buffer
                        # in this edge case, we randomly sample another item
                        item = random.randint(1, self.__len__())
                        continue
                    last_act_buf_eoe = eoe
                    # replace everything before last_act_buf_eoe by the previous action
                    prev_act = self.data[0][item - 1]
                    for idx in range(last_act_buf_eoe + 1):
                        act_tmp = last_act_buf[idx]
                        last_act_buf[idx] = prev_act
                        prev_act = act_tmp
                if eoe > 0:
                    # new_act_buf is concerned
                    new_act_buf_eoe = eoe - 1
                    # replace everything before new_act_buf_eoe by the previous action
                    prev_act = self.data[0][item]
                    for idx in range(new_act_buf_eoe + 1):
                        act_tmp = new_act_buf[idx]
                        new_act_buf[idx] = prev_act
                        prev_act = act_tmp

            # rebuild the previous observation:
            last_obs = (
                self.data[1][idx_last],  # x position
                self.data[2][idx_last],  # y position
                self.data[3][idx_last],  # x target
                self.data[4][idx_last],  # y target
                *last_act_buf,  # action buffer
            )

            # rebuild the new observation:
            new_obs = (
                self.data[1][idx_now],  # x position
                self.data[2][idx_now],  # y position
                self.data[3][idx_now],  # x target
                self.data[4][idx_now],  # y target
                *new_act_buf,  # action buffer
            )

            # other components of the transition:
            new_act = self.data[0][idx_now]  # action
            rew = np.float32(self.data[5][idx_now])  # reward
            terminated = self.data[6][idx_now]  # terminated signal
            truncated = self.data[8][idx_now]  # truncated signal
            info = self.data[7][idx_now]  # info dictionary

            break

        return last_obs, new_act, rew, new_obs, terminated, truncated, info


memory_cls = partial(
    MyMemory,
    act_buf_len=my_config["act_buf_len"],
    memory_size=memory_size,
    batch_size=batch_size,
    crc_debug=crc_debug,
)

# === The training agent: SAC ==========================================================================================


class MyCriticModule(torch.nn.Module):
    def __init__(self, observation_space, action_space, hidden_sizes=hidden_sizes, activation=torch.nn.ReLU):
        super().__init__()
        obs_dim = sum(prod(s for s in space.shape) for space in observation_space)
        act_dim = action_space.shape[0]
        self.q = mlp([obs_dim + act_dim] + list(hidden_sizes) + [1], activation)

    def forward(self, obs, act):
        x = torch.cat((*obs, act), -1)
        q = self.q(x)
        return torch.squeeze(q, -1)


class MyActorCriticModule(torch.nn.Module):
    def __init__(self, observation_space, action_space, hidden_sizes=hidden_sizes, activation=torch.nn.ReLU):
        super().__init__()
        self.actor = MyActorModule(observation_space, action_space, hidden_sizes, activation)
        self.q1 = MyCriticModule(observation_space, action_space, hidden_sizes, activation)
        self.q2 = MyCriticModule(observation_space, action_space, hidden_sizes, activation)


class MyTrainingAgent(TrainingAgent):
    model_nograd = cached_property(lambda self: no_grad(copy_shared(self.model)))

    def __init__(
        self,
        observation_space=None,
        action_space=None,
        device=None,
        *,  # the hyperparameters: given once, by training_agent_cls below
        model_cls,
        gamma,
        polyak,
        alpha,
        lr_actor,
        lr_critic,
        lr_entropy,
        learn_entropy_coef,
        target_entropy,
    ):
        super().__init__(observation_space=observation_space, action_space=action_space, device=device)
        model = model_cls(observation_space, action_space)
        self.model = model.to(self.device)
        self.model_target = no_grad(deepcopy(self.model))
        self.gamma = gamma
        self.polyak = polyak
        self.alpha = alpha
        self.lr_actor = lr_actor
        self.lr_critic = lr_critic
        self.lr_entropy = lr_entropy
        self.learn_entropy_coef = learn_entropy_coef
        self.target_entropy = target_entropy
        self.q_params = list(itertools.chain(self.model.q1.parameters(), self.model.q2.parameters()))
        self.pi_optimizer = Adam(self.model.actor.parameters(), lr=self.lr_actor)
        self.q_optimizer = Adam(self.q_params, lr=self.lr_critic)
        if self.target_entropy is None:
            self.target_entropy = -np.prod(action_space.shape).astype(np.float32)
        else:
            self.target_entropy = float(self.target_entropy)
        if self.learn_entropy_coef:
            self.log_alpha = torch.log(torch.ones(1, device=self.device) * self.alpha).requires_grad_(True)
            self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=self.lr_entropy)
        else:
            self.alpha_t = torch.tensor(float(self.alpha)).to(self.device)

    def get_actor(self):
        return self.model_nograd.actor

    def train(self, batch):
        """Adapted from the SAC implementation of OpenAI Spinup."""
        o, a, r, o2, d, _ = batch  # the truncated signal is ignored on purpose
        pi, logp_pi = self.model.actor(o)
        loss_alpha = None
        if self.learn_entropy_coef:
            alpha_t = torch.exp(self.log_alpha.detach())
            loss_alpha = -(self.log_alpha * (logp_pi + self.target_entropy).detach()).mean()
        else:
            alpha_t = self.alpha_t
        if loss_alpha is not None:
            self.alpha_optimizer.zero_grad()
            loss_alpha.backward()
            self.alpha_optimizer.step()
        q1 = self.model.q1(o, a)
        q2 = self.model.q2(o, a)
        with torch.no_grad():
            a2, logp_a2 = self.model.actor(o2)
            q1_pi_targ = self.model_target.q1(o2, a2)
            q2_pi_targ = self.model_target.q2(o2, a2)
            q_pi_targ = torch.min(q1_pi_targ, q2_pi_targ)
            backup = r + self.gamma * (1 - d) * (q_pi_targ - alpha_t * logp_a2)
        loss_q1 = ((q1 - backup) ** 2).mean()
        loss_q2 = ((q2 - backup) ** 2).mean()
        loss_q = loss_q1 + loss_q2
        self.q_optimizer.zero_grad()
        loss_q.backward()
        self.q_optimizer.step()
        for p in self.q_params:
            p.requires_grad = False
        q1_pi = self.model.q1(o, pi)
        q2_pi = self.model.q2(o, pi)
        q_pi = torch.min(q1_pi, q2_pi)
        loss_pi = (alpha_t * logp_pi - q_pi).mean()
        self.pi_optimizer.zero_grad()
        loss_pi.backward()
        self.pi_optimizer.step()
        for p in self.q_params:
            p.requires_grad = True
        with torch.no_grad():
            for p, p_targ in zip(self.model.parameters(), self.model_target.parameters(), strict=True):
                p_targ.data.mul_(self.polyak)
                p_targ.data.add_((1 - self.polyak) * p.data)
        ret_dict = dict(loss_actor=loss_pi.detach().item(), loss_critic=loss_q.detach().item())
        if self.learn_entropy_coef:
            ret_dict["loss_entropy_coef"] = loss_alpha.detach().item()
            ret_dict["entropy_coef"] = alpha_t.item()
        return ret_dict


training_agent_cls = partial(
    MyTrainingAgent,
    model_cls=MyActorCriticModule,
    gamma=0.99,
    polyak=0.995,
    alpha=0.2,
    lr_actor=1e-3,
    lr_critic=1e-3,
    lr_entropy=1e-3,
    learn_entropy_coef=True,
    target_entropy=None,
)

# === The trainer ======================================================================================================

training_cls = partial(
    TorchTrainingOffline,
    env_cls=env_cls,
    memory_cls=memory_cls,
    training_agent_cls=training_agent_cls,
    epochs=epochs,
    rounds=rounds,
    steps=steps,
    update_buffer_interval=update_buffer_interval,
    update_model_interval=update_model_interval,
    max_training_steps_per_env_step=max_training_steps_per_env_step,
    start_training=start_training,
    device=device,
)

# === Everything in one script =========================================================================================

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s: %(message)s")
    if crc_debug:  # "CRC check passed" for every rebuilt transition
        logging.getLogger("tmrl_core.compression").setLevel(logging.DEBUG)

    my_server = Server(security=security, password=password, port=server_port)

    my_worker = RolloutWorker(
        env_cls=env_cls,
        actor_module_cls=actor_module_cls,
        sample_compressor=sample_compressor,
        device="cpu",
        server_ip=server_ip_for_worker,
        server_port=server_port,
        password=password,
        security=security,
        max_samples_per_episode=max_samples_per_episode,
        model_path=model_path,
        model_path_history=model_path_history,
        model_history=model_history,
        obs_preprocessor=obs_preprocessor,
        crc_debug=crc_debug,
        standalone=False,
    )

    my_trainer = Trainer(
        training_cls=training_cls,
        server_ip=server_ip_for_trainer,
        server_port=server_port,
        password=password,
        security=security,
        model_path=model_path_trainer,
        checkpoint_path=checkpoints_path,
    )

    def run_worker(worker):
        worker.run(test_episode_interval=10)

    def run_trainer(trainer):
        trainer.run()

    daemon_thread_worker = Thread(target=run_worker, args=(my_worker,), kwargs={}, daemon=True)
    daemon_thread_worker.start()  # start the worker daemon thread

    run_trainer(my_trainer)

    my_server.stop()
    print("tutorial: training complete")
    # the worker daemon thread ends with the script
