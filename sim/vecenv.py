"""The batched env contract, in the style of Isaac Gym / legged_gym / rsl_rl.

All tensors live on ``device`` with a leading ``num_envs`` axis. ``step`` resets
finished envs by itself; the observations it returns for those envs are the first
of their new episode. ``extras`` always carries:

* ``time_outs`` (bool, num_envs): the episode ended by its time limit, not by a
  terminal state, so learners bootstrap the value there;
* ``cost`` (float, num_envs): the task's safety cost (zeros where it has none);
* ``episode`` (dict of floats): means over the envs that finished this step of
  each reward term's episode sum, the return and the length; empty when none did.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def validate_actions(actions, num_envs: int, num_actions: int) -> None:
    """Every backend's check of an action batch (torch or numpy): a wrong shape
    names the expected one, non-finite entries name the env ids that sent them."""
    shape = tuple(actions.shape)
    if shape != (num_envs, num_actions):
        raise ValueError(
            f"actions must have shape (num_envs, num_actions) = ({num_envs}, {num_actions}), got {shape}"
        )
    if isinstance(actions, torch.Tensor):
        finite = torch.isfinite(actions).all(dim=1).cpu().numpy()
    else:
        finite = np.isfinite(np.asarray(actions, dtype=np.float64)).all(axis=1)
    if not finite.all():
        ids = np.flatnonzero(~finite)
        shown = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
        raise ValueError(f"non-finite actions (NaN/inf) for env ids [{shown}]")


class VecEnv:
    num_envs: int
    num_actions: int
    max_episode_length: int
    device: torch.device
    # Observation size per group, e.g. {"policy": 48, "critic": 60}.
    obs_sizes: dict[str, int]
    # The names (and widths) of the terms each group concatenates, in order.
    obs_layout: dict[str, list[tuple[str, int]]]
    action_names: list[str]
    step_dt: float

    def reset(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(
        self, actions: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def get_observations(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def randomize_episode_start(self) -> None:
        """Desynchronize the envs' time limits before training (optional)."""

    def render_frames(self, ids: np.ndarray | None = None) -> np.ndarray:
        """uint8 frames ``(len(ids), H, W, 3)`` (all envs for None) of the states the
        last ``step`` reached: an env that finished in it shows its terminal state,
        not the reset state ``step`` moved it to. Camera and size come from the
        task's ``render`` config (robotrl.sim.render)."""
        raise NotImplementedError(f"{type(self).__name__} does not render")

    def end_rollout(self) -> torch.Tensor | None:
        """Called by on-policy learners after each rollout. An env whose rewards are
        scored after the fact (asynchronous VLM rewards) returns them here, shaped
        (steps, envs), and sets ``deferred_rewards``; others return None."""
        return None

    deferred_rewards: bool = False

    def stats(self) -> dict[str, float]:
        """Scalars for the training log (e.g. frames a VLM scored); none by default."""
        return {}

    def state_dict(self) -> dict:
        """What the env learns itself (a distilled reward model), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
