"""ROS 2 bags (MCAP) -> a robotrl :class:`Dataset` (``robotrl dataset import-bag``).

A *mapping* (a YAML file or dict) says which topics feed the task's state; the
observations, rewards, costs and terminations then come from the task's **own**
functions (``observation_terms``, ``reward_terms``, ``cost``, ``terminated``), so
scales, default-pose offsets and term order cannot drift from simulation::

    reference: /joint_command     # one row per message of this topic (the control clock)
    control_dt: null              # s; null: the task's control_dt
    freshness: 0.05               # s; an input older than this at a reference time drops the row
    gap_periods: 3                # no reference message for > 3 periods: a new episode
    stamps: header                # header: header.stamp (publish_time for messages without a
                                  #   header); publish: MCAP publish_time; log: receive time
    out_of_order: drop            # drop | error: a message stamped at or before the previous one
    joints:                       # sensor_msgs/JointState -> qpos/qvel of the task's joints, by name
      topic: /joint_states
      rename: {}                  # {task joint: name in the message}
    sensors:                      # MuJoCo sensor -> topic field (overrides the kinematics)
      gyro: {topic: /imu, field: angular_velocity}
      imu_quat: {topic: /imu, field: orientation}      # quaternions become w, x, y, z
    task_vars:                    # per-env task variables -> topic field
      command: {topic: /cmd_vel, field: [linear.x, linear.y, angular.z]}
    action:
      topic: /joint_command       # std_msgs/Float64MultiArray, one value per actuated joint
      field: data
      kind: target                # target: the controller input (PD targets / torques), turned
                                  #   into the action by the inverse of the task's ctrl_from_action
                                  #   (or of the artifact's scale/default pose); action: raw actions
      artifact: null              # a policy artifact folder: its action joint order, scale, pose
    reset:
      topic: null                 # a std_msgs/Bool topic; data=true starts a new episode
      jump: null                  # {term: joint_pos, threshold: 0.5}: an observation term jumping
                                  #   by more than this (max abs) between rows starts one

How rows are made (no future leakage): the rows are the reference topic's
messages, at their stamps ``t_k``. For every other input, row ``k`` takes the
**latest message with stamp <= t_k** (as-of); a message stamped after ``t_k``
is never used for row ``k``, even if it was received earlier. A row where any
input has no message yet or only one older than ``freshness`` is dropped.
Stamps must increase per topic: a message stamped at or before the previous
one on its topic is dropped (``out_of_order: drop``, counted in
``meta.source.dropped.out_of_order``) or is an error (``out_of_order: error``).

Transitions: consecutive kept rows ``k, k+1`` of one episode give ``obs`` from
row ``k``, ``action`` = row ``k``'s action, ``next_obs`` from row ``k+1``, and
reward/cost/terminated from the state at row ``k+1`` (the task variables
``last_action``/``prev_action`` follow the actions, zeros at an episode's start,
as in simulation). Episodes split at dropped rows, at gaps (no reference message
for more than ``gap_periods`` control periods), at resets, and after a terminal
state (rows after it up to the next split are dropped: the robot lying on the
floor is no episode). The last transition of an episode that did not terminate
is ``truncated``.

State reconstruction, and which tasks are supported (:data:`SUPPORTED_TASKS`):
joint positions/velocities fill ``qpos``/``qvel`` by joint name; a MuJoCo
forward pass of the task model gives the kinematic sensors (fingertip position
and velocity, joint sensors); mapped sensors override their readings.

- ``pendulum_swingup``, ``cartpole_swingup``: fixed base, every joint measured:
  the full state, so both observation groups and the task's reward, cost and
  termination are computed.
- ``reach``: fixed base; with the target position mapped (``task_vars.target``)
  the full state: both groups, reward, cost, termination.
- ``quadruped_walk``: the ``policy`` group only (IMU ``gyro``/``imu_quat``,
  ``command``, joints, last action). Its reward needs the base's linear velocity,
  height, foot contacts and joint torques, which joint states and an IMU do not
  measure: ``reward`` and ``cost`` are stored as 0 and ``terminated`` as false,
  with ``meta.reward_computed = false`` and the reason in
  ``meta.source.reward``. Use such a dataset for behaviour cloning or relabel it.

Other tasks are refused with this list.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from robotrl.datasets.dataset import Dataset
from robotrl.datasets.format import DatasetError, validate

__all__ = ["BagImportError", "SUPPORTED_TASKS", "import_bag", "read_bag", "load_mapping", "DEFAULT_MAPPING"]


class BagImportError(DatasetError):
    """A bag or mapping that cannot become a dataset (the message says which topic/field and why)."""


@dataclass(frozen=True)
class TaskSupport:
    groups: Tuple[str, ...]  # observation groups a bag reconstructs
    reward: bool  # reward/cost/terminated computed by the task's functions
    sensors: Tuple[str, ...] = ()  # sensors that must be mapped (not derivable from joints)
    task_vars: Tuple[str, ...] = ()  # task variables that must be mapped
    reason: str = ""  # why the reward is not computed


SUPPORTED_TASKS: Dict[str, TaskSupport] = {
    "pendulum_swingup": TaskSupport(("policy", "critic"), True),
    "cartpole_swingup": TaskSupport(("policy", "critic"), True),
    "reach": TaskSupport(("policy", "critic"), True, task_vars=("target",)),
    "quadruped_walk": TaskSupport(
        ("policy",), False, sensors=("gyro", "imu_quat"), task_vars=("command",),
        reason="not computed: quadruped_walk's reward and termination need the base's linear velocity, "
               "height, foot contacts and joint torques, which joint states and an IMU do not measure"),
}

DEFAULT_MAPPING: Dict[str, Any] = {
    "reference": None,
    "control_dt": None,
    "freshness": 0.05,
    "gap_periods": 3,
    "stamps": "header",
    "out_of_order": "drop",
    "joints": {"topic": "/joint_states", "rename": {}},
    "sensors": {},
    "task_vars": {},
    "action": {"topic": None, "field": "data", "kind": "target", "artifact": None},
    "reset": {"topic": None, "jump": None},
}
_JOINT_STATE = "sensor_msgs/msg/JointState"
_BOOL = "std_msgs/msg/Bool"


# ----------------------------------------------------------------- mapping


def load_mapping(mapping) -> Dict[str, Any]:
    """A mapping from a dict or a YAML file, merged over :data:`DEFAULT_MAPPING`;
    unknown keys are an error naming them."""
    if isinstance(mapping, (str, os.PathLike)):
        import yaml

        path = Path(mapping)
        if not path.is_file():
            raise BagImportError(f"mapping {path}: file does not exist")
        try:
            mapping = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BagImportError(f"mapping {path}: not valid YAML: {exc}") from None
    if not isinstance(mapping, Mapping):
        raise BagImportError(f"mapping must be a dict or a YAML file, not {type(mapping).__name__}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_MAPPING.items()}
    for key, value in mapping.items():
        if key not in out:
            raise BagImportError(f"mapping: unknown key {key!r}; known keys: {', '.join(DEFAULT_MAPPING)}")
        if isinstance(out[key], dict) and key not in ("sensors", "task_vars"):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise BagImportError(f"mapping: '{key}' must be a mapping, not {type(value).__name__}")
            unknown = set(value) - set(out[key])
            if unknown:
                raise BagImportError(f"mapping: unknown key(s) {sorted(unknown)} in '{key}'; "
                                     f"known: {', '.join(out[key])}")
            out[key].update(value)
        else:
            out[key] = dict(value or {}) if key in ("sensors", "task_vars") else value
    if not out["reference"]:
        raise BagImportError("mapping: 'reference' (the topic whose messages are the rows) is required")
    if not out["action"]["topic"]:
        out["action"]["topic"] = out["reference"]
    if out["stamps"] not in ("header", "publish", "log"):
        raise BagImportError(f"mapping: stamps must be header, publish or log, not {out['stamps']!r}")
    if out["out_of_order"] not in ("drop", "error"):
        raise BagImportError(f"mapping: out_of_order must be drop or error, not {out['out_of_order']!r}")
    if out["action"]["kind"] not in ("target", "action"):
        raise BagImportError(f"mapping: action.kind must be target or action, not {out['action']['kind']!r}")
    for section in ("sensors", "task_vars"):
        for name, spec in out[section].items():
            if not isinstance(spec, Mapping) or "topic" not in spec or "field" not in spec:
                raise BagImportError(f"mapping: {section}.{name} needs {{topic: ..., field: ...}}, got {spec!r}")
    return out


# ----------------------------------------------------------------- reading


@dataclass
class BagTopic:
    ros_type: str
    records: List[Tuple[int, int, bytes]] = field(default_factory=list)  # (log_time, publish_time, cdr)


def read_bag(path: str | os.PathLike, topics: Optional[Sequence[str]] = None) -> Tuple[Dict[str, BagTopic], bool]:
    """``({topic: BagTopic}, complete)`` of an MCAP bag, messages in log-time order.

    A bag without summary (its recorder was killed) is read with a streaming reader
    up to the last complete record; ``complete`` is then False."""
    from mcap.reader import NonSeekingReader, SeekingReader

    path = Path(path)
    if not path.is_file():
        raise BagImportError(f"{path}: bag file does not exist")
    wanted = None if topics is None else set(topics)
    out: Dict[str, BagTopic] = {}

    def add(schema, channel, message) -> None:
        entry = out.setdefault(channel.topic, BagTopic(schema.name if schema else ""))
        if wanted is not None and channel.topic not in wanted:
            return  # listed (so errors can name every topic of the bag), not kept
        if channel.message_encoding != "cdr":
            raise BagImportError(f"{path}: topic {channel.topic}: message encoding {channel.message_encoding!r}, "
                                 "not ROS 2 'cdr'")
        entry.records.append((message.log_time, message.publish_time, bytes(message.data)))

    with open(path, "rb") as f:
        try:
            reader = SeekingReader(f)
            summary = reader.get_summary()
            if summary is None:
                raise ValueError("no summary")
            for channel in summary.channels.values():  # topics with no message are still topics
                schema = summary.schemas.get(channel.schema_id)
                out.setdefault(channel.topic, BagTopic(schema.name if schema else ""))
            for schema, channel, message in reader.iter_messages(topics=topics, log_time_order=True):
                add(schema, channel, message)
            return out, True
        except BagImportError:
            raise
        except Exception:  # noqa: BLE001 - no footer/summary: a recording cut short
            out.clear()
        f.seek(0)
        try:
            for schema, channel, message in NonSeekingReader(f).iter_messages(log_time_order=False):
                add(schema, channel, message)
        except BagImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - the truncated tail
            if not any(entry.records for entry in out.values()):
                raise BagImportError(f"{path}: not a readable MCAP bag: {exc}") from exc
    for entry in out.values():
        entry.records.sort(key=lambda r: r[0])
    return out, False


def _numeric(value: Any, where: str) -> np.ndarray:
    from robotrl.real import messages as m

    if isinstance(value, m.Quaternion):
        return np.array([value.w, value.x, value.y, value.z])  # MuJoCo order
    if isinstance(value, m.Vector3):
        return value.to_numpy()
    if isinstance(value, m.Float64MultiArray):
        return np.asarray(value.data, np.float64)
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).reshape(-1)
    if isinstance(value, (bool, int, float, np.floating, np.integer)):
        return np.array([float(value)])
    raise BagImportError(f"{where}: is a {type(value).__name__}, not a number, vector or quaternion")


def _extract(msg, spec_field, where: str) -> np.ndarray:
    paths = spec_field if isinstance(spec_field, (list, tuple)) else [spec_field]
    parts = []
    for p in paths:
        value = msg
        for attr in str(p).split("."):
            if not hasattr(value, attr) or attr.startswith("_"):
                raise BagImportError(f"{where}: {type(msg).ROS_TYPE} has no field {p!r}")
            value = getattr(value, attr)
        parts.append(_numeric(value, f"{where} field {p!r}"))
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass
class Stream:
    """One topic's messages after stamp checks: stamps (ns, increasing) and messages."""

    topic: str
    stamps: np.ndarray
    msgs: list
    dropped: int


def _decode(bag: Dict[str, BagTopic], topic: str, role: str, stamps: str, out_of_order: str,
            expected_type: Optional[str], path: Path) -> Stream:
    from robotrl.real.dds_transport import from_cdr
    from robotrl.real.messages import message_type

    if topic not in bag:
        have = ", ".join(sorted(bag)) or "none"
        raise BagImportError(f"{path}: topic {topic} ({role}) is not in the bag; the bag has: {have}")
    entry = bag[topic]
    if not entry.records:
        raise BagImportError(f"{path}: topic {topic} ({role}) has no messages")
    try:
        cls = message_type(entry.ros_type)
    except ValueError:
        raise BagImportError(f"{path}: topic {topic} ({role}) has type {entry.ros_type!r}, which "
                             "robotrl.real.messages cannot decode") from None
    if expected_type and cls is not message_type(expected_type):
        raise BagImportError(f"{path}: topic {topic} ({role}) has type {entry.ros_type}, expected {expected_type}")
    kept_stamps, msgs, dropped, last = [], [], 0, None
    for i, (log_ns, pub_ns, data) in enumerate(entry.records):
        try:
            msg = from_cdr(data, cls)
        except Exception as exc:  # noqa: BLE001
            raise BagImportError(f"{path}: topic {topic}: message {i} does not decode as {entry.ros_type}: {exc}") from None
        header = getattr(msg, "header", None)
        if stamps == "log":
            t = log_ns
        elif stamps == "header" and header is not None:
            t = header.stamp.to_nanoseconds()
        else:
            t = pub_ns
        if last is not None and t <= last:
            if out_of_order == "error":
                raise BagImportError(
                    f"{path}: topic {topic}: message {i} is stamped {t * 1e-9:.6f} s, not after the previous "
                    f"message's {last * 1e-9:.6f} s (out-of-order stamps; out_of_order: drop skips such messages)")
            dropped += 1
            continue
        last = t
        kept_stamps.append(t)
        msgs.append(msg)
    return Stream(topic, np.asarray(kept_stamps, np.int64), msgs, dropped)


def _asof(stream: Stream, ref: np.ndarray, window_ns: int) -> Tuple[np.ndarray, np.ndarray]:
    """For each reference time, the index of the latest message stamped <= it, and
    whether that message exists and is at most ``window_ns`` old."""
    idx = np.searchsorted(stream.stamps, ref, side="right") - 1
    ok = idx >= 0
    age = ref - stream.stamps[np.maximum(idx, 0)]
    return np.maximum(idx, 0), ok & (age <= window_ns)


# ----------------------------------------------------------------- the import


def _joint_layout(task) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Names, qpos and qvel addresses of the task's measured (1-dof) joints."""
    import mujoco

    m = task.model
    names, qadr, vadr = [], [], []
    for j in range(m.njnt):
        jtype = int(m.jnt_type[j])
        if jtype == int(mujoco.mjtJoint.mjJNT_FREE):
            continue  # the floating base: not in a JointState
        if jtype not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
            raise BagImportError(f"task {task.name}: joint {m.joint(j).name} is a ball joint; JointState "
                                 "import supports hinge and slide joints")
        names.append(m.joint(j).name)
        qadr.append(int(m.jnt_qposadr[j]))
        vadr.append(int(m.jnt_dofadr[j]))
    return names, np.asarray(qadr), np.asarray(vadr)


def _action_inverse(task, spec: Mapping, path: Path) -> Tuple[List[str], np.ndarray, np.ndarray, str]:
    """(joint order of the command, offset, scale, where from): action = (value - offset) / scale."""
    n = task.num_actions
    if spec.get("kind") == "action":
        return list(task.action_names), np.zeros(n), np.ones(n), "raw actions"
    if spec.get("artifact"):
        from robotrl.policies.artifact import load_meta

        act = load_meta(spec["artifact"])["action"]
        names = list(act["joint_names"])
        scale = np.broadcast_to(np.asarray(act["scale"], np.float64), (len(names),)).copy()
        pose = np.asarray(act.get("default_pose") or np.zeros(len(names)), np.float64)
        offset = pose if act.get("type", "motor") == "position" else np.zeros(len(names))
        return names, offset, scale, f"artifact {spec['artifact']}"
    # The task's ctrl_from_action is affine in the action: read its offset and scale off it.
    from robotrl.sim.task import SimState

    nq, nv = task.model.nq, task.model.nv
    state = SimState(np.zeros((3, nq)), np.zeros((3, nv)), np.zeros((3, task.model.nsensordata)), np.zeros((3, n)))
    probe = np.stack([np.zeros(n), np.ones(n), -np.ones(n)])
    ctrl = np.asarray(task.ctrl_from_action(np, probe, state), np.float64)
    offset, scale = ctrl[0], ctrl[1] - ctrl[0]
    if not np.allclose(ctrl[2], offset - scale) or np.any(scale == 0):
        raise BagImportError(f"task {task.name}: ctrl_from_action is not an invertible affine map; "
                             "give action.kind: action or action.artifact")
    return list(task.action_names), offset, scale, f"task {task.name} ctrl_from_action"


def import_bag(bag: str | os.PathLike, task, mapping, task_config: Optional[Mapping] = None,
               domain: Optional[str] = None) -> Dataset:
    """Turn a ROS 2 bag into a dataset of ``task`` (a name or Task) by ``mapping``
    (a dict or YAML file, see the module docstring)."""
    import mujoco

    from robotrl.sim import make_task
    from robotrl.sim.task import Sampler, SimState

    path = Path(bag)
    cfg = load_mapping(mapping)
    if isinstance(task, str):
        if task not in SUPPORTED_TASKS:
            raise BagImportError(f"task {task!r}: bag import supports {', '.join(SUPPORTED_TASKS)} "
                                 "(the tasks whose state joint states and IMU reconstruct)")
        task = make_task(task, task_config)
    support = SUPPORTED_TASKS.get(task.name)
    if support is None:
        raise BagImportError(f"task {task.name!r}: bag import supports {', '.join(SUPPORTED_TASKS)}")
    model = task.model
    nu = task.num_actions

    # ---- the mapping against the task
    reset_q, reset_v, reset_vars = task.reset(np, Sampler(np.random.default_rng(0)), 1)
    missing = [s for s in support.sensors if s not in cfg["sensors"]]
    if missing:
        raise BagImportError(f"task {task.name} needs sensor(s) {missing} mapped (mapping 'sensors:', e.g. "
                             f"gyro: {{topic: /imu, field: angular_velocity}}, imu_quat: {{topic: /imu, field: orientation}})")
    missing = [v for v in support.task_vars if v not in cfg["task_vars"]]
    if missing:
        raise BagImportError(f"task {task.name} needs task variable(s) {missing} mapped (mapping 'task_vars:', "
                             f"e.g. {missing[0]}: {{topic: /{missing[0]}, field: data}})")
    for name in cfg["sensors"]:
        if name not in task._sensor_slices:  # noqa: SLF001
            raise BagImportError(f"mapping: sensors.{name}: task {task.name} has no sensor {name!r} "
                                 f"(sensors: {', '.join(task._sensor_slices)})")  # noqa: SLF001
    for name in cfg["task_vars"]:
        if name not in reset_vars or name in ("last_action", "prev_action"):
            settable = [k for k in reset_vars if k not in ("last_action", "prev_action")]
            raise BagImportError(f"mapping: task_vars.{name}: task {task.name} has no such variable "
                                 f"(mappable: {', '.join(settable) or 'none'}; last_action follows the actions)")
    dt = float(cfg["control_dt"] or task.config["control_dt"])
    window = int(round(float(cfg["freshness"]) * 1e9))
    gap = int(round(float(cfg["gap_periods"]) * dt * 1e9))

    # ---- read and decode the topics needed
    roles: Dict[str, str] = {cfg["reference"]: "reference", cfg["joints"]["topic"]: "joints",
                             cfg["action"]["topic"]: "action"}
    for section in ("sensors", "task_vars"):
        for name, spec in cfg[section].items():
            roles.setdefault(spec["topic"], f"{section}.{name}")
    if cfg["reset"]["topic"]:
        roles.setdefault(cfg["reset"]["topic"], "reset")
    contents, complete = read_bag(path, list(roles))
    expected = {cfg["joints"]["topic"]: _JOINT_STATE}
    if cfg["reset"]["topic"]:
        expected[cfg["reset"]["topic"]] = _BOOL
    streams = {t: _decode(contents, t, role, cfg["stamps"], cfg["out_of_order"], expected.get(t), path)
               for t, role in roles.items()}
    ref = streams[cfg["reference"]].stamps
    R = len(ref)
    valid = np.ones(R, bool)
    stale = {}

    def asof(topic: str) -> np.ndarray:
        idx, ok = _asof(streams[topic], ref, window)
        stale[topic] = int((~ok).sum())
        valid[:] &= ok
        return idx

    # joints -> qpos/qvel
    jnames, qadr, vadr = _joint_layout(task)
    rename = dict(cfg["joints"].get("rename") or {})
    msg_names = [rename.get(n, n) for n in jnames]
    js = streams[cfg["joints"]["topic"]]
    jpos = np.empty((len(js.msgs), len(jnames)))
    jvel = np.empty((len(js.msgs), len(jnames)))
    for i, msg in enumerate(js.msgs):
        where = f"{path}: topic {js.topic}: message {i} (stamp {js.stamps[i] * 1e-9:.6f} s)"
        index = {n: k for k, n in enumerate(msg.name)}
        absent = [n for n in msg_names if n not in index]
        if absent:
            raise BagImportError(f"{where}: joint(s) {absent} of task {task.name} are missing from the JointState "
                                 f"(it names {list(msg.name)}; map other names with joints.rename)")
        if len(msg.position) != len(msg.name) or len(msg.velocity) != len(msg.name):
            raise BagImportError(f"{where}: wrong size: {len(msg.name)} names but {len(msg.position)} positions "
                                 f"and {len(msg.velocity)} velocities")
        sel = [index[n] for n in msg_names]
        jpos[i], jvel[i] = msg.position[sel], msg.velocity[sel]
    jidx = asof(js.topic)

    def field_rows(spec: Mapping, width: int, what: str) -> np.ndarray:
        st = streams[spec["topic"]]
        vals = np.empty((len(st.msgs), width))
        for i, msg in enumerate(st.msgs):
            where = f"{path}: topic {st.topic}: message {i} (stamp {st.stamps[i] * 1e-9:.6f} s)"
            v = _extract(msg, spec["field"], where)
            if v.size != width:
                raise BagImportError(f"{where}: wrong size for {what}: field {spec['field']!r} has {v.size} values, "
                                     f"task {task.name} needs {width}")
            vals[i] = v
        return vals[asof(st.topic)]

    # actions
    aspec = cfg["action"]
    order, offset, scale, inverse_from = _action_inverse(task, aspec, path)
    unknown = [n for n in task.action_names if n not in order]
    if unknown:
        raise BagImportError(f"action: the command's joints {order} lack task joint(s) {unknown}")
    raw = field_rows({"topic": aspec["topic"], "field": aspec["field"]}, len(order), "the action")
    sel = [order.index(n) for n in task.action_names]
    action = ((raw - offset) / scale)[:, sel]
    clip = float(task.config["action_clip"])
    clipped = int((np.abs(action) > clip + 1e-9).any(axis=1).sum())
    action = np.clip(action, -clip, clip)

    sensor_rows = {name: field_rows(spec, task._sensor_slices[name].stop - task._sensor_slices[name].start,  # noqa: SLF001
                                    f"sensor {name}") for name, spec in cfg["sensors"].items()}
    var_rows = {name: field_rows(spec, int(np.asarray(reset_vars[name]).reshape(1, -1).shape[1]), f"task variable {name}")
                for name, spec in cfg["task_vars"].items()}

    # ---- episode breaks: invalid rows, gaps, resets
    brk = np.zeros(R, bool)  # brk[k]: row k starts a new episode
    brk[0] = True
    if R > 1:
        brk[1:] |= np.diff(ref) > gap
    gaps = int(brk[1:].sum()) if R > 1 else 0
    resets = 0
    if cfg["reset"]["topic"]:
        rs = streams[cfg["reset"]["topic"]]
        marks = rs.stamps[[bool(msg.data) for msg in rs.msgs]] if rs.msgs else np.zeros(0, np.int64)
        # A reset stamped in (t_{k-1}, t_k] starts an episode at row k.
        hit = np.searchsorted(ref, marks, side="left")
        hit = hit[(hit > 0) & (hit < R)]
        resets = int(len(np.unique(hit)))
        brk[hit] = True

    # ---- state, observations (all rows; invalid ones are dropped below)
    rows = np.flatnonzero(valid)
    seg_start = brk | ~valid
    seg_start[1:] |= ~valid[:-1]
    seg_id = np.cumsum(seg_start)
    qpos = np.tile(np.asarray(model.qpos0, np.float64), (R, 1))
    if np.asarray(reset_q).shape[1] == model.nq:
        qpos[:] = np.asarray(reset_q, np.float64)[0]  # e.g. the floating base at its spawn pose
    qvel = np.zeros((R, model.nv))
    qpos[:, qadr] = jpos[jidx]
    qvel[:, vadr] = jvel[jidx]
    data = mujoco.MjData(model)
    sensordata = np.zeros((R, model.nsensordata))
    for k in rows:  # kinematic sensors (end-effector pose, joint sensors) by a forward pass
        data.qpos[:], data.qvel[:] = qpos[k], qvel[k]
        mujoco.mj_forward(model, data)
        sensordata[k] = data.sensordata
    for name, vals in sensor_rows.items():
        sensordata[:, task._sensor_slices[name]] = vals  # noqa: SLF001
    def observe(seg_id):
        """State and observation terms given the episode ids (last_action restarts at 0)."""
        same = np.zeros(R, bool)
        same[1:] = seg_id[1:] == seg_id[:-1]
        last, prev = np.zeros((R, nu)), np.zeros((R, nu))
        last[1:][same[1:]] = action[:-1][same[1:]]
        both = np.zeros(R, bool)
        both[2:] = same[2:] & same[1:-1]
        prev[2:][both[2:]] = action[:-2][both[2:]]
        tv = {k: np.repeat(np.asarray(v, np.float64), R, axis=0) for k, v in reset_vars.items()}
        tv.update(var_rows)
        if "last_action" in tv:
            tv["last_action"] = last
        if "prev_action" in tv:
            tv["prev_action"] = prev
        bare = SimState(qpos, qvel, sensordata, np.zeros((R, nu)), tv)
        state = SimState(qpos, qvel, sensordata, np.asarray(task.ctrl_from_action(np, last, bare), np.float64), tv)
        return same, last, state, task.observation_terms(np, state)

    same1, last, state, terms = observe(seg_id)
    jump = cfg["reset"]["jump"]
    jumps = 0
    if jump:
        term = jump.get("term") if isinstance(jump, Mapping) else None
        if term not in terms or "threshold" not in jump:
            raise BagImportError(f"mapping: reset.jump needs {{term, threshold}} with term an observation term of "
                                 f"{task.name} ({', '.join(terms)}), got {jump!r}")
        values = np.asarray(terms[term], np.float64).reshape(R, -1)
        j = np.zeros(R, bool)
        j[1:] = np.abs(np.diff(values, axis=0)).max(axis=1) > float(jump["threshold"])
        j &= same1  # only within a run of valid rows
        jumps = int(j.sum())
        if jumps:
            seg_start |= j
            same1, last, state, terms = observe(np.cumsum(seg_start))
    groups = {g: list(task.observation_groups[g]) for g in support.groups}
    obs = {g: np.concatenate([np.asarray(terms[t], np.float64).reshape(R, -1) for t in names], axis=1)
           for g, names in groups.items()}
    layout = {g: [[t, int(np.asarray(terms[t]).reshape(R, -1).shape[1])] for t in names] for g, names in groups.items()}

    # ---- rewards at the next state, with the action taken
    if support.reward:
        rew_terms = task.reward_terms(np, state, last)
        scales = task.config["reward_scales"]
        reward_next = np.zeros(R)
        for name, value in rew_terms.items():
            reward_next += np.asarray(value, np.float64) * float(scales.get(name, 0.0))
        cost_next = np.asarray(task.cost(np, state, last), np.float64)
        term_next = np.asarray(task.terminated(np, state), bool)
    else:
        reward_next, cost_next, term_next = np.zeros(R), np.zeros(R), np.zeros(R, bool)

    # ---- transitions k -> k+1 within a segment of valid rows; stop at a terminal state
    sel_k: List[int] = []
    terminated, truncated = [], []
    after_terminal = 0
    k = 0
    while k < R - 1:
        if not (valid[k] and valid[k + 1] and same1[k + 1]):
            k += 1
            continue
        sel_k.append(k)
        done_term = bool(term_next[k + 1])
        ends = done_term or not (k + 2 < R and valid[k + 2] and same1[k + 2])
        terminated.append(done_term)
        truncated.append(ends and not done_term)
        k += 1
        if done_term:
            while k + 1 < R and valid[k + 1] and same1[k + 1]:
                after_terminal += 1
                k += 1
    if not sel_k:
        raise BagImportError(
            f"{path}: no transitions: {R} reference messages on {cfg['reference']}, {int(valid.sum())} with fresh "
            f"inputs (stale/missing per topic: {stale}; freshness {cfg['freshness']} s), {gaps} gaps, {resets} resets")
    ks = np.asarray(sel_k)
    ds_obs = {g: a[ks].astype(np.float32) for g, a in obs.items()}
    ds_next = {g: a[ks + 1].astype(np.float32) for g, a in obs.items()}

    from robotrl.datasets.importers import task_description
    from robotrl.export import source_revision

    desc = task_description(task)
    desc.pop("policy_width"), desc.pop("num_actions")
    desc["obs_layout"] = layout
    dropped = {"out_of_order": {t: s.dropped for t, s in streams.items() if s.dropped},
               "stale_rows": int((~valid).sum()), "stale_by_topic": {t: n for t, n in stale.items() if n},
               "after_terminal": after_terminal}
    meta = {
        **desc,
        "env_id": None, "sim": "import", "domain": domain or "unknown", "dynamics_shift": None,
        "reward_computed": bool(support.reward),
        "source": {
            "kind": "bag", "path": str(path.resolve()), "complete": complete, "mapping": cfg,
            "reference_messages": int(R), "gaps": gaps, "resets": resets, "jumps": jumps,
            "dropped": dropped, "clipped_action_rows": clipped, "action_inverse": inverse_from,
            "reward": ("computed by the task's reward_terms, cost and terminated from the reconstructed state"
                       if support.reward else support.reason),
        },
        "robotrl_revision": source_revision(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    ds = Dataset(
        obs=ds_obs, action=action[ks].astype(np.float32), reward=reward_next[ks + 1].astype(np.float32),
        cost=cost_next[ks + 1].astype(np.float32), next_obs=ds_next,
        terminated=np.asarray(terminated, bool), truncated=np.asarray(truncated, bool), meta=meta,
    )
    validate(ds, source=str(path))
    return ds
