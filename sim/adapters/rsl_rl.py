"""A robotrl VecEnv as an rsl_rl ``VecEnv`` (rsl-rl-lib 5.x), for its ``OnPolicyRunner``.

rsl_rl takes observations as a ``TensorDict`` of groups and picks the actor's and
the critic's inputs by ``obs_groups`` (e.g. ``{"actor": ["policy"], "critic":
["critic"]}``). Without that setting it looks for a group named after the input
("actor", "critic") and falls back to "policy"; the adapter therefore hands out
every group of the env plus the ``policy`` group again as ``actor``, so the runner
works with or without ``obs_groups``.
"""
from __future__ import annotations

import numpy as np
import torch
from rsl_rl.env import VecEnv as RslVecEnv
from tensordict import TensorDict

from robotrl.sim.vecenv import VecEnv


class RslRlVecEnvAdapter(RslVecEnv):
    def __init__(self, env: VecEnv):
        self.env = env
        self.num_envs = env.num_envs
        self.num_actions = env.num_actions
        self.max_episode_length = env.max_episode_length
        self.device = env.device
        # rsl_rl's logger stores this next to the run (for W&B/Neptune writers).
        self.cfg = getattr(env, "cfg", {})
        # Steps into the current episode, for backends that expose no clock of their own.
        self._steps = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    @property
    def unwrapped(self) -> VecEnv:
        return self.env

    # -------------------------------------------------------- episode clocks
    @property
    def episode_length_buf(self) -> torch.Tensor:
        clock = getattr(self.env, "episode_length", None)
        if isinstance(clock, np.ndarray):
            return torch.as_tensor(clock.copy(), dtype=torch.long, device=self.device)
        return self._steps.clone()

    @episode_length_buf.setter
    def episode_length_buf(self, value: torch.Tensor) -> None:
        # The runner sets this for learn(init_at_random_ep_len=True); it only means
        # something where the backend's time limit reads a clock we can write.
        clock = getattr(self.env, "episode_length", None)
        if not isinstance(clock, np.ndarray):
            raise NotImplementedError(
                f"{type(self.env).__name__} has no writable episode clock; "
                f"train with init_at_random_ep_len=False"
            )
        # Assigned whole: a backend whose clock lives on a device (mjx) hands out
        # copies, so writing into the array it returned would change nothing.
        self.env.episode_length = torch.as_tensor(value).to("cpu", torch.long).numpy().reshape(clock.shape)

    # --------------------------------------------------------- observations
    def _groups(self, obs: dict[str, torch.Tensor]) -> TensorDict:
        groups = dict(obs)
        groups.setdefault("actor", obs["policy"])
        return TensorDict(groups, batch_size=[self.num_envs], device=self.device)

    def get_observations(self) -> TensorDict:
        return self._groups(self.env.get_observations())

    def reset(self) -> TensorDict:
        return self._groups(self.env.reset())

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        obs, rew, done, extras = self.env.step(actions)
        self._steps += 1
        self._steps[done] = 0
        # rsl_rl reads extras["time_outs"] (bootstrapping) and extras["episode"]
        # (logged as Episode/<key>); the rest passes through untouched.
        return self._groups(obs), rew, done.long(), extras

    def close(self) -> None:
        self.env.close()


def rsl_rl_ppo_config(num_steps_per_env: int = 64, hidden=(64, 64)) -> dict:
    """An rsl_rl OnPolicyRunner config with robotrl's PPO settings (tuned
    cartpole_swingup sizes by default): ELU MLPs with observation normalization,
    5 epochs x 4 minibatches, adaptive learning rate at KL 0.01."""
    mlp = {"class_name": "MLPModel", "hidden_dims": list(hidden), "activation": "elu", "obs_normalization": True}
    return {
        "num_steps_per_env": num_steps_per_env,
        "save_interval": 10**9,
        "obs_groups": {"actor": ["policy"], "critic": ["critic"]},
        "algorithm": {
            "class_name": "PPO", "num_learning_epochs": 5, "num_mini_batches": 4, "clip_param": 0.2,
            "gamma": 0.99, "lam": 0.95, "value_loss_coef": 1.0, "entropy_coef": 0.0, "learning_rate": 1e-3,
            "max_grad_norm": 1.0, "schedule": "adaptive", "desired_kl": 0.01,
        },
        "actor": {**mlp, "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 1.0}},
        "critic": mlp,
    }
