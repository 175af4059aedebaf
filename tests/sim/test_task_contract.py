"""The Task/VecEnv contract, for every registered task on every task backend.

On ``mjx`` each task compiles once per session (all tests here use 8 envs and the
default config, so they share the compiled step); compiling a contact-rich task takes
30-60 s on 2 CPU cores, which is why those are marked slow there, and why mjx runs
fewer steps than mujoco.
"""
import numpy as np
import pytest
import torch

from robotrl.sim import make_env, task_names
from robotrl.sim.task import get_task_class

TASKS = task_names()
NUM_ENVS = 8
# Compiling these on MJX takes more than 30 s on 2 CPU cores.
SLOW_ON_MJX = {"halfcheetah", "hopper", "quadruped_walk", "reach", "car_goal_hazards"}


def variant_of(name: str) -> str | None:
    """The registered task that ``name`` subclasses (e.g. hopper for hopper_velocity)."""
    for base in get_task_class(name).__mro__[1:]:
        if getattr(base, "name", "") in TASKS:
            return base.name
    return None


def task_backends() -> list:
    params = []
    for name in TASKS:
        params.append(pytest.param(name, "mujoco", id=f"{name}-mujoco"))
        marks = [pytest.mark.slow] if name in SLOW_ON_MJX else []
        base = variant_of(name)
        if base:
            # Another MJX compile of the same physics would add a minute and test nothing
            # new; the variant's own terms (its cost) are compared with MuJoCo in test_mjx_parity.
            marks.append(pytest.mark.skip(reason=f"variant of {base}: the same model runs on mjx in {base}'s tests"))
        params.append(pytest.param(name, "mjx", id=f"{name}-mjx", marks=marks))
    return params


def backend_env(task, num_envs, backend, **kwargs):
    if backend == "mjx":
        pytest.importorskip("jax")
        pytest.importorskip("mujoco.mjx")
    return make_env(task, num_envs, sim=backend, **kwargs)


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


@pytest.mark.parametrize("name, backend", task_backends())
def test_observation_groups_and_shapes(name, backend):
    n = NUM_ENVS
    with backend_env(name, n, backend, seed=1) as env:
        obs = env.reset()
        assert set(obs) >= {"policy", "critic"}
        assert list(obs) == list(env.obs_layout)  # the task's group order
        for group, size in env.obs_sizes.items():
            assert obs[group].shape == (n, size)
            assert obs[group].dtype == torch.float32
            assert obs[group].device == env.device
            assert sum(w for _, w in env.obs_layout[group]) == size
        assert len(env.action_names) == env.num_actions
        obs, rew, done, extras = env.step(torch.zeros(n, env.num_actions))
        assert rew.shape == (n,) and rew.dtype == torch.float32
        assert done.shape == (n,) and done.dtype == torch.bool
        assert extras["time_outs"].shape == (n,) and extras["time_outs"].dtype == torch.bool
        assert extras["terminated"].shape == (n,) and extras["terminated"].dtype == torch.bool
        assert extras["cost"].shape == (n,) and extras["cost"].dtype == torch.float32
        for name_, value in extras["metrics"].items():
            assert isinstance(value, np.ndarray) and value.shape == (n,), name_


@pytest.mark.parametrize("name, backend", task_backends())
def test_random_rollout_is_finite_and_resets(name, backend):
    steps = 300 if backend == "mujoco" else 100
    with backend_env(name, NUM_ENVS, backend, seed=2) as env:
        obs, rew, done, extras = rollout(env, steps)
        assert torch.isfinite(obs).all(), "NaN/inf in observations"
        assert torch.isfinite(rew).all(), "NaN/inf in rewards"


@pytest.mark.parametrize("name, backend", task_backends())
def test_same_seed_same_trajectory(name, backend):
    steps = 120 if backend == "mujoco" else 40
    n = NUM_ENVS
    with backend_env(name, n, backend, seed=3) as a, backend_env(name, n, backend, seed=3) as b:
        ta, ra, _, _ = rollout(a, steps)
        tb, rb, _, _ = rollout(b, steps)
    with backend_env(name, n, backend, seed=4) as c:
        tc, _, _, _ = rollout(c, steps)
    assert torch.equal(ta, tb) and torch.equal(ra, rb)
    assert not torch.equal(ta, tc), "a different seed should give a different trajectory"


@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
def test_time_outs_at_max_episode_length(backend):
    # The default config (500 steps) rather than a short episode: on mjx a config
    # of its own would compile again, which takes longer than the 500 steps.
    n = NUM_ENVS
    with backend_env("cartpole_swingup", n, backend) as env:
        assert env.max_episode_length == 500
        env.reset()
        for t in range(500):
            obs, _, done, extras = env.step(torch.zeros(n, 1))
            assert done.any() == (t == 499), t
        assert done.all() and extras["time_outs"].all() and not extras["terminated"].any()
        assert extras["episode"]["length"] == 500
        assert "rew_swingup" in extras["episode"]
        assert (env.episode_length == 0).all()
        # Auto-reset: the returned observations start the next episode, the
        # finished ones come separately.
        assert list(extras["final_ids"]) == list(range(n))
        assert extras["episode_lengths"].tolist() == [500] * n
        final = torch.from_numpy(extras["final_observations"]["policy"])
        assert final.shape == obs["policy"].shape and not torch.allclose(final, obs["policy"])
