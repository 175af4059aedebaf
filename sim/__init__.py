"""Simulated backends behind one batched env interface, tasks and randomization."""
from __future__ import annotations

from robotrl.sim.task import Task, make_task, task_names


# Backends whose tasks are other libraries' env names rather than robotrl tasks.
EXTERNAL_SIMS = ("gymnasium", "brax")


def make_env(task, num_envs: int, sim: str = "mujoco", seed: int = 0, device: str = "cpu", task_config=None, **kwargs):
    """A batched env of ``task`` (a name or a :class:`Task`) on backend ``sim``."""
    if sim == "gymnasium":
        # Here the task is a Gymnasium env id, not a robotrl task.
        from robotrl.sim.gymnasium_backend import GymnasiumVecEnv

        return GymnasiumVecEnv(task, num_envs, seed=seed, device=device, **kwargs)
    if sim == "brax":
        # Here the task is a Brax env name; task_config, if any, are its kwargs.
        from robotrl.sim.brax_backend import BraxVecEnv

        name = task if isinstance(task, str) else task.name
        kwargs.setdefault("env_kwargs", task_config)
        return BraxVecEnv(name, num_envs, seed=seed, device=device, **kwargs)
    if isinstance(task, str):
        task = make_task(task, task_config)
    if sim == "mujoco":
        from robotrl.sim.mujoco_backend import MujocoVecEnv

        return MujocoVecEnv(task, num_envs, seed=seed, device=device, **kwargs)
    if sim == "mjx":
        from robotrl.sim.mjx_backend import MjxVecEnv

        return MjxVecEnv(task, num_envs, seed=seed, device=device, **kwargs)
    raise KeyError(f"unknown sim backend {sim!r}; available backends: mujoco, mjx, gymnasium, brax")


__all__ = ["EXTERNAL_SIMS", "Task", "make_env", "make_task", "task_names"]
