"""Domain randomization as functions of (model, nominal values, rng, ranges).

Each env owns an ``MjModel`` copy; at reset its physical parameters are drawn
afresh around the nominal model, so the envs see a spread of dynamics. The
batched-array parts (latency, pushes, observation noise) live in the backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class Nominal:
    """The unrandomized model parameters randomization draws around."""

    geom_friction: np.ndarray
    body_mass: np.ndarray
    body_inertia: np.ndarray
    body_ipos: np.ndarray
    dof_damping: np.ndarray
    dof_armature: np.ndarray
    actuator_gainprm: np.ndarray
    actuator_biasprm: np.ndarray
    root_body: int

    @classmethod
    def of(cls, model: mujoco.MjModel) -> "Nominal":
        # The root body is the first child of the world (the torso of a robot).
        roots = [b for b in range(1, model.nbody) if model.body_parentid[b] == 0]
        return cls(
            geom_friction=model.geom_friction.copy(),
            body_mass=model.body_mass.copy(),
            body_inertia=model.body_inertia.copy(),
            body_ipos=model.body_ipos.copy(),
            dof_damping=model.dof_damping.copy(),
            dof_armature=model.dof_armature.copy(),
            actuator_gainprm=model.actuator_gainprm.copy(),
            actuator_biasprm=model.actuator_biasprm.copy(),
            root_body=roots[0] if roots else 0,
        )


def _uniform(rng: np.random.Generator, bounds, size=None):
    low, high = float(bounds[0]), float(bounds[1])
    if low > high:
        raise ValueError(f"randomization range {bounds} has low > high")
    return rng.uniform(low, high, size=size)


def randomize_model(model: mujoco.MjModel, nominal: Nominal, rng: np.random.Generator, dr: dict) -> dict:
    """Draw new physical parameters for one env's model in place.

    Returns the drawn factors by name (for logging and tests).
    """
    drawn = {
        "friction": _uniform(rng, dr["friction"]),
        "mass_scale": _uniform(rng, dr["mass_scale"]),
        "added_mass": _uniform(rng, dr["added_mass"]),
        "com_offset": _uniform(rng, dr["com_offset"], size=3),
        "damping_scale": _uniform(rng, dr["damping_scale"]),
        "armature_scale": _uniform(rng, dr["armature_scale"]),
        "kp_scale": _uniform(rng, dr["kp_scale"]),
        "kd_scale": _uniform(rng, dr["kd_scale"]),
        "motor_strength": _uniform(rng, dr["motor_strength"]),
    }
    model.geom_friction[:, 0] = nominal.geom_friction[:, 0] * drawn["friction"]

    mass_scale = drawn["mass_scale"]
    model.body_mass[:] = nominal.body_mass * mass_scale
    model.body_inertia[:] = nominal.body_inertia * mass_scale
    root = nominal.root_body
    if root > 0 and nominal.body_mass[root] > 0:
        root_mass = nominal.body_mass[root] * mass_scale
        new_mass = max(root_mass + drawn["added_mass"], 1e-3)
        model.body_mass[root] = new_mass
        model.body_inertia[root] = nominal.body_inertia[root] * mass_scale * new_mass / root_mass
        model.body_ipos[root] = nominal.body_ipos[root] + drawn["com_offset"]

    model.dof_damping[:] = nominal.dof_damping * drawn["damping_scale"]
    model.dof_armature[:] = nominal.dof_armature * drawn["armature_scale"]

    # Position actuators: force = gain*ctrl + bias1*qpos + bias2*qvel with
    # gain = kp, bias1 = -kp, bias2 = -kd. Motor strength scales the whole force.
    gain = nominal.actuator_gainprm.copy()
    bias = nominal.actuator_biasprm.copy()
    strength = drawn["motor_strength"]
    is_position = (bias[:, 1] != 0) & np.isclose(gain[:, 0], -bias[:, 1])
    kp = np.where(is_position, drawn["kp_scale"], 1.0)
    kd = np.where(is_position, drawn["kd_scale"], 1.0)
    gain[:, 0] *= kp * strength
    bias[:, 1] *= kp * strength
    bias[:, 2] *= kd * strength
    model.actuator_gainprm[:] = gain
    model.actuator_biasprm[:] = bias
    return drawn
