"""The Policy interface every backend, evaluator and robot node speaks."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Maps a batch of ``policy`` observations to a batch of actions.

    ``obs`` is ``(batch, obs_dim)`` in the order of ``obs_layout`` (or a dict of
    observation groups, of which the policy reads ``"policy"``); the action is
    ``(batch, num_actions)`` in the order of ``action_names``.
    """

    obs_layout: Sequence[tuple[str, int]]
    action_names: Sequence[str]

    def reset(self, env_ids: Sequence[int] | None = None) -> None: ...

    def act(self, obs: Any) -> np.ndarray: ...


def policy_obs(obs: Any) -> Any:
    """The ``policy`` group of an observation dict, or the array itself."""
    if isinstance(obs, dict):
        if "policy" not in obs:
            raise KeyError(f"observation dict has no 'policy' group (groups: {', '.join(obs)})")
        return obs["policy"]
    return obs
