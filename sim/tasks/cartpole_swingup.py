"""Cart-pole swing-up: the pole starts hanging down; swing it up and balance it."""
from __future__ import annotations

import math

from robotrl.sim.task import SimState, Task, common_config, register
from robotrl.sim.tasks.shaping import tolerance


@register
class CartpoleSwingup(Task):
    name = "cartpole_swingup"
    asset = "cartpole.xml"
    metric_aggregation = {"upright": "mean"}
    observation_groups = {"policy": ("cart", "pole"), "critic": ("cart", "pole")}

    @classmethod
    def default_config(cls) -> dict:
        return common_config(
            sim_dt=0.01,
            control_dt=0.02,
            episode_length_s=10.0,
            reward_scales={"swingup": 1.0, "control": -0.1},
            obs_noise={"cart": 0.0, "pole": 0.0},
            render={"camera": "track"},  # the pole large in small frames
        )

    def reset(self, xp, sampler, num):
        # Pole hanging down (angle pi) with a little noise, as in dm_control's swing-up.
        cart = sampler.uniform(-0.1, 0.1, (num, 1))
        pole = math.pi + sampler.uniform(-0.1, 0.1, (num, 1))
        qpos = xp.concatenate([cart, pole], axis=1)
        qvel = sampler.uniform(-0.05, 0.05, (num, 2))
        return qpos, qvel, {}

    def observation_terms(self, xp, state: SimState):
        # Joint state straight from qpos/qvel: MuJoCo computes sensordata before the
        # last physics substep's integration, so joint sensors would lag a substep.
        cart = xp.concatenate([state.qpos[:, 0:1], state.qvel[:, 0:1]], axis=1)
        angle = state.qpos[:, 1:2]
        pole = xp.concatenate([xp.cos(angle), xp.sin(angle), state.qvel[:, 1:2]], axis=1)
        return {"cart": cart, "pole": pole}

    def reward_terms(self, xp, state: SimState, action):
        cart_pos, angle = state.qpos[:, 0], state.qpos[:, 1]
        upright = (xp.cos(angle) + 1.0) / 2.0
        centered = (1.0 + tolerance(xp, cart_pos, margin=2.0)) / 2.0
        slow = (1.0 + tolerance(xp, state.qvel[:, 1], margin=5.0)) / 2.0
        return {
            "swingup": upright * centered * slow,
            "control": xp.sum(action**2, axis=1),
        }

    def metrics(self, xp, state, action):
        return {"upright": (xp.cos(state.qpos[:, 1]) > 0.95).astype(float)}
