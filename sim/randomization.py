"""Domain randomization as functions of (model, nominal values, rng, ranges).

Each env owns its physical parameters (an ``MjModel`` copy on the mujoco backend,
a row of batched ``mjx.Model`` fields on MJX); at reset they are drawn afresh
around the nominal model, so the envs see a spread of dynamics. Both backends
draw with :func:`draw_factors` and apply :func:`randomized_fields`, so they
randomize the same way. The batched-array parts (latency, pushes, observation
noise) live in the backends.
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


def draw_factors(uniform, dr: dict) -> dict:
    """One env's randomization factors, drawn with ``uniform(low, high, size)``.

    Both backends draw through this (numpy's ``Generator.uniform`` here, a JAX
    key in the MJX backend), so they randomize the same parameters over the same
    ranges.
    """

    def draw(name, size=None):
        low, high = float(dr[name][0]), float(dr[name][1])
        if low > high:
            raise ValueError(f"randomization range {name}={dr[name]} has low > high")
        return uniform(low, high, size)

    return {
        "friction": draw("friction"),
        "mass_scale": draw("mass_scale"),
        "added_mass": draw("added_mass"),
        "com_offset": draw("com_offset", 3),
        "damping_scale": draw("damping_scale"),
        "armature_scale": draw("armature_scale"),
        "kp_scale": draw("kp_scale"),
        "kd_scale": draw("kd_scale"),
        "motor_strength": draw("motor_strength"),
    }


def randomized_fields(xp, nominal: Nominal, drawn: dict) -> dict:
    """The model fields (by ``MjModel`` attribute name) that ``drawn`` factors give
    one env, computed with array namespace ``xp`` and without in-place writes, so
    the MJX backend can trace it."""
    friction = nominal.geom_friction[:, :1] * drawn["friction"]
    fields = {"geom_friction": xp.concatenate([friction, nominal.geom_friction[:, 1:]], axis=1)}

    mass_scale = drawn["mass_scale"]
    body_mass = nominal.body_mass * mass_scale
    body_inertia = nominal.body_inertia * mass_scale
    body_ipos = nominal.body_ipos
    root = nominal.root_body
    if root > 0 and nominal.body_mass[root] > 0:
        root_mass = nominal.body_mass[root] * mass_scale
        new_mass = xp.maximum(root_mass + drawn["added_mass"], 1e-3)
        is_root = np.arange(len(nominal.body_mass)) == root
        body_mass = xp.where(is_root, new_mass, body_mass)
        root_inertia = nominal.body_inertia[root] * mass_scale * new_mass / root_mass
        body_inertia = xp.where(is_root[:, None], root_inertia, body_inertia)
        body_ipos = xp.where(is_root[:, None], nominal.body_ipos[root] + drawn["com_offset"], body_ipos)
    fields.update(body_mass=body_mass, body_inertia=body_inertia, body_ipos=body_ipos)

    fields["dof_damping"] = nominal.dof_damping * drawn["damping_scale"]
    fields["dof_armature"] = nominal.dof_armature * drawn["armature_scale"]

    # Position actuators: force = gain*ctrl + bias1*qpos + bias2*qvel with
    # gain = kp, bias1 = -kp, bias2 = -kd. Motor strength scales the whole force.
    gain, bias = nominal.actuator_gainprm, nominal.actuator_biasprm
    strength = drawn["motor_strength"]
    is_position = (bias[:, 1] != 0) & np.isclose(gain[:, 0], -bias[:, 1])
    kp = xp.where(is_position, drawn["kp_scale"], 1.0)
    kd = xp.where(is_position, drawn["kd_scale"], 1.0)
    ones = xp.ones((len(gain), gain.shape[1] - 1))
    fields["actuator_gainprm"] = gain * xp.concatenate([(kp * strength)[:, None], ones], axis=1)
    fields["actuator_biasprm"] = bias * xp.concatenate(
        [ones[:, :1], (kp * strength)[:, None], (kd * strength)[:, None], ones[:, 2:]], axis=1
    )
    return fields


def randomize_model(model: mujoco.MjModel, nominal: Nominal, rng: np.random.Generator, dr: dict) -> dict:
    """Draw new physical parameters for one env's model in place.

    Returns the drawn factors by name (for logging and tests).
    """
    drawn = draw_factors(lambda low, high, size: rng.uniform(low, high, size=size), dr)
    for name, value in randomized_fields(np, nominal, drawn).items():
        getattr(model, name)[:] = value
    return drawn
