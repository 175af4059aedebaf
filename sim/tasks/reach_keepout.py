"""Reach with a keep-out zone: the arm reaches targets while its fingertip stays out
of a spherical region (an obstacle, a person's workspace) and its joints stay under
a velocity limit.

Cost per step: 1 when the fingertip is inside the keep-out sphere or any joint is
faster than ``joint_vel_limit`` (one signal, as the safety benchmarks count a step
as violating or not). Targets drawn inside the sphere (plus a margin) are pushed
radially out to its surface, so every target is reachable without a violation; the
sphere sits between the ready pose and part of the target shell, so the direct
path of many targets crosses it.
"""
from __future__ import annotations

import numpy as np

from robotrl.sim.task import SimState, register
from robotrl.sim.tasks.reach import Reach


@register
class ReachKeepout(Reach):
    name = "reach_keepout"
    metric_aggregation = {**Reach.metric_aggregation, "keepout_steps": "mean", "overspeed_steps": "mean"}
    _policy = Reach._policy + ("keepout_vec",)
    observation_groups = {"policy": _policy, "critic": _policy + ("ee_pos", "ee_vel")}

    @classmethod
    def default_config(cls) -> dict:
        cfg = super().default_config()
        cfg["keepout"] = {"center": [0.32, 0.0, 0.22], "radius": 0.09, "target_margin": 0.04}
        cfg["joint_vel_limit"] = 3.0  # rad/s
        return cfg

    def setup(self) -> None:
        super().setup()
        self.keepout_center = np.asarray(self.config["keepout"]["center"], dtype=float)

    def reset(self, xp, sampler, num):
        qpos, qvel, task_vars = super().reset(xp, sampler, num)
        k = self.config["keepout"]
        clear = k["radius"] + k["target_margin"]
        offset = task_vars["target"] - self.keepout_center
        dist = xp.sqrt(xp.sum(offset**2, axis=1, keepdims=True))
        pushed = self.keepout_center + offset / xp.maximum(dist, 1e-6) * clear
        task_vars["target"] = xp.where(dist < clear, pushed, task_vars["target"])
        return qpos, qvel, task_vars

    def _inside(self, xp, state: SimState):
        delta = self.sensor(state, "ee_pos") - self.keepout_center
        return xp.sum(delta**2, axis=1) < self.config["keepout"]["radius"] ** 2

    def _overspeed(self, xp, state: SimState):
        return xp.any(xp.abs(state.qvel) > self.config["joint_vel_limit"], axis=1)

    def observation_terms(self, xp, state: SimState):
        terms = super().observation_terms(xp, state)
        terms["keepout_vec"] = self.keepout_center - terms["ee_pos"]
        return terms

    def cost(self, xp, state: SimState, action):
        return (self._inside(xp, state) | self._overspeed(xp, state)).astype(state.qpos.dtype)

    def metrics(self, xp, state, action):
        dtype = state.qpos.dtype
        return {
            **super().metrics(xp, state, action),
            "keepout_steps": self._inside(xp, state).astype(dtype),
            "overspeed_steps": self._overspeed(xp, state).astype(dtype),
        }
