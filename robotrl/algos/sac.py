"""Soft actor-critic (Haarnoja et al. 2018, the automatic-temperature version).

Twin Q networks with Polyak-averaged targets, a tanh-squashed Gaussian actor and
a temperature ``alpha`` tuned so the policy's entropy stays near ``-|A|``. The
actor sees the ``policy`` observation group, the critics the ``critic`` group
(privileged state) when there is one.

Episode ends: a terminal state has no future (``terminated`` zeroes the
bootstrap), a time limit does (``truncated`` rows bootstrap from the true last
observation, which the replay buffer stores in ``next_obs``).

Observation normalization: each network has an ``EmpiricalNormalization`` in
front. The runner feeds it every observation it collects (online), or the whole
dataset once (offline); the target critic copies the online critic's statistics
at every Polyak step, so target and online critic always see the same inputs.

The losses are pure functions (tested directly); :class:`SAC` holds networks and
optimizers and does one gradient step per :meth:`SAC.update` call.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import nn

from robotrl.algos.losses import polyak_update
from robotrl.policies.networks import QEnsemble, TanhGaussianActor


def config_from_dict(cls, cfg: dict, tuple_keys=("hidden",)):
    """Build config dataclass ``cls`` from a mapping, refusing unknown keys."""
    known = {f.name for f in fields(cls)}
    unknown = set(cfg) - known - {"name"}
    if unknown:
        raise KeyError(f"unknown {cls.__name__.removesuffix('Config')} settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: v for k, v in cfg.items() if k in known}
    for key in tuple_keys:
        if key in values and values[key] is not None:
            values[key] = tuple(int(w) for w in values[key])
    return cls(**values)


@dataclass
class SACConfig:
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    batch_size: int = 256
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden: tuple = (256, 256)
    activation: str = "relu"
    num_q: int = 2
    init_alpha: float = 1.0
    auto_alpha: bool = True
    target_entropy: Optional[float] = None  # None: -num_actions
    # Subtract alpha * log pi(a'|s') in the Q target (the soft Bellman backup).
    backup_entropy: bool = True
    normalize_obs: bool = True
    # ---- data collection (the runner's side)
    buffer_size: int = 1_000_000
    warmup_steps: int = 5000  # env steps of uniform random actions before any update
    updates_per_step: float = 1.0  # gradient steps per env step (all envs counted)
    chunk_steps: int = 1000  # env steps per logged / checkpointed iteration
    eval_interval: int = 0  # env steps between target-domain evaluations (0: only at the end)

    @classmethod
    def from_dict(cls, cfg: dict):
        return config_from_dict(cls, cfg)


# ------------------------------------------------------------------- losses
def soft_q_target(reward, next_q, next_log_prob, terminated, gamma: float, alpha):
    """r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(s').

    ``next_q`` is ``(num_q, batch)``. Pass ``alpha=0`` for a backup without entropy.
    """
    soft_value = next_q.min(dim=0).values - alpha * next_log_prob
    return reward + gamma * (1.0 - terminated) * soft_value


def critic_loss(q, target, weight=None):
    """Sum over the ensemble of the (optionally per-sample weighted) mean squared TD error."""
    err = (q - target.detach()).pow(2)
    if weight is not None:
        err = err * weight
    return err.mean(dim=-1).sum()


def actor_loss(log_prob, q, alpha):
    """E[alpha log pi(a|s) - min_i Q_i(s, a)], a ~ pi(s) reparameterized."""
    return (alpha * log_prob - q.min(dim=0).values).mean()


def temperature_loss(log_alpha, log_prob, target_entropy: float):
    """-log alpha (log pi + target entropy): raises alpha when entropy < target."""
    return -(log_alpha * (log_prob + target_entropy).detach()).mean()


@contextmanager
def frozen(module: nn.Module):
    """No parameter gradients for ``module`` (gradients still flow through it)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


# -------------------------------------------------------------------- SAC
class SAC:
    def __init__(self, cfg: SACConfig, obs_sizes: dict[str, int], num_actions: int, device="cpu",
                 action_bound: float = 1.0, critic_group: str | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_actions = int(num_actions)
        self.critic_group = critic_group or ("critic" if "critic" in obs_sizes else "policy")
        self.actor = TanhGaussianActor(obs_sizes["policy"], num_actions, cfg.hidden, cfg.activation, action_bound).to(self.device)
        self.critic = QEnsemble(obs_sizes[self.critic_group], num_actions, cfg.hidden, cfg.activation, cfg.num_q).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = float(-num_actions if cfg.target_entropy is None else cfg.target_entropy)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.num_updates = 0

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    # ---------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, policy_obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        if deterministic:
            return self.actor.deterministic(policy_obs)
        return self.actor(policy_obs)[0]

    @torch.no_grad()
    def update_normalization(self, obs: dict[str, torch.Tensor]) -> None:
        if not self.cfg.normalize_obs:
            return
        self.actor.obs_norm.update(obs["policy"])
        self.critic.obs_norm.update(obs[self.critic_group])
        self.critic_target.obs_norm.load_state_dict(self.critic.obs_norm.state_dict())

    # -------------------------------------------------------------- learning
    def q_target(self, batch) -> torch.Tensor:
        with torch.no_grad():
            next_action, next_log_prob = self.actor(batch["next_obs"]["policy"])
            next_q = self.critic_target(batch["next_obs"][self.critic_group], next_action)
            alpha = self.alpha if self.cfg.backup_entropy else 0.0
            return soft_q_target(batch["reward"], next_q, next_log_prob, batch["terminated"], self.cfg.gamma, alpha)

    def step_critic(self, loss: torch.Tensor) -> None:
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()

    def step_actor_and_alpha(self, policy_obs: torch.Tensor, critic_obs: torch.Tensor) -> dict[str, float]:
        action, log_prob = self.actor(policy_obs)
        with frozen(self.critic):
            q = self.critic(critic_obs, action)
        a_loss = actor_loss(log_prob, q, self.alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_opt.step()
        out = {"actor": a_loss.item(), "entropy": -log_prob.mean().item()}
        if self.cfg.auto_alpha:
            t_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
            self.alpha_opt.zero_grad(set_to_none=True)
            t_loss.backward()
            self.alpha_opt.step()
            out["alpha_loss"] = t_loss.item()
        out["alpha"] = self.alpha.item()
        return out

    def update(self, batch) -> dict[str, float]:
        """One gradient step of critic, actor and temperature on ``batch``."""
        target = self.q_target(batch)
        q = self.critic(batch["obs"][self.critic_group], batch["action"])
        c_loss = critic_loss(q, target)
        self.step_critic(c_loss)
        out = self.step_actor_and_alpha(batch["obs"]["policy"], batch["obs"][self.critic_group])
        polyak_update(self.critic_target, self.critic, self.cfg.tau)
        self.num_updates += 1
        out.update(critic=c_loss.item(), q_mean=q.mean().item())
        return out

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.num_updates = int(state["num_updates"])

    def inference_module(self) -> nn.Module:
        """obs -> deterministic action, normalization inside (what gets exported)."""
        return DeterministicActor(self.actor)


class DeterministicActor(nn.Module):
    """The exported policy of a tanh-Gaussian actor: ``bound * tanh(mean(norm(obs)))``."""

    def __init__(self, actor: TanhGaussianActor):
        super().__init__()
        self.actor = copy.deepcopy(actor).cpu().eval()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.deterministic(obs)


class TorchPolicy:
    """A deterministic torch actor behind the :class:`~robotrl.policies.base.Policy`
    interface, for periodic evaluation during training (no export needed)."""

    def __init__(self, actor: TanhGaussianActor, obs_layout=(), action_names=()):
        self.actor = actor
        self.obs_layout = list(obs_layout)
        self.action_names = list(action_names)

    def reset(self, env_ids=None) -> None:
        pass

    @torch.no_grad()
    def act(self, obs):
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.actor.action_bound.device)
        return self.actor.deterministic(obs).cpu().numpy()
