"""On-policy rollout storage: one tensor per field, shaped (steps, envs, ...)."""
from __future__ import annotations

from typing import Iterator

import torch


class RolloutStorage:
    def __init__(self, num_steps: int, num_envs: int, obs_sizes: dict[str, int], num_actions: int, device="cpu",
                 with_cost: bool = False):
        self.num_steps, self.num_envs = num_steps, num_envs
        z = lambda *shape, dtype=torch.float32: torch.zeros(num_steps, num_envs, *shape, dtype=dtype, device=device)  # noqa: E731
        self.obs = {group: z(size) for group, size in obs_sizes.items()}
        self.actions = z(num_actions)
        self.log_probs = z()
        self.action_mean = z(num_actions)
        self.action_std = z(num_actions)
        self.rewards = z()
        self.dones = z()
        self.values = z()
        self.returns = z()
        self.advantages = z()
        # The cost channel of constrained RL (ppo_lag): the same fields for the cost.
        self.with_cost = with_cost
        if with_cost:
            self.costs, self.cost_values, self.cost_returns, self.cost_advantages = z(), z(), z(), z()
        self.step = 0

    def add(self, obs, actions, log_probs, mean, std, rewards, dones, values, costs=None, cost_values=None) -> None:
        if self.step >= self.num_steps:
            raise RuntimeError("rollout storage is full; call clear() after an update")
        t = self.step
        for group, buf in self.obs.items():
            buf[t] = obs[group]
        self.actions[t] = actions
        self.log_probs[t] = log_probs
        self.action_mean[t] = mean
        self.action_std[t] = std
        self.rewards[t] = rewards
        self.dones[t] = dones
        self.values[t] = values
        if self.with_cost and costs is not None:
            self.costs[t] = costs
            self.cost_values[t] = cost_values
        self.step += 1

    def clear(self) -> None:
        self.step = 0

    def minibatches(self, num_minibatches: int, num_epochs: int, generator: torch.Generator) -> Iterator[dict]:
        n = self.num_steps * self.num_envs
        size = n // num_minibatches
        flat = {
            "actions": self.actions.flatten(0, 1),
            "log_probs": self.log_probs.flatten(0, 1),
            "action_mean": self.action_mean.flatten(0, 1),
            "action_std": self.action_std.flatten(0, 1),
            "values": self.values.flatten(0, 1),
            "returns": self.returns.flatten(0, 1),
            "advantages": self.advantages.flatten(0, 1),
        }
        if self.with_cost:
            for key in ("cost_values", "cost_returns", "cost_advantages"):
                flat[key] = getattr(self, key).flatten(0, 1)
        obs = {group: buf.flatten(0, 1) for group, buf in self.obs.items()}
        for _ in range(num_epochs):
            perm = torch.randperm(n, generator=generator, device="cpu").to(self.actions.device)
            for i in range(num_minibatches):
                idx = perm[i * size : (i + 1) * size]
                batch = {k: v[idx] for k, v in flat.items()}
                batch["obs"] = {g: v[idx] for g, v in obs.items()}
                yield batch
