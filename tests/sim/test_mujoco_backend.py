"""The mujoco backend: bad input, domain randomization, latency, pushes.

Tests parametrized over ``backend`` hold for the mjx backend too (its
randomization, latency and pushes are tested in test_mjx_backend.py); they use 8
envs and default task configs so that mjx compiles each task once per session.
"""
import mujoco
import numpy as np
import pytest
import torch

from robotrl.sim import make_env, make_task
from robotrl.sim.mujoco_backend import state_slices

BACKENDS = ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)]
QUICK_BACKENDS = ["mujoco", "mjx"]  # tasks that compile in seconds on mjx


def backend_env(task, num_envs, backend, **kwargs):
    if backend == "mjx":
        pytest.importorskip("jax")
        pytest.importorskip("mujoco.mjx")
    return make_env(task, num_envs, sim=backend, **kwargs)


def physics_state(env) -> np.ndarray:
    """Every env's qpos and qvel, whatever the backend."""
    if hasattr(env, "sim_state"):
        s = env.sim_state()
        return np.concatenate([s.qpos, s.qvel], axis=1)
    return env.state[:, env.slices["qpos"].start : env.slices["qvel"].stop].copy()


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
def test_wrong_action_shape_is_rejected(backend):
    with backend_env("cartpole_swingup", 8, backend) as env:
        with pytest.raises(ValueError, match=r"\(8, 1\)"):
            env.step(torch.zeros(3, 1))
        with pytest.raises(ValueError, match="shape"):
            env.step(torch.zeros(8, 2))


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
def test_nan_actions_name_the_env_ids(backend):
    with backend_env("cartpole_swingup", 8, backend) as env:
        before = physics_state(env)
        a = torch.zeros(8, 1)
        a[2, 0] = float("nan")
        a[5, 0] = float("inf")
        with pytest.raises(ValueError, match=r"env ids \[2, 5\]"):
            env.step(a)
        # Nothing was stepped.
        assert np.array_equal(physics_state(env), before)


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_observation_noise_stays_within_its_amplitude(backend):
    """The default quadruped's policy terms are noisy; its critic group starts with
    the same terms, clean: the task's own terms of the env's state."""
    with backend_env("quadruped_walk", 8, backend, seed=0) as env:
        env.step(torch.zeros(8, env.num_actions))
        obs = env.get_observations()
        state = env.sim_state() if backend == "mjx" else env._sim_state()
        terms = env.task.observation_terms(np, state)
        clean = np.concatenate([terms[n] for n, _ in env.obs_layout["critic"]], axis=1)
        assert np.allclose(obs["critic"].numpy(), clean, atol=1e-5)
        start = 0
        for name, width in env.obs_layout["policy"]:
            noisy = obs["policy"][:, start : start + width].numpy()
            diff = np.abs(noisy - terms[name])
            amp = env.cfg["obs_noise"].get(name, 0.0)
            assert diff.max() <= amp + 1e-5, name
            assert (diff.max() > max(amp / 4, 1e-5)) == (amp > 0), name
            start += width


@pytest.mark.parametrize("backend", BACKENDS)
def test_cost_is_zero_where_task_defines_none(backend):
    with backend_env("hopper", 8, backend) as env:
        _, _, _, extras = env.step(torch.zeros(8, env.num_actions))
        assert torch.equal(extras["cost"], torch.zeros(8))


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
def test_pushes_on_a_fixed_base_are_refused(backend):
    task = make_task("reach", _dr_config(push_interval_s=1.0, push_velocity=0.5))
    with pytest.raises(ValueError, match="no floating base"):
        backend_env(task, 2, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_diverged_env_terminates_alone(backend):
    with backend_env("hopper", 8, backend, seed=0) as env:
        if backend == "mjx":
            s = env.sim_state()
            s.qvel[1, 0] = np.nan
            env.set_sim_state(s.qpos, s.qvel, s.sensordata, s.ctrl, s.task)
        else:
            env.state[1, env.slices["qvel"].start] = np.nan
        _, rew, done, extras = env.step(torch.zeros(8, env.num_actions))
        assert done[1] and extras["terminated"][1] and not extras["time_outs"][1]
        assert torch.isfinite(rew).all() and rew[1] == 0.0
        assert np.isfinite(physics_state(env)).all()  # env 1 was reset


def test_action_dtypes_agree_and_the_callers_tensor_is_untouched():
    """float32, float64, half-precision torch and numpy actions drive the same
    physics; the step clips a copy, never the caller's batch."""
    action = torch.arange(-48, 48, dtype=torch.float64).reshape(8, 12) / 8  # up to 6, beyond action_clip=4
    kept = action.clone()
    states = []
    for a in (action, action.float(), action.to(torch.bfloat16), action.numpy()):
        with make_env("quadruped_walk", 8, seed=1) as env:
            env.step(a)
            states.append(physics_state(env))
    assert torch.equal(action, kept)
    np.testing.assert_array_equal(states[0], states[1])  # these values are exact in float32
    np.testing.assert_array_equal(states[0], states[3])
    np.testing.assert_array_equal(states[0], states[2])  # eighths are exact in bfloat16 too


def test_episode_reward_terms_add_up_to_the_return():
    with make_env("quadruped_walk", 16, seed=2) as env:
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            _, _, done, extras = env.step(torch.randn(16, 12, generator=g))
            if done.any():
                ep = extras["episode"]
                terms = sum(v for k, v in ep.items() if k.startswith("rew_"))
                assert len([k for k in ep if k.startswith("rew_")]) == 13
                assert terms == pytest.approx(ep["return"], rel=1e-9, abs=1e-9)
                return
    pytest.fail("no episode ended in 200 steps of random actions")
