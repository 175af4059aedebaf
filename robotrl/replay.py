"""Replay buffers for the off-policy and offline learners (sac, iql, h2o).

A :class:`ReplayBuffer` is a circular store of float32 torch tensors: observation
groups (``"policy"``, ``"critic"``) before and after each transition, the action,
reward, cost and the two episode-end flags. It is filled a VecEnv step at a time
(:meth:`ReplayBuffer.add_env_step`, which puts the true last observation of a
finished episode in ``next_obs`` instead of the first of the next one) and
sampled uniformly. :meth:`ReplayBuffer.from_dataset` wraps an offline
:class:`~robotrl.datasets.Dataset` as a full, sampleable buffer, and
:meth:`ReplayBuffer.to_dataset` turns a buffer back into a Dataset in episode
order (e.g. the replay of a SAC run is a "medium-replay" dataset).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, capacity: int, obs_sizes: Mapping[str, int], num_actions: int, device: str | torch.device = "cpu"):
        if int(capacity) < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.obs_sizes = {g: int(d) for g, d in obs_sizes.items()}
        self.num_actions = int(num_actions)
        z = lambda *shape: torch.zeros(self.capacity, *shape, device=self.device)  # noqa: E731
        self.obs = {g: z(d) for g, d in self.obs_sizes.items()}
        self.next_obs = {g: z(d) for g, d in self.obs_sizes.items()}
        self.action = z(self.num_actions)
        self.reward = z()
        self.cost = z()
        self.terminated = z()
        self.truncated = z()
        # Which env each row came from (-1: unknown), so rows can be put back in
        # episode order (:meth:`to_dataset`).
        self.env_id = torch.full((self.capacity,), -1, dtype=torch.long, device=self.device)
        self.ptr = 0  # next row to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------- add
    def add(self, obs, action, reward, next_obs, terminated, truncated=None, cost=None, env_id=None) -> None:
        """Append a batch of transitions (leading axis = batch), overwriting the oldest."""
        n = int(action.shape[0])
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` rows survive anyway
            cut = slice(n - self.capacity, n)
            obs = {g: v[cut] for g, v in obs.items()}
            next_obs = {g: v[cut] for g, v in next_obs.items()}
            action, reward, terminated = action[cut], reward[cut], terminated[cut]
            truncated = None if truncated is None else truncated[cut]
            cost = None if cost is None else cost[cut]
            env_id = None if env_id is None else env_id[cut]
            n = self.capacity
        idx = (self.ptr + torch.arange(n, device=self.device)) % self.capacity

        def put(dst: torch.Tensor, src) -> None:
            dst[idx] = torch.as_tensor(src, device=self.device).to(dst.dtype).reshape(dst[idx].shape)

        for g in self.obs_sizes:
            put(self.obs[g], obs[g])
            put(self.next_obs[g], next_obs[g])
        put(self.action, action)
        put(self.reward, reward)
        put(self.terminated, terminated)
        put(self.truncated, torch.zeros(n) if truncated is None else truncated)
        put(self.cost, torch.zeros(n) if cost is None else cost)
        put(self.env_id, torch.full((n,), -1) if env_id is None else env_id)
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def add_env_step(self, obs, action, reward, next_obs, dones, extras) -> None:
        """Append one VecEnv step: ``obs`` before it, ``action`` as executed,
        ``next_obs``/``reward``/``dones``/``extras`` as ``env.step`` returned them.

        The env has already reset finished envs, so their ``next_obs`` rows are the
        first observation of a new episode; the true last one is in
        ``extras["final_observations"]`` (rows ``extras["final_ids"]``). Episodes cut
        by the time limit (``extras["time_outs"]``) are ``truncated`` (learners
        bootstrap there), the others that ended are ``terminated``.
        """
        time_outs = extras["time_outs"].to(self.device).bool()
        dones = dones.to(self.device).bool()
        true_next = {g: next_obs[g].to(self.device).clone() for g in self.obs_sizes}
        if "final_ids" in extras:
            ids = torch.as_tensor(np.asarray(extras["final_ids"]), dtype=torch.long, device=self.device)
            for g in self.obs_sizes:
                true_next[g][ids] = torch.as_tensor(extras["final_observations"][g], device=self.device)
        self.add(
            obs, action, reward, true_next,
            terminated=dones & ~time_outs,
            truncated=time_outs,
            cost=extras.get("cost"),
            env_id=torch.arange(action.shape[0], device=self.device),
        )

    # ---------------------------------------------------------------- sample
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``batch_size`` rows drawn uniformly (with replacement)."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (int(batch_size),), generator=generator).to(self.device)
        return self.rows(idx)

    def rows(self, idx: torch.Tensor) -> dict[str, Any]:
        return {
            "obs": {g: v[idx] for g, v in self.obs.items()},
            "next_obs": {g: v[idx] for g, v in self.next_obs.items()},
            "action": self.action[idx],
            "reward": self.reward[idx],
            "cost": self.cost[idx],
            "terminated": self.terminated[idx],
            "truncated": self.truncated[idx],
        }

    def _order(self) -> torch.Tensor:
        """Row indices oldest first."""
        if self.size < self.capacity:
            return torch.arange(self.size, device=self.device)
        return (self.ptr + torch.arange(self.capacity, device=self.device)) % self.capacity

    # ------------------------------------------------------- datasets <-> buffer
    @classmethod
    def from_dataset(cls, dataset, groups=None, device: str | torch.device = "cpu") -> "ReplayBuffer":
        """A full buffer holding every transition of ``dataset`` (observation
        ``groups``: all of the dataset's by default)."""
        groups = list(groups or dataset.obs.keys())
        missing = [g for g in groups if g not in dataset.obs]
        if missing:
            raise ValueError(f"dataset has no observation group(s) {missing}; it has {sorted(dataset.obs)}")
        sizes = {g: int(dataset.obs[g].shape[1]) for g in groups}
        buf = cls(max(len(dataset), 1), sizes, int(dataset.action.shape[1]), device)
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        buf.add(
            {g: t(dataset.obs[g]) for g in groups},
            t(dataset.action),
            t(dataset.reward),
            {g: t(dataset.next_obs[g]) for g in groups},
            terminated=t(dataset.terminated),
            truncated=t(dataset.truncated),
            cost=t(dataset.cost),
        )
        return buf

    def to_dataset(self, meta: dict | None = None):
        """The buffer's transitions as a :class:`~robotrl.datasets.Dataset`, each
        env's rows together in time order. An episode still running at the end (or
        whose start was overwritten) is kept, its last row marked ``truncated``."""
        from robotrl.datasets.dataset import Dataset

        order = self._order()
        env = self.env_id[order]
        # Stable sort by env keeps each env's rows in time order.
        order = order[torch.sort(env, stable=True).indices]
        env = self.env_id[order]
        term = self.terminated[order].bool().clone()
        trunc = self.truncated[order].bool().clone()
        last_of_env = torch.ones_like(term)
        last_of_env[:-1] = env[1:] != env[:-1]
        trunc |= last_of_env & ~term
        n = lambda x: x[order].cpu().numpy().astype(np.float32)  # noqa: E731
        return Dataset(
            obs={g: n(v) for g, v in self.obs.items()},
            action=n(self.action),
            reward=n(self.reward),
            cost=n(self.cost),
            next_obs={g: n(v) for g, v in self.next_obs.items()},
            terminated=term.cpu().numpy(),
            truncated=trunc.cpu().numpy(),
            meta=dict(meta or {}),
        )

    def obs_std(self, group: str) -> torch.Tensor:
        """Per-dimension std of the stored observations of ``group``."""
        return self.obs[group][: self.size].std(0, unbiased=False)

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """The filled rows, oldest first (a fresh buffer is not written out)."""
        order = self._order()
        return {
            "capacity": self.capacity,
            "obs": {g: v[order].cpu() for g, v in self.obs.items()},
            "next_obs": {g: v[order].cpu() for g, v in self.next_obs.items()},
            "action": self.action[order].cpu(),
            "reward": self.reward[order].cpu(),
            "cost": self.cost[order].cpu(),
            "terminated": self.terminated[order].cpu(),
            "truncated": self.truncated[order].cpu(),
            "env_id": self.env_id[order].cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.ptr = self.size = 0
        self.add(state["obs"], state["action"], state["reward"], state["next_obs"], state["terminated"],
                 state["truncated"], state["cost"], state["env_id"])
