"""Quadruped walking: a Go1-class robot follows commanded planar and yaw velocities.

The rewards, observation scaling and noise follow legged_gym and MuJoCo Playground's
Go1 joystick task. The policy sees only what the robot senses (IMU, encoders, its
last action, the command); the critic also gets the body velocity, trunk height and
foot contacts. The policy outputs joint-position targets around the standing pose.

Reward convention: every term is multiplied by ``control_dt`` here, so the scales
in the config are per-second rates as in legged_gym and do not change with the
control rate. The termination term is one per fall, so its scale of -50 is a
one-off penalty of -1 (at 50 Hz).
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

from robotrl.sim.task import SimState, Task, common_config, register
from robotrl.sim.tasks.shaping import projected_gravity, projected_gravity_xyz, projected_gravity_z

LEGS = ("FR", "FL", "RR", "RL")
JOINTS = tuple(f"{leg}_{part}" for leg in LEGS for part in ("hip", "thigh", "calf"))


@register
class QuadrupedWalk(Task):
    name = "quadruped_walk"
    asset = "quadruped.xml"
    termination_is_fall = True
    action_type = "position"
    metric_aggregation = {"velocity_tracking": "mean", "lin_vel_error": "mean"}
    _policy = ("ang_vel", "gravity", "command", "joint_pos", "joint_vel", "last_action")
    observation_groups = {
        "policy": _policy,
        "critic": _policy + ("lin_vel", "height", "foot_contact"),
    }

    @classmethod
    def default_config(cls) -> dict:
        return common_config(
            sim_dt=0.005,
            control_dt=0.02,
            episode_length_s=20.0,
            # Targets = standing pose + 0.25 rad * action (legged_gym). A unit-std
            # Gaussian policy then jitters the joints by 0.25 rad and survives ~2 s
            # at first; the clip at 4 still allows +-1 rad for a trained gait.
            action_scale=0.25,
            action_clip=4.0,
            command={
                "vx": [-0.5, 1.0],  # m/s, body frame
                "vy": [-0.3, 0.3],
                "yaw": [-0.8, 0.8],  # rad/s
                "resample_s": 8.0,
                "zero_prob": 0.1,  # share of commands that ask to stand still
            },
            tracking_sigma=0.25,  # legged_gym's exp(-err^2 / sigma)
            base_height_target=0.28,  # the zero-action stance (knees sag a little under kp=35)
            soft_limit=0.9,  # joint_limits penalizes beyond this share of each range
            air_time={"min": 0.1, "max": 0.5},  # s, Playground's feet_air_time window
            termination={"height": 0.15, "gravity_z": -0.5},  # fell below / tilted > 60 deg
            reset_joint_noise=0.05,  # rad, uniform around the standing pose
            reward_scales={
                "tracking_lin_vel": 1.5,
                "tracking_ang_vel": 0.75,
                "lin_vel_z": -2.0,
                "ang_vel_xy": -0.05,
                "orientation": -5.0,
                "base_height": -10.0,
                "torques": -2e-4,
                "action_rate": -0.01,
                "feet_air_time": 0.5,
                "joint_limits": -10.0,
                "default_pose": -0.5,
                "stand_still": -0.5,
                "termination": -50.0,
            },
            # Uniform noise amplitudes on the scaled policy terms (legged_gym's noise
            # levels times the observation scales below).
            obs_noise={
                "ang_vel": 0.2 * 0.25,
                "gravity": 0.05,
                "command": 0.0,
                "joint_pos": 0.03,
                "joint_vel": 1.5 * 0.05,
                "last_action": 0.0,
            },
            domain_randomization={
                "enabled": False,
                "friction": [0.6, 1.25],
                "added_mass": [-1.0, 2.0],
                "com_offset": [-0.03, 0.03],
                "kp_scale": [0.9, 1.1],
                "kd_scale": [0.9, 1.1],
                "motor_strength": [0.9, 1.1],
                "latency_substeps": [0, 1],
                "push_interval_s": 8.0,
                "push_velocity": 0.5,
            },
        )

    # Observation scales (legged_gym): keep every term of order one.
    ANG_VEL_SCALE = 0.25
    LIN_VEL_SCALE = 2.0
    JOINT_VEL_SCALE = 0.05
    COMMAND_SCALE = (2.0, 2.0, 0.25)

    def setup(self) -> None:
        m = self.model
        joint_names = [m.joint(i).name for i in range(1, m.njnt)]
        if tuple(joint_names) != JOINTS or tuple(self.action_names) != JOINTS:
            raise ValueError(f"{self.asset}: joints/actuators must be in the order {JOINTS}")
        key = m.key("home")
        self.default_pose = key.qpos[7:].copy()
        lower, upper = m.jnt_range[1:, 0], m.jnt_range[1:, 1]
        mid, half = (lower + upper) / 2, (upper - lower) / 2 * self.config["soft_limit"]
        self.soft_lower, self.soft_upper = mid - half, mid + half
        # The default-pose penalty mostly holds the hips in: the thighs and calves
        # must swing to walk.
        self.pose_weights = np.tile([1.0, 0.1, 0.1], 4)
        self.dt = float(self.config["control_dt"])
        c = self.config["command"]
        self.cmd_low = np.array([c["vx"][0], c["vy"][0], c["yaw"][0]])
        self.cmd_high = np.array([c["vx"][1], c["vy"][1], c["yaw"][1]])
        # Spawn with the feet just touching the floor in the standing pose.
        data = mujoco.MjData(m)
        mujoco.mj_resetDataKeyframe(m, data, key.id)
        mujoco.mj_forward(m, data)
        foot_z = min(data.site(f"{leg}_foot").xpos[2] for leg in LEGS)
        foot_r = m.geom("FR_foot").size[0]
        self.spawn_height = float(key.qpos[2] - (foot_z - foot_r) + 0.005)
        self._touch = self._block([f"{leg}_touch" for leg in LEGS])
        self._torque = self._block([f"{j}_tau" for j in JOINTS])

    def _block(self, names) -> slice:
        """One slice over sensors declared next to each other (one gather, not many)."""
        parts = [self._sensor_slices[n] for n in names]
        if any(a.stop != b.start for a, b in zip(parts, parts[1:])):
            raise ValueError(f"{self.asset}: sensors {names} must be declared consecutively")
        return slice(parts[0].start, parts[-1].stop)

    # ---------------------------------------------------------------- commands
    def _sample_command(self, xp, sampler, num):
        cmd = sampler.uniform(self.cmd_low, self.cmd_high, (num, 3))
        still = sampler.uniform(0.0, 1.0, (num, 1)) < self.config["command"]["zero_prob"]
        return xp.where(still, 0.0, cmd)

    # ------------------------------------------------------------------- reset
    def reset(self, xp, sampler, num):
        yaw = sampler.uniform(-math.pi, math.pi, (num, 1))
        zeros = xp.zeros((num, 1))
        quat = xp.concatenate([xp.cos(yaw / 2), zeros, zeros, xp.sin(yaw / 2)], axis=1)
        noise = self.config["reset_joint_noise"]
        joints = self.default_pose + sampler.uniform(-noise, noise, (num, 12))
        pos = xp.concatenate([zeros, zeros, zeros + self.spawn_height], axis=1)
        qpos = xp.concatenate([pos, quat, joints], axis=1)
        qvel = xp.zeros((num, 18))
        task_vars = {
            "command": self._sample_command(xp, sampler, num),
            "command_time": xp.zeros(num),  # s since the command was drawn
            "last_action": xp.zeros((num, 12)),
            "prev_action": xp.zeros((num, 12)),  # the action before last, for action_rate
            "air_time": xp.zeros((num, 4)),  # s each foot has been off the ground
            "touchdown_air": xp.zeros((num, 4)),  # air time of feet landing this step, else 0
            "last_contact": xp.zeros((num, 4)),
        }
        return qpos, qvel, task_vars

    def ctrl_from_action(self, xp, action, state: SimState):
        return self.default_pose + self.config["action_scale"] * action

    def _contact(self, xp, state):
        return state.sensordata[:, self._touch] > 1.0  # N; a standing foot reads ~30

    def after_step(self, xp, sampler, state: SimState, action):
        tv, dt = state.task, self.dt
        # Air time as in legged_gym: a foot lands when it was airborne and now touches;
        # contacts are OR-ed with the previous step's because a landing foot bounces.
        contact = self._contact(xp, state)
        filtered = contact | (tv["last_contact"] > 0.5)
        air = tv["air_time"] + dt
        first = filtered & (tv["air_time"] > 0.0)
        # Commands are redrawn every resample_s so one episode asks for several gaits.
        t = tv["command_time"] + dt
        due = t >= self.config["command"]["resample_s"]
        if xp is np and not due.any():
            command = tv["command"]  # most steps: no draw (a jitted step must always draw)
        else:
            command = xp.where(due[:, None], self._sample_command(xp, sampler, t.shape[0]), tv["command"])
        return state.with_task(
            command=command,
            command_time=xp.where(due, 0.0, t),
            prev_action=tv["last_action"],
            last_action=action,
            touchdown_air=xp.where(first, air, 0.0),
            air_time=xp.where(filtered, 0.0, air),
            last_contact=contact.astype(air.dtype),
        )

    # ------------------------------------------------------------ observations
    def observation_terms(self, xp, state: SimState):
        gravity = projected_gravity(xp, self.sensor(state, "imu_quat"))
        height = self.sensor(state, "trunk_pos")[:, 2:3] - self.config["base_height_target"]
        return {
            "ang_vel": self.sensor(state, "gyro") * self.ANG_VEL_SCALE,
            "gravity": gravity,
            "command": state.task["command"] * xp.asarray(self.COMMAND_SCALE),
            "joint_pos": state.qpos[:, 7:] - self.default_pose,
            "joint_vel": state.qvel[:, 6:] * self.JOINT_VEL_SCALE,
            "last_action": state.task["last_action"],
            "lin_vel": self.sensor(state, "local_linvel") * self.LIN_VEL_SCALE,
            "height": height,
            "foot_contact": self._contact(xp, state).astype(gravity.dtype),
        }

    # ----------------------------------------------------------------- rewards
    def reward_terms(self, xp, state: SimState, action):
        cfg, tv = self.config, state.task
        vel, gyro = self.sensor(state, "local_linvel"), self.sensor(state, "gyro")
        gx, gy, gz = projected_gravity_xyz(self.sensor(state, "imu_quat"))
        cmd = tv["command"]
        q = state.qpos[:, 7:]
        # Sums as array methods, two-element ones written out: numpy's xp.sum wrapper
        # costs more than the arithmetic on a batch of 64.
        moving = cmd[:, 0] ** 2 + cmd[:, 1] ** 2 > 0.01  # |cmd_xy| > 0.1 m/s
        lin_err = (cmd[:, 0] - vel[:, 0]) ** 2 + (cmd[:, 1] - vel[:, 1]) ** 2
        yaw_err = (cmd[:, 2] - gyro[:, 2]) ** 2
        height = self.sensor(state, "trunk_pos")[:, 2]
        tau = state.sensordata[:, self._torque]
        air = cfg["air_time"]
        landed = tv["touchdown_air"]
        # Steps shorter than air_time.min are penalized (no shuffling), longer ones
        # rewarded up to air_time.max; only while asked to move.
        air_reward = xp.where(landed > 0.0, xp.minimum(landed, air["max"]) - air["min"], 0.0)
        deviation = q - self.default_pose
        over_limit = xp.maximum(self.soft_lower - q, 0.0) + xp.maximum(q - self.soft_upper, 0.0)
        terms = {
            "tracking_lin_vel": xp.exp(-lin_err / cfg["tracking_sigma"]),
            "tracking_ang_vel": xp.exp(-yaw_err / cfg["tracking_sigma"]),
            "lin_vel_z": vel[:, 2] ** 2,
            "ang_vel_xy": gyro[:, 0] ** 2 + gyro[:, 1] ** 2,
            "orientation": gx**2 + gy**2,
            "base_height": (height - cfg["base_height_target"]) ** 2,
            "torques": (tau**2).sum(axis=1),
            "action_rate": ((tv["last_action"] - tv["prev_action"]) ** 2).sum(axis=1),
            "feet_air_time": air_reward.sum(axis=1) * moving,
            "joint_limits": over_limit.sum(axis=1),
            "default_pose": (self.pose_weights * deviation**2).sum(axis=1),
            # Asked to stand (no planar or yaw command): hold the standing pose.
            "stand_still": xp.abs(deviation).sum(axis=1) * (~moving & (xp.abs(cmd[:, 2]) < 0.1)),
            "termination": self._fell(xp, state, gz).astype(height.dtype),
        }
        return {k: v * self.dt for k, v in terms.items()}

    def terminated(self, xp, state: SimState):
        return self._fell(xp, state, projected_gravity_z(self.sensor(state, "imu_quat")))

    def _fell(self, xp, state: SimState, gravity_z):
        term = self.config["termination"]
        return (
            (self.sensor(state, "trunk_touch")[:, 0] > 1.0)
            | (self.sensor(state, "trunk_pos")[:, 2] < term["height"])
            | (gravity_z > term["gravity_z"])
        )

    # ----------------------------------------------------------------- metrics
    def metrics(self, xp, state: SimState, action):
        """``velocity_tracking``: the share of the commanded planar velocity achieved,
        clip(v.c / |c|^2, 0, 1), on steps with |c| > 0.1 m/s. On steps with a smaller
        command (standing or turning in place) it is 1 - clip(|v - c| / 0.1, 0, 1),
        so drifting 0.1 m/s off a near-zero command counts as a failure."""
        vel = self.sensor(state, "local_linvel")[:, :2]
        cmd = state.task["command"][:, :2]
        c2 = cmd[:, 0] ** 2 + cmd[:, 1] ** 2
        err = xp.sqrt((vel[:, 0] - cmd[:, 0]) ** 2 + (vel[:, 1] - cmd[:, 1]) ** 2)
        achieved = xp.clip((vel[:, 0] * cmd[:, 0] + vel[:, 1] * cmd[:, 1]) / xp.maximum(c2, 1e-6), 0.0, 1.0)
        held = 1.0 - xp.clip(err / 0.1, 0.0, 1.0)
        return {
            "velocity_tracking": xp.where(c2 > 0.01, achieved, held),
            "lin_vel_error": err,
        }
