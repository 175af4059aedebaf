"""The policy node: runs a policy artifact on a robot through a Transport (no rclpy import).

Inputs (topics configurable, see ``launch/config/deploy.yaml``):

- ``/joint_states`` ``sensor_msgs/JointState``: mapped to the artifact's joints *by
  name* (extra joints are ignored; missing ones make the node refuse to start, naming
  them). Positions and velocities must match the names in length.
- ``/imu`` ``sensor_msgs/Imu`` (when the artifact reads ``ang_vel``/``gravity``).
- ``/cmd_vel`` ``geometry_msgs/Twist`` (when it reads ``command``): linear.x,
  linear.y, angular.z; zero when none arrived for ``cmd_vel_timeout_s``.
- ``/target``, ``/ee_pos`` ``std_msgs/Float64MultiArray`` (reach-style artifacts).
- ``~/enable`` and ``~/estop`` ``std_msgs/Bool`` (reliable, as ``ros2 topic pub`` sends).

Output, the *command* (``/joint_commands``, ``sensor_msgs/JointState``, reliable):

- ``header.stamp``: publish time; ``header.frame_id``: the node's mode
  (``soft_start`` | ``policy`` | ``hold`` | ``damp``), so a driver or a log can tell
  a safe command from a policy command;
- ``name``: the artifact's joints, in its order;
- ``position``: joint-position targets (rad) for a position-type artifact; **empty
  in damp** (and for torque-type artifacts);
- ``velocity``: velocity targets, always zeros;
- ``effort``: the actuator command in the artifact's ``ctrl`` units
  (``action_scale * action``) for torque-type (``motor``/``normalized``) artifacts,
  else empty.

The robot applies ``tau = kp (position - q) + kd (velocity - qd) + effort`` with the
artifact's PD gains, each term only when its field is non-empty. Hence *damp* (zero
stiffness) = no position targets: only ``kd (0 - qd)`` remains. *Hold* = the last
targets again (position-type; for torque-type artifacts hold sends damp).

``~/latency`` (``std_msgs/Float64MultiArray``, every ``stats_period_s``): the values
named in :data:`STATS_FIELDS` over the last ``stats_window`` ticks: observation
received -> command published (p50/p99, ms), compute time of a tick (ms), control
period jitter (|interval - period|, p50/p99, ms), lateness of ticks against the
drift-free schedule, ticks and overruns.

The state machine is in :mod:`robotrl.real.state_machine`, the watchdog in
:mod:`robotrl.real.watchdog`, the observation in :mod:`robotrl.real.observation`.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import yaml

from . import messages as m
from .observation import ObservationAssembler, RobotInputs
from .state_machine import Mode, StateMachine
from .transport import ROS_DEFAULT, SENSOR_DATA, Transport, make_transport
from .watchdog import Watchdog, check_array, check_finite, check_joint_state, stamp_ns

__all__ = ["PolicyNodeParams", "PolicyNode", "STATS_FIELDS", "main", "expand_private"]

log = logging.getLogger("robotrl.policy_node")

STATS_FIELDS = (
    "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "compute_p50_ms", "compute_p99_ms",
    "jitter_p50_ms", "jitter_p99_ms", "lateness_p99_ms", "ticks", "overruns", "policy_ticks",
)


@dataclass
class PolicyNodeParams:
    """The node's ROS parameters (``ros__parameters`` of ``policy_node`` in the YAML)."""

    policy: str = ""  # the artifact folder (policy.onnx + policy.yaml)
    node_name: str = "policy_node"
    transport: str = "auto"  # auto | dds | rclpy
    domain_id: int = -1  # -1: ROS_DOMAIN_ID (else 0)
    control_rate_hz: float = 0.0  # 0: the artifact's control rate
    joint_states_topic: str = "/joint_states"
    imu_topic: str = "/imu"
    cmd_vel_topic: str = "/cmd_vel"
    target_topic: str = "/target"
    ee_pos_topic: str = "/ee_pos"
    joint_command_topic: str = "/joint_commands"
    enable_topic: str = "~/enable"
    estop_topic: str = "~/estop"
    latency_topic: str = "~/latency"
    obs_timeout_s: float = 0.1  # no sensor message for this long: fault
    max_obs_age_s: float = 0.1  # sensor header stamp older than this: fault (0: off)
    cmd_vel_timeout_s: float = 0.5  # no velocity command for this long: command zero
    soft_start_s: float = 2.0  # interpolation to the default pose
    autostart: bool = False  # enable as soon as the observations are healthy
    fault_action: str = "hold"  # watchdog faults and disable: hold | damp
    estop_action: str = "damp"
    shutdown_action: str = "damp"
    shutdown_publish_s: float = 0.2  # keep sending the shutdown action this long before exit
    max_action_delta: float = 0.0  # max change of each action component per tick (0: off)
    use_shield: bool = True  # run the artifact's shield when policy.yaml has one
    observation_scales: str = ""  # YAML mapping term -> scale overriding the task's
    stats_period_s: float = 1.0
    stats_window: int = 2000
    log_stats_period_s: float = 10.0
    exit_on_refusal: bool = True  # main(): exit when the node refuses to start
    # Python hands the GIL between threads every 5 ms by default: a control thread woken
    # while a transport thread decodes a message could wait that long. 0: leave it.
    gil_switch_interval_s: float = 0.0005
    # SCHED_FIFO priority (1-99) of the control thread, as real-time robot stacks run their
    # control loop (needs CAP_SYS_NICE / rtprio in limits.conf); 0: the normal scheduler.
    realtime_priority: int = 0

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "PolicyNodeParams":
        from .deploy import coerce_params

        return coerce_params(cls, params, "policy_node")


def expand_private(topic: str, node_name: str) -> str:
    """``~/enable`` -> ``/policy_node/enable`` (the transport takes no private names)."""
    if topic.startswith("~/"):
        return f"/{node_name}/{topic[2:]}"
    return topic


class _Latest:
    """The newest accepted message of each input, written by callbacks."""

    def __init__(self, n: int):
        self.q: Optional[np.ndarray] = None
        self.qd = np.zeros(n)
        self.q_rx = 0.0  # monotonic receive time of the joint state
        self.imu_quat: Optional[np.ndarray] = None
        self.imu_gyro: Optional[np.ndarray] = None
        self.command = np.zeros(3)
        self.command_rx: Optional[float] = None
        self.target: Optional[np.ndarray] = None
        self.ee_pos: Optional[np.ndarray] = None


class PolicyNode:
    """Loads the artifact, subscribes, runs the control loop in its own thread."""

    def __init__(self, params: PolicyNodeParams, transport: Optional[Transport] = None, policy=None):
        from robotrl.policies.artifact import ArtifactError, load_meta

        if not params.policy and policy is None:
            raise ArtifactError("policy_node: parameter 'policy' (the artifact folder) is not set")
        self.params = p = params
        self.name = p.node_name
        self.meta = load_meta(p.policy) if policy is None else policy.meta
        if policy is None:
            if p.use_shield:
                from robotrl.policies.shield import load_shielded_policy

                policy = load_shielded_policy(p.policy)
            else:
                from robotrl.policies.artifact import ArtifactPolicy

                policy = ArtifactPolicy(p.policy)
        self.policy = policy
        meta = self.meta
        action = meta["action"]
        self.joints: List[str] = list(action["joint_names"])
        n = self.n = len(self.joints)
        self.action_type = str(action.get("type", "motor"))
        self.position_type = self.action_type == "position"
        self.scale = np.asarray(action["scale"], dtype=np.float64)
        self.default_pose = np.asarray(action["default_pose"], dtype=np.float64)
        self.action_clip = float(action.get("clip", np.inf))
        limits = meta.get("limits", {})
        self.q_low, self.q_high = _bounds(limits.get("joint_position"), n)
        self.ctrl_low, self.ctrl_high = _bounds(limits.get("ctrl"), n)
        if self.position_type:  # a position actuator's ctrl is its target
            self.q_low, self.q_high = np.maximum(self.q_low, self.ctrl_low), np.minimum(self.q_high, self.ctrl_high)
        self.rate_hz = float(p.control_rate_hz or meta["control"]["rate_hz"])
        self.period = 1.0 / self.rate_hz
        scales = yaml.safe_load(p.observation_scales) if p.observation_scales else None
        self.assembler = ObservationAssembler(meta, scales)
        if self.assembler.unknown_task:
            log.warning("%s: no observation scales known for task %s; terms use scale 1 "
                        "(set observation_scales if the sim task scales its terms)", self.name, meta["task"])
        if self.assembler.size != int(meta["observation"]["size"]):
            raise ValueError("observation layout does not add up to policy.yaml's observation.size")
        self.sm = StateMachine(p.soft_start_s, self.position_type, p.fault_action, p.estop_action,
                               p.shutdown_action, name=self.name)
        self.watchdog = Watchdog()
        self.watchdog.add_stream(p.joint_states_topic, p.obs_timeout_s, p.max_obs_age_s)
        needs = self.assembler.needs
        if "imu" in needs:
            self.watchdog.add_stream(p.imu_topic, p.obs_timeout_s, p.max_obs_age_s)
        if "ee_pos" in needs:
            self.watchdog.add_stream(p.ee_pos_topic, p.obs_timeout_s, 0.0)
        if "target" in needs:
            self.watchdog.add_stream(p.target_topic, 0.0, 0.0)  # a goal: must exist, may be old
        self._lock = threading.Lock()
        self._latest = _Latest(n)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requests: collections.deque = collections.deque()
        self._refusal: Optional[str] = None
        self.last_action = np.zeros(n)
        self.last_targets: Optional[np.ndarray] = None
        self.soft_start_from: Optional[np.ndarray] = None
        self.published = 0
        w = max(10, int(p.stats_window))
        self._lat = collections.deque(maxlen=w)
        self._compute = collections.deque(maxlen=w)
        self._jitter = collections.deque(maxlen=w)
        self._lateness = collections.deque(maxlen=w)
        self.ticks = self.overruns = self.policy_ticks = 0
        self._transport = transport
        self._own_transport = transport is None
        self._subs: list = []
        self._thread: Optional[threading.Thread] = None
        # One inference before the loop: onnxruntime's first run allocates.
        self.policy.act(np.zeros((1, self.assembler.size), np.float32))

    # ------------------------------------------------------------------ setup
    @property
    def mode(self) -> Mode:
        return self.sm.mode

    @property
    def refusal(self) -> Optional[str]:
        return self.sm.refusal or self._refusal

    def start(self) -> "PolicyNode":
        p = self.params
        if p.gil_switch_interval_s > 0:
            sys.setswitchinterval(p.gil_switch_interval_s)  # process-wide: a node owns its process
        if self._transport is None:
            kwargs = {"node_name": self.name} if p.transport == "rclpy" else {}
            domain = None if p.domain_id < 0 else p.domain_id
            self._transport = make_transport(p.transport, domain, **kwargs)
        t = self._transport
        self.cmd_pub = t.create_publisher(p.joint_command_topic, m.JointState, ROS_DEFAULT)
        self.stats_pub = t.create_publisher(expand_private(p.latency_topic, self.name), m.Float64MultiArray,
                                            ROS_DEFAULT)
        sub = t.create_subscription
        self._subs.append(sub(p.joint_states_topic, m.JointState, self._on_joint_state, SENSOR_DATA))
        needs = self.assembler.needs
        if "imu" in needs:
            self._subs.append(sub(p.imu_topic, m.Imu, self._on_imu, SENSOR_DATA))
        if "command" in needs:
            self._subs.append(sub(p.cmd_vel_topic, m.Twist, self._on_cmd_vel, ROS_DEFAULT))
        if "target" in needs:
            self._subs.append(sub(p.target_topic, m.Float64MultiArray, self._on_target, ROS_DEFAULT))
        if "ee_pos" in needs:
            self._subs.append(sub(p.ee_pos_topic, m.Float64MultiArray, self._on_ee_pos, SENSOR_DATA))
        self._subs.append(sub(expand_private(p.enable_topic, self.name), m.Bool,
                              lambda msg: self._request("enable", bool(msg.data)), ROS_DEFAULT))
        self._subs.append(sub(expand_private(p.estop_topic, self.name), m.Bool,
                              lambda msg: self._request("estop", bool(msg.data)), ROS_DEFAULT))
        if p.autostart:
            self._request("autostart", True)
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-control", daemon=True)
        self._thread.start()
        log.info("%s: %s artifact %s (%s, %d joints, %s) at %.1f Hz; observation %s; mode passive",
                 self.name, self.meta["task"], p.policy, self.action_type, self.n,
                 "shielded" if hasattr(self.policy, "critic") else "no shield", self.rate_hz,
                 self.assembler.describe())
        return self

    # ------------------------------------------------------------ public API
    def enable(self, on: bool = True) -> None:
        self._request("enable", on)

    def estop(self, engaged: bool = True) -> None:
        self._request("estop", engaged)

    def stats(self) -> Dict[str, float]:
        def pct(values, q):
            return float(np.percentile(np.asarray(values), q)) * 1e3 if values else float("nan")

        with self._lock:
            lat, comp, jit, late = list(self._lat), list(self._compute), list(self._jitter), list(self._lateness)
        return {
            "latency_p50_ms": pct(lat, 50), "latency_p99_ms": pct(lat, 99),
            "latency_max_ms": max(lat) * 1e3 if lat else float("nan"),
            "compute_p50_ms": pct(comp, 50), "compute_p99_ms": pct(comp, 99),
            "jitter_p50_ms": pct(jit, 50), "jitter_p99_ms": pct(jit, 99),
            "lateness_p99_ms": pct(late, 99),
            "ticks": float(self.ticks), "overruns": float(self.overruns), "policy_ticks": float(self.policy_ticks),
        }

    def shutdown(self, timeout: float = 2.0) -> None:
        """Go to the shutdown action, keep sending it ``shutdown_publish_s``, stop, close."""
        if self._thread is not None and self._thread.is_alive():
            self._request("shutdown", True)
            deadline = time.monotonic() + self.params.shutdown_publish_s
            while time.monotonic() < deadline and self._thread.is_alive():
                time.sleep(0.01)
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout)
        for s in self._subs:
            s.close()
        self._subs.clear()
        if self._own_transport and self._transport is not None:
            self._transport.close()
            self._transport = None

    close = shutdown

    # ------------------------------------------------------------- callbacks
    def _request(self, kind: str, value: bool) -> None:
        self._requests.append((kind, value))
        self._wake.set()

    def _fault_now(self, reason: str) -> None:
        self.watchdog.trip(reason)
        self._wake.set()

    def _on_joint_state(self, msg: m.JointState) -> None:
        rx = time.monotonic()
        topic = self.params.joint_states_topic
        reason, missing, q, qd = check_joint_state(topic, msg, self.joints)
        if missing:
            with self._lock:
                self._refusal = reason
            self._wake.set()
            self.watchdog.reject(topic)
            return
        if reason is None:
            reason = self.watchdog.accept(topic, stamp_ns(msg.header), rx)
        if reason is not None:
            self.watchdog.reject(topic)
            self._fault_now(reason)
            return
        with self._lock:
            L = self._latest
            L.q, L.qd, L.q_rx = q, qd, rx

    def _on_imu(self, msg: m.Imu) -> None:
        rx = time.monotonic()
        topic = self.params.imu_topic
        quat, gyro = msg.orientation.to_numpy(), msg.angular_velocity.to_numpy()
        reason = check_finite(topic, orientation=quat, angular_velocity=gyro)
        if reason is None and abs(float(np.linalg.norm(quat)) - 1.0) > 0.1:
            reason = f"invalid orientation on {topic}: quaternion norm {np.linalg.norm(quat):.3f}"
        if reason is None:
            reason = self.watchdog.accept(topic, stamp_ns(msg.header), rx)
        if reason is not None:
            self.watchdog.reject(topic)
            self._fault_now(reason)
            return
        with self._lock:
            self._latest.imu_quat, self._latest.imu_gyro = quat, gyro

    def _on_cmd_vel(self, msg: m.Twist) -> None:
        cmd = np.array([msg.linear.x, msg.linear.y, msg.angular.z], dtype=np.float64)
        if check_finite(self.params.cmd_vel_topic, command=cmd) is not None:
            log.warning("%s: ignoring a non-finite velocity command", self.name)
            return
        with self._lock:
            self._latest.command, self._latest.command_rx = cmd, time.monotonic()

    def _on_array(self, topic: str, attr: str, msg: m.Float64MultiArray) -> None:
        rx = time.monotonic()
        reason = check_array(topic, msg.data, 3) or self.watchdog.accept(topic, None, rx)
        if reason is not None:
            self.watchdog.reject(topic)
            self._fault_now(reason)
            return
        with self._lock:
            setattr(self._latest, attr, np.array(msg.data, dtype=np.float64))

    def _on_target(self, msg):
        self._on_array(self.params.target_topic, "target", msg)

    def _on_ee_pos(self, msg):
        self._on_array(self.params.ee_pos_topic, "ee_pos", msg)

    # ----------------------------------------------------------- control loop
    def _loop(self) -> None:
        prio = self.params.realtime_priority
        if prio > 0:
            try:  # pid 0: this thread only (Linux)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
                log.info("%s: control thread runs SCHED_FIFO priority %d", self.name, prio)
            except (OSError, AttributeError) as exc:
                log.warning("%s: cannot set real-time priority %d (%s); running SCHED_OTHER", self.name, prio, exc)
        period = self.period
        next_t = time.monotonic() + period
        prev_start: Optional[float] = None
        next_stats = time.monotonic() + self.params.stats_period_s
        next_log = time.monotonic() + self.params.log_stats_period_s
        while not self._stop.is_set():
            now = time.monotonic()
            wake_at = next_t
            if self.sm.mode.active:
                # Wake when a stream's timeout expires, not at the next tick: a silent
                # robot is then noticed within a millisecond of its timeout.
                deadline = self.watchdog.next_deadline()
                if deadline is not None and now < deadline + 2e-4 < next_t:
                    wake_at = deadline + 2e-4
            if self._wake.wait(max(0.0, wake_at - now)):
                self._wake.clear()
            if self._stop.is_set():
                break
            if time.monotonic() < next_t:
                # Out of schedule: act on faults, e-stops and requests at once.
                self._tick(scheduled=False)
                continue
            start = time.monotonic()
            self._lateness.append(start - next_t)
            if prev_start is not None:
                self._jitter.append(abs(start - prev_start - period))
            prev_start = start
            try:
                self._tick(scheduled=True, start=start)
            except Exception:  # noqa: BLE001 - the loop must keep sending safe commands
                log.exception("%s: control tick failed", self.name)
                self.sm.fault("control tick raised (see log)", time.monotonic())
            self.ticks += 1
            next_t += period
            now = time.monotonic()
            if now > next_t:  # overran one or more periods: skip them, keep the phase
                missed = int((now - next_t) / period) + 1
                self.overruns += missed
                next_t += missed * period
            if now >= next_stats:
                next_stats = now + self.params.stats_period_s
                self._publish_stats()
            if now >= next_log:
                next_log = now + self.params.log_stats_period_s
                s = self.stats()
                log.info("%s: mode %s; obs->cmd p50 %.3f p99 %.3f ms; compute p99 %.3f ms; "
                         "period jitter p99 %.3f ms; overruns %d", self.name, self.sm.mode.value,
                         s["latency_p50_ms"], s["latency_p99_ms"], s["compute_p99_ms"], s["jitter_p99_ms"],
                         self.overruns)

    def _tick(self, scheduled: bool, start: float = 0.0) -> None:
        now = time.monotonic()
        sm = self.sm
        before = sm.mode
        with self._lock:
            refusal = self._refusal
        if refusal is not None:
            sm.refuse(refusal, now)
        event = self.watchdog.take_event()
        if event is not None and not sm.fault(event, now):
            log.warning("%s: %s (mode %s)", self.name, event, sm.mode.value)
        health = self.watchdog.check(now, time.time_ns())
        if health is not None and sm.mode.active:
            self.watchdog.remember(health)
            sm.fault(health, now)
        while self._requests:
            kind, value = self._requests.popleft()
            if kind == "estop":
                sm.set_estop(value, now)
            elif kind == "shutdown":
                sm.shutdown(now)
            elif kind in ("enable", "autostart"):
                if value:
                    if kind == "autostart" and health is not None:
                        self._requests.appendleft((kind, value))  # retry until healthy
                        break
                    if sm.enable(health, now) is None:
                        self._on_enabled(now)
                else:
                    sm.disable(now)
        sm.tick(now)
        if not scheduled:
            # Out of schedule only a change into a safe mode publishes (at once).
            if sm.mode.safe and sm.mode != before:
                self._publish_mode(now, start=None)
            return
        self._publish_mode(now, start=start)

    def _on_enabled(self, now: float) -> None:
        with self._lock:
            q = None if self._latest.q is None else self._latest.q.copy()
        self.soft_start_from = q if q is not None else self.default_pose.copy()
        self.last_action = np.zeros(self.n)
        self.policy.reset()

    def _inputs(self, now: float):
        """The newest inputs as :class:`RobotInputs`, and the joint state's receive time."""
        with self._lock:
            L = self._latest
            command = (L.command if L.command_rx is not None
                       and now - L.command_rx <= self.params.cmd_vel_timeout_s else np.zeros(3))
            inputs = RobotInputs(joint_pos=L.q, joint_vel=L.qd, last_action=self.last_action.copy(),
                                 imu_quat_xyzw=L.imu_quat, imu_gyro=L.imu_gyro, command=command,
                                 target=L.target, ee_pos=L.ee_pos)
            return inputs, L.q_rx

    def observation(self) -> np.ndarray:
        """The observation the policy would get now (for tests and diagnostics)."""
        return self.assembler(self._inputs(time.monotonic())[0])

    def _publish_mode(self, now: float, start: Optional[float]) -> None:
        mode = self.sm.mode
        if mode == Mode.PASSIVE:
            return
        zeros = np.zeros(self.n)
        empty = np.zeros(0)
        if mode == Mode.POLICY:
            inputs, obs_rx = self._inputs(now)
            obs = self.assembler(inputs)
            raw = np.asarray(self.policy.act(obs[None].astype(np.float32)), dtype=np.float64)[0]
            if not np.all(np.isfinite(raw)):
                self.sm.fault("the policy returned a non-finite action", now)
                return self._publish_mode(now, start)
            action = np.clip(raw, -self.action_clip, self.action_clip)
            d = self.params.max_action_delta
            if d > 0:
                action = self.last_action + np.clip(action - self.last_action, -d, d)
            self.last_action = action
            if self.position_type:
                targets = np.clip(self.default_pose + self.scale * action, self.q_low, self.q_high)
                self.last_targets = targets
                self._send(mode, targets, zeros, empty)
            else:
                effort = np.clip(self.scale * action, self.ctrl_low, self.ctrl_high)
                self._send(mode, empty, zeros, effort)
            t_pub = time.monotonic()
            self.policy_ticks += 1
            with self._lock:
                self._lat.append(t_pub - obs_rx)
                if start is not None:
                    self._compute.append(t_pub - start)
            return
        if mode == Mode.SOFT_START:
            frac = self.sm.soft_start_fraction(now)
            origin = self.soft_start_from if self.soft_start_from is not None else self.default_pose
            targets = np.clip(origin + frac * (self.default_pose - origin), self.q_low, self.q_high)
            self.last_targets = targets
            self._send(mode, targets, zeros, empty)
            return
        if mode == Mode.HOLD and self.position_type:
            targets = self.last_targets if self.last_targets is not None else self.default_pose
            self._send(mode, targets, zeros, empty)
            return
        # DAMP, and HOLD of a torque-type artifact: zero stiffness, damping only.
        self._send(mode, empty, zeros, empty)

    def _send(self, mode: Mode, position: np.ndarray, velocity: np.ndarray, effort: np.ndarray) -> None:
        msg = m.JointState(m.Header(m.Time.from_nanoseconds(time.time_ns()), mode.value), list(self.joints),
                           position, velocity, effort)
        self.cmd_pub.publish(msg)
        self.published += 1

    def _publish_stats(self) -> None:
        s = self.stats()
        values = np.array([s[k] for k in STATS_FIELDS], dtype=np.float64)
        values[~np.isfinite(values)] = -1.0  # "no data yet" (NaN would trip readers' checks)
        msg = m.Float64MultiArray.from_numpy(values, labels=[",".join(STATS_FIELDS)])
        try:
            self.stats_pub.publish(msg)
        except Exception:  # noqa: BLE001 - statistics never stop the control loop
            log.exception("%s: cannot publish statistics", self.name)


def _bounds(pairs, n: int):
    if not pairs:
        return np.full(n, -np.inf), np.full(n, np.inf)
    arr = np.asarray(pairs, dtype=np.float64).reshape(n, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


# ---------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m robotrl.real.policy_node --ros-args --params-file deploy.yaml -p policy:=DIR``."""
    from .deploy import node_params, setup_logging

    setup_logging()
    params = PolicyNodeParams.from_params(node_params(sys.argv[1:] if argv is None else argv, "policy_node"))
    node = PolicyNode(params)
    stop = threading.Event()
    node.start()
    # Installed after the transport: rclpy's own SIGINT handling would otherwise shut
    # its context down before the node could send the shutdown action.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    code = 0
    while not stop.wait(0.05):
        if node.refusal and params.exit_on_refusal:
            log.error("%s: exiting: %s", node.name, node.refusal)
            code = 3
            break
    node.shutdown()
    log.info("%s: stopped (mode %s)", node.name, node.mode.value)
    return code


if __name__ == "__main__":
    sys.exit(main())
