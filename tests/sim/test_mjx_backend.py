"""The mjx backend: what MJX cannot run, devices and sharding, the JAX sampler, the
torch hand-off, randomization, latency and pushes.

Compiling a task takes 10-60 s on 2 CPU cores, so envs here reuse compiled steps:
pendulum envs have 8 envs and the default config (as in the contract and parity
tests), and the randomization tests share one quadruped env.
"""
import os
import subprocess
import sys
import textwrap
from importlib import resources

import mujoco
import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
pytest.importorskip("mujoco.mjx")

import jax.numpy as jnp  # noqa: E402

from robotrl.sim import jax_interop, make_env, make_task  # noqa: E402
from robotrl.sim.mjx_model import RANDOMIZED_FIELDS, MjxUnsupportedError  # noqa: E402
from robotrl.sim.randomization import Nominal  # noqa: E402
from robotrl.sim.task import KeySampler  # noqa: E402
from robotrl.sim.tasks.pendulum_swingup import PendulumSwingup  # noqa: E402


# ------------------------------------------------------------- bad input
def test_unsupported_integrator_names_it_and_the_task():
    task = make_task("hopper", {"integrator": "implicit"})
    with pytest.raises(MjxUnsupportedError, match=r"hopper.*mjINT_IMPLICIT"):
        make_env(task, 2, sim="mjx")


def test_silently_ignored_noslip_solver_is_refused():
    task = make_task("pendulum_swingup")
    task.model.opt.noslip_iterations = 3
    with pytest.raises(MjxUnsupportedError, match=r"pendulum_swingup.*noslip"):
        make_env(task, 2, sim="mjx")


class PendulumWithDistanceSensor(PendulumSwingup):
    """A model with a sensor type MJX does not implement."""

    name = "pendulum_with_distance_sensor"

    def build_model(self):
        xml = resources.files("robotrl.assets").joinpath(self.asset).read_text()
        xml = xml.replace("</sensor>", '<distance name="bob_floor" geom1="bob" geom2="floor"/></sensor>')
        return mujoco.MjModel.from_xml_string(xml)


def test_unsupported_sensor_names_it_and_the_task():
    with pytest.raises(MjxUnsupportedError, match=r"pendulum_with_distance_sensor.*GEOMDIST"):
        make_env(PendulumWithDistanceSensor(), 2, sim="mjx")


class PendulumOnCloth(PendulumSwingup):
    name = "pendulum_on_cloth"
    mjx_unsupported = "flex cloth (MJX has no flex)"


def test_declared_unsupported_task_is_refused_with_its_reason():
    with pytest.raises(MjxUnsupportedError, match=r"pendulum_on_cloth cannot run on MJX: flex cloth"):
        make_env(PendulumOnCloth(), 2, sim="mjx")


@pytest.mark.parametrize("device", ["cuda:99", "cpu:99", "tpu"])
def test_device_that_does_not_exist(device):
    with pytest.raises(ValueError, match=rf"device '{device}' does not exist.*jax.devices\(\) = \["):
        make_env("pendulum_swingup", 2, sim="mjx", device=device)


def test_unknown_backend_lists_mjx():
    with pytest.raises(KeyError, match="mujoco, mjx"):
        make_env("pendulum_swingup", 2, sim="nope")


# --------------------------------------------------- sampler, hand-off, jit
def test_key_sampler_is_deterministic_and_moves_on():
    a, b = KeySampler(jax.random.key(7)), KeySampler(jax.random.key(7))
    x = a.uniform(-1.0, 2.0, (50, 3))
    assert np.array_equal(x, b.uniform(-1.0, 2.0, (50, 3)))
    assert not np.array_equal(x, a.uniform(-1.0, 2.0, (50, 3))), "each draw must split the key"
    assert x.shape == (50, 3) and x.min() >= -1.0 and x.max() < 2.0
    low = np.array([0.0, 10.0, 100.0])
    y = np.asarray(a.uniform(low, low + 1.0, (200, 3)))
    assert ((y >= low) & (y < low + 1.0)).all()
    z = np.asarray(a.normal((4000,)))
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1
    k = np.asarray(a.integers(0, 3, (300,)))
    assert set(k.tolist()) == {0, 1, 2}
    assert a.uniform(0.0, 1.0, None).shape == ()


def test_dlpack_hand_off_copies_nothing():
    x = jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4)
    t = jax_interop.to_torch(x)
    assert t.data_ptr() == x.unsafe_buffer_pointer() and t.shape == (3, 4)
    a = torch.randn(4, 3)
    j = jax_interop.from_torch(a)
    assert j.unsafe_buffer_pointer() == a.data_ptr()


def test_one_compilation_serves_reset_and_step():
    with make_env("pendulum_swingup", 8, sim="mjx", seed=0) as env:
        zero = torch.zeros(8, 1)
        env.step(zero)
        env.reset()
        env.randomize_episode_start()
        assert len(set(env.episode_length.tolist())) > 1
        s = env.sim_state()
        env.set_sim_state(s.qpos, s.qvel, s.sensordata, s.ctrl, s.task)
        env.step(zero)
        assert env._program.step._cache_size() == 1
        with make_env("pendulum_swingup", 8, sim="mjx", seed=1) as other:
            assert other._program is env._program


@pytest.mark.slow
def test_sharded_over_two_fake_cpu_devices():
    """Two CPU devices faked with --xla_force_host_platform_device_count=2 (in a
    subprocess: the device count is fixed when JAX starts): the env axis is split
    over both, and the trajectory is the one a single device computes."""
    code = textwrap.dedent(
        """
        import warnings

        import jax
        import torch
        from robotrl.sim import make_env
        from robotrl.sim.jax_interop import env_mesh
        assert len(jax.devices()) == 2, jax.devices()

        def run(device):
            with make_env("pendulum_swingup", 4, sim="mjx", seed=0, device=device) as env:
                used = {d for leaf in jax.tree_util.tree_leaves(env._state) for d in leaf.devices()}
                gen = torch.Generator().manual_seed(0)
                obs = [env.get_observations()["critic"]]
                for _ in range(20):
                    o, r, d, x = env.step(torch.randn(4, 1, generator=gen))
                    assert o["critic"].device == torch.device("cpu")
                    obs.append(o["critic"])
                return len(env.devices), len(used), torch.stack(obs)

        n_dev, n_used, sharded = run("cpu")
        assert (n_dev, n_used) == (2, 2), (n_dev, n_used)
        n_dev, n_used, single = run("cpu:0")
        assert (n_dev, n_used) == (1, 1), (n_dev, n_used)
        assert torch.allclose(sharded, single, atol=1e-5), (sharded - single).abs().max()
        # 3 envs do not split evenly over 2 devices: they stay on one.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert env_mesh(jax.devices(), 3).devices.size == 1
        assert "does not split evenly" in str(caught[0].message)
        print("sharded ok")
        """
    )
    # First: XLA stops reading XLA_FLAGS at a token it does not know.
    flags = "--xla_force_host_platform_device_count=2 " + os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=flags, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "sharded ok" in out.stdout, out.stderr[-3000:]


# ------------------------------------------------ randomization (quadruped)
DR = {
    "enabled": True,
    "friction": [0.3, 1.5],
    "mass_scale": [0.7, 1.3],
    "added_mass": [-1.0, 2.0],
    "com_offset": [-0.05, 0.05],
    "damping_scale": [0.5, 2.0],
    "armature_scale": [0.5, 2.0],
    "kp_scale": [0.5, 1.5],
    "kd_scale": [0.5, 1.5],
    "motor_strength": [0.5, 1.5],
    "latency_substeps": [0, 2],
    "push_interval_s": 0.1,  # every 5 control steps
    "push_velocity": 1.0,
}


@pytest.fixture(scope="module")
def dr_env():
    task = make_task("quadruped_walk", {"domain_randomization": DR})
    env = make_env(task, 8, sim="mjx", seed=0)
    yield env
    env.close()


@pytest.mark.slow
def test_randomization_draws_every_field_per_env(dr_env):
    dr_env.reset()
    fields = dr_env.randomized_model_fields()
    nominal = Nominal.of(dr_env.task.model)
    assert set(fields) == set(RANDOMIZED_FIELDS)
    for name, per_env in fields.items():
        nom = getattr(nominal, name)
        assert per_env.shape == (8,) + nom.shape, name
        assert not np.allclose(per_env[0], nom), f"{name} randomization left the model as it was"
        assert not np.allclose(per_env[0], per_env[1]), f"{name} is not drawn per env"
    friction = fields["geom_friction"][:, :, 0] / nominal.geom_friction[:, 0]
    assert (friction >= 0.3 - 1e-6).all() and (friction <= 1.5 + 1e-6).all()
    assert np.allclose(friction, friction[:, :1], atol=1e-6), "one friction factor per env"
    latency = dr_env.latency
    assert latency.min() >= 0 and latency.max() <= 2 and len(set(latency.tolist())) > 1


@pytest.mark.slow
def test_randomization_is_resampled_at_reset(dr_env):
    dr_env.reset()
    before = dr_env.randomized_model_fields()["geom_friction"]
    dr_env.reset()
    assert not np.allclose(dr_env.randomized_model_fields()["geom_friction"], before)


@pytest.mark.slow
def test_randomized_envs_move_differently(dr_env):
    dr_env.reset()
    s = dr_env.sim_state()
    same = {k: np.repeat(v[:1], 8, 0) for k, v in s.task.items()}
    row = lambda x: np.repeat(x[:1], 8, 0)  # noqa: E731
    dr_env.set_sim_state(row(s.qpos), row(s.qvel), row(s.sensordata), row(s.ctrl), same)
    for _ in range(4):
        dr_env.step(torch.full((8, 12), 0.8))
    q = dr_env.sim_state().qpos
    assert not np.allclose(q[0], q[1], atol=1e-4)


@pytest.mark.slow
def test_randomized_dynamics_and_latency_match_mujoco(dr_env):
    """Given the mjx env's drawn parameters and latencies, the mujoco backend
    follows the same trajectory: both backends apply randomization and latency
    the same way (4 steps: the first push, drawn differently, comes at step 5)."""
    mx = dr_env
    mx.reset()
    fields, s = mx.randomized_model_fields(), mx.sim_state()
    with make_env(mx.task, 8, sim="mujoco", seed=0) as mj:
        for i, model in enumerate(mj.models):
            for name, value in fields.items():
                getattr(model, name)[:] = value[i]
        mj.latency[:] = mx.latency
        sl = mj.slices
        mj.state[:] = 0.0
        mj.state[:, sl["qpos"]] = s.qpos
        mj.state[:, sl["qvel"]] = s.qvel
        mj.sensordata[:] = s.sensordata
        mj.ctrl[:] = s.ctrl
        mj.task_vars = {k: v.astype(np.float64) for k, v in s.task.items()}
        mj.episode_length[:] = 0
        gen = torch.Generator().manual_seed(1)
        alive = np.ones(8, dtype=bool)
        for t in range(4):
            a = torch.randn(8, 12, generator=gen)
            o1, r1, d1, _ = mj.step(a)
            o2, r2, d2, _ = mx.step(a)
            assert np.array_equal(d1.numpy()[alive], d2.numpy()[alive]), t
            alive &= ~d1.numpy()
            diff = (o1["critic"] - o2["critic"]).abs().numpy()[alive]
            assert diff.max(initial=0.0) < 1e-3, (t, diff.max())
            assert np.abs((r1 - r2).numpy()[alive]).max(initial=0.0) < 1e-4, t
        assert alive.sum() >= 4


@pytest.mark.slow
def test_pushes_kick_the_base(dr_env):
    dr_env.reset()
    zero = torch.zeros(8, 12)
    for _ in range(4):
        dr_env.step(zero)
    before = dr_env.sim_state().qvel[:, :2]
    _, _, done, _ = dr_env.step(zero)  # step 5 = 0.1 s: push
    after = dr_env.sim_state().qvel[:, :2]
    kept = ~done.numpy()
    assert np.abs(after - before)[kept].max() > 0.2
