"""Hopper: hop forward as fast as possible without falling, as Gymnasium's Hopper-v5.

Rewards, termination, reset noise and observations follow Hopper-v5, so returns and
episode lengths compare with published numbers: the sim steps 2 ms with a 4-step frame
skip, the reward is forward velocity + 1 while healthy - 1e-3 |a|^2. Forward velocity
is qvel[0] after the step rather than Gymnasium's displacement over the frame skip
(the same in expectation).
"""
from __future__ import annotations

import mujoco

from robotrl.sim.task import SimState, Task, common_config, register


@register
class Hopper(Task):
    name = "hopper"
    asset = "hopper.xml"
    termination_is_fall = True
    push_dofs = (0, 1)  # rootx and rootz velocity of the planar root
    metric_aggregation = {"forward_velocity": "mean"}
    observation_groups = {
        "policy": ("joint_pos", "joint_vel"),
        # The x position is left out on purpose: it grows without bound and says
        # nothing about future reward; the unclipped COM velocity and foot contact do.
        "critic": ("joint_pos", "joint_vel", "com_vel", "foot_contact"),
    }

    @classmethod
    def default_config(cls) -> dict:
        return common_config(
            sim_dt=0.002,
            control_dt=0.008,
            episode_length_s=8.0,  # 1000 control steps
            reward_scales={"forward": 1.0, "healthy": 1.0, "control": -1e-3},
            obs_noise={"joint_pos": 0.0, "joint_vel": 0.0},
            # Gymnasium's healthy ranges: torso height > 0.7 m, |pitch| < 0.2 rad and
            # qpos[2:] and qvel within +-100 (state_vector()[2:] in Gymnasium).
            healthy={"min_z": 0.7, "max_angle": 0.2, "max_state": 100.0},
            reset_noise=5e-3,
            joint_vel_clip=10.0,
            # Gymnasium's integrator. "implicitfast" or "Euler" step about 3x faster
            # and give the same random-action statistics, but are not the reference.
            integrator="RK4",
            domain_randomization={
                "enabled": False,
                "friction": [0.7, 1.3],
                "added_mass": [-0.5, 0.5],  # on the torso
                "mass_scale": [0.9, 1.1],
                "com_offset": [-0.02, 0.02],
                "damping_scale": [0.8, 1.2],
                "armature_scale": [0.8, 1.2],
                "motor_strength": [0.9, 1.1],
                "latency_substeps": [0, 1],
                "push_interval_s": 3.0,
                "push_velocity": 0.2,  # kicks rootx and rootz velocity
            },
        )

    def build_model(self) -> mujoco.MjModel:
        model = super().build_model()
        model.opt.integrator = getattr(mujoco.mjtIntegrator, "mjINT_" + self.config["integrator"].upper())
        return model

    def setup(self) -> None:
        self.init_qpos = self.model.qpos0.copy()  # rootz's ref makes qpos[1] = 1.25

    def reset(self, xp, sampler, num):
        s = self.config["reset_noise"]
        qpos = self.init_qpos + sampler.uniform(-s, s, (num, self.model.nq))
        qvel = sampler.uniform(-s, s, (num, self.model.nv))
        return qpos, qvel, {}

    def observation_terms(self, xp, state: SimState):
        clip = self.config["joint_vel_clip"]
        return {
            "joint_pos": state.qpos[:, 1:],
            "joint_vel": xp.clip(state.qvel, -clip, clip),
            "com_vel": self.sensor(state, "com_vel")[:, 0::2],  # world x and z
            "foot_contact": (self.sensor(state, "foot_touch") > 1.0).astype(state.qpos.dtype),
        }

    def _healthy(self, xp, state: SimState):
        h = self.config["healthy"]
        rest = xp.concatenate([state.qpos[:, 2:], state.qvel], axis=1)
        return (
            (state.qpos[:, 1] > h["min_z"])
            & (xp.abs(state.qpos[:, 2]) < h["max_angle"])
            & xp.all(xp.abs(rest) < h["max_state"], axis=1)
        )

    def reward_terms(self, xp, state: SimState, action):
        return {
            "forward": state.qvel[:, 0],
            "healthy": self._healthy(xp, state).astype(state.qpos.dtype),
            "control": xp.sum(action**2, axis=1),
        }

    def terminated(self, xp, state: SimState):
        return ~self._healthy(xp, state)

    def metrics(self, xp, state, action):
        return {"forward_velocity": state.qvel[:, 0]}
