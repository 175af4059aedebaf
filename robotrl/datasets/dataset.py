"""The in-memory dataset of transitions (contract 4), shared by every offline and
hybrid algorithm. On-disk format, validation, collection and importers live
beside it in this package."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """``N`` transitions, in episode order.

    obs / next_obs: observation groups (``"policy"`` always, ``"critic"`` when the
    source had privileged state), each ``(N, dim)`` float32.
    action ``(N, num_actions)`` float32 in the task's action units (what the policy
    outputs, before clipping by the env); reward, cost ``(N,)`` float32;
    terminated, truncated ``(N,)`` bool. An episode ends at a row where
    ``terminated | truncated``; the last row always ends one.
    meta: task name, observation layout per group, action names, the domain the
    data came from, and how it was made (see ``FORMAT.md``).
    """

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    next_obs: dict[str, np.ndarray]
    terminated: np.ndarray
    truncated: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        """Row indices where an episode ends (inclusive)."""
        return np.flatnonzero(self.terminated | self.truncated)

    @property
    def episode_starts(self) -> np.ndarray:
        ends = self.episode_ends
        return np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else np.zeros(0, np.int64)

    def episode_sums(self, values: np.ndarray) -> np.ndarray:
        """Per-episode sums of a per-row array (e.g. returns from ``reward``)."""
        return np.add.reduceat(np.asarray(values, np.float64), self.episode_starts) if len(self) else np.zeros(0)

    @property
    def episode_returns(self) -> np.ndarray:
        return self.episode_sums(self.reward)

    @property
    def episode_costs(self) -> np.ndarray:
        return self.episode_sums(self.cost)
