"""Velocity-constrained locomotion, as Safety-Gymnasium's Velocity tasks: the same
robots and rewards, with a cost of 1 on every step whose speed exceeds a limit.

Safety-Gymnasium's limits are half the speed an unconstrained PPO policy reaches
(Hopper 0.7402 m/s, HalfCheetah 3.2096 m/s, forward velocity only); the
quadruped, which follows commands up to 1 m/s, is limited in planar speed.
"""
from __future__ import annotations

from robotrl.sim.task import SimState, register
from robotrl.sim.tasks.halfcheetah import HalfCheetah
from robotrl.sim.tasks.hopper import Hopper
from robotrl.sim.tasks.quadruped_walk import QuadrupedWalk


class VelocityLimit:
    """Mixin: ``cost`` = 1 where :meth:`speed` exceeds ``config["velocity_limit"]``."""

    default_velocity_limit: float

    @classmethod
    def default_config(cls) -> dict:
        cfg = super().default_config()
        cfg["velocity_limit"] = cls.default_velocity_limit
        return cfg

    def speed(self, xp, state: SimState):
        return state.qvel[:, 0]  # forward velocity of a planar root

    def cost(self, xp, state: SimState, action):
        return (self.speed(xp, state) > self.config["velocity_limit"]).astype(state.qvel.dtype)

    def metrics(self, xp, state, action):
        return {**super().metrics(xp, state, action), "over_speed": self.cost(xp, state, action)}


@register
class HopperVelocity(VelocityLimit, Hopper):
    name = "hopper_velocity"
    default_velocity_limit = 0.7402
    metric_aggregation = {**Hopper.metric_aggregation, "over_speed": "mean"}


@register
class HalfCheetahVelocity(VelocityLimit, HalfCheetah):
    name = "halfcheetah_velocity"
    default_velocity_limit = 3.2096
    metric_aggregation = {**HalfCheetah.metric_aggregation, "over_speed": "mean"}


@register
class QuadrupedWalkVelocity(VelocityLimit, QuadrupedWalk):
    name = "quadruped_walk_velocity"
    # Commands reach 1 m/s: following the fastest ones breaks the limit.
    default_velocity_limit = 0.6
    metric_aggregation = {**QuadrupedWalk.metric_aggregation, "over_speed": "mean"}

    def speed(self, xp, state: SimState):
        return xp.sqrt(xp.sum(state.qvel[:, :2] ** 2, axis=1))  # planar, world frame
