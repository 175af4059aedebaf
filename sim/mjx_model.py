"""A task's model on MJX: what MJX cannot run, the physics step, per-env fields.

* :func:`put_task_model` places the model on a device, or raises
  :class:`MjxUnsupportedError` naming the task and the model feature MJX lacks.
* :func:`physics_step` is ``mj_step`` with MuJoCo C's semantics in the two places
  where MJX's own ``mjx.step`` differs from it (see its docstring), so the same task
  gives the same trajectory on the mujoco and mjx backends.
* :func:`draw_model_fields` and :func:`batched_model` give every env its own
  randomized parameters in the Brax / MuJoCo Playground style: a batched copy of
  the randomized fields and ``in_axes`` for ``jax.vmap`` built by a tree map, the
  other fields shared.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from robotrl.sim.randomization import Nominal, draw_factors, randomized_fields
from robotrl.sim.task import KeySampler, Task

# The fields randomized_fields() writes; batched per env when randomization is on.
RANDOMIZED_FIELDS = (
    "geom_friction",
    "body_mass",
    "body_inertia",
    "body_ipos",
    "dof_damping",
    "dof_armature",
    "actuator_gainprm",
    "actuator_biasprm",
)

_MJX_INTEGRATORS = {int(i) for i in mjx.IntegratorType}


class MjxUnsupportedError(NotImplementedError):
    """The task's model uses a feature MJX cannot run."""


def unsupported_feature(model: mujoco.MjModel) -> str | None:
    """A model feature MJX would refuse or silently ignore, or None.

    Only what ``mjx.put_model`` lets through or words obscurely is checked here;
    everything else it refuses is reported by :func:`put_task_model`.
    """
    integrator = int(model.opt.integrator)
    if integrator not in _MJX_INTEGRATORS:
        return (
            f"integrator {mujoco.mjtIntegrator(integrator).name} "
            "(MJX integrates with Euler, RK4 or implicitfast)"
        )
    if model.opt.noslip_iterations > 0:
        return "the noslip solver (opt.noslip_iterations > 0; MJX would silently skip it)"
    return None


def put_task_model(task: Task, device: jax.Device | None = None) -> tuple[mjx.Model, mjx.Data]:
    """``task.model`` as an ``mjx.Model`` with one fresh ``mjx.Data``; a clear
    error if MJX cannot run the model."""
    declared = getattr(task, "mjx_unsupported", None)
    if declared:
        raise MjxUnsupportedError(f"task {task.name} cannot run on MJX: {declared}")
    feature = unsupported_feature(task.model)
    if feature:
        raise MjxUnsupportedError(f"task {task.name} cannot run on MJX: its model ({task.asset}) uses {feature}")
    try:
        model = mjx.put_model(task.model, device=device, impl="jax")
        return model, mjx.make_data(model, device=device, impl="jax")
    except NotImplementedError as e:
        raise MjxUnsupportedError(
            f"task {task.name} cannot run on MJX: its model ({task.asset}) uses a feature MJX lacks: {e}"
        ) from e


def _without_clamped_actuator_damping(m: mjx.Model, d: mjx.Data) -> mjx.Model:
    """The model implicitfast should differentiate: MuJoCo C leaves an actuator
    whose force is clamped at its forcerange out of the velocity derivative (a
    saturated motor no longer acts as a damper); MJX 3.x keeps it in, which makes
    saturated position servos (quadruped, reach) move differently."""
    limited = np.asarray(m.actuator_forcelimited, dtype=bool)
    if not limited.any():
        return m
    force = d.actuator_force
    low, high = m.actuator_forcerange[:, 0], m.actuator_forcerange[:, 1]
    keep = jnp.where(limited & ((force <= low) | (force >= high)), 0.0, 1.0).astype(force.dtype)
    return m.tree_replace(
        {
            "actuator_gainprm": m.actuator_gainprm.at[:, 2].multiply(keep),
            "actuator_biasprm": m.actuator_biasprm.at[:, 2].multiply(keep),
        }
    )


def physics_step(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """One physics step of one env, as ``mj_step`` computes it.

    ``mjx.step`` is ``forward`` plus the integrator; two integrators are adjusted:
    RK4 keeps the sensor readings of the step's first forward pass (MuJoCo C skips
    sensors in the later Runge-Kutta stages; MJX would return the last stage's),
    and implicitfast differentiates only unclamped actuators (see
    :func:`_without_clamped_actuator_damping`).
    """
    d = mjx.forward(m, d)
    integrator = m.opt.integrator
    if integrator == mjx.IntegratorType.EULER:
        return mjx.euler(m, d)
    if integrator == mjx.IntegratorType.RK4:
        return mjx.rungekutta4(m, d).replace(sensordata=d.sensordata)
    if integrator == mjx.IntegratorType.IMPLICITFAST:
        return mjx.implicit(_without_clamped_actuator_damping(m, d), d)
    raise MjxUnsupportedError(f"integrator {integrator}")


def diverged(d: mjx.Data) -> jax.Array:
    """Per env: the state is not finite or beyond ``mjMAXVAL``, where MuJoCo C
    declares the simulation unstable (mj_checkPos/Vel/Acc) and resets it."""

    def bad(x):
        return (~jnp.isfinite(x) | (jnp.abs(x) > mujoco.mjMAXVAL)).any(axis=-1)

    return bad(d.qpos) | bad(d.qvel) | bad(d.qacc)


# ------------------------------------------------------------ randomization
def draw_model_fields(key: jax.Array, num: int, nominal: Nominal, dr: dict) -> dict[str, jax.Array]:
    """Randomized model fields for ``num`` envs, each with a leading env axis,
    drawn and computed exactly as the mujoco backend does per env."""

    def one_env(env_key):
        sampler = KeySampler(env_key)
        drawn = draw_factors(lambda low, high, size: sampler.uniform(low, high, size), dr)
        return randomized_fields(jnp, nominal, drawn)

    return jax.vmap(one_env)(jax.random.split(key, num))


def nominal_fields(nominal: Nominal) -> dict[str, np.ndarray]:
    """The unrandomized values of :data:`RANDOMIZED_FIELDS`."""
    return {name: getattr(nominal, name) for name in RANDOMIZED_FIELDS}


def batched_model(model: mjx.Model, fields: dict[str, jax.Array]) -> tuple[mjx.Model, mjx.Model]:
    """``model`` with ``fields`` (leading env axis) swapped in, and the matching
    ``in_axes`` for ``jax.vmap``: 0 for those fields, None (shared) for the rest."""
    in_axes = jax.tree_util.tree_map(lambda _: None, model)
    if not fields:
        return model, in_axes
    in_axes = in_axes.tree_replace({name: 0 for name in fields})
    dtypes = {name: getattr(model, name).dtype for name in fields}
    return model.tree_replace({k: v.astype(dtypes[k]) for k, v in fields.items()}), in_axes
