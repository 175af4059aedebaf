"""The mujoco backend: bad input, domain randomization, latency, pushes."""
import mujoco
import numpy as np
import pytest
import torch

from robotrl.sim import make_env, make_task
from robotrl.sim.mujoco_backend import state_slices


def test_wrong_action_shape_is_rejected():
    with make_env("cartpole_swingup", 4) as env:
        with pytest.raises(ValueError, match=r"\(4, 1\)"):
            env.step(torch.zeros(3, 1))
        with pytest.raises(ValueError, match="shape"):
            env.step(torch.zeros(4, 2))


def test_nan_actions_name_the_env_ids():
    with make_env("cartpole_swingup", 6) as env:
        before = env.state.copy()
        a = torch.zeros(6, 1)
        a[2, 0] = float("nan")
        a[5, 0] = float("inf")
        with pytest.raises(ValueError, match=r"env ids \[2, 5\]"):
            env.step(a)
        # Nothing was stepped.
        assert np.array_equal(env.state, before)


def test_state_slices_match_mj_getstate():
    task = make_task("quadruped_walk")
    d = mujoco.MjData(task.model)
    d.qpos[:] = np.arange(task.model.nq)
    d.qvel[:] = -np.arange(task.model.nv)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.zeros(mujoco.mj_stateSize(task.model, spec))
    mujoco.mj_getState(task.model, d, state, spec)
    sl = state_slices(task.model)
    assert np.array_equal(state[sl["qpos"]], d.qpos)
    assert np.array_equal(state[sl["qvel"]], d.qvel)


def _dr_config(**ranges):
    base = {"enabled": True}
    base.update(ranges)
    return {"domain_randomization": base}


@pytest.mark.parametrize(
    "field, ranges, attr",
    [
        ("friction", {"friction": [0.3, 1.5]}, "geom_friction"),
        ("mass", {"mass_scale": [0.7, 1.3]}, "body_mass"),
        ("added mass", {"added_mass": [-1.0, 2.0]}, "body_mass"),
        ("centre of mass", {"com_offset": [-0.05, 0.05]}, "body_ipos"),
        ("damping", {"damping_scale": [0.5, 2.0]}, "dof_damping"),
        ("armature", {"armature_scale": [0.5, 2.0]}, "dof_armature"),
        ("kp", {"kp_scale": [0.5, 1.5]}, "actuator_gainprm"),
        ("kd", {"kd_scale": [0.5, 1.5]}, "actuator_biasprm"),
        ("motor strength", {"motor_strength": [0.5, 1.5]}, "actuator_gainprm"),
    ],
)
def test_randomization_changes_model_and_dynamics(field, ranges, attr):
    task = make_task("quadruped_walk", _dr_config(**ranges))
    with make_env(task, 4, seed=0) as env:
        nominal = getattr(env.model, attr)
        per_env = [getattr(m, attr).copy() for m in env.models]
        assert not np.allclose(per_env[0], nominal), f"{field} randomization left the model as it was"
        assert not np.allclose(per_env[0], per_env[1]), f"{field} is not drawn per env"
        # Same initial state in every env: the trajectories must then differ.
        env.state[:] = env.state[0]
        env.task_vars = {k: np.repeat(v[:1], 4, 0) for k, v in env.task_vars.items()}
        a = torch.full((4, env.num_actions), 0.8)
        for _ in range(20):
            env.step(a)
        q = env.state[:, env.slices["qpos"]]
        assert not np.allclose(q[0], q[1], atol=1e-6), f"{field} did not change the dynamics"


def test_randomization_is_resampled_at_reset():
    task = make_task("quadruped_walk", _dr_config(friction=[0.3, 1.5]))
    with make_env(task, 2, seed=0) as env:
        first = env.models[0].geom_friction.copy()
        env._reset_ids(np.array([0]))
        assert not np.allclose(env.models[0].geom_friction, first)


def test_action_latency_delays_the_command():
    def first_substep_ctrl(latency):
        task = make_task("quadruped_walk", _dr_config(latency_substeps=[latency, latency]))
        with make_env(task, 2, seed=0) as env:
            env.step(torch.full((2, env.num_actions), 1.0))
            return env._ctrl_seq[0].copy(), env.task.default_pose

    seq0, pose = first_substep_ctrl(0)
    seq2, _ = first_substep_ctrl(2)
    target = pose + 0.25
    assert np.allclose(seq0, target)
    assert np.allclose(seq2[:2], pose) and np.allclose(seq2[2:], target)


def test_pushes_kick_the_base():
    task = make_task("quadruped_walk", _dr_config(push_interval_s=0.04, push_velocity=1.0))
    with make_env(task, 8, seed=0) as env:
        zero = torch.zeros(8, env.num_actions)
        env.step(zero)
        v_before = env.state[:, env.slices["qvel"]][:, :2].copy()
        env.step(zero)  # step 2 = 0.04 s: push
        v_after = env.state[:, env.slices["qvel"]][:, :2]
        assert np.abs(v_after - v_before).max() > 0.2


def test_observation_noise_only_on_policy_group():
    task = make_task("quadruped_walk", {"obs_noise": {"joint_pos": 0.05}})
    with make_env(task, 4, seed=0) as a, make_env(make_task("quadruped_walk", {"obs_noise": {"joint_pos": 0.0}}), 4, seed=0) as b:
        oa, ob = a.get_observations(), b.get_observations()
        assert not torch.allclose(oa["policy"], ob["policy"])
        assert torch.allclose(oa["critic"], ob["critic"])


def test_cost_is_zero_where_task_defines_none():
    with make_env("hopper", 4) as env:
        _, _, _, extras = env.step(torch.zeros(4, env.num_actions))
        assert torch.equal(extras["cost"], torch.zeros(4))


def test_pushes_on_a_fixed_base_are_refused():
    task = make_task("reach", _dr_config(push_interval_s=1.0, push_velocity=0.5))
    with pytest.raises(ValueError, match="no floating base"):
        make_env(task, 2)


def test_diverged_env_terminates_alone():
    with make_env("hopper", 4, seed=0) as env:
        env.state[1, env.slices["qvel"].start] = np.nan
        _, rew, done, extras = env.step(torch.zeros(4, env.num_actions))
        assert done[1] and extras["terminated"][1] and not extras["time_outs"][1]
        assert torch.isfinite(rew).all() and rew[1] == 0.0
        assert np.isfinite(env.state).all()  # env 1 was reset
