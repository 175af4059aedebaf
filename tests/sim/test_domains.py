"""Target domains: named dynamics shifts reach the model the backends step."""
import numpy as np
import pytest
import torch

from robotrl.sim import make_env, make_task
from robotrl.sim.domains import DOMAINS, DynamicsShift, domain_task_config, resolve_domain


def rollout(task, steps=60, seed=0, action=0.5):
    env = make_env(task, 4, seed=seed, nthread=1)
    try:
        obs = []
        for _ in range(steps):
            o, *_ = env.step(torch.full((4, task.num_actions), action))
            obs.append(o["policy"].numpy().copy())
        return np.stack(obs)
    finally:
        env.close()


def test_named_shifts_change_the_model_they_name():
    base = make_task("hopper")
    heavy = make_task("hopper", domain_task_config({}, "gravity_2x"))
    slippery = make_task("hopper", domain_task_config({}, "friction_0.3x"))
    weak = make_task("hopper", domain_task_config({}, "gain_0.7x"))
    np.testing.assert_allclose(heavy.model.opt.gravity, 2 * base.model.opt.gravity)
    np.testing.assert_allclose(slippery.model.geom_friction[:, 0], 0.3 * base.model.geom_friction[:, 0])
    np.testing.assert_allclose(slippery.model.geom_friction[:, 1:], base.model.geom_friction[:, 1:])
    np.testing.assert_allclose(weak.model.actuator_gainprm[:, 0], 0.7 * base.model.actuator_gainprm[:, 0])
    np.testing.assert_allclose(heavy.model.body_mass, base.model.body_mass)


def test_a_shift_changes_the_trajectory_and_the_simulator_is_unchanged():
    sim = rollout(make_task("hopper"))
    again = rollout(make_task("hopper", domain_task_config({}, None)))
    heavy = rollout(make_task("hopper", domain_task_config({}, "gravity_2x")))
    np.testing.assert_array_equal(sim, again)
    assert np.abs(heavy - sim).max() > 0.05


def test_joint_noise_perturbs_the_motors_not_the_policy_output():
    quiet = rollout(make_task("pendulum_swingup"))
    noisy = rollout(make_task("pendulum_swingup", domain_task_config({}, "joint_noise_0.1")))
    assert np.abs(noisy - quiet).max() > 1e-3
    # The same seed gives the same noisy trajectory.
    np.testing.assert_array_equal(noisy, rollout(make_task("pendulum_swingup", domain_task_config({}, "joint_noise_0.1"))))


def test_mapping_domains_and_bad_domains():
    assert resolve_domain({"gravity": 1.5, "friction": 0.5}) == DynamicsShift(gravity=1.5, friction=0.5)
    assert resolve_domain(None).is_identity and resolve_domain("sim").is_identity
    assert set(DOMAINS) >= {"gravity_2x", "friction_0.3x", "joint_noise_0.1"}
    with pytest.raises(KeyError, match="unknown target domain 'gravity_9x'.*gravity_2x"):
        resolve_domain("gravity_9x")
    with pytest.raises(KeyError, match="unknown dynamics shift fields"):
        resolve_domain({"gravitty": 2.0})
    with pytest.raises(ValueError, match="friction=-1.0 is out of range"):
        resolve_domain({"friction": -1.0})
    with pytest.raises(ValueError, match="gravity=nan"):
        make_task("hopper", {"dynamics_shift": {"gravity": float("nan")}})
