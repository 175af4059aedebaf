"""The policy node: observation exactly as in simulation, limits, state machine, bad input.

In-process tests: the node runs on a dds transport on loopback (real DDS traffic)
while the test plays the robot. The two-process tests are in test_watchdog.py and
test_sim_robot.py.
"""
import threading
import time

import numpy as np
import pytest

from robotrl.real import messages as m
from robotrl.real.observation import ObservationAssembler, projected_gravity_xyzw
from robotrl.real.policy_node import PolicyNode, PolicyNodeParams
from robotrl.real.state_machine import Mode

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------ helpers

class FakePolicy:
    """A stand-in for the artifact's policy: fixed or scripted actions, real metadata."""

    def __init__(self, meta, action=None):
        self.meta = meta
        self.obs_layout = [(t["name"], int(t["size"])) for t in meta["observation"]["terms"]]
        self.action_names = list(meta["action"]["joint_names"])
        self.action = np.zeros(len(self.action_names)) if action is None else np.asarray(action, float)
        self.seen = []

    def reset(self, env_ids=None):
        pass

    def act(self, obs):
        self.seen.append(np.array(obs[0]))
        return np.asarray(self.action, np.float32)[None]


def task_meta(name):
    from robotrl.export import artifact_meta
    from robotrl.sim import make_env, make_task

    task = make_task(name)
    with make_env(task, 1) as env:
        layout = env.obs_layout["policy"]
    return task, artifact_meta(task, layout)


def random_state(task, rng):
    """A random physics state of ``task`` with its sensors (SimState, MjData)."""
    import mujoco

    from robotrl.sim.task import Sampler, SimState

    qpos, qvel, tv = task.reset(np, Sampler(rng), 1)
    d = mujoco.MjData(task.model)
    d.qpos[:] = np.asarray(qpos)[0]
    d.qvel[:] = rng.normal(0, 1.0, task.model.nv)
    if task.model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE:  # tilt the trunk: gravity is not trivial
        quat = rng.normal(size=4)
        d.qpos[3:7] = quat / np.linalg.norm(quat)
    mujoco.mj_forward(task.model, d)
    tv = {k: np.array(v, dtype=np.float64) for k, v in tv.items()}
    tv["last_action"] = rng.uniform(-1, 1, (1, task.num_actions))
    if "command" in tv:
        tv["command"] = rng.uniform(-0.5, 0.5, (1, 3))
    state = SimState(qpos=d.qpos[None].copy(), qvel=d.qvel[None].copy(), sensordata=d.sensordata[None].copy(),
                     ctrl=d.ctrl[None].copy(), task=tv)
    return state, d


def start_node(make_dds, domain_id, meta, policy=None, **params):
    """A policy node on its own participant, and a transport for the test's robot side."""
    node_t, robot_t = make_dds(domain_id), make_dds(domain_id)
    p = PolicyNodeParams(policy="(in-memory)", **params)
    node = PolicyNode(p, transport=node_t, policy=policy or FakePolicy(meta)).start()
    return node, robot_t


class Robot:
    """The test's robot: publishes joint states at ``rate`` Hz, records commands."""

    def __init__(self, transport, names, q, rate=200.0):
        self.t = transport
        self.names, self.q = list(names), np.array(q, float)
        self.js = transport.create_publisher("/joint_states", m.JointState)
        self.commands = []
        self.lock = threading.Lock()
        self.sub = transport.create_subscription("/joint_commands", m.JointState, self._on_cmd)
        self.enable_pub = transport.create_publisher("/policy_node/enable", m.Bool)
        self.estop_pub = transport.create_publisher("/policy_node/estop", m.Bool)
        self.stop = threading.Event()
        self.rate = rate
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_cmd(self, msg):
        with self.lock:
            self.commands.append((time.monotonic(), msg))

    def state(self, stamp_ns=None):
        return m.JointState(m.Header(m.Time.from_nanoseconds(stamp_ns or time.time_ns())), self.names,
                            self.q.copy(), np.zeros(len(self.names)), np.zeros(len(self.names)))

    def _run(self):
        while not self.stop.wait(1.0 / self.rate):
            self.js.publish(self.state())

    def start(self):
        self.js.wait_for_subscribers(1, 5.0)
        self.thread.start()
        return self

    def close(self):
        self.stop.set()
        self.thread.join(2)

    def send(self, pub, value):
        pub.wait_for_subscribers(1, 5.0)
        pub.publish(m.Bool(value))

    def wait_for(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                hit = [c for c in self.commands if predicate(c[1])]
            if hit:
                return hit[0]
            time.sleep(0.005)
        raise AssertionError(f"no matching command within {timeout} s; modes seen: "
                             f"{sorted({c[1].header.frame_id for c in self.commands})}")

    def clear(self):
        with self.lock:
            self.commands.clear()


def wait_healthy(node, timeout=5.0):
    """Until every watched input has arrived (an enable before that is refused)."""
    deadline = time.monotonic() + timeout
    while node.watchdog.check(time.monotonic(), time.time_ns()) is not None:
        assert time.monotonic() < deadline, node.watchdog.check(time.monotonic(), time.time_ns())
        time.sleep(0.01)


def reach_meta():
    _, meta = task_meta("reach")
    return meta


# --------------------------------------------------------- observation = sim


@pytest.mark.parametrize("task_name", ["quadruped_walk", "reach", "pendulum_swingup"])
def test_observation_matches_sim_task(task_name):
    """Messages built from a physics state, joints shuffled, through the node's callbacks,
    give the sim task's own policy observation on that state."""
    from robotrl.real.sim_robot_node import SimRobot, SimRobotParams

    task, meta = task_meta(task_name)
    rng = np.random.default_rng(0)
    node = PolicyNode(PolicyNodeParams(policy="(in-memory)"), policy=FakePolicy(meta))
    robot = SimRobot(SimRobotParams(task=task_name))  # only its message builders (never started)
    for trial in range(3):
        state, d = random_state(task, rng)
        terms = task.observation_terms(np, state)
        expected = np.concatenate([terms[name] for name in task.observation_groups["policy"]], axis=1)[0]
        robot.data = d
        js = robot.joint_state_msg()
        perm = rng.permutation(len(js.name))  # the robot's joint order is not the artifact's
        js = m.JointState(js.header, [js.name[i] for i in perm], js.position[perm], js.velocity[perm],
                          js.effort[perm])
        js.name.append("gripper")  # extra joints are ignored
        js.position = np.append(js.position, 0.3)
        js.velocity = np.append(js.velocity, 0.0)
        js.effort = np.zeros(0)
        node._on_joint_state(js)
        if robot.has_imu:
            node._on_imu(robot.imu_msg())
        tv = state.task
        if "command" in tv:
            c = tv["command"][0]
            node._on_cmd_vel(m.Twist(m.Vector3(c[0], c[1], 0.0), m.Vector3(0.0, 0.0, c[2])))
        if "target" in tv:
            node._on_target(m.Float64MultiArray.from_numpy(tv["target"][0]))
            node._on_ee_pos(m.Float64MultiArray.from_numpy(d.sensordata[task._sensor_slices["ee_pos"]]))
        node.last_action = tv["last_action"][0].copy()
        assert node.watchdog.take_event() is None
        np.testing.assert_allclose(node.observation(), expected, rtol=1e-9, atol=1e-9, err_msg=task_name)


def test_projected_gravity_matches_sim():
    from robotrl.sim.tasks.shaping import projected_gravity

    rng = np.random.default_rng(1)
    for _ in range(10):
        wxyz = rng.normal(size=4)
        wxyz /= np.linalg.norm(wxyz)
        xyzw = np.r_[wxyz[1:], wxyz[0]]
        np.testing.assert_allclose(projected_gravity_xyzw(xyzw), projected_gravity(np, wxyz[None])[0], atol=1e-12)


def test_unknown_term_is_named():
    meta = reach_meta()
    meta["observation"]["terms"].append({"name": "lidar", "size": 360})
    with pytest.raises(ValueError, match="lidar"):
        ObservationAssembler(meta)


# ----------------------------------------------------- bad input, over DDS


def test_missing_joints_refuse_to_start(make_dds, domain_id):
    meta = reach_meta()
    node, rt = start_node(make_dds, domain_id, meta, autostart=True, soft_start_s=0.0)
    try:
        robot = Robot(rt, ["shoulder_yaw", "elbow"], [0.0, 1.4]).start()  # 2 of the 4 joints
        deadline = time.monotonic() + 5
        while node.refusal is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert node.refusal is not None
        assert "shoulder_pitch" in node.refusal and "wrist_pitch" in node.refusal
        robot.send(robot.enable_pub, True)
        time.sleep(0.2)
        assert node.mode == Mode.PASSIVE and robot.commands == []  # never started, never commanded
        robot.close()
    finally:
        node.shutdown()


@pytest.fixture
def running(make_dds, domain_id):
    """A reach node in POLICY mode against the test's robot at 200 Hz."""
    meta = reach_meta()
    policy = FakePolicy(meta, action=[0.1, -0.1, 0.2, 0.0])
    node, rt = start_node(make_dds, domain_id, meta, policy=policy, soft_start_s=0.0, max_obs_age_s=0.5)
    robot = Robot(rt, meta["action"]["joint_names"], meta["action"]["default_pose"]).start()
    target_pub = rt.create_publisher("/target", m.Float64MultiArray)
    ee_pub = rt.create_publisher("/ee_pos", m.Float64MultiArray)
    stop = threading.Event()

    def extras():
        while not stop.wait(0.005):
            target_pub.publish(m.Float64MultiArray.from_numpy([0.3, 0.0, 0.3]))
            ee_pub.publish(m.Float64MultiArray.from_numpy([0.35, 0.0, 0.25]))

    threading.Thread(target=extras, daemon=True).start()
    target_pub.wait_for_subscribers(1, 5)
    wait_healthy(node)

    def enable():
        robot.clear()
        robot.send(robot.enable_pub, True)
        robot.wait_for(lambda c: c.header.frame_id == "policy")

    enable()
    yield node, robot, enable, policy
    stop.set()
    time.sleep(0.02)
    robot.close()
    node.shutdown()


def _first_safe_after(robot, t0):
    return robot.wait_for(lambda c: c.header.frame_id in ("hold", "damp") and
                          c.header.stamp.to_nanoseconds() >= t0, timeout=2.0)


def test_wrong_size_message_holds(running):
    node, robot, enable, _ = running
    bad = robot.state()
    bad.velocity = np.zeros(2)  # 4 names, 2 velocities
    t0 = time.time_ns()
    robot.js.publish(bad)
    t_rx, cmd = _first_safe_after(robot, t0)
    assert cmd.header.frame_id == "hold"
    assert "wrong message size" in node.sm.reason and "velocities" in node.sm.reason
    np.testing.assert_allclose(cmd.position, node.last_targets)  # hold = the last targets


def test_out_of_order_stamp_holds(running):
    node, robot, enable, _ = running
    t0 = time.time_ns()
    robot.js.publish(robot.state(stamp_ns=t0 - 50_000_000))  # 50 ms in the past
    _first_safe_after(robot, t0)
    assert "out-of-order" in node.sm.reason
    enable()  # healthy again: a fresh enable runs the policy again
    assert node.mode == Mode.POLICY


def test_nan_holds_and_estop_damps(running):
    node, robot, enable, _ = running
    bad = robot.state()
    bad.position[1] = float("nan")
    t0 = time.time_ns()
    robot.js.publish(bad)
    _first_safe_after(robot, t0)
    assert "non-finite position" in node.sm.reason
    enable()
    t0 = time.time_ns()
    robot.send(robot.estop_pub, True)
    _, cmd = robot.wait_for(lambda c: c.header.frame_id == "damp" and c.header.stamp.to_nanoseconds() >= t0)
    assert len(cmd.position) == 0 and np.all(cmd.velocity == 0) and len(cmd.effort) == 0  # damp
    robot.send(robot.enable_pub, True)
    time.sleep(0.1)
    assert node.mode == Mode.DAMP  # e-stop latches until released
    robot.send(robot.estop_pub, False)
    # Messages on different topics carry no order between them (each subscription has
    # its own thread, as on a real network): see the release before enabling again.
    deadline = time.monotonic() + 5.0
    while node.sm.estopped:
        assert time.monotonic() < deadline, "e-stop release not received"
        time.sleep(0.005)
    enable()


def test_limits_clip_actions_targets_and_rate(make_dds, domain_id):
    meta = reach_meta()
    policy = FakePolicy(meta, action=[50.0, -50.0, 50.0, -50.0])  # far beyond the clip
    node, rt = start_node(make_dds, domain_id, meta, policy=policy, soft_start_s=0.0, max_action_delta=0.25)
    robot = Robot(rt, meta["action"]["joint_names"], meta["action"]["default_pose"]).start()
    pubs = [rt.create_publisher(t, m.Float64MultiArray) for t in ("/target", "/ee_pos")]
    for p in pubs:
        p.wait_for_subscribers(1, 5)
    stop = threading.Event()
    threading.Thread(target=lambda: [p.publish(m.Float64MultiArray.from_numpy([0.3, 0.0, 0.3]))
                                     for _ in iter(lambda: stop.wait(0.005), True) for p in pubs],
                     daemon=True).start()
    try:
        wait_healthy(node)
        robot.send(robot.enable_pub, True)
        time.sleep(0.3)
        with robot.lock:
            cmds = [c[1] for c in robot.commands if c[1].header.frame_id == "policy"]
        assert len(cmds) >= 5
        default = np.asarray(meta["action"]["default_pose"])
        scale = np.asarray(meta["action"]["scale"])
        actions = np.array([(c.position - default) / scale for c in cmds])
        # rate: at most 0.25 per tick from zero, so the first ticks ramp
        np.testing.assert_allclose(np.abs(actions[0]), 0.25, atol=1e-9)
        assert np.all(np.abs(np.diff(actions, axis=0)) <= 0.25 + 1e-9)
        lim = np.asarray(meta["limits"]["joint_position"])
        targets = np.array([c.position for c in cmds])
        assert np.all(targets >= lim[:, 0] - 1e-12) and np.all(targets <= lim[:, 1] + 1e-12)
        assert np.all(np.abs(actions) <= meta["action"]["clip"] + 1e-9)
        assert np.allclose(node.last_action, np.clip(node.last_action, -1, 1))
    finally:
        stop.set()
        time.sleep(0.02)
        robot.close()
        node.shutdown()


def test_soft_start_interpolates_to_default_pose(make_dds, domain_id):
    meta = reach_meta()
    node, rt = start_node(make_dds, domain_id, meta, soft_start_s=0.3)
    default = np.asarray(meta["action"]["default_pose"])
    start_pose = default + np.array([0.4, -0.3, 0.2, 0.1])
    robot = Robot(rt, meta["action"]["joint_names"], start_pose).start()
    pubs = [rt.create_publisher(t, m.Float64MultiArray) for t in ("/target", "/ee_pos")]
    for p in pubs:
        p.wait_for_subscribers(1, 5)
    stop = threading.Event()
    threading.Thread(target=lambda: [p.publish(m.Float64MultiArray.from_numpy([0.3, 0.0, 0.3]))
                                     for _ in iter(lambda: stop.wait(0.005), True) for p in pubs],
                     daemon=True).start()
    try:
        wait_healthy(node)
        robot.send(robot.enable_pub, True)
        robot.wait_for(lambda c: c.header.frame_id == "policy", timeout=3)
        with robot.lock:
            soft = [c[1].position for c in robot.commands if c[1].header.frame_id == "soft_start"]
        assert len(soft) >= 10  # 0.3 s at 50 Hz
        # a straight line from the measured pose to the default pose, monotone in time
        frac = [(p - start_pose) @ (default - start_pose) / np.sum((default - start_pose) ** 2) for p in soft]
        assert frac[0] < 0.15 and frac[-1] > 0.85 and np.all(np.diff(frac) > 0)
        for p, f in zip(soft, frac):
            np.testing.assert_allclose(p, start_pose + f * (default - start_pose), atol=1e-9)
    finally:
        stop.set()
        time.sleep(0.02)
        robot.close()
        node.shutdown()


def test_params_from_yaml_types_and_unknown_names():
    p = PolicyNodeParams.from_params({"policy": "x", "soft_start_s": 1, "autostart": True})
    assert p.soft_start_s == 1.0 and isinstance(p.soft_start_s, float)
    with pytest.raises(ValueError, match="unknown parameters.*soft_start_time"):
        PolicyNodeParams.from_params({"soft_start_time": 1.0})
    with pytest.raises(ValueError, match="autostart must be true or false"):
        PolicyNodeParams.from_params({"autostart": "yes"})


def test_real_nodes_import_without_sim_mujoco_or_torch():
    """A robot computer runs the policy node with numpy + onnxruntime: importing the node
    modules pulls in neither robotrl.sim, MuJoCo nor torch (the sim robot imports them
    when it is built)."""
    import subprocess
    import sys

    code = ("import sys, robotrl.real.policy_node, robotrl.real.sim_robot_node, robotrl.real.deploy, "
            "robotrl.real.watchdog, robotrl.real.observation\n"
            "bad = [m for m in ('robotrl.sim', 'mujoco', 'torch', 'jax') if m in sys.modules]\n"
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
