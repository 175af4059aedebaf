"""Reach: a 4-joint table-top arm moves its fingertip to a random 3-D target.

The policy commands joint-position targets around a ready pose (PD servos in the
MJCF). Targets are drawn per env at reset from a shell in front of the shoulder that
the arm reaches inside its commandable range (ready pose +- action_scale rad; with
the default ranges an IK solve 0.15 rad inside that range gets within 3 cm of every
target, within 1 cm of 98%). The target lives in the task variables, not the model,
because all envs share one model. Positions are in the arm base frame, which is the
world frame.
"""
from __future__ import annotations

import numpy as np

from robotrl.sim.task import SimState, Task, common_config, register

JOINTS = ("shoulder_yaw", "shoulder_pitch", "elbow", "wrist_pitch")
SHOULDER = np.array([0.0, 0.0, 0.18])  # the shoulder pitch axis, center of the target shell


@register
class Reach(Task):
    name = "reach"
    asset = "reach_arm.xml"
    action_type = "position"
    metric_aggregation = {"success_rate": "last", "final_distance": "last"}
    _policy = ("joint_pos", "joint_vel", "target", "ee_to_target", "last_action")
    observation_groups = {"policy": _policy, "critic": _policy + ("ee_pos", "ee_vel")}

    @classmethod
    def default_config(cls) -> dict:
        return common_config(
            sim_dt=0.005,
            control_dt=0.02,
            episode_length_s=4.0,
            action_scale=1.0,  # rad around the ready pose
            success_threshold=0.05,  # m
            # Spherical shell around the shoulder pitch axis (0, 0, 0.18).
            target={
                "radius": [0.25, 0.6],
                "azimuth": [-0.9, 0.9],
                "elevation": [-0.3, 1.0],
                "min_height": 0.05,  # above the table top
            },
            reset_joint_noise=0.1,
            reward_scales={"distance": -1.0, "success": 0.5, "action_rate": -0.01, "joint_vel": -1e-3},
            obs_noise={"joint_pos": 0.0, "joint_vel": 0.0, "target": 0.0, "ee_to_target": 0.0, "last_action": 0.0},
            # The root body is the bolted-down base, so added_mass, com_offset and
            # pushes do nothing useful here and stay off.
            domain_randomization={
                "enabled": False,
                "mass_scale": [0.8, 1.2],
                "damping_scale": [0.7, 1.3],
                "armature_scale": [0.8, 1.2],
                "kp_scale": [0.8, 1.2],
                "kd_scale": [0.8, 1.2],
                "motor_strength": [0.9, 1.1],
                "latency_substeps": [0, 2],
            },
        )

    def setup(self) -> None:
        m = self.model
        if tuple(self.action_names) != JOINTS:
            raise ValueError(f"{self.asset}: actuators must drive {JOINTS} in this order")
        self.default_pose = m.key("home").qpos.copy()

    def reset(self, xp, sampler, num):
        t = self.config["target"]
        r = sampler.uniform(*t["radius"], (num, 1))
        az = sampler.uniform(*t["azimuth"], (num, 1))
        el = sampler.uniform(*t["elevation"], (num, 1))
        offset = xp.concatenate([r * xp.cos(el) * xp.cos(az), r * xp.cos(el) * xp.sin(az), r * xp.sin(el)], axis=1)
        target = SHOULDER + offset
        target = xp.concatenate([target[:, :2], xp.maximum(target[:, 2:], t["min_height"])], axis=1)
        noise = self.config["reset_joint_noise"]
        qpos = self.default_pose + sampler.uniform(-noise, noise, (num, 4))
        zeros = xp.zeros((num, 4))
        return qpos, zeros, {"target": target, "last_action": zeros, "prev_action": zeros}

    def ctrl_from_action(self, xp, action, state: SimState):
        return self.default_pose + self.config["action_scale"] * action

    def after_step(self, xp, sampler, state: SimState, action):
        return state.with_task(prev_action=state.task["last_action"], last_action=action)

    def _distance(self, xp, state):
        delta = state.task["target"] - self.sensor(state, "ee_pos")
        return xp.sqrt(xp.sum(delta**2, axis=1))

    def observation_terms(self, xp, state: SimState):
        ee = self.sensor(state, "ee_pos")
        return {
            "joint_pos": state.qpos - self.default_pose,
            "joint_vel": state.qvel * 0.1,  # keeps the term of order one
            "target": state.task["target"],
            "ee_to_target": state.task["target"] - ee,
            "last_action": state.task["last_action"],
            "ee_pos": ee,
            "ee_vel": self.sensor(state, "ee_vel"),
        }

    def reward_terms(self, xp, state: SimState, action):
        d = self._distance(xp, state)
        tv = state.task
        return {
            "distance": d,
            "success": (d < self.config["success_threshold"]).astype(d.dtype),
            "action_rate": xp.sum((tv["last_action"] - tv["prev_action"]) ** 2, axis=1),
            "joint_vel": xp.sum(state.qvel**2, axis=1),
        }

    def metrics(self, xp, state, action):
        d = self._distance(xp, state)
        return {"success_rate": (d < self.config["success_threshold"]).astype(d.dtype), "final_distance": d}
