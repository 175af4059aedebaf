"""Implicit Q-learning (Kostrikov et al. 2022): offline RL without querying
actions outside the dataset.

Per gradient step, in the reference's order:

1. V(s) by expectile regression (tau 0.7) onto min_i Q_target_i(s, a) of dataset actions;
2. the actor by advantage-weighted regression: maximize
   ``min(exp(beta (Q_target(s,a) - V(s))), 100) * log pi(a|s)`` on dataset actions;
3. the twin Q onto r + gamma (1 - terminated) V(s');
4. Polyak update of the target Q.

Defaults are the reference's for D4RL locomotion: 256-256 ReLU MLPs, lr 3e-4,
batch 256, gamma 0.99, expectile 0.7, temperature beta 3.0, tau 0.005, cosine
decay of the actor's learning rate over the run, and rewards rescaled by
1000 / (max - min episode return of the dataset).

Deliberate differences from the reference:

* the actor is the shared :class:`TanhGaussianActor` (state-dependent std, tanh
  squashing of the sample) instead of a Gaussian whose *mean* is tanh-squashed
  with a state-independent std; dataset actions are evaluated with the exact
  squashed log-density (actions clamped just inside the bound);
* observations are normalized (statistics of the dataset, computed once).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robotrl.algos.losses import expectile_loss, polyak_update
from robotrl.algos.sac import DeterministicActor, config_from_dict, critic_loss
from robotrl.policies.networks import QEnsemble, TanhGaussianActor, ValueNetwork


@dataclass
class IQLConfig:
    gamma: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7
    temperature: float = 3.0  # beta of the advantage weights
    max_weight: float = 100.0  # clip of exp(beta * advantage)
    batch_size: int = 256
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    lr_schedule: str = "cosine"  # actor lr: "cosine" (decayed to 0 over the run) or "constant"
    hidden: tuple = (256, 256)
    activation: str = "relu"
    num_q: int = 2
    normalize_obs: bool = True
    # Rewards * 1000 / (max - min episode return), as the reference does for locomotion.
    normalize_reward: bool = True
    # ---- the runner's side
    chunk_steps: int = 1000  # gradient steps per logged / checkpointed iteration
    eval_interval: int = 10000  # gradient steps between target-domain evaluations (0: only at the end)

    @classmethod
    def from_dict(cls, cfg: dict) -> "IQLConfig":
        cfg_obj = config_from_dict(cls, cfg)
        if cfg_obj.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"IQL lr_schedule must be 'cosine' or 'constant', got {cfg_obj.lr_schedule!r}")
        return cfg_obj


# ------------------------------------------------------------------- losses
def value_loss(q_target_min, v, expectile: float):
    """Expectile regression of V(s) onto min_i Q_target_i(s, a)."""
    return expectile_loss(q_target_min.detach() - v, expectile)


def q_backup(reward, next_v, terminated, gamma: float):
    """r + gamma (1 - terminated) V(s'): IQL's Q target (time-outs bootstrap)."""
    return reward + gamma * (1.0 - terminated) * next_v


def awr_weights(advantage, temperature: float, max_weight: float = 100.0):
    """exp(beta * A), clipped above at ``max_weight`` (no gradient)."""
    return torch.exp(temperature * advantage.detach()).clamp(max=max_weight)


def awr_actor_loss(log_prob, weights):
    """Advantage-weighted regression: -E[w log pi(a|s)] over dataset actions."""
    return -(weights.detach() * log_prob).mean()


def reward_scale(episode_returns: np.ndarray) -> float:
    """1000 / (max - min episode return), the reference's locomotion normalization
    (1 when the dataset has fewer than two distinct episode returns)."""
    spread = float(np.max(episode_returns) - np.min(episode_returns)) if len(episode_returns) else 0.0
    return 1000.0 / spread if spread > 1e-6 else 1.0


# -------------------------------------------------------------------- IQL
class IQL:
    def __init__(self, cfg: IQLConfig, obs_sizes: dict[str, int], num_actions: int, total_steps: int,
                 device="cpu", action_bound: float = 1.0, critic_group: str | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.critic_group = critic_group or ("critic" if "critic" in obs_sizes else "policy")
        self.actor = TanhGaussianActor(obs_sizes["policy"], num_actions, cfg.hidden, cfg.activation, action_bound).to(self.device)
        self.critic = QEnsemble(obs_sizes[self.critic_group], num_actions, cfg.hidden, cfg.activation, cfg.num_q).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = ValueNetwork(obs_sizes[self.critic_group], cfg.hidden, cfg.activation).to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=cfg.value_lr)
        if cfg.lr_schedule == "cosine":
            self.actor_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, T_max=max(1, int(total_steps)))
        else:
            self.actor_sched = None
        self.reward_scale = 1.0
        self.num_updates = 0

    def prepare(self, dataset) -> None:
        """Once, before training: observation statistics and reward scale of the dataset."""
        if self.cfg.normalize_obs:
            with torch.no_grad():
                self.actor.obs_norm.update(torch.as_tensor(dataset.obs["policy"], device=self.device))
                critic_obs = torch.as_tensor(dataset.obs[self.critic_group], device=self.device)
                for net in (self.critic, self.critic_target, self.value):
                    net.obs_norm.update(critic_obs)
        if self.cfg.normalize_reward:
            self.reward_scale = reward_scale(dataset.episode_returns)

    @torch.no_grad()
    def act(self, policy_obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor.deterministic(policy_obs) if deterministic else self.actor(policy_obs)[0]

    def update(self, batch) -> dict[str, float]:
        cfg = self.cfg
        obs_c, obs_p = batch["obs"][self.critic_group], batch["obs"]["policy"]
        with torch.no_grad():
            q_t = self.critic_target(obs_c, batch["action"]).min(dim=0).values

        v = self.value(obs_c)
        v_loss = value_loss(q_t, v, cfg.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.value_opt.step()

        with torch.no_grad():
            adv = q_t - self.value(obs_c)
            weights = awr_weights(adv, cfg.temperature, cfg.max_weight)
        a_loss = awr_actor_loss(self.actor.log_prob(obs_p, batch["action"]), weights)
        self.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_opt.step()
        if self.actor_sched is not None:
            self.actor_sched.step()

        with torch.no_grad():
            target = q_backup(batch["reward"] * self.reward_scale, self.value(batch["next_obs"][self.critic_group]),
                              batch["terminated"], cfg.gamma)
        q = self.critic(obs_c, batch["action"])
        c_loss = critic_loss(q, target)
        self.critic_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        self.critic_opt.step()
        polyak_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {
            "value": v_loss.item(),
            "actor": a_loss.item(),
            "critic": c_loss.item(),
            "q_mean": q.mean().item(),
            "advantage_mean": adv.mean().item(),
            "weight_mean": weights.mean().item(),
            "actor_lr": self.actor_opt.param_groups[0]["lr"],
        }

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "value": self.value.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "value_opt": self.value_opt.state_dict(),
            "actor_sched": self.actor_sched.state_dict() if self.actor_sched is not None else None,
            "reward_scale": self.reward_scale,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("actor", "critic", "critic_target", "value", "actor_opt", "critic_opt", "value_opt"):
            getattr(self, key).load_state_dict(state[key])
        if self.actor_sched is not None and state.get("actor_sched") is not None:
            self.actor_sched.load_state_dict(state["actor_sched"])
        self.reward_scale = float(state["reward_scale"])
        self.num_updates = int(state["num_updates"])

    def inference_module(self) -> nn.Module:
        return DeterministicActor(self.actor)
