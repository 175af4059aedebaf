"""Cost semantics of the velocity-constrained and keep-out safety tasks."""
import numpy as np
import torch

from robotrl.sim import make_env, make_task


def test_velocity_cost_is_one_exactly_on_steps_over_the_limit():
    for name, default in (("hopper_velocity", 0.7402), ("halfcheetah_velocity", 3.2096)):
        assert make_task(name).config["velocity_limit"] == default  # Safety-Gymnasium's limits
        # Random actions rarely reach those speeds; a low limit exercises both sides.
        limit = 0.3
        task = make_task(name, {"velocity_limit": limit})
        with make_env(task, 16, seed=0, nthread=1) as env:
            gen = torch.Generator().manual_seed(0)
            over = costs = 0
            for _ in range(200):
                _, _, _, extras = env.step(torch.randn(16, env.num_actions, generator=gen))
                speed = extras["metrics"]["forward_velocity"]
                np.testing.assert_array_equal(extras["cost"].numpy(), (speed > limit).astype(np.float32))
                over += (speed > limit).sum()
                costs += extras["cost"].sum().item()
            assert over > 0 and costs == over  # random flailing does break the limit sometimes


def test_quadruped_velocity_cost_uses_planar_speed():
    task = make_task("quadruped_walk_velocity", {"velocity_limit": 0.05})
    with make_env(task, 8, seed=0, nthread=1) as env:
        costs = []
        for _ in range(50):
            _, _, done, extras = env.step(torch.randn(8, 12))
            state = env._sim_state()
            speed = np.hypot(state.qvel[:, 0], state.qvel[:, 1])
            ok = ~done.numpy()  # finished envs were reset after their cost was computed
            np.testing.assert_array_equal(extras["cost"].numpy()[ok], (speed > 0.05).astype(np.float32)[ok])
            costs.append(extras["cost"].numpy())
        assert np.concatenate(costs).max() == 1.0


def arm_env(center, vel_limit=100.0):
    task = make_task("reach_keepout", {"keepout": {"center": center, "radius": 0.05}, "joint_vel_limit": vel_limit,
                                       "reset_joint_noise": 0.0})
    return make_env(task, 2, seed=0, nthread=1)


def test_keepout_costs_inside_and_stops_costing_after_leaving():
    home_tip = make_env("reach", 1, seed=0, task_config={"reset_joint_noise": 0.0}).get_observations()["critic"][0, -6:-3].tolist()
    with arm_env(home_tip) as env:
        ee = env.get_observations()["critic"][:, -6:-3]
        assert torch.allclose(ee[0], torch.tensor(home_tip), atol=1e-4)
        inside = [env.step(torch.zeros(2, 4))[3]["cost"][0].item() for _ in range(10)]
        assert inside == [1.0] * 10  # holding the home pose: the fingertip is in the zone
        away = torch.tensor([[0.0, -0.8, 0.8, 0.0]] * 2)
        leaving = [env.step(away)[3]["cost"][0].item() for _ in range(60)]
        assert leaving[-20:] == [0.0] * 20  # out of the zone: no more cost
        assert leaving[0] == 1.0


def test_keepout_joint_speed_limit_costs():
    with arm_env([2.0, 2.0, 2.0], vel_limit=0.5) as env:  # zone out of reach: only speed counts
        costs = [env.step(torch.tensor([[1.0, -1.0, 1.0, 1.0]] * 2))[3]["cost"][0].item() for _ in range(20)]
        assert max(costs) == 1.0
        still = [env.step(torch.tensor([[1.0, -1.0, 1.0, 1.0]] * 2))[3]["cost"][0].item() for _ in range(100)]
        assert still[-10:] == [0.0] * 10  # settled at the target pose


def test_keepout_targets_are_outside_the_zone():
    task = make_task("reach_keepout")
    from robotrl.sim.task import Sampler

    _, _, tv = task.reset(np, Sampler(np.random.default_rng(0)), 5000)
    k = task.config["keepout"]
    dist = np.linalg.norm(tv["target"] - np.asarray(k["center"]), axis=1)
    assert dist.min() >= k["radius"] + k["target_margin"] - 1e-9
