"""The goal-and-hazards tasks: cost, goal reaching, lidar, placement, stability and
actuation, on the mujoco backend (the MJX side is covered by the contract and
parity tests, plus one jit trace of the task functions here)."""
import math

import mujoco
import numpy as np
import pytest
import torch

from robotrl.sim import make_env
from robotrl.sim.task import Sampler, SimState, make_task

TASKS = ("point_goal_hazards", "car_goal_hazards")


def state_at(task, xy, yaw, **task_vars):
    """A one-env SimState with the robot at rest at ``xy`` facing ``yaw``, sensors
    from a MuJoCo forward pass, and the given task variables over reset's."""
    xy = np.asarray(xy, dtype=float).reshape(1, 2)
    qpos = task.root_qpos(np, xy, np.array([[yaw]]))
    data = mujoco.MjData(task.model)
    data.qpos[:] = qpos[0]
    mujoco.mj_forward(task.model, data)
    _, _, tv = task.reset(np, Sampler(np.random.default_rng(0)), 1)
    tv.update({k: np.asarray(v, dtype=float) for k, v in task_vars.items()})
    return SimState(
        qpos=qpos, qvel=np.zeros((1, task.model.nv)), sensordata=data.sensordata[None].copy(),
        ctrl=np.zeros((1, task.model.nu)), task=tv,
    )


def column(env, group, term):
    start = 0
    for name, width in env.obs_layout[group]:
        if name == term:
            return slice(start, start + width)
        start += width
    raise KeyError(term)


def robot_pose(env):
    state = env._sim_state()
    return env.task.robot_xy(state), env.task.heading(np, state)


def test_default_config():
    cfg = make_task("point_goal_hazards").config
    assert (cfg["num_hazards"], cfg["hazard_radius"], cfg["goal_radius"], cfg["lidar_bins"]) == (8, 0.2, 0.3, 16)
    assert cfg["placement"]["extent"] == 1.5 and cfg["lidar_max_dist"] == 3.0
    assert cfg["reward_scales"] == {"distance": 1.0, "goal_bonus": 1.0}
    for name in TASKS:
        task = make_task(name)
        assert task.max_episode_length == 1000 and task.frame_skip == 4
        assert task.action_names == [task.model.actuator(i).name for i in range(task.model.nu)]


# ------------------------------------------------------------------ cost
@pytest.mark.parametrize("name", TASKS)
def test_cost_is_one_per_step_inside_a_hazard(name):
    task = make_task(name)
    far = np.full((1, 8, 2), 10.0)
    a = np.zeros((1, task.num_actions))
    inside = far.copy()
    inside[0, 3] = [0.5 + 0.19, -0.2]  # 0.19 m from the robot centre: inside
    edge = far.copy()
    edge[0, 3] = [0.5, -0.2 + 0.21]  # 0.21 m: outside
    assert task.cost(np, state_at(task, [0.5, -0.2], 1.0, hazards=inside), a).tolist() == [1.0]
    assert task.cost(np, state_at(task, [0.5, -0.2], 1.0, hazards=edge), a).tolist() == [0.0]
    assert task.cost(np, state_at(task, [0.5, -0.2], 1.0, hazards=far), a).tolist() == [0.0]
    # Two overlapping hazards: one unit of cost by default, two when counting.
    both = inside.copy()
    both[0, 5] = [0.5, -0.2 - 0.1]
    assert task.cost(np, state_at(task, [0.5, -0.2], 1.0, hazards=both), a).tolist() == [1.0]
    counting = make_task(name, {"hazard_cost": "count"})
    assert counting.cost(np, state_at(counting, [0.5, -0.2], 1.0, hazards=both), a).tolist() == [2.0]


@pytest.mark.parametrize("name", TASKS)
def test_driving_through_a_hazard_costs_while_inside(name):
    """A hazard 0.6 m straight ahead; driving straight through it costs 1 on exactly
    the steps the robot centre is inside it, and nothing before or after."""
    fwd = {"point_goal_hazards": [1.0, 0.0], "car_goal_hazards": [1.0, 1.0]}[name]
    with make_env(name, 2, sim="mujoco", seed=0) as env:
        env.reset()
        xy, heading = robot_pose(env)
        hazards = np.full((2, 8, 2), 50.0)
        hazards[:, 0] = xy + 0.6 * heading
        env.task_vars["hazards"][:] = hazards
        env.task_vars["goal"][:] = 50.0  # out of the way
        env.task_vars["goal_dist"][:] = np.linalg.norm(50.0 - xy, axis=1)
        costs, inside = [], []
        for _ in range(100):
            _, _, _, extras = env.step(torch.tensor([fwd, fwd]))
            xy, _ = robot_pose(env)
            costs.append(extras["cost"].numpy().copy())
            inside.append(np.linalg.norm(xy - hazards[:, 0], axis=1) <= 0.2)
        costs, inside = np.array(costs), np.array(inside)
        assert np.array_equal(costs, inside.astype(np.float32))
        for env_costs in costs.T:
            changes = np.flatnonzero(np.diff(env_costs))
            assert len(changes) == 2, "enters the hazard once and leaves it once"
            assert 5 <= env_costs.sum() <= 40  # 0.4 m at up to 1 m/s, 50 steps/s
        assert np.array_equal(extras["metrics"]["hazard_steps"], costs.sum(axis=0))


# ------------------------------------------------------------------ goal
@pytest.mark.parametrize("name", TASKS)
def test_reaching_the_goal_pays_the_bonus_and_moves_the_goal(name):
    with make_env(name, 2, sim="mujoco", seed=1) as env:
        env.reset()
        xy, _ = robot_pose(env)
        old_goal = xy + np.array([[0.1, 0.0], [0.0, -0.25]])  # inside the 0.3 m goal
        env.task_vars["goal"][:] = old_goal
        env.task_vars["goal_dist"][:] = np.linalg.norm(old_goal - xy, axis=1)
        zero = torch.zeros(2, env.num_actions)
        _, reward, done, extras = env.step(zero)
        xy, _ = robot_pose(env)
        progress = env.task_vars["progress"]
        assert not done.any()
        assert np.allclose(reward.numpy(), 1.0 + progress, atol=1e-6) and np.abs(progress).max() < 0.01
        new_goal = env.task_vars["goal"]
        cfg = env.task.config
        clearance = cfg["placement"]["robot_clearance"] + cfg["goal_radius"]
        assert (np.linalg.norm(new_goal - xy, axis=1) >= clearance - 1e-9).all()
        assert (np.abs(new_goal) <= cfg["placement"]["extent"]).all()
        assert np.allclose(env.task_vars["goal_dist"], np.linalg.norm(new_goal - xy, axis=1))
        assert extras["metrics"]["goals_reached"].tolist() == [1.0, 1.0]
        # The next step is scored against the new goal: no bonus, no jump.
        _, reward, _, extras = env.step(zero)
        assert np.abs(reward.numpy()).max() < 0.01
        assert extras["metrics"]["goals_reached"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("name", TASKS)
def test_scripted_controller_reaches_goals(name):
    """Steering toward the goal vector of the critic observation reaches goal after
    goal: the actuation drives and turns the robot as the model says."""
    n = 4
    with make_env(name, n, sim="mujoco", seed=5) as env:
        obs = env.reset()
        goal_cols = column(env, "critic", "goal_vec")
        total = np.zeros(n)
        for _ in range(500):  # 10 s
            g = obs["critic"][:, goal_cols].numpy()
            bearing = np.arctan2(g[:, 1], g[:, 0])
            ahead = np.clip(np.cos(bearing), 0.0, 1.0)
            if name == "point_goal_hazards":
                action = np.stack([ahead, np.clip(2.0 * bearing, -1, 1)], axis=1)
            else:  # differential drive: forward plus a speed difference to turn
                turn = np.clip(1.5 * bearing, -1, 1)
                action = np.clip(np.stack([ahead - turn, ahead + turn], axis=1), -1, 1)
            obs, reward, _, extras = env.step(torch.as_tensor(action))
            total += reward.numpy()
        reached = extras["metrics"]["goals_reached"]
        assert (reached >= 2).all(), reached
        assert (total > reached).all()  # progress toward goals is positive on top of the bonus


# ------------------------------------------------------------------ lidar
def test_lidar_bin_of_an_object_at_a_known_bearing():
    task = make_task("point_goal_hazards")
    bins, width = 16, 2 * math.pi / 16
    for yaw in (0.0, 1.0, -2.5):
        for k in (0, 3, 4, 8, 12, 15):
            bearing = (k + 0.5) * width  # bin k's middle, counter-clockwise from the heading
            world = yaw + bearing
            goal = np.array([[0.3 + 1.2 * math.cos(world), -0.4 + 1.2 * math.sin(world)]])
            terms = task.observation_terms(np, state_at(task, [0.3, -0.4], yaw, goal=goal))
            lidar = terms["goal_lidar"][0]
            expected = np.zeros(bins)
            expected[k] = 1.0 - 1.2 / 3.0
            assert np.allclose(lidar, expected, atol=1e-9), (yaw, k, lidar)
            assert np.allclose(terms["goal_vec"][0], [1.2 * math.cos(bearing), 1.2 * math.sin(bearing)])
    # Straight ahead is bin 0, the robot's left starts bin 4; several objects in one
    # bin read the nearest; beyond lidar_max_dist reads 0.
    rel = np.array([[[1.0, 0.0], [0.0, 2.0], [0.5, 0.01], [-3.5, 0.0]]])
    lidar = task.lidar(np, rel)[0]
    assert np.isclose(lidar[0], 1 - math.hypot(0.5, 0.01) / 3) and np.isclose(lidar[4], 1 - 2 / 3)
    assert np.count_nonzero(lidar) == 2


def test_hazard_lidar_and_edge_distance():
    task = make_task("point_goal_hazards")
    hazards = np.full((1, 8, 2), 20.0)
    hazards[0, 0] = [0.0, -1.0]  # robot at the origin facing +x: to the right, bearing 3 pi / 2
    hazards[0, 1] = [-2.0, 0.0]  # behind, bearing pi
    terms = task.observation_terms(np, state_at(task, [0.0, 0.0], 0.0, hazards=hazards))
    lidar = terms["hazard_lidar"][0]
    assert np.isclose(lidar[12], 1 - 1 / 3) and np.isclose(lidar[8], 1 - 2 / 3)
    assert np.count_nonzero(lidar) == 2
    assert np.isclose(terms["hazard_edge"][0, 0], 1.0 - 0.2)


# ------------------------------------------------------------ placement
@pytest.mark.parametrize("name", TASKS)
def test_reset_layout_keeps_its_clearances(name):
    task = make_task(name)
    cfg, p = task.config, task.config["placement"]
    num = 2000
    qpos, qvel, tv = task.reset(np, Sampler(np.random.default_rng(0)), num)
    xy = qpos[:, :2]
    goal, hazards = tv["goal"], tv["hazards"]
    assert hazards.shape == (num, 8, 2) and goal.shape == (num, 2) and qvel.shape == (num, task.model.nv)
    for pts in (xy, goal, hazards):
        assert (np.abs(pts) <= p["extent"]).all()
    r, rg, gap = cfg["hazard_radius"], cfg["goal_radius"], p["object_gap"]
    ok = np.linalg.norm(goal - xy, axis=1) >= p["robot_clearance"] + rg
    ok &= (np.linalg.norm(hazards - xy[:, None], axis=2) >= p["robot_clearance"] + r).all(axis=1)
    ok &= (np.linalg.norm(hazards - goal[:, None], axis=2) >= r + rg + gap).all(axis=1)
    pair = np.linalg.norm(hazards[:, :, None] - hazards[:, None], axis=3) + np.eye(8) * 10
    ok &= (pair >= 2 * r + gap).all(axis=(1, 2))
    assert ok.mean() >= 0.995, ok.mean()  # the fallback (most room) is rare
    assert np.allclose(tv["goal_dist"], np.linalg.norm(goal - xy, axis=1))
    # The layouts differ between envs and cover the square.
    assert hazards[:, :, 0].std() > 0.6 and np.unique(goal[:, 0]).size == num


# ------------------------------------------------------------ stability
@pytest.mark.parametrize("name", TASKS)
def test_random_rollout_is_finite_and_stays_on_the_plane(name):
    n = 8
    with make_env(name, n, sim="mujoco", seed=7) as env:
        obs = env.reset()
        task = env.task
        gen = torch.Generator().manual_seed(0)
        for t in range(1000):
            obs, reward, done, extras = env.step(torch.randn(n, env.num_actions, generator=gen))
            state = env._sim_state()
            pos = task.sensor(state, "robot_pos")
            assert np.isfinite(env.state).all() and torch.isfinite(obs["critic"]).all(), t
            assert np.abs(pos[:, 2] - task.spawn_height).max() < 0.005, t
            if name == "car_goal_hazards":
                assert task.sensor(state, "robot_zaxis")[:, 2].min() > 0.99, t  # not tipping
            assert not extras["terminated"].any()
        assert done.all() and extras["time_outs"].all()  # 1000 steps, then a time-out


# ------------------------------------------------------------------ jax
@pytest.mark.parametrize("name", TASKS)
def test_task_functions_trace_under_jit(name):
    """Reset, goal redraw, lidar, reward and cost are jnp-only (no physics compiled)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from robotrl.sim.task import KeySampler

    task = make_task(name)
    np_state = state_at(task, [0.2, 0.1], 0.7)

    def run(key, sensordata):
        qpos, qvel, tv = task.reset(jnp, KeySampler(key), 1)
        # The goal on the robot: after_step must redraw it inside jit.
        tv = dict(tv, goal=jnp.asarray([[0.25, 0.1]]))
        a = jnp.zeros((1, task.num_actions))
        state = SimState(qpos=qpos, qvel=qvel, sensordata=sensordata, ctrl=a, task=tv)
        state = task.after_step(jnp, KeySampler(key), state, a)
        return task.observation_terms(jnp, state), task.reward_terms(jnp, state, a), task.cost(jnp, state, a), state.task

    terms, rewards, cost, tv = jax.jit(run)(jax.random.key(0), jnp.asarray(np_state.sensordata))
    assert terms["goal_lidar"].shape == (1, 16) and terms["hazard_lidar"].shape == (1, 16)
    assert float(rewards["goal_bonus"][0]) == 1.0 and float(tv["goals_reached"][0]) == 1.0
    assert np.linalg.norm(np.asarray(tv["goal"][0]) - [0.2, 0.1]) >= 0.7 - 1e-5
    assert cost.shape == (1,)
