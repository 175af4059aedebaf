"""The Brax backend keeps the VecEnv contract.

Compiling a Brax env costs seconds to tens of seconds on a CPU, so the tests share
one small inverted_pendulum configuration (envs of the same configuration share
one compilation) and the "fast" test env where physics does not matter.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("brax")

from robotrl.sim import make_env  # noqa: E402
from robotrl.sim.brax_backend import BraxVecEnv, observation_groups, scale_friction_and_mass  # noqa: E402

# Brax announces that it is unmaintained (in favour of MJX), and its contact code
# reads a deprecated MJX field; neither is ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Brax System:UserWarning"),
    pytest.mark.filterwarnings("ignore:Accessing `ncon`:DeprecationWarning"),
]

N, EPISODE = 4, 10  # 10 steps of 0.04 s: the pendulum stays up under zero action


def pendulum(seed=0, **kwargs):
    return BraxVecEnv("inverted_pendulum", N, seed=seed, episode_length=EPISODE, **kwargs)


@pytest.fixture(scope="module")
def env():
    return pendulum()


def rollout(env, actions):
    env.reset()
    obs = [env.get_observations()["policy"].clone()]
    for a in actions:
        o, _, _, _ = env.step(a)
        obs.append(o["policy"].clone())
    return torch.stack(obs)


def test_contract(env):
    obs = env.reset()
    assert env.num_envs == N and env.num_actions == 1 and env.action_names == ["slide"]
    assert env.max_episode_length == EPISODE and env.step_dt == pytest.approx(0.04)
    assert env.obs_sizes == {"policy": 4, "critic": 4}
    assert env.obs_layout["policy"] == [("obs", 4)]
    assert set(obs) == {"policy", "critic"}
    obs, rew, done, extras = env.step(torch.zeros(N, 1))
    for group, size in env.obs_sizes.items():
        assert obs[group].shape == (N, size) and obs[group].dtype == torch.float32
        assert torch.isfinite(obs[group]).all()
    assert rew.shape == (N,) and rew.dtype == torch.float32 and done.shape == (N,) and done.dtype == torch.bool
    assert extras["time_outs"].dtype == torch.bool and extras["terminated"].shape == (N,)
    assert torch.equal(extras["cost"], torch.zeros(N))  # Brax envs have no cost
    assert extras["episode"] == {} and extras["metrics"] == {}


def test_time_limit_auto_resets(env):
    first = env.reset()["policy"].clone()
    for t in range(EPISODE):
        obs, rew, done, extras = env.step(torch.zeros(N, 1))
        assert done.all() == (t == EPISODE - 1)
    assert extras["time_outs"].all() and not extras["terminated"].any()
    assert extras["episode"]["length"] == EPISODE and extras["episode"]["return"] == pytest.approx(EPISODE)
    np.testing.assert_array_equal(extras["episode_lengths"], np.full(N, EPISODE))
    np.testing.assert_array_equal(extras["final_ids"], np.arange(N))
    # Brax's AutoReset restarts from the episode's first state; the true last
    # observation is kept in the extras.
    assert torch.equal(obs["policy"], first)
    assert not np.allclose(extras["final_observations"]["policy"], first.numpy())
    # The next episode counts from zero.
    _, _, done, extras = env.step(torch.zeros(N, 1))
    assert not done.any() and extras["episode"] == {}


def test_termination_is_not_a_time_out(env):
    env.reset()
    for _ in range(EPISODE):
        _, _, done, extras = env.step(torch.full((N, 1), 3.0))  # push the cart: the pole falls
        if done.any():
            break
    assert done.all() and extras["terminated"].all() and not extras["time_outs"].any()
    assert extras["episode"]["length"] < EPISODE


def test_randomize_episode_start(env):
    env.reset()
    env.randomize_episode_start()
    finished = torch.zeros(N, dtype=torch.bool)
    for _ in range(EPISODE - 1):
        _, _, done, extras = env.step(torch.zeros(N, 1))
        assert not extras["terminated"].any()
        finished |= done
    assert finished.any()  # some clocks started late in the episode


def test_same_seed_same_trajectory(env):
    actions = torch.rand(8, N, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = rollout(pendulum(seed=3), actions)
    b = rollout(pendulum(seed=3), actions)
    c = rollout(pendulum(seed=4), actions)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_bad_actions_name_the_envs(env):
    env.reset()
    bad = torch.zeros(N, 1)
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"env ids \[2\]"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"shape"):
        env.step(torch.zeros(N, 2))


def test_unknown_env_lists_the_names():
    with pytest.raises(KeyError, match="hopper"):
        BraxVecEnv("no_such_env", 2)


def test_missing_device_lists_jax_devices():
    with pytest.raises(ValueError, match=r"jax\.devices\(\)"):
        BraxVecEnv("inverted_pendulum", 2, device="cuda:7")


def test_observation_groups_mapping():
    x, y = np.zeros((2, 3)), np.ones((2, 2, 2))
    groups, layout = observation_groups(x)
    assert layout == {"policy": [("obs", 3)], "critic": [("obs", 3)]}
    groups, layout = observation_groups({"state": x, "privileged_state": y})
    assert groups["critic"].shape == (2, 4) and layout["policy"] == [("state", 3)]
    groups, layout = observation_groups({"policy": x})
    assert layout["critic"] == [("policy", 3)]
    groups, layout = observation_groups({"b": y, "a": x})
    assert groups["policy"].shape == (2, 7) and layout["policy"] == [("a", 3), ("b", 4)]


def test_dict_observations():
    env = BraxVecEnv("fast", 3, env_kwargs={"obs_mode": "dict_state", "asymmetric_obs": True})
    assert env.obs_sizes == {"policy": 2, "critic": 4}
    obs, _, _, _ = env.step(torch.zeros(3, 1))
    assert obs["critic"].shape == (3, 4)


def test_make_env_brax_branch():
    env = make_env("inverted_pendulum", N, sim="brax", episode_length=EPISODE)
    assert isinstance(env, BraxVecEnv) and env.obs_sizes["policy"] == 4


def test_randomization_fn_changes_dynamics():
    heavy = pendulum(randomization_fn=scale_friction_and_mass(mass_range=(3.0, 4.0)))
    push = torch.full((6, N, 1), 1.0)
    nominal, randomized = rollout(pendulum(), push), rollout(heavy, push)
    # Randomization leaves the initial states alone and changes what follows.
    assert torch.equal(nominal[0], randomized[0])
    assert not torch.allclose(nominal[-1], randomized[-1], atol=1e-3)
