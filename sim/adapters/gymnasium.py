"""A robotrl VecEnv as a ``gymnasium.vector.VectorEnv`` (Gymnasium 1.x conventions).

numpy in and out, Box spaces, and same-step autoreset (``metadata["autoreset_mode"]
= AutoresetMode.SAME_STEP``): the observation returned for a finished env is the
first of its next episode, and the last one of the finished episode is in
``infos["final_obs"]`` (an object array, ``infos["_final_obs"]`` marks the envs
that have one), as Gymnasium's own vector envs report it. ``infos["cost"]`` holds
the safety cost of the step for every env; a finished env's step info is also in
``infos["final_info"]``. Episode statistics come from Gymnasium's
``RecordEpisodeStatistics`` wrapper, as for any vector env.
"""
from __future__ import annotations

import numpy as np
import torch
from gymnasium import logger, spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from robotrl.sim.vecenv import VecEnv


class GymnasiumVectorEnvAdapter(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    render_mode = None

    def __init__(self, env: VecEnv, obs_group: str = "policy"):
        if obs_group not in env.obs_sizes:
            raise KeyError(f"env has no observation group {obs_group!r} (groups: {', '.join(env.obs_sizes)})")
        self.env = env
        self.obs_group = obs_group
        self.num_envs = env.num_envs
        clip = float(getattr(env, "cfg", {}).get("action_clip", 1.0))
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (env.obs_sizes[obs_group],), np.float32)
        self.single_action_space = spaces.Box(-clip, clip, (env.num_actions,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = dict(self.metadata)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            # A robotrl env draws from the generator it was built with; reseeding
            # would need a new env (make_env(..., seed=...)).
            logger.warn(
                f"{type(self).__name__}.reset(seed={seed}) ignores the seed: robotrl envs are "
                f"seeded when made (make_env(..., seed=...))"
            )
        obs = self.env.reset()
        return self._numpy(obs[self.obs_group]), {}

    def step(self, actions):
        obs, rew, done, extras = self.env.step(torch.as_tensor(np.asarray(actions, dtype=np.float32)))
        done = done.cpu().numpy()
        truncations = extras["time_outs"].cpu().numpy().astype(bool)
        terminations = done & ~truncations
        cost = extras["cost"].cpu().numpy().astype(np.float64)
        everyone = np.ones(self.num_envs, dtype=bool)
        infos: dict = {"cost": cost, "_cost": everyone}
        if done.any():
            if "final_ids" not in extras:
                raise KeyError(
                    f"{type(self.env).__name__} returns no extras['final_observations'] for finished "
                    f"envs; the same-step autoreset of this adapter needs them"
                )
            final_obs = np.full(self.num_envs, None, dtype=object)
            for row, i in enumerate(extras["final_ids"]):
                final_obs[i] = np.asarray(extras["final_observations"][self.obs_group][row], dtype=np.float32)
            infos["final_obs"] = final_obs
            infos["_final_obs"] = done.copy()
            infos["final_info"] = {"cost": np.where(done, cost, 0.0), "_cost": done.copy()}
            infos["_final_info"] = done.copy()
        return (
            self._numpy(obs[self.obs_group]),
            rew.cpu().numpy().astype(np.float64),
            terminations,
            truncations,
            infos,
        )

    def _numpy(self, x: torch.Tensor) -> np.ndarray:
        # A copy: the env may reuse its tensors, and callers keep what step returns.
        return x.detach().cpu().numpy().astype(np.float32, copy=True)

    def close_extras(self, **kwargs) -> None:
        self.env.close()
