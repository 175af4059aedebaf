"""Batched offscreen rendering: real MuJoCo frames (needs an OpenGL backend, e.g.
MUJOCO_GL=egl on a headless machine)."""
import math
import re
import threading
from importlib import resources

import mujoco
import numpy as np
import pytest
import torch

from robotrl.sim import make_env, make_task
from robotrl.sim.render import BatchRenderer, RenderConfig, render_config
from robotrl.sim.tasks.cartpole_swingup import CartpoleSwingup

UP, DOWN = 0.0, math.pi


@pytest.fixture(scope="module")
def cartpole():
    task = make_task("cartpole_swingup")
    renderer = BatchRenderer(task.model, render_config(task), max_batch=4)
    yield task, renderer
    renderer.close()


def pole_pixels(frames: np.ndarray) -> np.ndarray:
    """Where the (yellow) pole is: bright red and green, little blue."""
    f = frames.astype(int)
    return (f[..., 0] > 150) & (f[..., 1] > 120) & (f[..., 2] < 110)


def assert_same_picture(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to rasterization rounding (a tile's place in the buffer, float32
    against float64 states): a few pixels off by a few levels."""
    diff = np.abs(a.astype(int) - b)
    assert diff.max() <= 8 and (diff > 0).mean() < 0.005, (diff.max(), (diff > 0).mean())


def test_frames_follow_the_state(cartpole):
    task, renderer = cartpole
    frames = renderer.render(np.array([[0.0, UP], [0.0, DOWN], [0.0, UP]]))
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    assert_same_picture(frames[0], frames[2])
    np.testing.assert_array_equal(renderer.render(np.array([[0.0, UP], [0.0, DOWN], [0.0, UP]])), frames)
    assert (frames[0] != frames[1]).any(axis=-1).mean() > 0.02  # the pole is ~2x27 pixels
    # The pole is clearly visible, above the cart when upright and below when
    # hanging: frames are not upside down.
    up, down = pole_pixels(frames[0]), pole_pixels(frames[1])
    assert up.sum() > 30 and down.sum() > 30
    rows = np.arange(64)[:, None]
    assert (rows * up).sum() / up.sum() < 28 < (rows * down).sum() / down.sum()


def test_batches_equal_single_frames_and_mujoco_renderer(cartpole):
    task, renderer = cartpole
    rng = np.random.default_rng(0)
    qpos = np.stack([rng.uniform(-1.5, 1.5, 11), rng.uniform(-math.pi, math.pi, 11)], axis=1)
    batch = renderer.render(qpos)  # 11 frames: two full passes of 4 and a partial one
    assert len({batch[i].tobytes() for i in range(11)}) == 11
    for i in (0, 3, 4, 10):
        assert_same_picture(batch[i], renderer.render(qpos[i : i + 1])[0])

    cfg = render_config(task)
    reference = mujoco.Renderer(task.model, cfg.height, cfg.width)
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        reference.scene.flags[flag] = 0
    data = mujoco.MjData(task.model)
    for i in (0, 5):
        data.qpos[:] = qpos[i]
        mujoco.mj_forward(task.model, data)
        reference.update_scene(data, cfg.camera)
        assert_same_picture(batch[i], reference.render())
    reference.close()


def test_render_from_another_thread(cartpole):
    _, renderer = cartpole
    qpos = np.array([[0.3, 1.0]])
    here = renderer.render(qpos)
    there = []
    thread = threading.Thread(target=lambda: there.append(renderer.render(qpos)))
    thread.start()
    thread.join()
    np.testing.assert_array_equal(here, there[0])


def test_render_frames_show_the_terminal_state_of_finished_envs():
    with make_env("cartpole_swingup", 3, seed=0) as env:
        for _ in range(20):
            env.step(torch.full((3, 1), 0.8))
        env.episode_length[1] = env.max_episode_length - 1  # env 1 times out in the next step
        _, _, done, extras = env.step(torch.full((3, 1), 0.8))
        assert done.tolist() == [False, True, False]
        frames = env.render_frames()
        assert_same_picture(env.render_frames([1, 2]), frames[1:])

        # The terminal pose, from the final observation: cart (x, xdot), pole (cos, sin, angvel).
        final = extras["final_observations"]["policy"][0].astype(np.float64)
        terminal = np.array([[final[0], math.atan2(final[3], final[2])]])
        renderer = BatchRenderer(env.task.model, render_config(env.task))
        assert_same_picture(frames[1], renderer.render(terminal)[0])
        reset_state = env.state[1:2, env.slices["qpos"]]
        assert (frames[1] != renderer.render(reset_state)[0]).any(axis=-1).mean() > 0.01
        renderer.close()


def test_task_variables_move_their_markers():
    task = make_task("point_goal_hazards")
    with make_env(task, 2, seed=0) as env:
        goals = env.task_vars["goal"]
        sites = task.render_state(np, env._sim_state())["site_pos"]["goal"]
        np.testing.assert_allclose(sites[:, :2], goals)
        np.testing.assert_allclose(sites[:, 2], task.model.site("goal").pos[2])
        env.task_vars["goal"][1] = goals[0]
        same_robot = env.state[:, env.slices["qpos"]]
        same_robot[1] = same_robot[0]
        first = env.render_frames()
        assert_same_picture(first[0], first[1])
        env.task_vars["goal"][1] = -goals[0]
        assert (env.render_frames()[1] != first[1]).any()


class NoCamera(CartpoleSwingup):
    name = "cartpole_without_camera"

    def build_model(self):
        xml = resources.files("robotrl.assets").joinpath(self.asset).read_text()
        return mujoco.MjModel.from_xml_string(re.sub(r"<camera [^>]*/>", "", xml))


def test_bad_render_configs_are_named():
    with pytest.raises(ValueError, match=r"cartpole_without_camera.*no named camera"):
        render_config(NoCamera())
    with pytest.raises(ValueError, match=r"no camera 'top'.*side, track"):
        render_config(make_task("cartpole_swingup", {"render": {"camera": "top"}}))
    with pytest.raises(ValueError, match=r"render.width"):
        render_config(make_task("cartpole_swingup", {"render": {"width": 0}}))
    with pytest.raises(ValueError, match=r"render.interval"):
        render_config(make_task("cartpole_swingup", {"render": {"interval": 0}}))
    with pytest.raises(ValueError, match=r"no named camera"):
        BatchRenderer(NoCamera().model, RenderConfig("side", 64, 64, 1))


def test_mjx_frames_match_mujoco():
    pytest.importorskip("jax")
    pytest.importorskip("mujoco.mjx")
    task = make_task("cartpole_swingup")
    with make_env(task, 3, sim="mujoco", seed=0) as cpu, make_env(task, 3, sim="mjx", seed=0) as mjx:
        for _ in range(10):
            cpu.step(torch.full((3, 1), 0.8))
        s = cpu._sim_state()
        mjx.set_sim_state(s.qpos, s.qvel, s.sensordata, s.ctrl, s.task)
        before = cpu.render_frames()
        assert_same_picture(mjx.render_frames(), before)

        # Env 1 times out in the next step: both show its terminal state, not the reset.
        cpu.episode_length = np.array([0, cpu.max_episode_length - 1, 0])
        mjx.episode_length = np.array([0, mjx.max_episode_length - 1, 0])
        action = torch.full((3, 1), -0.5)
        assert cpu.step(action)[2].tolist() == mjx.step(action)[2].tolist() == [False, True, False]
        a, b = cpu.render_frames(), mjx.render_frames()
        assert_same_picture(a, b)
        renderer = BatchRenderer(task.model, render_config(task))
        reset_frame = renderer.render(mjx.sim_state().qpos[1:2])[0]
        renderer.close()
        assert (b[1] != reset_frame).any(axis=-1).mean() > 0.01


def test_mocap_bodies_follow_their_poses():
    model = mujoco.MjModel.from_xml_string("""
    <mujoco><worldbody>
      <camera name="front" pos="0 -3 0" xyaxes="1 0 0 0 0 1"/>
      <body name="marker" mocap="true"><geom type="sphere" size="0.3" rgba="1 0 0 1"/></body>
    </worldbody></mujoco>""")
    renderer = BatchRenderer(model, RenderConfig("front", 32, 32, 1))
    qpos = np.zeros((2, 0))
    frames = renderer.render(qpos, mocap_pos=[[[-0.8, 0, 0]], [[0.8, 0, 0]]])
    renderer.close()
    red = frames[..., 0].astype(int) - frames[..., 2] > 100
    columns = [np.flatnonzero(r.any(axis=0)).mean() for r in red]
    assert columns[0] < 12 and columns[1] > 20  # left, then right, as seen from the front
