"""Goal-and-hazards navigation, in the spirit of Safety-Gymnasium's Goal tasks (level 1).

A robot on an open plane drives to a goal circle while avoiding circular hazards it
may drive through at a cost. Two robots share everything but the model:

* ``point_goal_hazards`` (assets/point_goal.xml): a damped puck on a planar root
  (slide x, slide y, hinge z) with a forward force along its heading and a yaw torque.
* ``car_goal_hazards`` (assets/car_goal.xml): a differential drive on a free joint,
  two torque-driven wheels with real wheel-floor friction contact and a frictionless
  caster (sphere wheels: one contact point under the axle, as a wheel on a plane).

Layout. Goal and hazards are per-env task variables (all envs share one model), drawn
at reset: the robot uniformly over the square ``+-placement.extent`` with a random
heading, then each hazard and the goal uniformly over the same square, kept
``placement.robot_clearance`` from the robot's centre to the object's edge and
``placement.object_gap`` between object edges (goal-hazard and hazard-hazard). A
reset must trace under ``jax.jit``, so there is no rejection loop: each object takes
the first of ``placement.candidates`` uniform draws that keeps every clearance, or,
when none does (rare with the defaults), the draw with the most room. When the robot
centre comes within ``goal_radius`` of the goal centre the goal is redrawn the same
way (away from the robot's current position and the hazards) and the episode goes on,
as in Safety-Gymnasium's GoalLevel1. There are no walls and no termination; an
episode is 1000 control steps (20 s at 50 Hz), as in Safety-Gymnasium.

Reward (Safety-Gymnasium's): ``distance`` = previous goal distance - current goal
distance (so a step that reaches the goal is scored against the goal it reached, and
the next step against the new one), ``goal_bonus`` = 1 on the step the goal is
reached; weighted by ``reward_scales``.

Cost: with ``hazard_cost="any"`` (default) 1.0 on every step the robot centre is
inside (distance <= ``hazard_radius``) at least one hazard, else 0, which is Safety
Gym's ``constrain_indicator`` semantics. ``hazard_cost="count"`` counts the hazards the
centre is inside (overlapping hazards cost more; Safety-Gymnasium instead sums the
penetration depths per hazard before any indicator).

Observations. ``policy`` (what the robot senses): body-frame planar velocity
(velocimeter), yaw rate (gyro), for the car the two wheel speeds (x0.1), goal and
hazard pseudo-lidar, and the last action. The lidar is Safety-Gymnasium's "pseudo"
lidar with the natural (``lidar_max_dist``) variant and no aliasing: ``lidar_bins``
equal sectors of bearing in the robot frame, bin k covering bearings
``[k, k+1) * 2 pi / bins`` counted counter-clockwise from the robot's heading (bin 0
starts straight ahead, bin bins/4 starts at the robot's left); each bin reads the
largest ``max(0, 1 - d / lidar_max_dist)`` over the objects whose centre bearing
falls in it (d = centre-to-centre distance), 0 when none does. ``critic`` adds
privileged state: the goal vector in the robot frame and the distance from the robot
centre to the nearest hazard edge (negative inside a hazard).
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

from robotrl.sim.task import SimState, Task, common_config, register

TWO_PI = 2.0 * math.pi


class GoalHazards(Task):
    """The shared task; subclasses give the model and how a root pose becomes qpos."""

    action_type = "motor"
    # Episode totals: running counters in the task variables, read at the last step.
    metric_aggregation = {"goals_reached": "last", "hazard_steps": "last"}
    _sensed = ("lin_vel", "yaw_rate")
    _tail = ("goal_lidar", "hazard_lidar", "last_action")
    observation_groups = {
        "policy": _sensed + _tail,
        "critic": _sensed + _tail + ("goal_vec", "hazard_edge"),
    }

    @classmethod
    def default_config(cls) -> dict:
        return common_config(
            sim_dt=0.005,
            control_dt=0.02,
            episode_length_s=20.0,  # 1000 control steps
            num_hazards=8,
            hazard_radius=0.2,  # m
            goal_radius=0.3,  # m, reached when the robot centre is this close to the goal centre
            hazard_cost="any",  # "any": 1 inside any hazard; "count": number of hazards the centre is in
            placement={
                "extent": 1.5,  # m, half side of the square robot, goal and hazards are drawn in
                "robot_clearance": 0.4,  # m, robot centre to object edge (at reset and goal redraw)
                "object_gap": 0.05,  # m, between object edges (goal-hazard, hazard-hazard)
                "candidates": 32,  # uniform draws per object; the first that fits is kept
            },
            lidar_bins=16,
            lidar_max_dist=3.0,  # m; a bin reads max(0, 1 - d / lidar_max_dist)
            reward_scales={"distance": 1.0, "goal_bonus": 1.0},
            obs_noise={
                "lin_vel": 0.0,
                "yaw_rate": 0.0,
                "wheel_vel": 0.0,
                "goal_lidar": 0.0,
                "hazard_lidar": 0.0,
                "last_action": 0.0,
            },
            domain_randomization={
                "enabled": False,
                "friction": [0.6, 1.25],
                "added_mass": [-0.2, 0.5],
                "mass_scale": [0.8, 1.2],
                "damping_scale": [0.7, 1.3],
                "motor_strength": [0.8, 1.2],
                "latency_substeps": [0, 1],
                "push_interval_s": 5.0,
                "push_velocity": 0.3,
            },
        )

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.config
        if cfg["hazard_cost"] not in ("any", "count"):
            raise ValueError(f"hazard_cost must be 'any' or 'count', got {cfg['hazard_cost']!r}")
        if int(cfg["num_hazards"]) < 0 or int(cfg["lidar_bins"]) < 1:
            raise ValueError("num_hazards must be >= 0 and lidar_bins >= 1")
        self.num_hazards = int(cfg["num_hazards"])
        self.bins = int(cfg["lidar_bins"])
        self.spawn_height = float(self.model.body("robot").pos[2])

    @property
    def action_names(self) -> list[str]:
        # Actuator names: the point's forward force acts through a site, not a joint.
        return [self.model.actuator(i).name for i in range(self.model.nu)]

    def root_qpos(self, xp, xy, yaw):
        """Full ``qpos`` (num, nq) of a robot at rest at planar position ``xy`` (num, 2)
        with heading ``yaw`` (num, 1)."""
        raise NotImplementedError

    # ------------------------------------------------------------- geometry
    def robot_xy(self, state: SimState):
        return self.sensor(state, "robot_pos")[:, :2]

    def heading(self, xp, state: SimState):
        """Unit planar heading (num, 2) of the robot's x axis."""
        h = self.sensor(state, "robot_xaxis")[:, :2]
        return h / xp.maximum(xp.sqrt(xp.sum(h**2, axis=1, keepdims=True)), 1e-9)

    @staticmethod
    def to_robot_frame(xp, points, xy, heading):
        """World points ``(num, k, 2)`` in the robot frame (x forward, y left)."""
        d = points - xy[:, None, :]
        hx, hy = heading[:, None, 0], heading[:, None, 1]
        return xp.stack([d[..., 0] * hx + d[..., 1] * hy, d[..., 1] * hx - d[..., 0] * hy], axis=-1)

    @staticmethod
    def _norm(xp, v):
        return xp.sqrt(xp.sum(v**2, axis=-1))

    def lidar(self, xp, rel):
        """Pseudo-lidar (num, bins) of objects at robot-frame positions ``rel`` (num, k, 2)."""
        if rel.shape[1] == 0:
            return xp.zeros((rel.shape[0], self.bins))
        dist = self._norm(xp, rel)
        bearing = xp.arctan2(rel[..., 1], rel[..., 0]) % TWO_PI
        # The minimum guards bearings that round up to 2 pi.
        idx = xp.minimum(xp.floor(bearing * (self.bins / TWO_PI)), self.bins - 1)
        value = xp.maximum(0.0, 1.0 - dist / self.config["lidar_max_dist"])
        hit = idx[..., None] == xp.arange(self.bins)
        return xp.max(xp.where(hit, value[..., None], 0.0), axis=1)

    def hazards_hit(self, xp, state: SimState):
        """How many hazards contain the robot centre (num,)."""
        if self.num_hazards == 0:
            return xp.zeros(state.qpos.shape[0])
        d = self._norm(xp, state.task["hazards"] - self.robot_xy(state)[:, None, :])
        return xp.sum((d <= self.config["hazard_radius"]).astype(state.qpos.dtype), axis=1)

    # -------------------------------------------------------------- placement
    def _draw_spot(self, xp, sampler, num, centres, clearances):
        """One point per env in the placement square: the first of ``candidates`` uniform
        draws at least ``clearances`` (k,) from each of ``centres`` (num, k, 2), else the
        draw with the most room. Fixed shapes, no loops over values: traces under jit."""
        p = self.config["placement"]
        count, ext = int(p["candidates"]), float(p["extent"])
        cand = sampler.uniform(-ext, ext, (num, count, 2))
        dist = self._norm(xp, cand[:, :, None, :] - centres[:, None, :, :])  # (num, count, k)
        slack = xp.min(dist - xp.asarray(clearances), axis=2)
        fits = slack >= 0.0
        pick = xp.where(xp.any(fits, axis=1), xp.argmax(fits, axis=1), xp.argmax(slack, axis=1))
        chosen = (xp.arange(count) == pick[:, None]).astype(cand.dtype)
        return xp.sum(cand * chosen[:, :, None], axis=1)

    def _draw_goal(self, xp, sampler, xy, hazards):
        cfg, p = self.config, self.config["placement"]
        num = xy.shape[0]
        centres = xp.concatenate([xy[:, None, :], hazards], axis=1)
        clear = [p["robot_clearance"] + cfg["goal_radius"]]
        clear += [cfg["goal_radius"] + cfg["hazard_radius"] + p["object_gap"]] * self.num_hazards
        return self._draw_spot(xp, sampler, num, centres, clear)

    # ------------------------------------------------------------------ reset
    def reset(self, xp, sampler, num):
        cfg, p = self.config, self.config["placement"]
        ext, r = float(p["extent"]), float(cfg["hazard_radius"])
        xy = sampler.uniform(-ext, ext, (num, 2))
        yaw = sampler.uniform(-math.pi, math.pi, (num, 1))
        centres = xy[:, None, :]
        clear = [p["robot_clearance"] + r]
        for _ in range(self.num_hazards):
            spot = self._draw_spot(xp, sampler, num, centres, clear)
            centres = xp.concatenate([centres, spot[:, None, :]], axis=1)
            clear = clear[:1] + [2 * r + p["object_gap"]] * (centres.shape[1] - 1)
        hazards = centres[:, 1:, :]
        goal = self._draw_goal(xp, sampler, xy, hazards)
        qpos = self.root_qpos(xp, xy, yaw)
        zeros = xp.zeros(num)
        task_vars = {
            "goal": goal,
            "hazards": hazards,
            "goal_dist": self._norm(xp, goal - xy),  # to the current goal, for the next step's progress
            "progress": zeros,  # goal distance before - after the last step
            "reached": zeros,  # 1 on the step the goal was reached
            "goals_reached": zeros,  # running count over the episode
            "hazard_steps": zeros,  # running count of steps inside a hazard
            "last_action": xp.zeros((num, self.num_actions)),
        }
        return qpos, xp.zeros((num, self.model.nv)), task_vars

    # ------------------------------------------------------------------- step
    def after_step(self, xp, sampler, state: SimState, action):
        tv = state.task
        xy = self.robot_xy(state)
        dist = self._norm(xp, tv["goal"] - xy)
        reached = dist <= self.config["goal_radius"]
        if xp is np and not reached.any():
            goal = tv["goal"]  # most steps: no draw (a jitted step must always draw)
        else:
            goal = xp.where(reached[:, None], self._draw_goal(xp, sampler, xy, tv["hazards"]), tv["goal"])
        reached = reached.astype(dist.dtype)
        return state.with_task(
            goal=goal,
            goal_dist=self._norm(xp, goal - xy),
            progress=tv["goal_dist"] - dist,
            reached=reached,
            goals_reached=tv["goals_reached"] + reached,
            hazard_steps=tv["hazard_steps"] + (self.hazards_hit(xp, state) > 0).astype(dist.dtype),
            last_action=action,
        )

    # ------------------------------------------------------------ observations
    def observation_terms(self, xp, state: SimState):
        tv = state.task
        xy, heading = self.robot_xy(state), self.heading(xp, state)
        goal_rel = self.to_robot_frame(xp, tv["goal"][:, None, :], xy, heading)
        hazard_rel = self.to_robot_frame(xp, tv["hazards"], xy, heading)
        if self.num_hazards:
            edge = xp.min(self._norm(xp, hazard_rel), axis=1, keepdims=True) - self.config["hazard_radius"]
        else:
            edge = xp.full((xy.shape[0], 1), float(self.config["lidar_max_dist"]))
        return {
            "lin_vel": self.sensor(state, "local_linvel")[:, :2],
            "yaw_rate": self.sensor(state, "gyro")[:, 2:3],
            "goal_lidar": self.lidar(xp, goal_rel),
            "hazard_lidar": self.lidar(xp, hazard_rel),
            "last_action": tv["last_action"],
            "goal_vec": goal_rel[:, 0, :],
            "hazard_edge": edge,
        }

    # ---------------------------------------------------------- reward, cost
    def reward_terms(self, xp, state: SimState, action):
        return {"distance": state.task["progress"], "goal_bonus": state.task["reached"]}

    def cost(self, xp, state: SimState, action):
        hits = self.hazards_hit(xp, state)
        return hits if self.config["hazard_cost"] == "count" else (hits > 0).astype(hits.dtype)

    def metrics(self, xp, state: SimState, action):
        return {"goals_reached": state.task["goals_reached"], "hazard_steps": state.task["hazard_steps"]}


@register
class PointGoalHazards(GoalHazards):
    name = "point_goal_hazards"
    asset = "point_goal.xml"
    push_dofs = (0, 1)  # the slide joints

    def root_qpos(self, xp, xy, yaw):
        return xp.concatenate([xy, yaw], axis=1)


@register
class CarGoalHazards(GoalHazards):
    name = "car_goal_hazards"
    asset = "car_goal.xml"
    _sensed = GoalHazards._sensed + ("wheel_vel",)
    observation_groups = {
        "policy": _sensed + GoalHazards._tail,
        "critic": _sensed + GoalHazards._tail + ("goal_vec", "hazard_edge"),
    }
    WHEEL_VEL_SCALE = 0.1  # full speed is ~17 rad/s

    def setup(self) -> None:
        super().setup()
        # Spawn in the pose the car settles into on its contacts (0.3 mm lower, pitched
        # 1 mrad), not dropped from the modelled one: a dropped car's first steps are a
        # contact transient, which also amplifies float32 rounding on MJX.
        data = mujoco.MjData(self.model)
        for _ in range(int(round(0.5 / self.model.opt.timestep))):
            mujoco.mj_step(self.model, data)
        self.spawn_height = float(data.qpos[2])
        half_pitch = math.atan2(float(data.qpos[5]), float(data.qpos[3]))
        self.pitch_cos, self.pitch_sin = math.cos(half_pitch), math.sin(half_pitch)

    def root_qpos(self, xp, xy, yaw):
        num = xy.shape[0]
        zeros = xp.zeros((num, 1))
        cy, sy = xp.cos(yaw / 2), xp.sin(yaw / 2)
        cp, sp = self.pitch_cos, self.pitch_sin
        quat = xp.concatenate([cy * cp, -sy * sp, cy * sp, sy * cp], axis=1)  # yaw after pitch
        wheels = xp.zeros((num, 2))
        return xp.concatenate([xy, zeros + self.spawn_height, quat, wheels], axis=1)

    def observation_terms(self, xp, state: SimState):
        terms = super().observation_terms(xp, state)
        wheels = xp.concatenate([self.sensor(state, "left_wheel_vel"), self.sensor(state, "right_wheel_vel")], axis=1)
        terms["wheel_vel"] = wheels * self.WHEEL_VEL_SCALE
        return terms
