"""Simulated backends behind one batched env interface, tasks and randomization."""
from __future__ import annotations

from robotrl.sim.task import Task, make_task, task_names


def make_env(task, num_envs: int, sim: str = "mujoco", seed: int = 0, device: str = "cpu", task_config=None, **kwargs):
    """A batched env of ``task`` (a name or a :class:`Task`) on backend ``sim``."""
    if isinstance(task, str):
        task = make_task(task, task_config)
    if sim == "mujoco":
        from robotrl.sim.mujoco_backend import MujocoVecEnv

        return MujocoVecEnv(task, num_envs, seed=seed, device=device, **kwargs)
    raise KeyError(f"unknown sim backend {sim!r}; available backends: mujoco")


__all__ = ["Task", "make_env", "make_task", "task_names"]
