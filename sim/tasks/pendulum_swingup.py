"""Pendulum swing-up: a torque-limited pendulum starts hanging down; swing it up and hold it.

As dm_control's pendulum swing-up, but the reward is smooth instead of a sparse
"within 30 degrees of upright": the motor is too weak to lift the bob directly, so a
smooth reward tells the policy that pumping energy gets it closer.
"""
from __future__ import annotations

import math

from robotrl.sim.task import SimState, Task, common_config, register
from robotrl.sim.tasks.shaping import tolerance


@register
class PendulumSwingup(Task):
    name = "pendulum_swingup"
    asset = "pendulum.xml"
    metric_aggregation = {"upright": "mean"}
    observation_groups = {"policy": ("pendulum",), "critic": ("pendulum",)}

    @classmethod
    def default_config(cls) -> dict:
        return common_config(
            sim_dt=0.01,
            control_dt=0.02,
            episode_length_s=10.0,
            vel_margin=5.0,  # rad/s at which the velocity factor falls to 0.1
            reward_scales={"swingup": 1.0, "control": -0.05},
            obs_noise={"pendulum": 0.0},
            # The pendulum is the root body, so added_mass/com_offset act on the pole.
            # Pushes stay off: the backend kicks two dofs and this model has one.
            domain_randomization={
                "enabled": False,
                "added_mass": [-0.1, 0.2],
                "com_offset": [-0.02, 0.02],
                "damping_scale": [0.5, 2.0],
                "motor_strength": [0.85, 1.15],
                "latency_substeps": [0, 1],
            },
        )

    def reset(self, xp, sampler, num):
        angle = math.pi + sampler.uniform(-0.1, 0.1, (num, 1))
        angvel = sampler.uniform(-0.05, 0.05, (num, 1))
        return angle, angvel, {}

    def observation_terms(self, xp, state: SimState):
        # qpos/qvel, not the joint sensors: MuJoCo computes sensordata before the last
        # physics substep's integration, so they would lag the state by a substep.
        angle = state.qpos[:, 0:1]
        return {"pendulum": xp.concatenate([xp.cos(angle), xp.sin(angle), state.qvel[:, 0:1]], axis=1)}

    def reward_terms(self, xp, state: SimState, action):
        cos = xp.cos(state.qpos[:, 0])
        upright = (cos + 1.0) / 2.0
        # No floor on the velocity factor (unlike cartpole's (1 + tol) / 2): with one,
        # spinning through the top earns a quarter of the maximum and PPO settles there.
        slow = tolerance(xp, state.qvel[:, 0], margin=self.config["vel_margin"])
        return {"swingup": upright * slow, "control": xp.sum(action**2, axis=1)}

    def metrics(self, xp, state, action):
        return {"upright": (xp.cos(state.qpos[:, 0]) > 0.95).astype(float)}
