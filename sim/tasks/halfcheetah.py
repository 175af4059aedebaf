"""HalfCheetah: run forward as fast as possible, as Gymnasium's HalfCheetah-v5.

Rewards, reset noise and observations follow HalfCheetah-v5 (10 ms steps, frame skip
5, reward = forward velocity - 0.1 |a|^2, never terminates), so returns compare with
published numbers. Two deliberate differences: forward velocity is qvel[0] after the
step rather than the displacement over the frame skip (the same in expectation), and
the policy's joint velocities are clipped to +-10 as in the Hopper; the critic also
gets the unclipped COM velocity, which a fast gait pushes past 10 m/s.
"""
from __future__ import annotations

from robotrl.sim.task import SimState, Task, common_config, register


@register
class HalfCheetah(Task):
    name = "halfcheetah"
    asset = "halfcheetah.xml"
    push_dofs = (0, 1)  # rootx and rootz velocity of the planar root
    metric_aggregation = {"forward_velocity": "mean"}
    observation_groups = {
        "policy": ("joint_pos", "joint_vel"),
        # No x position: it grows without bound and predicts nothing.
        "critic": ("joint_pos", "joint_vel", "com_vel", "foot_contact"),
    }

    @classmethod
    def default_config(cls) -> dict:
        return common_config(
            sim_dt=0.01,
            control_dt=0.05,
            episode_length_s=50.0,  # 1000 control steps
            reward_scales={"forward": 1.0, "control": -0.1},
            obs_noise={"joint_pos": 0.0, "joint_vel": 0.0},
            reset_noise=0.1,  # uniform on qpos, standard deviation on qvel
            joint_vel_clip=10.0,
            domain_randomization={
                "enabled": False,
                "friction": [0.6, 1.4],
                "added_mass": [-1.0, 1.0],  # on the torso
                "mass_scale": [0.9, 1.1],
                "com_offset": [-0.03, 0.03],
                "damping_scale": [0.8, 1.2],
                "armature_scale": [0.8, 1.2],
                "motor_strength": [0.9, 1.1],
                "latency_substeps": [0, 1],
                "push_interval_s": 5.0,
                "push_velocity": 0.3,  # kicks rootx and rootz velocity
            },
        )

    def reset(self, xp, sampler, num):
        s = self.config["reset_noise"]
        qpos = self.model.qpos0 + sampler.uniform(-s, s, (num, self.model.nq))
        qvel = s * sampler.normal((num, self.model.nv))
        return qpos, qvel, {}

    def observation_terms(self, xp, state: SimState):
        clip = self.config["joint_vel_clip"]
        touch = xp.concatenate([self.sensor(state, "bfoot_touch"), self.sensor(state, "ffoot_touch")], axis=1)
        return {
            "joint_pos": state.qpos[:, 1:],
            "joint_vel": xp.clip(state.qvel, -clip, clip),
            "com_vel": self.sensor(state, "com_vel")[:, 0::2],  # world x and z
            "foot_contact": (touch > 1.0).astype(state.qpos.dtype),
        }

    def reward_terms(self, xp, state: SimState, action):
        return {"forward": state.qvel[:, 0], "control": xp.sum(action**2, axis=1)}

    def metrics(self, xp, state, action):
        return {"forward_velocity": state.qvel[:, 0]}
