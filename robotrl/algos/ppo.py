"""PPO with an asymmetric actor-critic, GAE, time-out bootstrapping, clipped
surrogate and value losses, and a learning rate adapted to a KL target.

The losses are pure functions (tested directly); :class:`PPO` holds the networks,
the optimizer and the rollout storage, and is driven by the on-policy runner.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from robotrl import distributed
from robotrl.policies.networks import ActorCritic, EmpiricalNormalization
from robotrl.storage import RolloutStorage


@dataclass
class PPOConfig:
    num_steps_per_env: int = 24
    num_learning_epochs: int = 5
    num_minibatches: int = 4
    gamma: float = 0.99
    lam: float = 0.95
    clip_param: float = 0.2
    value_loss_coef: float = 1.0
    use_clipped_value_loss: bool = True
    entropy_coef: float = 0.005
    learning_rate: float = 1e-3
    schedule: str = "adaptive"  # "adaptive" (KL-driven) or "fixed"
    desired_kl: float = 0.01
    max_grad_norm: float = 1.0
    actor_hidden: tuple = (256, 128, 128)
    critic_hidden: tuple = (256, 128, 128)
    activation: str = "elu"
    init_noise_std: float = 1.0
    normalize_obs: bool = True
    normalize_advantage: bool = True
    # Divide rewards by the running std of the discounted return (as SB3's
    # VecNormalize does), so value targets have unit scale whatever the task's
    # reward scale.
    normalize_reward: bool = False

    @classmethod
    def from_dict(cls, cfg: dict) -> "PPOConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known - {"name"}
        if unknown:
            raise KeyError(f"unknown PPO settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: v for k, v in cfg.items() if k in known}
        for key in ("actor_hidden", "critic_hidden"):
            if key in values:
                values[key] = tuple(int(w) for w in values[key])
        return cls(**values)


# ------------------------------------------------------------------- losses
def gae(rewards, values, dones, last_values, gamma: float, lam: float):
    """Generalized advantage estimation over (steps, envs) tensors.

    ``dones[t]`` marks that the episode ended at step ``t`` (after time-out
    bootstrapping has been folded into ``rewards``). Returns (returns, advantages).
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(steps)):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        next_adv = delta + gamma * lam * not_done * next_adv
        advantages[t] = next_adv
        next_values = values[t]
    return advantages + values, advantages


def surrogate_loss(log_probs, old_log_probs, advantages, clip_param: float):
    """Clipped PPO objective, as a loss to minimize."""
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param)
    return torch.max(unclipped, clipped).mean()


def value_loss(values, old_values, returns, clip_param: float, clipped: bool = True):
    if not clipped:
        return (returns - values).pow(2).mean()
    values_clipped = old_values + (values - old_values).clamp(-clip_param, clip_param)
    return torch.max((values - returns).pow(2), (values_clipped - returns).pow(2)).mean()


def gaussian_kl(mu_old, sigma_old, mu_new, sigma_new):
    """KL(old || new) of diagonal Gaussians, summed over action dims."""
    return torch.sum(
        torch.log(sigma_new / sigma_old) + (sigma_old.pow(2) + (mu_old - mu_new).pow(2)) / (2.0 * sigma_new.pow(2)) - 0.5,
        dim=-1,
    )


def adapt_learning_rate(lr: float, kl: float, desired_kl: float, low: float = 1e-5, high: float = 1e-2) -> float:
    """rsl_rl's rule: shrink the step when the policy moved too far, grow it when too little."""
    if kl > desired_kl * 2.0:
        return max(low, lr / 1.5)
    if 0.0 < kl < desired_kl / 2.0:
        return min(high, lr * 1.5)
    return lr


# -------------------------------------------------------------------- PPO
class PPO:
    def __init__(self, cfg: PPOConfig, obs_sizes: dict[str, int], num_actions: int, num_envs: int, device="cpu", seed: int = 0):
        self.cfg = cfg
        self.device = torch.device(device)
        critic_group = "critic" if "critic" in obs_sizes else "policy"
        self.critic_group = critic_group
        self.model = ActorCritic(
            obs_sizes["policy"],
            obs_sizes[critic_group],
            num_actions,
            cfg.actor_hidden,
            cfg.critic_hidden,
            cfg.activation,
            cfg.init_noise_std,
            cfg.normalize_obs,
        ).to(self.device)
        # Under torchrun every rank starts from rank 0's weights.
        distributed.broadcast_module_(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate)
        self.learning_rate = cfg.learning_rate
        self.storage = RolloutStorage(cfg.num_steps_per_env, num_envs, obs_sizes, num_actions, self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self._last: dict | None = None
        self.return_norm = EmpiricalNormalization(1).to(self.device) if cfg.normalize_reward else None
        # Set by the runner when the env's rewards arrive after the rollout.
        self.defer_rewards = False
        self._time_outs = torch.zeros(cfg.num_steps_per_env, num_envs, device=self.device)
        self._discounted_return = torch.zeros(num_envs, device=self.device)

    def _critic_obs(self, obs):
        return obs[self.critic_group]

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.update_normalization(obs, self.critic_group)
        dist = self.model.distribution(obs["policy"])
        actions = dist.sample()
        self._last = {
            "obs": obs,
            "actions": actions,
            "log_probs": dist.log_prob(actions).sum(-1),
            "mean": dist.mean,
            "std": dist.stddev,
            "values": self.model.value(self._critic_obs(obs)),
        }
        return actions

    @torch.no_grad()
    def process_step(self, rewards: torch.Tensor, dones: torch.Tensor, time_outs: torch.Tensor, costs=None) -> None:
        """``costs`` (the env's ``extras["cost"]``) is used by constrained subclasses.
        With ``defer_rewards`` set, ``rewards`` are placeholders: the rollout's real
        rewards arrive through :meth:`rewrite_rewards` before :meth:`compute_returns`."""
        last = self._last
        self._time_outs[self.storage.step] = time_outs.to(self.device).float()
        if not self.defer_rewards:
            rewards = self._shape_reward(rewards, dones, time_outs, last["values"])
        self.storage.add(
            last["obs"], last["actions"], last["log_probs"], last["mean"], last["std"],
            rewards, dones.float(), last["values"],
        )

    def _shape_reward(self, rewards, dones, time_outs, values) -> torch.Tensor:
        if self.return_norm is not None:
            self._discounted_return = self._discounted_return * self.cfg.gamma + rewards
            self.return_norm.update(self._discounted_return[:, None])
            rewards = rewards / self.return_norm.std
            self._discounted_return = self._discounted_return * (1.0 - dones.float())
        # An episode cut by its time limit did not end: bootstrap with the value of
        # the state it was in (the next observation is already the reset one).
        return rewards + self.cfg.gamma * values * time_outs.float()

    def rewrite_rewards(self, rewards: torch.Tensor) -> None:
        """Put the rollout's real rewards (steps, envs) into storage, shaped step by
        step exactly as :meth:`process_step` would have (normalization, time-out
        bootstrap), for rewards scored after the rollout (asynchronous VLM rewards)."""
        s = self.storage
        if tuple(rewards.shape) != (s.step, s.num_envs):
            raise ValueError(f"rewrite_rewards needs rewards of shape {(s.step, s.num_envs)}, got {tuple(rewards.shape)}")
        rewards = rewards.to(self.device).float()
        for t in range(s.step):
            s.rewards[t] = self._shape_reward(rewards[t], s.dones[t], self._time_outs[t], s.values[t])

    @torch.no_grad()
    def compute_returns(self, last_obs: dict[str, torch.Tensor]) -> None:
        s = self.storage
        last_values = self.model.value(self._critic_obs(last_obs))
        s.returns, s.advantages = gae(s.rewards, s.values, s.dones, last_values, self.cfg.gamma, self.cfg.lam)
        if self.cfg.normalize_advantage:
            s.advantages = (s.advantages - s.advantages.mean()) / (s.advantages.std() + 1e-8)

    def parameters(self) -> list[nn.Parameter]:
        """Everything the optimizer trains (subclasses add their own networks)."""
        return list(self.model.parameters())

    def policy_advantages(self, batch: dict) -> torch.Tensor:
        """The advantages the surrogate ascends (ppo_lag mixes in the cost's)."""
        return batch["advantages"]

    def extra_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Further loss terms added to the PPO loss, by name (ppo_lag: the cost critic's)."""
        return {}

    def update(self) -> dict[str, float]:
        cfg = self.cfg
        totals = {"surrogate": 0.0, "value": 0.0, "entropy": 0.0, "kl": 0.0}
        n = 0
        params = self.parameters()
        for batch in self.storage.minibatches(cfg.num_minibatches, cfg.num_learning_epochs, self.generator):
            dist = self.model.distribution(batch["obs"]["policy"])
            log_probs = dist.log_prob(batch["actions"]).sum(-1)
            values = self.model.value(self._critic_obs(batch["obs"]))
            entropy = dist.entropy().sum(-1).mean()

            with torch.no_grad():
                kl = gaussian_kl(batch["action_mean"], batch["action_std"], dist.mean, dist.stddev).mean().item()
                # One learning rate for all ranks, or their parameters drift apart.
                kl = distributed.mean_scalar(kl, self.device)
            if cfg.schedule == "adaptive":
                self.learning_rate = adapt_learning_rate(self.learning_rate, kl, cfg.desired_kl)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.learning_rate

            surr = surrogate_loss(log_probs, batch["log_probs"], self.policy_advantages(batch), cfg.clip_param)
            vloss = value_loss(values, batch["values"], batch["returns"], cfg.clip_param, cfg.use_clipped_value_loss)
            loss = surr + cfg.value_loss_coef * vloss - cfg.entropy_coef * entropy
            extra = self.extra_losses(batch)
            for name, term in extra.items():
                loss = loss + term
                totals[name] = totals.get(name, 0.0) + term.item()

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients_(params)
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            self.optimizer.step()
            totals["surrogate"] += surr.item()
            totals["value"] += vloss.item()
            totals["entropy"] += entropy.item()
            totals["kl"] += kl
            n += 1
        self.storage.clear()
        out = {k: v / max(n, 1) for k, v in totals.items()}
        out["learning_rate"] = self.learning_rate
        out["action_std"] = self.model.log_std.exp().mean().item()
        return out

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "learning_rate": self.learning_rate,
            "generator": self.generator.get_state(),
            "return_norm": self.return_norm.state_dict() if self.return_norm is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.learning_rate = float(state["learning_rate"])
        self.generator.set_state(state["generator"])
        if self.return_norm is not None and state.get("return_norm") is not None:
            self.return_norm.load_state_dict(state["return_norm"])

    def inference_module(self) -> nn.Module:
        """obs -> deterministic action, with normalization inside (what gets exported)."""
        return _InferenceActor(self.model)


class _InferenceActor(nn.Module):
    def __init__(self, model: ActorCritic):
        super().__init__()
        self.norm = model.actor_norm
        self.actor = model.actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.norm(obs))
