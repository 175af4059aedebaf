"""PPO-Lagrangian: PPO with a cost critic and a Lagrange multiplier that keeps the
expected episode cost at or below ``cost_limit``.

The policy ascends (A_r - lambda A_c) / (1 + lambda), as OmniSafe's PPOLag does
(reward advantages standardized, cost advantages centred only). The multiplier
follows the mean cost of the episodes that finished in the last rollout, either by
gradient ascent on lambda (J_c - limit) with Adam (``lagrangian: gradient``, OmniSafe's
defaults) or by the PID rule of Stooke et al. 2020, "Responsive Safety in RL by PID
Lagrangian Methods" (``lagrangian: pid``), which damps the cost oscillation of the
plain multiplier.

Whose episodes: the Gaussian the policy samples from during training is not the
policy deployed (its mean action), and the two can spend very different costs (on
halfcheetah_velocity a multiplier that held the training episodes at 23 of a 25
limit left the mean action at 3.6 or 85). With ``mean_action_fraction`` > 0 a
share of the envs acts on the mean action: the multiplier follows their
episodes, and their transitions stay out of the PPO update (they were not
sampled from the policy whose ratio the surrogate takes).

When: an episode's cost is known only when it ends, a whole episode after the
actions that spent it (42 iterations of 24 steps on a 1000-step task). With that
delay the multiplier overshoots both ways: PID on the mean action's episodes
swung that cost (means over 25 updates) between 0.2 and 58.5, with a period of
about 125 updates.
``cost_estimate: rate`` feeds it the last rollout's cost per step times the
episode's step limit instead, a reading one rollout old (an upper bound where
episodes end early, e.g. on a fall).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from robotrl import distributed
from robotrl.algos.ppo import PPO, PPOConfig, gae, value_loss
from robotrl.policies.networks import mlp
from robotrl.storage import RolloutStorage


@dataclass
class PPOLagConfig(PPOConfig):
    cost_limit: float = 25.0  # expected episode cost the policy may spend
    lagrangian: str = "gradient"  # "gradient" (Adam on lambda) or "pid"
    lambda_init: float = 0.001
    lambda_lr: float = 0.035
    lambda_max: float = 100.0
    pid_kp: float = 0.1
    pid_ki: float = 0.01
    pid_kd: float = 0.01
    pid_d_delay: int = 10  # iterations the derivative term looks back
    pid_ema: float = 0.95  # smoothing of the proportional and derivative inputs
    cost_gamma: float = 0.99
    cost_value_loss_coef: float = 1.0
    # Share of the envs that act on the mean action, for the multiplier (0: it
    # follows the training episodes). At least one env when > 0.
    mean_action_fraction: float = 0.0
    # What the multiplier reads: "episodes" (mean cost of the episodes that ended in
    # the rollout) or "rate" (the rollout's cost per step x the episode step limit).
    cost_estimate: str = "episodes"

    def __post_init__(self):
        if not self.cost_limit >= 0:
            raise ValueError(f"cost_limit must be >= 0 (an expected episode cost), got {self.cost_limit}")
        if self.lagrangian not in ("gradient", "pid"):
            raise ValueError(f"lagrangian must be 'gradient' or 'pid', got {self.lagrangian!r}")
        if not 0 <= self.lambda_init <= self.lambda_max:
            raise ValueError(f"lambda_init={self.lambda_init} must lie in [0, lambda_max={self.lambda_max}]")
        if self.cost_estimate not in ("episodes", "rate"):
            raise ValueError(f"cost_estimate must be 'episodes' or 'rate', got {self.cost_estimate!r}")
        if not 0.0 <= self.mean_action_fraction < 1.0:
            raise ValueError(f"mean_action_fraction must lie in [0, 1), got {self.mean_action_fraction}")

    def mean_action_envs(self, num_envs: int) -> int:
        if self.mean_action_fraction == 0.0:
            return 0
        k = max(1, round(self.mean_action_fraction * num_envs))
        if k >= num_envs:
            raise ValueError(f"mean_action_fraction={self.mean_action_fraction} of {num_envs} envs leaves none to "
                             "learn from: use more envs or a smaller fraction")
        return k


# ------------------------------------------------------------------- losses
def lagrangian_advantages(adv_reward: torch.Tensor, adv_cost: torch.Tensor, lam: float) -> torch.Tensor:
    """The advantage of the penalized objective, scaled back to reward units."""
    return (adv_reward - lam * adv_cost) / (1.0 + lam)


class GradientLagrangian:
    """lambda <- clip(lambda + lr * (J_c - limit)) through Adam (OmniSafe's Lagrange)."""

    def __init__(self, cfg: PPOLagConfig):
        self.limit, self.max = cfg.cost_limit, cfg.lambda_max
        self.param = nn.Parameter(torch.tensor(float(cfg.lambda_init)))
        self.optimizer = torch.optim.Adam([self.param], lr=cfg.lambda_lr)

    @property
    def value(self) -> float:
        return float(self.param.detach())

    def update(self, episode_cost: float) -> float:
        loss = -self.param * (episode_cost - self.limit)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.param.clamp_(0.0, self.max)
        return self.value

    def state_dict(self) -> dict:
        return {"param": self.param.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.param.copy_(state["param"])
        self.optimizer.load_state_dict(state["optimizer"])


class PIDLagrangian:
    """lambda = clip(Kp e_p + I + Kd d, 0, max): e_p the smoothed violation, I the
    integral of violations (kept >= 0), d the rise of the smoothed cost over
    ``pid_d_delay`` updates (only rises count)."""

    def __init__(self, cfg: PPOLagConfig):
        self.cfg = cfg
        self.integral = 0.0
        self.delta_p = 0.0
        self.cost_d = 0.0
        self.history: deque[float] = deque([0.0], maxlen=cfg.pid_d_delay)
        self._value = float(cfg.lambda_init)

    @property
    def value(self) -> float:
        return self._value

    def update(self, episode_cost: float) -> float:
        c = self.cfg
        delta = episode_cost - c.cost_limit
        self.integral = max(0.0, self.integral + c.pid_ki * delta)
        self.delta_p = c.pid_ema * self.delta_p + (1 - c.pid_ema) * delta
        self.cost_d = c.pid_ema * self.cost_d + (1 - c.pid_ema) * episode_cost
        rise = max(0.0, self.cost_d - self.history[0])
        self.history.append(self.cost_d)
        self._value = min(max(0.0, c.pid_kp * self.delta_p + self.integral + c.pid_kd * rise), c.lambda_max)
        return self._value

    def state_dict(self) -> dict:
        return {"integral": self.integral, "delta_p": self.delta_p, "cost_d": self.cost_d,
                "history": list(self.history), "value": self._value}

    def load_state_dict(self, state: dict) -> None:
        self.integral, self.delta_p, self.cost_d = state["integral"], state["delta_p"], state["cost_d"]
        self.history = deque(state["history"], maxlen=self.cfg.pid_d_delay)
        self._value = state["value"]


# -------------------------------------------------------------------- PPO-Lag
class PPOLag(PPO):
    """Envs ``[0, k)`` act on the mean action when ``mean_action_fraction`` gives k > 0;
    PPO's storage holds envs ``[k, num_envs)`` only."""

    def __init__(self, cfg: PPOLagConfig, obs_sizes, num_actions, num_envs, device="cpu", seed: int = 0):
        self.k = cfg.mean_action_envs(num_envs)
        learners = num_envs - self.k
        # The env rows the multiplier follows, and those PPO learns from.
        self._followed = slice(0, self.k) if self.k else slice(None)
        self._learn = slice(self.k, None)
        super().__init__(cfg, obs_sizes, num_actions, learners, device, seed)
        self.cost_critic = mlp(obs_sizes[self.critic_group], cfg.critic_hidden, 1, cfg.activation).to(self.device)
        distributed.broadcast_module_(self.cost_critic)
        self.optimizer.add_param_group({"params": self.cost_critic.parameters()})
        self.storage = RolloutStorage(cfg.num_steps_per_env, learners, obs_sizes, num_actions, self.device, with_cost=True)
        self.lagrangian = GradientLagrangian(cfg) if cfg.lagrangian == "gradient" else PIDLagrangian(cfg)
        # Per-env running episode cost, and the costs of episodes finished since the
        # last update: those the multiplier follows, and the training policy's.
        self._episode_cost = torch.zeros(num_envs, device=self.device)
        self._finished_costs: list[torch.Tensor] = []
        self._finished_sampled: list[torch.Tensor] = []  # only with mean-action envs
        self.last_episode_cost = float("nan")
        self.last_sampled_cost = float("nan")
        # cost_estimate=rate: the followed envs' cost summed over this rollout, and the
        # episode step limit (set by the runner from the env).
        self._rollout_cost = torch.zeros((), device=self.device)
        self.episode_steps: int | None = None

    def cost_value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        return self.cost_critic(self.model.critic_norm(critic_obs)).squeeze(-1)

    def parameters(self) -> list[nn.Parameter]:
        return super().parameters() + list(self.cost_critic.parameters())

    @torch.no_grad()
    def act(self, obs):
        actions = super().act(obs)
        if self.k:
            actions = actions.clone()
            actions[self._followed] = self._last["mean"][self._followed]
        self._last["cost_values"] = self.cost_value(self._critic_obs(obs))
        return actions

    def _learners(self, x):
        """The rows of the envs PPO learns from."""
        if isinstance(x, dict):
            return {key: self._learners(v) for key, v in x.items()}
        return x[self._learn]

    @torch.no_grad()
    def process_step(self, rewards, dones, time_outs, costs=None) -> None:
        if costs is None:
            raise ValueError("ppo_lag needs the env's costs (extras['cost']) at every step")
        costs = costs.to(self.device).float()
        done = dones.to(self.device).float()
        self._episode_cost += costs
        if done.any():
            ended = done.bool()
            if self.cfg.cost_estimate == "episodes":
                f = self._followed
                self._finished_costs.append(self._episode_cost[f][ended[f]].clone())
            if self.k:
                self._finished_sampled.append(self._learners(self._episode_cost)[self._learners(ended)].clone())
        self._episode_cost *= 1.0 - done
        if self.cfg.cost_estimate == "rate":
            self._rollout_cost += costs[self._followed].sum()
        self._last = self._learners(self._last)
        costs, rewards, dones, time_outs = (self._learners(x) for x in (costs, rewards, dones, time_outs))
        # Time-outs bootstrap the cost too: the episode was cut, not ended.
        cost_target = costs + self.cfg.cost_gamma * self._last["cost_values"] * time_outs.float()
        cost_values = self._last["cost_values"]
        super().process_step(rewards, dones, time_outs)
        s = self.storage
        s.costs[s.step - 1] = cost_target
        s.cost_values[s.step - 1] = cost_values

    def rewrite_rewards(self, rewards: torch.Tensor) -> None:
        super().rewrite_rewards(rewards[:, self._learn])

    @torch.no_grad()
    def compute_returns(self, last_obs) -> None:
        last_obs = self._learners(last_obs)
        super().compute_returns(last_obs)
        s = self.storage
        last = self.cost_value(self._critic_obs(last_obs))
        s.cost_returns, adv = gae(s.costs, s.cost_values, s.dones, last, self.cfg.cost_gamma, self.cfg.lam)
        s.cost_advantages = adv - adv.mean()

    def update(self) -> dict[str, float]:
        # The multiplier moves first, on the episodes of the rollout just collected.
        if self.cfg.cost_estimate == "rate":
            if not self.episode_steps:
                raise ValueError("cost_estimate=rate needs the episode step limit: set PPOLag.episode_steps")
            # Steps in the rollout: every followed env stepped once per storage step.
            steps = self._episode_cost[self._followed].numel() * self.storage.step
            total = distributed.all_reduce_sum_(torch.stack([self._rollout_cost, self._rollout_cost.new_tensor(float(steps))]))
            followed = float(total[0] / total[1]) * self.episode_steps if total[1] > 0 else None
        else:
            followed = _mean_over_ranks(self._finished_costs, self.device)
        self._rollout_cost.zero_()
        if followed is not None:
            self.last_episode_cost = followed
            self.lagrangian.update(followed)
        if self.k:
            sampled = _mean_over_ranks(self._finished_sampled, self.device)
            if sampled is not None:
                self.last_sampled_cost = sampled
        self._finished_costs.clear()
        self._finished_sampled.clear()
        self._lambda = self.lagrangian.value
        out = super().update()
        out["lambda"] = self._lambda
        out["episode_cost"] = self.last_episode_cost
        if self.k:
            out["sampled_episode_cost"] = self.last_sampled_cost
        return out

    def policy_advantages(self, batch: dict) -> torch.Tensor:
        return lagrangian_advantages(batch["advantages"], batch["cost_advantages"], self._lambda)

    def extra_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        values = self.cost_value(self._critic_obs(batch["obs"]))
        loss = value_loss(values, batch["cost_values"], batch["cost_returns"], self.cfg.clip_param,
                          self.cfg.use_clipped_value_loss)
        return {"cost_value": self.cfg.cost_value_loss_coef * loss}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "cost_critic": self.cost_critic.state_dict(),
                "lagrangian": self.lagrangian.state_dict(), "episode_cost": self._episode_cost}

    def load_state_dict(self, state: dict) -> None:
        self.cost_critic.load_state_dict(state["cost_critic"])
        super().load_state_dict(state)
        self.lagrangian.load_state_dict(state["lagrangian"])
        self._episode_cost = state["episode_cost"].to(self.device)


def _mean_over_ranks(chunks: list[torch.Tensor], device) -> float | None:
    """Mean of the episode costs in ``chunks`` over all ranks; None when no rank
    finished an episode. Every rank takes part in the reduction, finished or not."""
    finished = torch.cat(chunks) if chunks else torch.zeros(0, device=device)
    total = torch.stack([finished.sum(), finished.new_tensor(float(len(finished)))])
    distributed.all_reduce_sum_(total)
    return float(total[0] / total[1]) if total[1] > 0 else None
