"""Pendulum datasets from scripted controllers, for the offline / hybrid tests.

The swing-up controller pumps energy (torque along the angular velocity until the
energy reaches that of the upright pose) and balances with a PD law near the top.
It knows the pendulum's m g l and inertia for a gravity factor ``g``; tuned for the
domain it runs in it scores ~380 (1x gravity) / ~325 (2x), tuned for 1x gravity
but run in 2x it scores ~40. The "spin" controller pumps without ever stopping,
so the pole spins through the top (see the tests for its score).
"""
import numpy as np
import torch

from robotrl.replay import ReplayBuffer
from robotrl.sim import make_env, make_task
from robotrl.sim.domains import domain_task_config

MGL, INERTIA = 5.15, 0.26  # of assets/pendulum.xml: 1 kg bob at 0.5 m + 0.1 kg rod


def swingup_action(obs: np.ndarray, g: float = 1.0) -> np.ndarray:
    """Energy pumping, then a PD balance within ~25 degrees of upright."""
    c, s, w = obs[:, 0], obs[:, 1], obs[:, 2]
    energy = 0.5 * INERTIA * w**2 + g * MGL * c
    pump = np.clip(3.0 * (g * MGL - energy), -1, 1) * np.sign(w + 1e-6)
    balance = np.clip(-(25 * g * np.arctan2(s, c) + 4 * w) / 2, -1, 1)
    return np.where(c > 0.9, balance, pump)[:, None]


def spin_action(obs: np.ndarray) -> np.ndarray:
    """Full torque along the angular velocity, always: the pole spins through the top."""
    return np.sign(obs[:, 2:3] + 1e-6)


def scripted_dataset(domain=None, g: float = 1.0, num_envs: int = 16, steps: int = 500, good_fraction: float = 0.5,
                     noise: float = 0.2, seed: int = 0):
    """``num_envs * steps`` transitions in ``domain``: a ``good_fraction`` of the envs
    run the swing-up controller (tuned for gravity factor ``g``), the others spin
    the pole (``spin_action``); Gaussian action noise ``noise`` on both, clipped to [-1, 1]."""
    task = make_task("pendulum_swingup", domain_task_config({}, domain))
    env = make_env(task, num_envs, seed=seed, nthread=1)
    rng = np.random.default_rng(seed)
    good = (np.arange(num_envs) < round(good_fraction * num_envs))[:, None]
    buf = ReplayBuffer(num_envs * steps, env.obs_sizes, env.num_actions)
    obs = env.reset()
    for _ in range(steps):
        o = obs["policy"].numpy()
        a = np.where(good, swingup_action(o, g), spin_action(o)) + noise * rng.standard_normal((num_envs, 1))
        action = torch.as_tensor(np.clip(a, -1, 1), dtype=torch.float32)
        next_obs, reward, dones, extras = env.step(action)
        buf.add_env_step(obs, action, reward, next_obs, dones, extras)
        obs = next_obs
    layout = {grp: [list(t) for t in terms] for grp, terms in env.obs_layout.items()}
    env.close()
    return buf.to_dataset({
        "task": "pendulum_swingup", "obs_layout": layout, "action_names": list(env.action_names),
        "domain": domain or "sim", "action_clip": 1.0,
    })
