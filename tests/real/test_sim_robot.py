"""Simulated robot node + policy node, each in its own process, real DDS traffic on loopback.

The deployed chain runs a trained reach artifact; its episode return is compared with
``robotrl eval`` of the same artifact on the same initial state (``seed`` and
``skip_reset_draws=1`` give the robot eval's first episode).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from robotrl.real import messages as m
from robotrl.real.sim_robot_node import EPISODE_FIELDS, SimRobot, SimRobotParams
from robotrl.real.transport import ROS_DEFAULT

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "launch" / "config" / "deploy.yaml"


# ------------------------------------------------------------ process helpers


def node_env(domain_id):
    from robotrl.real.dds_transport import loopback_config

    return dict(os.environ, ROS_DOMAIN_ID=str(domain_id), CYCLONEDDS_URI=loopback_config(),
                OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def write_config(path, policy_node=None, sim_robot=None):
    """launch/config/deploy.yaml with some parameters changed (transport pinned to dds)."""
    data = yaml.safe_load(CONFIG.read_text())
    data["policy_node"]["ros__parameters"].update({"transport": "dds", **(policy_node or {})})
    data["sim_robot"]["ros__parameters"].update({"transport": "dds", **(sim_robot or {})})
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
    return Path(path)


class NodeProcess:
    """``python -m robotrl.real.<node> --ros-args --params-file CONFIG -p policy:=...``."""

    def __init__(self, node, config, domain_id, log_path, **overrides):
        from robotrl.real.deploy import node_command

        self.log_path = Path(log_path)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(node_command(node, str(config), overrides), env=node_env(domain_id),
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)

    def text(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Listener:
    """The test's own participant: records messages of a few topics with receive times."""

    def __init__(self, transport):
        self.t = transport
        self.lock = threading.Lock()
        self.msgs = {}

    def listen(self, topic, msg_type, qos=None):
        from robotrl.real.transport import SENSOR_DATA

        self.msgs[topic] = []

        def cb(msg, topic=topic):
            with self.lock:
                self.msgs[topic].append((time.monotonic(), msg))

        return self.t.create_subscription(topic, msg_type, cb, qos or SENSOR_DATA)

    def get(self, topic):
        with self.lock:
            return list(self.msgs[topic])

    def wait(self, topic, predicate=lambda msg: True, timeout=30.0, after=0.0, procs=()):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, msg in self.get(topic):
                if t >= after and predicate(msg):
                    return t, msg
            for p in procs:
                if p.proc.poll() is not None:
                    raise AssertionError(f"{p.log_path.name} exited ({p.proc.returncode}):\n{p.text()[-3000:]}")
            time.sleep(0.002)
        raise AssertionError(f"nothing matching on {topic} within {timeout} s")


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reach_artifact(tmp_path_factory):
    """A reach policy trained for 30k steps (~20 s): ~85% of eval episodes end within 5 cm."""
    from robotrl.cli import main

    out = tmp_path_factory.mktemp("reach_run")
    assert main(["train", "task=reach", "steps=30000", "num_envs=32", "sim.nthread=1", "sim.torch_threads=1",
                 "eval_episodes=4", f"out={out}", "progress=false"]) == 0
    return out / "artifact"


@pytest.fixture(scope="module")
def eval_first_episode(reach_artifact, tmp_path_factory):
    from robotrl.cli import main

    out = tmp_path_factory.mktemp("reach_eval")
    assert main(["eval", f"policy={reach_artifact}", "episodes=1", "seed=1000", "progress=false", f"out={out}"]) == 0
    return json.loads((out / "eval.json").read_text())


def run_chain(artifact, step_mode, domain_id, tmp_path, make_dds):
    """Robot and policy node processes; returns the robot's first episode summary."""
    config = write_config(tmp_path / "deploy.yaml", {"autostart": True, "soft_start_s": 0.0},
                          {"step_mode": step_mode, "seed": 1000, "skip_reset_draws": 1})
    listener = Listener(make_dds(domain_id))
    listener.listen("/sim_robot/episode", m.Float64MultiArray, qos=ROS_DEFAULT)
    robot = NodeProcess("sim_robot", config, domain_id, tmp_path / "robot.log", policy=artifact)
    node = NodeProcess("policy_node", config, domain_id, tmp_path / "node.log", policy=artifact)
    try:
        _, msg = listener.wait("/sim_robot/episode", timeout=60, procs=(robot, node))
        return dict(zip(EPISODE_FIELDS, msg.data.tolist())), node
    finally:
        assert node.stop() == 0, node.text()[-3000:]
        assert robot.stop() == 0, robot.text()[-3000:]


# -------------------------------------------------------------------- tests


@pytest.mark.slow
def test_lockstep_chain_matches_eval(reach_artifact, eval_first_episode, domain_id, tmp_path, make_dds):
    """step_mode=command: the robot advances one control period per command, so the chain
    replays robotrl eval step for step: same physics, same float32 policy, the same
    observation (checked term by term in test_policy_node). The return is then equal up
    to float rounding; the 1% tolerance leaves room for one control step computed from
    a one-step-old state if this shared machine stalls a process for over 20 ms."""
    episode, node = run_chain(reach_artifact, "command", domain_id, tmp_path, make_dds)
    expected = eval_first_episode["return_mean"]
    assert episode["length"] == eval_first_episode["length_mean"] == 200
    assert episode["return"] == pytest.approx(expected, rel=0.01, abs=0.05), (episode, eval_first_episode)
    assert "passive -> policy" in node.text() and "-> damp (shutdown)" in node.text()


@pytest.mark.slow
def test_realtime_chain_matches_eval(reach_artifact, eval_first_episode, domain_id, tmp_path, make_dds):
    """step_mode=realtime (hardware-in-the-loop): physics at 200 Hz wall clock, the policy
    at 50 Hz on its own timer. Each command lands up to one physics step (5 ms) plus the
    transport latency later than in simulation, and the policy sees a state up to one
    publish period old, so the trajectory differs in detail. On this machine repeated runs
    land within +-12% of eval's return (success steps within 5 cm, worth 0.5 each, shift
    by a few); 25% flags a broken chain (wrong joint order, scale or target: an untrained
    or scrambled policy scores far lower) without failing on timing noise."""
    episode, node = run_chain(reach_artifact, "realtime", domain_id, tmp_path, make_dds)
    expected = eval_first_episode["return_mean"]
    assert expected > 30, eval_first_episode  # a trained policy: most steps within 5 cm of the target
    assert episode["length"] == 200
    assert abs(episode["return"] - expected) <= 0.25 * abs(expected), (episode, eval_first_episode)


def test_sim_robot_command_semantics():
    """Position targets drive the servos; damp (no positions) makes the stiffness term zero."""
    robot = SimRobot(SimRobotParams(task="reach"))
    names = list(robot.joint_names)
    target = robot.default_pose + 0.2
    cmd = m.JointState(m.Header(), names[::-1], target[::-1], np.zeros(4), np.zeros(0))  # by name
    np.testing.assert_allclose(robot._command_ctrl(cmd), target)
    damp = m.JointState(m.Header(frame_id="damp"), names, np.zeros(0), np.zeros(4), np.zeros(0))
    assert robot._command_ctrl(damp) is None
    np.testing.assert_allclose(robot._damp_ctrl(), robot.data.qpos[robot.qadr])  # kp (q - q) = 0
    with pytest.raises(ValueError, match="missing"):
        robot._command_ctrl(m.JointState(m.Header(), names[:2], target[:2], np.zeros(2), np.zeros(0)))


def test_sim_robot_target_domain_and_reset_draws():
    base = SimRobot(SimRobotParams(task="pendulum_swingup", seed=5))
    heavy = SimRobot(SimRobotParams(task="pendulum_swingup", seed=5, real_domain="gravity_2x"))
    np.testing.assert_allclose(heavy.model.opt.gravity, 2 * base.model.opt.gravity)
    np.testing.assert_allclose(heavy.data.qpos, base.data.qpos)  # same seed, same first state
    skipped = SimRobot(SimRobotParams(task="pendulum_swingup", seed=5, skip_reset_draws=1))
    assert not np.allclose(skipped.data.qpos, base.data.qpos)


def test_sim_robot_returns_follow_task_rewards():
    """Without a transport: drive the physics directly; the robot's return equals the
    task's reward terms summed over the same steps in the mujoco backend."""
    import torch

    from robotrl.sim import make_env, make_task

    class Quiet:
        def publish(self, msg):
            pass

    robot = SimRobot(SimRobotParams(task="pendulum_swingup", seed=7, skip_reset_draws=1,
                                    task_config="{episode_length_s: 0.4}"))
    robot.reward_pub = robot.episode_pub = Quiet()
    env = make_env(make_task("pendulum_swingup", {"episode_length_s": 0.4}), 1, seed=7)
    env.reset()
    rng = np.random.default_rng(0)
    expected = 0.0
    robot._start_episode_if("policy")
    for _ in range(20):
        a = rng.uniform(-1, 1, 1)
        _, r, _, _ = env.step(torch.as_tensor(a[None], dtype=torch.float32))
        expected += float(r[0])
        ctrl = np.asarray(np.float32(a), dtype=np.float64)
        for _ in range(robot.frame_skip):
            robot._physics_step(("policy", ctrl))
    assert robot.episodes and robot.episodes[0]["length"] == 20
    assert robot.episodes[0]["return"] == pytest.approx(expected, rel=1e-5)
