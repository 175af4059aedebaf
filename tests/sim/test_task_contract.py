"""The Task/VecEnv contract, for every registered task on the mujoco backend."""
import numpy as np
import pytest
import torch

from robotrl.sim import make_env, make_task, task_names

TASKS = task_names()


def rollout(env, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    obs = env.reset()
    trace = [torch.cat([obs[g] for g in sorted(obs)], 1)]
    rewards, dones = [], []
    for _ in range(steps):
        a = torch.randn(env.num_envs, env.num_actions, generator=gen)
        obs, r, d, extras = env.step(a)
        trace.append(torch.cat([obs[g] for g in sorted(obs)], 1))
        rewards.append(r)
        dones.append(d)
    return torch.stack(trace), torch.stack(rewards), torch.stack(dones), extras


def test_builtin_tasks_registered():
    assert {"cartpole_swingup", "pendulum_swingup", "reach", "hopper", "halfcheetah", "quadruped_walk"} <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_observation_groups_and_shapes(name):
    with make_env(name, 8, seed=1) as env:
        obs = env.reset()
        assert set(obs) >= {"policy", "critic"}
        for group, size in env.obs_sizes.items():
            assert obs[group].shape == (8, size)
            assert obs[group].dtype == torch.float32
            assert sum(w for _, w in env.obs_layout[group]) == size
        assert len(env.action_names) == env.num_actions
        obs, rew, done, extras = env.step(torch.zeros(8, env.num_actions))
        assert rew.shape == (8,) and done.shape == (8,)
        assert extras["time_outs"].shape == (8,) and extras["time_outs"].dtype == torch.bool
        assert extras["cost"].shape == (8,)


@pytest.mark.parametrize("name", TASKS)
def test_random_rollout_is_finite_and_resets(name):
    with make_env(name, 16, seed=2) as env:
        obs, rew, done, extras = rollout(env, 300)
        assert torch.isfinite(obs).all(), "NaN/inf in observations"
        assert torch.isfinite(rew).all(), "NaN/inf in rewards"


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_trajectory(name):
    with make_env(name, 8, seed=3) as a, make_env(name, 8, seed=3) as b, make_env(name, 8, seed=4) as c:
        ta, ra, _, _ = rollout(a, 120)
        tb, rb, _, _ = rollout(b, 120)
        tc, _, _, _ = rollout(c, 120)
    assert torch.equal(ta, tb) and torch.equal(ra, rb)
    assert not torch.equal(ta, tc), "a different seed should give a different trajectory"


def test_time_outs_at_max_episode_length():
    task = make_task("cartpole_swingup", {"episode_length_s": 0.2})
    with make_env(task, 4) as env:
        assert env.max_episode_length == 10
        for t in range(10):
            _, _, done, extras = env.step(torch.zeros(4, 1))
        assert done.all() and extras["time_outs"].all()
        assert extras["episode"]["length"] == 10
        assert "rew_swingup" in extras["episode"]
        assert (env.episode_length == 0).all()
