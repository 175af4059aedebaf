"""Any registered Gymnasium env id as a robotrl VecEnv, through Gymnasium's vector API.

The envs run in a ``gymnasium.vector`` env (in this process, or one worker process
each with ``vectorization="async"``) that resets finished envs in the same step
(``AutoresetMode.SAME_STEP``), so the final observation of every episode is at
hand for bootstrapping time-outs, as the VecEnv contract promises.

Policies act in [-1, 1] on every backend; a Box action space with finite bounds
gets that range rescaled onto its bounds, an unbounded one gets the action as it is
(clipped to whatever bound it has).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from robotrl.sim.vecenv import VecEnv, validate_actions

VECTORIZATION_MODES = ("sync", "async")


def check_actions(actions, num_envs: int, num_actions: int) -> np.ndarray:
    """``actions`` as a float64 ``(num_envs, num_actions)`` array, once validated."""
    validate_actions(actions, num_envs, num_actions)
    if isinstance(actions, torch.Tensor):
        return actions.detach().to("cpu", torch.float64).numpy()
    return np.asarray(actions, dtype=np.float64)


def _observation_keys(env_id: str, space) -> list[str] | None:
    """None for a Box; the (ordered) keys of a Dict of Boxes; anything else is an error."""
    if isinstance(space, spaces.Box):
        return None
    if isinstance(space, spaces.Dict) and all(isinstance(s, spaces.Box) for s in space.spaces.values()):
        return list(space.spaces)
    raise TypeError(
        f"Gymnasium env {env_id!r} has observation space {space}; the gymnasium backend "
        f"supports a Box or a Dict of Boxes (flatten other spaces with a Gymnasium wrapper)"
    )


def _first_env_attr(envs, name: str):
    """The first env's attribute ``name`` (looked up through its wrappers), or None.

    Asked first whether it exists: a failed lookup in an async worker shuts the
    worker down."""
    if not envs.call("has_wrapper_attr", name)[0]:
        return None
    return envs.get_attr(name)[0]


def _action_names(envs, num_actions: int) -> list[str]:
    """The actuated joints' names for a MuJoCo env, else a0, a1, ..."""
    model = _first_env_attr(envs, "model")
    if isinstance(model, mujoco.MjModel) and model.nu == num_actions:
        names = []
        for i in range(model.nu):
            # Actuators on a joint take the joint's name (as the mujoco backend's tasks do).
            if model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT:
                names.append(model.joint(int(model.actuator_trnid[i, 0])).name)
            else:
                names.append(model.actuator(i).name)
        if all(names) and len(set(names)) == len(names):
            return names
    return [f"a{i}" for i in range(num_actions)]


class GymnasiumVecEnv(VecEnv):
    """``num_envs`` copies of the Gymnasium env ``env_id`` (made with ``env_kwargs``,
    e.g. ``{"max_episode_steps": 200}``); env ``i`` is seeded with ``seed + i``.
    Options of other backends (``nthread``, ``randomize``) mean nothing here."""

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        env_kwargs: dict | None = None,
        vectorization: str = "sync",
        **ignored,
    ):
        if not isinstance(env_id, str):
            raise TypeError(
                f"the gymnasium backend takes a Gymnasium env id (e.g. 'HalfCheetah-v5'), "
                f"not {type(env_id).__name__}"
            )
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if vectorization not in VECTORIZATION_MODES:
            raise ValueError(
                f"vectorization must be one of {', '.join(VECTORIZATION_MODES)}, got {vectorization!r}"
            )
        self.env_id = env_id
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.cfg = {"env_id": env_id, "env_kwargs": dict(env_kwargs or {}), "vectorization": vectorization}
        self.envs = gym.make_vec(
            env_id,
            self.num_envs,
            vectorization_mode=vectorization,
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            **(env_kwargs or {}),
        )
        try:
            self._setup(env_id)
        except BaseException:
            self.envs.close()
            raise
        obs, _ = self.envs.reset(seed=int(seed))
        self._obs = self._observe(obs)

    def _setup(self, env_id: str) -> None:
        act_space = self.envs.single_action_space
        if not isinstance(act_space, spaces.Box):
            raise TypeError(
                f"Gymnasium env {env_id!r} has action space {act_space}; the gymnasium backend "
                f"supports Box action spaces only (continuous control)"
            )
        self._obs_keys = _observation_keys(env_id, self.envs.single_observation_space)
        obs_space = self.envs.single_observation_space
        if self._obs_keys is None:
            layout = [("obs", int(np.prod(obs_space.shape)))]
        else:
            layout = [(k, int(np.prod(obs_space[k].shape))) for k in self._obs_keys]
        self.obs_layout = {"policy": layout, "critic": list(layout)}
        self.obs_sizes = {g: sum(w for _, w in terms) for g, terms in self.obs_layout.items()}

        self._act_shape = act_space.shape
        self._act_dtype = act_space.dtype
        self.num_actions = int(np.prod(act_space.shape))
        low = np.asarray(act_space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(act_space.high, dtype=np.float64).reshape(-1)
        self._act_low, self._act_high = low, high
        self._act_bounded = np.isfinite(low) & np.isfinite(high)
        # [-1, 1] maps onto [low, high] as mid + half * a (unbounded dims: unused).
        lo, hi = np.where(self._act_bounded, low, -1.0), np.where(self._act_bounded, high, 1.0)
        self._act_mid, self._act_half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        self.action_names = _action_names(self.envs, self.num_actions)

        spec = self.envs.get_attr("spec")[0]
        steps = getattr(spec, "max_episode_steps", None)
        if not steps:
            raise ValueError(
                f"Gymnasium env {env_id!r} has no time limit (spec.max_episode_steps is None); "
                f"pass env_kwargs={{'max_episode_steps': N}}"
            )
        self.max_episode_length = int(steps)
        dt = _first_env_attr(self.envs, "dt")
        # Unknown control period: NaN rather than a plausible-looking guess.
        self.step_dt = float(dt) if dt is not None else float("nan")

        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._episode_return = np.zeros(self.num_envs)

    # ------------------------------------------------------------ observations
    def _flat(self, obs) -> np.ndarray:
        """Batched observations (an array, or a dict of arrays) as (n, obs_dim) float32."""
        n = len(obs[self._obs_keys[0]]) if self._obs_keys else len(obs)
        if self._obs_keys is None:
            return np.asarray(obs, dtype=np.float32).reshape(n, -1)
        return np.concatenate(
            [np.asarray(obs[k], dtype=np.float32).reshape(n, -1) for k in self._obs_keys], axis=1
        )

    def _observe(self, obs) -> dict[str, torch.Tensor]:
        flat = torch.from_numpy(self._flat(obs)).to(self.device)
        # Separate tensors, so a learner that edits one group in place leaves the other.
        return {"policy": flat, "critic": flat.clone()}

    def _final_observations(self, final_obs, ids: np.ndarray) -> np.ndarray:
        """Stack the per-env final observations (an object array) of ``ids``."""
        rows = [final_obs[i] for i in ids]
        if self._obs_keys is None:
            return self._flat(np.stack([np.asarray(r) for r in rows]))
        return self._flat({k: np.stack([np.asarray(r[k]) for r in rows]) for k in self._obs_keys})

    def reset(self) -> dict[str, torch.Tensor]:
        obs, _ = self.envs.reset()
        self._episode_length[:] = 0
        self._episode_return[:] = 0.0
        self._obs = self._observe(obs)
        return self._obs

    def get_observations(self) -> dict[str, torch.Tensor]:
        return self._obs

    # -------------------------------------------------------------------- step
    def _env_actions(self, a: np.ndarray) -> np.ndarray:
        scaled = self._act_mid + self._act_half * np.clip(a, -1.0, 1.0)
        # Unbounded dimensions take the action as it is, within whichever bound exists.
        out = np.where(self._act_bounded, scaled, np.clip(a, self._act_low, self._act_high))
        return out.reshape((self.num_envs, *self._act_shape)).astype(self._act_dtype)

    def step(self, actions):
        a = check_actions(actions, self.num_envs, self.num_actions)
        obs, reward, terminated, truncated, info = self.envs.step(self._env_actions(a))
        reward = np.asarray(reward, dtype=np.float64)
        terminated = np.asarray(terminated, dtype=bool)
        time_outs = np.asarray(truncated, dtype=bool) & ~terminated
        done = terminated | time_outs
        self._episode_length += 1
        self._episode_return += reward

        # A finished env's own step info sits in final_info (info holds its reset's).
        cost = self._info_column(info, "cost")
        done_ids = np.flatnonzero(done)
        if len(done_ids):
            final_cost = self._info_column(info.get("final_info", {}), "cost")
            cost[done_ids] = final_cost[done_ids]

        extras: dict[str, Any] = {"episode": {}, "metrics": {}}
        if len(done_ids):
            extras["episode"] = {
                "return": float(self._episode_return[done_ids].mean()),
                "length": float(self._episode_length[done_ids].mean()),
            }
            extras["episode_returns"] = self._episode_return[done_ids].copy()
            extras["episode_lengths"] = self._episode_length[done_ids].copy()
            final = self._final_observations(info["final_obs"], done_ids)
            extras["final_ids"] = done_ids
            extras["final_observations"] = {"policy": final, "critic": final.copy()}
            self._episode_length[done_ids] = 0
            self._episode_return[done_ids] = 0.0
        self._obs = self._observe(obs)
        dev = self.device
        extras["time_outs"] = torch.from_numpy(time_outs).to(dev)
        extras["cost"] = torch.from_numpy(cost.astype(np.float32)).to(dev)
        extras["terminated"] = torch.from_numpy(terminated.copy()).to(dev)
        return (
            self._obs,
            torch.from_numpy(reward.astype(np.float32)).to(dev),
            torch.from_numpy(done).to(dev),
            extras,
        )

    def _info_column(self, info: dict, key: str) -> np.ndarray:
        """A numeric per-env info entry (zeros where an env did not report it)."""
        out = np.zeros(self.num_envs)
        if key in info:
            mask = np.asarray(info.get(f"_{key}", np.ones(self.num_envs, dtype=bool)), dtype=bool)
            values = np.asarray(info[key], dtype=np.float64).reshape(self.num_envs)
            out[mask] = values[mask]
        return out

    def close(self) -> None:
        if getattr(self, "envs", None) is not None:
            self.envs.close()
            self.envs = None
