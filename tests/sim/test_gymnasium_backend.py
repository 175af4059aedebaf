"""The gymnasium backend: any registered Gymnasium env id as a robotrl VecEnv."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from robotrl.sim import make_env, make_task


def gym_env(env_id, num_envs, seed=0, **kwargs):
    return make_env(env_id, num_envs, sim="gymnasium", seed=seed, **kwargs)


class ToyEnv(gym.Env):
    """A tiny env whose spaces the tests choose: the observation echoes the last
    action and the step count, the cost is the step count."""

    def __init__(self, obs_space="box"):
        self.observation_space = {
            "box": spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "dict": spaces.Dict(
                {"pos": spaces.Box(-np.inf, np.inf, (2,), np.float32), "img": spaces.Box(0.0, 9.0, (2, 2), np.float32)}
            ),
            "discrete": spaces.Discrete(3),
        }[obs_space]
        self.action_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.t = 0

    def _obs(self, a):
        a = np.asarray(a, dtype=np.float32)
        if isinstance(self.observation_space, spaces.Dict):
            return {"pos": a, "img": np.full((2, 2), self.t, dtype=np.float32)}
        return a

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(np.zeros(2)), {}

    def step(self, action):
        self.t += 1
        return self._obs(action), 1.0, False, False, {"cost": float(self.t)}


gym.register("RobotrlToy-v0", entry_point=ToyEnv, max_episode_steps=4)
gym.register("RobotrlToyNoLimit-v0", entry_point=ToyEnv)


def rollout(env, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    trace, rewards = [env.get_observations()["policy"]], []
    for _ in range(steps):
        obs, r, _, _ = env.step(torch.rand(env.num_envs, env.num_actions, generator=gen) * 2 - 1)
        trace.append(obs["policy"])
        rewards.append(r)
    return torch.stack(trace), torch.stack(rewards)


def test_shapes_layout_and_extras():
    with gym_env("Pendulum-v1", 3) as env:
        assert env.obs_sizes == {"policy": 3, "critic": 3}
        assert env.obs_layout["policy"] == [("obs", 3)]
        assert env.action_names == ["a0"] and env.num_actions == 1
        assert env.step_dt == pytest.approx(0.05) and env.max_episode_length == 200
        obs = env.reset()
        assert set(obs) == {"policy", "critic"}
        assert obs["policy"].shape == (3, 3) and obs["policy"].dtype == torch.float32
        obs, rew, done, extras = env.step(torch.zeros(3, 1))
        assert rew.shape == (3,) and rew.dtype == torch.float32
        assert done.shape == (3,) and done.dtype == torch.bool
        for key in ("time_outs", "terminated"):
            assert extras[key].shape == (3,) and extras[key].dtype == torch.bool
        assert torch.equal(extras["cost"], torch.zeros(3))
        assert extras["episode"] == {} and extras["metrics"] == {}


def test_halfcheetah_runs_with_joint_names():
    with gym_env("HalfCheetah-v5", 2, seed=1) as env:
        assert env.obs_sizes["policy"] == 17 and env.num_actions == 6
        assert env.action_names == ["bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"]
        assert env.max_episode_length == 1000 and env.step_dt == pytest.approx(0.05)
        obs, rew = rollout(env, 50)
        assert torch.isfinite(obs).all() and torch.isfinite(rew).all()


def test_same_seed_same_trajectory():
    with gym_env("HalfCheetah-v5", 2, seed=3) as a, gym_env("HalfCheetah-v5", 2, seed=3) as b, \
            gym_env("HalfCheetah-v5", 2, seed=4) as c:
        ta, ra = rollout(a, 30)
        tb, rb = rollout(b, 30)
        tc, _ = rollout(c, 30)
    assert torch.equal(ta, tb) and torch.equal(ra, rb)
    assert not torch.equal(ta, tc), "a different seed should give a different trajectory"


def test_async_matches_sync():
    with gym_env("Pendulum-v1", 2, seed=5) as s, gym_env("Pendulum-v1", 2, seed=5, vectorization="async") as a:
        ts, rs = rollout(s, 10)
        ta, ra = rollout(a, 10)
    assert torch.equal(ts, ta) and torch.equal(rs, ra)


def test_actions_are_rescaled_to_the_box_and_final_obs_kept():
    # Pendulum's torque box is [-2, 2]: policy 0.5 is torque 1, policy 3 is clipped to 2.
    steps, seed = 5, 7
    ref = gym.make("Pendulum-v1", max_episode_steps=steps)
    ref.reset(seed=seed)
    with gym_env("Pendulum-v1", 1, seed=seed, env_kwargs={"max_episode_steps": steps}) as env:
        assert env.max_episode_length == steps
        returns = 0.0
        for t in range(steps):
            policy_action, torque = (0.5, 1.0) if t % 2 == 0 else (3.0, 2.0)
            ref_obs, ref_rew, _, ref_trunc, _ = ref.step(np.array([torque], dtype=np.float32))
            obs, rew, done, extras = env.step(torch.tensor([[policy_action]]))
            assert rew.item() == pytest.approx(ref_rew, rel=1e-5)
            returns += rew.item()
        assert ref_trunc and done.all() and extras["time_outs"].all() and not extras["terminated"].any()
        # The last observation of the episode is kept; the returned one starts the next.
        assert np.allclose(extras["final_observations"]["policy"][0], ref_obs, atol=1e-6)
        assert not np.allclose(obs["policy"][0].numpy(), ref_obs)
        assert list(extras["final_ids"]) == [0]
        assert extras["episode"]["length"] == steps and extras["episode_lengths"][0] == steps
        assert extras["episode_returns"][0] == pytest.approx(returns, rel=1e-5)
    ref.close()


def test_terminations_are_not_time_outs():
    # InvertedPendulum ends as soon as the pole tips past 0.2 rad.
    with gym_env("InvertedPendulum-v5", 4, seed=0) as env:
        ended = torch.zeros(4, dtype=torch.bool)
        for _ in range(200):
            _, _, done, extras = env.step(torch.ones(4, 1))
            assert torch.equal(done, extras["terminated"] | extras["time_outs"])
            assert not (extras["terminated"] & extras["time_outs"]).any()
            ended |= extras["terminated"]
            if ended.all():
                break
        assert ended.all(), "a full push should tip the pole over"


def test_dict_observations_unbounded_actions_and_cost():
    with gym_env("RobotrlToy-v0", 2, env_kwargs={"obs_space": "dict"}) as env:
        # Gymnasium's Dict space orders its keys; the layout follows that order.
        assert env.obs_layout["policy"] == [("img", 4), ("pos", 2)]
        assert env.max_episode_length == 4 and np.isnan(env.step_dt)
        # Unbounded action dims take the action as it is (not squashed to [-1, 1]).
        a = torch.tensor([[5.0, -0.5], [0.25, 2.0]])
        obs, _, _, extras = env.step(a)
        assert torch.equal(obs["policy"][:, 4:], a)
        assert torch.equal(obs["policy"][:, :4], torch.ones(2, 4))
        assert torch.equal(extras["cost"], torch.ones(2))
        for _ in range(3):
            obs, _, done, extras = env.step(a)
        # The final step's cost comes from the finished episode, not from the reset.
        assert done.all() and torch.equal(extras["cost"], torch.full((2,), 4.0))
        assert np.allclose(extras["final_observations"]["policy"][:, :4], 4.0)
        assert torch.equal(obs["policy"][:, :4], torch.zeros(2, 4))


def test_non_box_action_space_is_a_clear_error():
    with pytest.raises(TypeError, match=r"'CartPole-v1'.*Discrete\(2\)"):
        gym_env("CartPole-v1", 2)


def test_non_box_observation_space_is_a_clear_error():
    with pytest.raises(TypeError, match=r"'RobotrlToy-v0'.*Discrete\(3\)"):
        gym_env("RobotrlToy-v0", 2, env_kwargs={"obs_space": "discrete"})


def test_env_without_time_limit_is_a_clear_error():
    with pytest.raises(ValueError, match="max_episode_steps"):
        gym_env("RobotrlToyNoLimit-v0", 1)


def test_a_robotrl_task_is_refused():
    with pytest.raises(TypeError, match="Gymnasium env id"):
        make_env(make_task("cartpole_swingup"), 2, sim="gymnasium")


def test_bad_actions_are_rejected():
    with gym_env("Pendulum-v1", 4) as env:
        with pytest.raises(ValueError, match=r"\(4, 1\)"):
            env.step(torch.zeros(3, 1))
        before = env.get_observations()["policy"].clone()
        a = torch.zeros(4, 1)
        a[1, 0] = float("nan")
        a[3, 0] = float("inf")
        with pytest.raises(ValueError, match=r"env ids \[1, 3\]"):
            env.step(a)
        assert torch.equal(env.get_observations()["policy"], before)
