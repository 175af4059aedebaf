"""A simulated robot: a MuJoCo-backed driver speaking the same topics as a real robot.

It steps a sim task's ``MjModel`` (optionally in a target domain of
``robotrl.sim.domains``), publishes ``sensor_msgs/JointState`` (and ``sensor_msgs/Imu``
when the model has an IMU) with header stamps, and applies the policy node's command
(``sensor_msgs/JointState`` on ``/joint_commands``, see :mod:`robotrl.real.policy_node`)
with the task's own actuators, i.e. the artifact's PD gains:

- position actuators (``kp``/``kv`` servos): ``ctrl = position`` target; a command
  without positions (damp) sets ``ctrl = q`` at every physics step, so the servo's
  stiffness term is zero and only its damping ``-kv qd`` remains;
- motors: ``ctrl = effort``; without effort (damp), ``ctrl = -damping_kd * qd``.

The encoders report ``qpos``/``qvel`` of the actuated joints, as the tasks observe
them; the IMU reads the model's ``imu_quat``/``gyro`` sensors. After ``mj_step``
MuJoCo's sensordata hold the values of the last substep's start, which is also
what the mujoco backend hands the task, so the simulated policy and the deployed
one see the same numbers.

Step modes:

- ``realtime`` (hardware-in-the-loop): physics at ``1/sim_dt`` in wall-clock time, the
  newest command applied at each physics step, states published every
  ``publish_every`` physics steps;
- ``command`` (sim-to-sim lockstep): each command advances the physics by one
  control period (the task's frame skip) and the new state is published at once;
  between commands the unchanged state is re-published every ``1/publish_rate_hz``
  (fresh stamps keep the policy node's watchdog content). With the policy node's
  timer this reproduces ``robotrl eval`` step for step.

Episodes (for the return): an episode starts with the first ``policy`` command after a
reset and counts the task's reward terms (its own ``reward_terms``, ``cost``,
``terminated``, ``after_step``) every control period, with the action recovered
from the applied command. ``~/reward`` (Float64MultiArray) carries
:data:`REWARD_FIELDS` per control step, ``~/episode`` :data:`EPISODE_FIELDS` at each
episode's end. ``~/reset`` (Bool true) resets; ``~/pause`` (Bool) stops/starts
publishing (to test a robot that falls silent).

MuJoCo and the sim package are imported when the node is built, never when
``robotrl.real`` is imported.
"""
from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import yaml

from . import messages as m
from .policy_node import expand_private
from .transport import ROS_DEFAULT, SENSOR_DATA, Transport, make_transport

__all__ = ["SimRobotParams", "SimRobot", "REWARD_FIELDS", "EPISODE_FIELDS", "main"]

log = logging.getLogger("robotrl.sim_robot")

REWARD_FIELDS = ("episode", "step", "reward", "cost", "return", "terminated")
EPISODE_FIELDS = ("episode", "length", "return", "cost", "terminated", "time_out")


@dataclass
class SimRobotParams:
    policy: str = ""  # an artifact: names the task when `task` is empty
    task: str = ""
    task_config: str = ""  # YAML mapping of task config overrides, e.g. "{episode_length_s: 4}"
    real_domain: str = ""  # a target domain name of robotrl.sim.domains (or a YAML mapping)
    node_name: str = "sim_robot"
    transport: str = "auto"
    domain_id: int = -1
    step_mode: str = "realtime"  # realtime | command
    publish_every: int = 1  # realtime: publish every N physics steps
    publish_rate_hz: float = 100.0  # command mode: re-publish rate while waiting
    seed: int = 0  # seeds the reset distribution (and the task's own draws)
    # Draws of the reset distribution discarded before the first episode. robotrl eval
    # draws once when it builds its env and again when it resets it, so seed=S with
    # skip_reset_draws=1 starts from the state of `robotrl eval seed=S episodes=1`.
    skip_reset_draws: int = 0
    auto_reset: bool = True
    # realtime: physics waits in the reset state (re-published at publish_rate_hz) until
    # the first command, as a robot that is switched on by its first command
    start_on_command: bool = True
    damping_kd: float = 0.1  # motors in damp: ctrl = -damping_kd * qd
    command_timeout_s: float = 0.5  # no command for this long (after one arrived): damp (0: off)
    joint_states_topic: str = "/joint_states"
    imu_topic: str = "/imu"
    joint_command_topic: str = "/joint_commands"
    cmd_vel_topic: str = "/cmd_vel"
    target_topic: str = "/target"
    ee_pos_topic: str = "/ee_pos"
    reward_topic: str = "~/reward"
    episode_topic: str = "~/episode"
    reset_topic: str = "~/reset"
    pause_topic: str = "~/pause"

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "SimRobotParams":
        from .deploy import coerce_params

        return coerce_params(cls, params, "sim_robot")


class SimRobot:
    def __init__(self, params: SimRobotParams, transport: Optional[Transport] = None):
        import mujoco

        from robotrl.sim import make_task
        from robotrl.sim.domains import domain_task_config
        from robotrl.sim.task import Sampler, SimState

        self._mj, self._SimState = mujoco, SimState
        self.params = p = params
        if p.step_mode not in ("realtime", "command"):
            raise ValueError(f"sim_robot: step_mode must be 'realtime' or 'command', not {p.step_mode!r}")
        task_name = p.task
        if not task_name:
            if not p.policy:
                raise ValueError("sim_robot: set 'task' or 'policy' (whose task it simulates)")
            from robotrl.policies.artifact import load_meta

            task_name = load_meta(p.policy)["task"]
        overrides = yaml.safe_load(p.task_config) if p.task_config else {}
        domain = p.real_domain or None
        if domain and domain.strip().startswith("{"):
            domain = yaml.safe_load(domain)
        self.task = task = make_task(task_name, domain_task_config(overrides, domain))
        self.name = p.node_name
        self.model = model = task.model
        self.data = mujoco.MjData(model)
        self.sampler = Sampler(np.random.default_rng(p.seed))
        self.frame_skip = task.frame_skip
        self.dt = float(model.opt.timestep)
        nu = model.nu
        self.joint_names = task.action_names
        joints = [int(model.actuator_trnid[i, 0]) for i in range(nu)]
        self.qadr = np.array([model.jnt_qposadr[j] for j in joints])
        self.vadr = np.array([model.jnt_dofadr[j] for j in joints])
        gain, bias = model.actuator_gainprm[:nu], model.actuator_biasprm[:nu]
        self.is_position = (bias[:, 1] != 0) & np.isclose(gain[:, 0], -bias[:, 1])
        self.gear = model.actuator_gear[:nu, 0].copy()
        self.scale = np.broadcast_to(np.asarray(task.config["action_scale"], dtype=float), (nu,)).copy()
        self.default_pose = np.asarray(getattr(task, "default_pose", np.zeros(nu)), dtype=float)
        self.action_type = getattr(task, "action_type", "motor")
        names = {model.sensor(i).name for i in range(model.nsensor)}
        self.has_imu = {"imu_quat", "gyro"} <= names
        self.has_ee = "ee_pos" in names
        self._lock = threading.Lock()
        self._cmd: Optional[tuple] = None  # (mode, ctrl or None) of the newest command
        self._cmd_rx: Optional[float] = None
        self._cmd_queue: "queue.Queue" = queue.Queue()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._reset_request = threading.Event()
        self._cmd_vel: Optional[np.ndarray] = None
        self.episode = -1
        self.episodes: List[Dict[str, float]] = []
        self.physics_steps = 0
        self.bad_commands = 0
        self._transport = transport
        self._own_transport = transport is None
        self._subs: list = []
        self._thread: Optional[threading.Thread] = None
        for _ in range(max(0, p.skip_reset_draws)):
            task.reset(np, self.sampler, 1)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """A fresh episode from the task's reset distribution (as the mujoco backend does)."""
        mj, task, d = self._mj, self.task, self.data
        qpos, qvel, task_vars = task.reset(np, self.sampler, 1)
        mj.mj_resetData(self.model, d)
        d.qpos[:] = np.asarray(qpos)[0]
        d.qvel[:] = np.asarray(qvel)[0]
        self.task_vars = {k: np.array(v, dtype=np.float64) for k, v in task_vars.items()}
        zero = np.zeros((1, self.model.nu))
        d.ctrl[:] = np.asarray(task.ctrl_from_action(np, zero, self._state()))[0]
        mj.mj_forward(self.model, d)
        with self._lock:
            self._cmd = None
        self.episode += 1
        self.in_episode = False
        self.ep_steps = 0
        self.ep_return = 0.0
        self.ep_cost = 0.0
        self.phys_in_episode = 0
        self.applied_ctrl = d.ctrl.copy()

    def _state(self):
        d = self.data
        return self._SimState(qpos=d.qpos[None].copy(), qvel=d.qvel[None].copy(),
                              sensordata=d.sensordata[None].copy(), ctrl=d.ctrl[None].copy(), task=self.task_vars)

    def measured(self):
        d = self.data
        return d.qpos[self.qadr].copy(), d.qvel[self.vadr].copy()

    # -------------------------------------------------------------- messages
    def joint_state_msg(self) -> m.JointState:
        q, qd = self.measured()
        tau = self.data.actuator_force.copy()
        return m.JointState(m.Header(m.Time.from_nanoseconds(time.time_ns()), "sim"), list(self.joint_names),
                            q, qd, tau)

    def imu_msg(self) -> m.Imu:
        wxyz = self.data.sensordata[self.task._sensor_slices["imu_quat"]]
        gyro = self.data.sensordata[self.task._sensor_slices["gyro"]]
        return m.Imu(m.Header(m.Time.from_nanoseconds(time.time_ns()), "imu"),
                     m.Quaternion(float(wxyz[1]), float(wxyz[2]), float(wxyz[3]), float(wxyz[0])),
                     np.zeros(9), m.Vector3.from_numpy(gyro), np.zeros(9), m.Vector3(), np.full(9, -1.0))

    def _publish_state(self) -> None:
        if self._paused.is_set():
            return
        self.js_pub.publish(self.joint_state_msg())
        if self.has_imu:
            self.imu_pub.publish(self.imu_msg())
        if self.has_ee:
            ee = self.data.sensordata[self.task._sensor_slices["ee_pos"]]
            self.ee_pub.publish(m.Float64MultiArray.from_numpy(ee))

    # -------------------------------------------------------------- commands
    def _on_command(self, msg: m.JointState) -> None:
        try:
            ctrl = self._command_ctrl(msg)
        except ValueError as exc:
            self.bad_commands += 1
            log.warning("%s: ignoring a command: %s", self.name, exc)
            return
        item = (msg.header.frame_id, ctrl)
        with self._lock:
            self._cmd, self._cmd_rx = item, time.monotonic()
        if self.params.step_mode == "command":
            self._cmd_queue.put(item)

    def _command_ctrl(self, msg: m.JointState) -> Optional[np.ndarray]:
        """ctrl for the command, or None for damp (computed each physics step)."""
        index = {n: i for i, n in enumerate(msg.name)}
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            raise ValueError(f"joints missing from the command: {missing}")
        order = [index[n] for i, n in enumerate(self.joint_names)]
        pos, eff = np.asarray(msg.position), np.asarray(msg.effort)
        if len(pos) and len(pos) != len(msg.name) or len(eff) and len(eff) != len(msg.name):
            raise ValueError("command arrays do not match its joint names")
        ctrl = np.zeros(self.model.nu)
        if len(pos):
            if not self.is_position.all():
                raise ValueError("position targets for joints driven by motors")
            ctrl[:] = pos[order]
        elif len(eff):
            ctrl[:] = eff[order]
        else:
            return None  # damp
        if not np.all(np.isfinite(ctrl)):
            raise ValueError("non-finite command")
        return ctrl

    def _damp_ctrl(self) -> np.ndarray:
        d = self.data
        q, qd = d.qpos[self.qadr], d.qvel[self.vadr]
        return np.where(self.is_position, q, -self.params.damping_kd * qd)

    def _action_of(self, ctrl: np.ndarray) -> np.ndarray:
        if self.action_type == "position":
            return (ctrl - self.default_pose) / self.scale
        return ctrl / self.scale

    # ----------------------------------------------------------------- steps
    def _physics_step(self, cmd) -> None:
        mode, ctrl = cmd if cmd is not None else ("none", self.applied_ctrl)
        timeout = self.params.command_timeout_s
        if cmd is not None and timeout > 0 and self._cmd_rx is not None and time.monotonic() - self._cmd_rx > timeout:
            ctrl = None  # the robot's own command watchdog
        self.data.ctrl[:] = ctrl if ctrl is not None else self._damp_ctrl()
        self._mj.mj_step(self.model, self.data)
        self.physics_steps += 1
        if self.in_episode:
            self.phys_in_episode += 1
            if self.phys_in_episode % self.frame_skip == 0:
                self._control_boundary(ctrl)

    def _start_episode_if(self, mode: str) -> None:
        if not self.in_episode and mode == "policy":
            self.in_episode = True
            self.phys_in_episode = 0

    def _control_boundary(self, ctrl: Optional[np.ndarray]) -> None:
        task = self.task
        applied = ctrl if ctrl is not None else self.data.ctrl.copy()
        action = self._action_of(applied)[None]
        state = task.after_step(np, self.sampler, self._state(), action)
        tv = dict(state.task)
        if self._cmd_vel is not None and "command" in tv:
            tv["command"] = self._cmd_vel[None].copy()
            state = state.with_task(command=tv["command"])
        self.task_vars = tv
        scales = task.config["reward_scales"]
        terms = task.reward_terms(np, state, action)
        reward = float(sum(float(np.asarray(v)[0]) * float(scales.get(k, 0.0)) for k, v in terms.items()))
        cost = float(np.asarray(task.cost(np, state, action))[0])
        terminated = bool(np.asarray(task.terminated(np, state))[0])
        self.ep_steps += 1
        self.ep_return += reward
        self.ep_cost += cost
        self.reward_pub.publish(m.Float64MultiArray.from_numpy(
            [self.episode, self.ep_steps, reward, cost, self.ep_return, float(terminated)]))
        time_out = self.ep_steps >= task.max_episode_length and not terminated
        if terminated or time_out:
            summary = dict(zip(EPISODE_FIELDS, [self.episode, self.ep_steps, self.ep_return, self.ep_cost,
                                                float(terminated), float(time_out)]))
            self.episodes.append(summary)
            self.episode_pub.publish(m.Float64MultiArray.from_numpy([summary[k] for k in EPISODE_FIELDS]))
            log.info("%s: episode %d: return %.3f, length %d%s", self.name, self.episode, self.ep_return,
                     self.ep_steps, " (terminated)" if terminated else "")
            if self.params.auto_reset:
                self.reset()
            else:
                self.in_episode = False

    def _loop_realtime(self) -> None:
        every = max(1, int(self.params.publish_every))
        if self.params.start_on_command:
            wait = 1.0 / max(self.params.publish_rate_hz, 1e-3)
            while not self._stop.is_set() and self._cmd is None:
                self._publish_state()
                self._stop.wait(wait)
        next_t = time.monotonic()
        while not self._stop.is_set():
            if self._reset_request.is_set():
                self._reset_request.clear()
                self.reset()
            with self._lock:
                cmd = self._cmd
            if cmd is not None:
                self._start_episode_if(cmd[0])
                if cmd[1] is not None:
                    self.applied_ctrl = cmd[1]
            self._physics_step(cmd)
            if self.physics_steps % every == 0:
                self._publish_state()
            next_t += self.dt
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.1:  # fell far behind (machine busy): do not sprint to catch up
                next_t = time.monotonic()

    def _loop_command(self) -> None:
        period = 1.0 / max(self.params.publish_rate_hz, 1e-3)
        while not self._stop.is_set():
            if self._reset_request.is_set():
                self._reset_request.clear()
                self.reset()
            try:
                cmd = self._cmd_queue.get(timeout=period)
            except queue.Empty:
                self._publish_state()
                continue
            if cmd is None:
                continue
            self._start_episode_if(cmd[0])
            if cmd[1] is not None:
                self.applied_ctrl = cmd[1]
            with self._lock:
                self._cmd_rx = time.monotonic()
            for _ in range(self.frame_skip):
                self._physics_step(cmd)
            self._publish_state()

    # ------------------------------------------------------------- lifecycle
    def start(self) -> "SimRobot":
        p = self.params
        if self._transport is None:
            kwargs = {"node_name": self.name} if p.transport == "rclpy" else {}
            self._transport = make_transport(p.transport, None if p.domain_id < 0 else p.domain_id, **kwargs)
        t = self._transport
        priv = lambda topic: expand_private(topic, self.name)  # noqa: E731
        self.js_pub = t.create_publisher(p.joint_states_topic, m.JointState, SENSOR_DATA)
        if self.has_imu:
            self.imu_pub = t.create_publisher(p.imu_topic, m.Imu, SENSOR_DATA)
        if self.has_ee:
            self.ee_pub = t.create_publisher(p.ee_pos_topic, m.Float64MultiArray, SENSOR_DATA)
        self.reward_pub = t.create_publisher(priv(p.reward_topic), m.Float64MultiArray, ROS_DEFAULT)
        self.episode_pub = t.create_publisher(priv(p.episode_topic), m.Float64MultiArray, ROS_DEFAULT)
        if "target" in self.task_vars:
            self.target_pub = t.create_publisher(p.target_topic, m.Float64MultiArray, ROS_DEFAULT)
        self._subs.append(t.create_subscription(p.joint_command_topic, m.JointState, self._on_command, SENSOR_DATA))
        self._subs.append(t.create_subscription(priv(p.reset_topic), m.Bool,
                                                lambda msg: msg.data and self._reset_request.set(), ROS_DEFAULT))
        self._subs.append(t.create_subscription(
            priv(p.pause_topic), m.Bool, lambda msg: self._paused.set() if msg.data else self._paused.clear(),
            ROS_DEFAULT))
        if "command" in self.task_vars:
            self._subs.append(t.create_subscription(p.cmd_vel_topic, m.Twist, self._on_cmd_vel, ROS_DEFAULT))
        loop = self._loop_realtime if p.step_mode == "realtime" else self._loop_command
        self._thread = threading.Thread(target=self._guard(loop), name=f"{self.name}-physics", daemon=True)
        self._thread.start()
        if "target" in self.task_vars:
            threading.Thread(target=self._target_loop, daemon=True).start()
        log.info("%s: task %s (%s), physics %.0f Hz, %s mode, %d joints%s", self.name, self.task.name,
                 p.real_domain or "sim", 1.0 / self.dt, p.step_mode, self.model.nu, ", IMU" if self.has_imu else "")
        return self

    def _guard(self, loop):
        def run():
            try:
                loop()
            except Exception:  # noqa: BLE001
                log.exception("%s: physics loop failed", self.name)
                self._stop.set()
        return run

    def _target_loop(self) -> None:
        while not self._stop.wait(0.1):
            target = self.task_vars.get("target")
            if target is not None and not self._paused.is_set():
                self.target_pub.publish(m.Float64MultiArray.from_numpy(np.asarray(target)[0]))

    def _on_cmd_vel(self, msg: m.Twist) -> None:
        self._cmd_vel = np.array([msg.linear.x, msg.linear.y, msg.angular.z])

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def shutdown(self) -> None:
        self._stop.set()
        self._cmd_queue.put(None)
        if self._thread is not None:
            self._thread.join(2.0)
        for s in self._subs:
            s.close()
        self._subs.clear()
        if self._own_transport and self._transport is not None:
            self._transport.close()
            self._transport = None

    close = shutdown


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m robotrl.real.sim_robot_node --ros-args --params-file deploy.yaml -p policy:=DIR``."""
    from .deploy import node_params, setup_logging

    setup_logging()
    params = SimRobotParams.from_params(node_params(sys.argv[1:] if argv is None else argv, "sim_robot"))
    robot = SimRobot(params).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.05):
        if not robot.alive:
            break
    robot.shutdown()
    log.info("%s: stopped after %d physics steps, %d episodes", robot.name, robot.physics_steps, len(robot.episodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
