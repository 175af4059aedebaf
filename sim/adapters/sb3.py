"""A robotrl VecEnv as a Stable-Baselines3 ``VecEnv`` (the ``policy`` observations)."""
from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv as SB3VecEnv

from robotrl.sim.vecenv import VecEnv


class SB3VecEnvAdapter(SB3VecEnv):
    """``randomize_episode_start=True`` spreads the envs' time-limit clocks after
    every ``reset()`` (as robotrl's runner and rsl_rl's ``init_at_random_ep_len``
    do), so that a rollout does not come from one phase of the episode in all envs;
    the first episodes then end early, as time-outs."""

    def __init__(self, env: VecEnv, randomize_episode_start: bool = False):
        self.env = env
        self.randomize_episode_start = randomize_episode_start
        obs_dim = env.obs_sizes["policy"]
        clip = float(getattr(env, "cfg", {}).get("action_clip", 1.0))
        super().__init__(
            env.num_envs,
            spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            spaces.Box(-clip, clip, (env.num_actions,), np.float32),
        )
        self._actions = None

    def reset(self):
        obs = self.env.reset()["policy"].cpu().numpy()
        if self.randomize_episode_start:
            self.env.randomize_episode_start()
        return obs

    def step_async(self, actions) -> None:
        self._actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32)

    def step_wait(self):
        obs, rew, done, extras = self.env.step(self._actions)
        infos = [{} for _ in range(self.num_envs)]
        time_outs = extras["time_outs"].cpu().numpy()
        if "final_ids" in extras:
            final = extras["final_observations"]["policy"]
            for row, i in enumerate(extras["final_ids"]):
                infos[i]["terminal_observation"] = final[row]
                infos[i]["TimeLimit.truncated"] = bool(time_outs[i])
                infos[i]["episode"] = {"r": float(extras["episode_returns"][row]), "l": int(extras["episode_lengths"][row])}
        return obs["policy"].cpu().numpy(), rew.cpu().numpy(), done.cpu().numpy(), infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name, indices=None):
        # A robotrl env renders nothing through SB3 (render_mode None).
        value = getattr(self.env, attr_name) if hasattr(self.env, attr_name) else None
        return [value] * len(self._indices(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self.env, method_name)(*args, **kwargs)] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._indices(indices))

    def _indices(self, indices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices
