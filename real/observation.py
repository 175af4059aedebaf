"""The artifact's observation, assembled from robot messages exactly as in simulation.

``policy.yaml`` names the observation terms in order (``ang_vel``, ``gravity``,
``joint_pos`` ...) with their widths; what a term *means* (which sensor, which scale,
which offset) is written in the sim task's ``observation_terms``. This module is the
robot-side twin of those functions: a registry of terms computed from a
:class:`RobotInputs` snapshot (joint states mapped to the artifact's joint order by
name, IMU, velocity command, last action ...), with the per-task observation scales
of the sim tasks. ``tests/real/test_policy_node.py`` checks every supported task's
terms against the task's own ``observation_terms`` on the same physics state, so the
two cannot drift apart silently.

Nothing here imports MuJoCo or the sim package: a robot computer runs it with numpy.

Adding a robot or task: register its terms with :func:`register_term` and its scales
in :data:`TASK_SCALES` (or give ``observation_scales`` to the node).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "RobotInputs", "Term", "TERMS", "TASK_SCALES", "register_term", "ObservationAssembler",
    "projected_gravity_xyzw", "INPUTS",
]

# The inputs a term can need, each fed by one topic of the policy node.
INPUTS = ("joint_state", "imu", "command", "target", "ee_pos")


@dataclass
class RobotInputs:
    """One snapshot of what the robot senses, in the artifact's joint order."""

    joint_pos: np.ndarray  # rad, artifact joint order
    joint_vel: np.ndarray  # rad/s
    last_action: np.ndarray  # the previous (clipped) policy action
    imu_quat_xyzw: Optional[np.ndarray] = None  # sensor_msgs/Imu orientation (ROS order x, y, z, w)
    imu_gyro: Optional[np.ndarray] = None  # rad/s, IMU frame
    command: np.ndarray = field(default_factory=lambda: np.zeros(3))  # vx, vy (m/s), yaw rate (rad/s)
    target: Optional[np.ndarray] = None  # e.g. reach's 3-D target (m)
    ee_pos: Optional[np.ndarray] = None  # end-effector position (m)


@dataclass(frozen=True)
class Term:
    """An observation term: its width for ``n`` joints, what it reads, how it is computed.

    ``fn(inputs, ctx)`` returns a 1-D array; ``ctx`` has ``default_pose`` and the
    term's ``scale`` (a float or an array broadcast over the term).
    """

    name: str
    size: Callable[[int], int]
    needs: Tuple[str, ...]
    fn: Callable[[RobotInputs, "TermContext"], np.ndarray]


@dataclass(frozen=True)
class TermContext:
    default_pose: np.ndarray
    scale: np.ndarray


TERMS: Dict[str, Term] = {}


def register_term(name: str, size: Callable[[int], int], needs: Sequence[str]):
    """Decorator: ``@register_term("joint_pos", lambda n: n, ["joint_state"])``."""
    unknown = set(needs) - set(INPUTS)
    if unknown:
        raise ValueError(f"term {name}: unknown inputs {sorted(unknown)}; known: {INPUTS}")

    def wrap(fn):
        TERMS[name] = Term(name, size, tuple(needs), fn)
        return fn

    return wrap


def projected_gravity_xyzw(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit gravity (0, 0, -1) in the body frame of a ROS quaternion (x, y, z, w).

    The same formula as ``robotrl.sim.tasks.shaping.projected_gravity`` (which takes
    MuJoCo's w, x, y, z order).
    """
    x, y, z, w = (float(v) for v in quat_xyzw)
    return np.array([2.0 * (w * y - x * z), -2.0 * (y * z + w * x), 2.0 * (x * x + y * y) - 1.0])


# Per-task observation scales: the constants of each sim task's observation_terms
# (the term is multiplied by the scale). Terms not listed have scale 1.
TASK_SCALES: Dict[str, Dict[str, object]] = {
    # sim/tasks/quadruped_walk.py: ANG_VEL_SCALE, JOINT_VEL_SCALE, COMMAND_SCALE
    "quadruped_walk": {"ang_vel": 0.25, "joint_vel": 0.05, "command": (2.0, 2.0, 0.25)},
    # sim/tasks/reach.py: joint_vel * 0.1
    "reach": {"joint_vel": 0.1},
    "pendulum_swingup": {},
}


@register_term("joint_pos", lambda n: n, ["joint_state"])
def _joint_pos(x: RobotInputs, c: TermContext) -> np.ndarray:
    return (x.joint_pos - c.default_pose) * c.scale


@register_term("joint_vel", lambda n: n, ["joint_state"])
def _joint_vel(x: RobotInputs, c: TermContext) -> np.ndarray:
    return x.joint_vel * c.scale


@register_term("last_action", lambda n: n, [])
def _last_action(x: RobotInputs, c: TermContext) -> np.ndarray:
    return x.last_action * c.scale


@register_term("ang_vel", lambda n: 3, ["imu"])
def _ang_vel(x: RobotInputs, c: TermContext) -> np.ndarray:
    return x.imu_gyro * c.scale


@register_term("gravity", lambda n: 3, ["imu"])
def _gravity(x: RobotInputs, c: TermContext) -> np.ndarray:
    return projected_gravity_xyzw(x.imu_quat_xyzw) * c.scale


@register_term("command", lambda n: 3, ["command"])
def _command(x: RobotInputs, c: TermContext) -> np.ndarray:
    return x.command * c.scale


@register_term("pendulum", lambda n: 3, ["joint_state"])
def _pendulum(x: RobotInputs, c: TermContext) -> np.ndarray:
    # sim/tasks/pendulum_swingup.py: [cos(angle), sin(angle), angvel] of the hinge.
    q, qd = float(x.joint_pos[0]), float(x.joint_vel[0])
    return np.array([np.cos(q), np.sin(q), qd]) * c.scale


@register_term("target", lambda n: 3, ["target"])
def _target(x: RobotInputs, c: TermContext) -> np.ndarray:
    return x.target * c.scale


@register_term("ee_to_target", lambda n: 3, ["target", "ee_pos"])
def _ee_to_target(x: RobotInputs, c: TermContext) -> np.ndarray:
    return (x.target - x.ee_pos) * c.scale


class ObservationAssembler:
    """Builds the artifact's observation vector from :class:`RobotInputs`.

    ``meta`` is the artifact's ``policy.yaml`` (as :func:`load_meta` returns it);
    ``scales`` overrides :data:`TASK_SCALES` per term. Raises ``ValueError`` naming
    the term if the artifact uses a term this registry does not know or whose width
    differs from the registry's.
    """

    def __init__(self, meta: Mapping, scales: Optional[Mapping[str, object]] = None):
        self.task = str(meta["task"])
        self.joint_names = list(meta["action"]["joint_names"])
        n = len(self.joint_names)
        self.default_pose = np.asarray(meta["action"]["default_pose"], dtype=np.float64)
        task_scales = dict(TASK_SCALES.get(self.task, {}))
        task_scales.update(scales or {})
        self.layout = [(str(t["name"]), int(t["size"])) for t in meta["observation"]["terms"]]
        self.size = sum(w for _, w in self.layout)
        self._terms = []
        needs = set()
        for name, width in self.layout:
            term = TERMS.get(name)
            if term is None:
                raise ValueError(f"observation term {name!r} of the {self.task} artifact has no robot-side "
                                 f"definition; known terms: {', '.join(sorted(TERMS))} "
                                 "(register it in robotrl.real.observation)")
            if term.size(n) != width:
                raise ValueError(f"observation term {name!r}: the artifact says width {width}, the robot-side "
                                 f"term gives {term.size(n)} for {n} joints")
            scale = np.broadcast_to(np.asarray(task_scales.get(name, 1.0), dtype=np.float64), (width,)).copy()
            self._terms.append((term, TermContext(self.default_pose, scale)))
            needs.update(term.needs)
        self.needs = frozenset(needs)
        if self.task not in TASK_SCALES and not scales:
            # Scales default to 1: right for terms without scaling, wrong otherwise.
            self.unknown_task = True
        else:
            self.unknown_task = False

    def __call__(self, inputs: RobotInputs) -> np.ndarray:
        parts = [term.fn(inputs, ctx) for term, ctx in self._terms]
        return np.concatenate(parts).astype(np.float64, copy=False)

    def describe(self) -> str:
        return ", ".join(f"{name}:{w}" for name, w in self.layout)
