"""Target ("real") domains: named dynamics shifts of any task.

Hybrid offline/online training has two worlds: the simulator (the task as
written) and a target domain whose dynamics differ, standing in for the real
robot. The target domain is where datasets come from and where evaluation
measures. A shift is applied to the task's ``MjModel`` in memory when the task is
built, so every backend that steps ``task.model`` (mujoco, mjx) sees it.

A domain is given by name (``DOMAINS``) or as a mapping of the fields of
:class:`DynamicsShift`; in a task config it sits under ``dynamics_shift``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

import mujoco
import numpy as np


@dataclass(frozen=True)
class DynamicsShift:
    gravity: float = 1.0  # multiplier on the gravity vector
    friction: float = 1.0  # multiplier on every geom's sliding friction
    mass: float = 1.0  # multiplier on every link's mass and inertia
    damping: float = 1.0  # multiplier on joint damping
    actuator_gain: float = 1.0  # multiplier on actuator force (gain and bias)
    # Std of Gaussian noise added to every action before it reaches the motors
    # (in action units, before clipping), as H2O's "joint noise" target domain.
    joint_noise: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping) -> "DynamicsShift":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise KeyError(f"unknown dynamics shift fields {sorted(unknown)}; known: {', '.join(sorted(known))}")
        shift = cls(**{k: float(v) for k, v in values.items()})
        for f in fields(cls):
            v = getattr(shift, f.name)
            if not np.isfinite(v) or (v <= 0 if f.name != "joint_noise" else v < 0):
                raise ValueError(f"dynamics shift {f.name}={v} is out of range (scales > 0, joint_noise >= 0)")
        return shift

    @property
    def is_identity(self) -> bool:
        return self == DynamicsShift()

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v != getattr(DynamicsShift(), k)}


# The shifts of the hybrid-RL literature (H2O's gravity / friction / joint-noise
# experiments) plus the usual sim-to-real suspects.
DOMAINS: dict[str, DynamicsShift] = {
    "gravity_2x": DynamicsShift(gravity=2.0),
    "gravity_0.5x": DynamicsShift(gravity=0.5),
    "friction_0.3x": DynamicsShift(friction=0.3),
    "friction_2x": DynamicsShift(friction=2.0),
    "mass_1.5x": DynamicsShift(mass=1.5),
    "damping_3x": DynamicsShift(damping=3.0),
    "gain_0.7x": DynamicsShift(actuator_gain=0.7),
    "joint_noise_0.1": DynamicsShift(joint_noise=0.1),
}


def resolve_domain(domain: str | Mapping | DynamicsShift | None) -> DynamicsShift:
    """A domain name, a mapping of shift fields, or None (the simulator itself)."""
    if domain is None or domain in ("", "sim", "none"):
        return DynamicsShift()
    if isinstance(domain, DynamicsShift):
        return domain
    if isinstance(domain, str):
        if domain not in DOMAINS:
            raise KeyError(f"unknown target domain {domain!r}; named domains: {', '.join(DOMAINS)} (or give a mapping of {', '.join(f.name for f in fields(DynamicsShift))})")
        return DOMAINS[domain]
    return DynamicsShift.from_mapping(domain)


def domain_task_config(config: Mapping | None, domain) -> dict:
    """The task config of ``domain``: ``config`` with its ``dynamics_shift`` set."""
    out = dict(config or {})
    shift = resolve_domain(domain)
    if not shift.is_identity:
        out["dynamics_shift"] = shift.as_dict()
    return out


def apply_shift(model: mujoco.MjModel, shift: DynamicsShift) -> None:
    """Scale the model's physical parameters in place (joint noise is applied by
    the backends at every step, see ``Task.joint_noise``)."""
    model.opt.gravity[:] = model.opt.gravity * shift.gravity
    model.geom_friction[:, 0] *= shift.friction
    model.body_mass[:] *= shift.mass
    model.body_inertia[:] *= shift.mass
    model.dof_damping[:] *= shift.damping
    # Scaling gain and bias together scales the force of motors and PD servos alike.
    model.actuator_gainprm[:, :3] *= shift.actuator_gain
    model.actuator_biasprm[:, :3] *= shift.actuator_gain
