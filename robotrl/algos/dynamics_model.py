"""A learned dynamics ensemble, used by Uni-O4 for offline policy evaluation (OPE).

``num_members`` (7) Gaussian MLPs, trained together, each predict the change of the
``policy`` observation and the reward, ``(obs' - obs, r) ~ N(mu(s, a), diag sigma^2(s, a))``,
from ``(obs, action)``. As in the MBPO/MOPO/MOBILE models that the Uni-O4 reference
uses: inputs are standardized with the dataset's statistics, each member sees the
data in its own order, the log-variance is kept between learned soft bounds, a
held-out split (``holdout_fraction`` of the rows) early-stops training, and the ``num_elites`` (5) members with the lowest held-out error are the
ones that predict. One deliberate difference: the targets are standardized too (the
network predicts normalized deltas and rewards), which keeps the Gaussian NLL
well-scaled whatever the task's units.

Rollouts (:meth:`DynamicsEnsemble.rollout`) step each sample with one elite picked
at random per sample and step, sampling from its Gaussian. Terminal function: the
tasks' true termination rules are not known here, so a rollout *stops* where the
predicted observation leaves the box the dataset covers (every dimension within
``[min - margin * range, max + margin * range]`` of the dataset's observations and
next observations); past that the model would be extrapolating. Dataset rows that
ended in a real terminal state are not modelled as such (a deliberate
simplification; the tasks this repo's offline data come from rarely terminate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import torch
from torch import nn


@dataclass
class DynamicsConfig:
    num_members: int = 7
    num_elites: int = 5
    hidden: tuple = (200, 200, 200)
    learning_rate: float = 1e-3
    weight_decay: float = 2.5e-5
    batch_size: int = 256
    holdout_fraction: float = 0.1
    max_steps: int = 20000  # gradient steps at most (each step: one minibatch per member)
    eval_interval: int = 250  # steps between held-out checks
    patience: int = 8  # held-out checks without a 1% improvement before stopping
    range_margin: float = 0.1  # the terminal box: dataset range widened by this fraction

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "DynamicsConfig":
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise KeyError(f"unknown dynamics-model settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
        if "hidden" in cfg:
            cfg["hidden"] = tuple(int(w) for w in cfg["hidden"])
        return cls(**cfg)


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied to ``(E, batch, in)`` at once."""

    def __init__(self, members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        # Truncated-normal init of width 1/(2 sqrt(in)) (the MBPO models' choice).
        nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * math.sqrt(in_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class DynamicsEnsemble(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, cfg: DynamicsConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DynamicsConfig()
        if not 1 <= cfg.num_elites <= cfg.num_members:
            raise ValueError(f"num_elites={cfg.num_elites} must be in [1, num_members={cfg.num_members}]")
        self.obs_dim, self.num_actions = obs_dim, num_actions
        self.out_dim = obs_dim + 1
        dims = [obs_dim + num_actions, *cfg.hidden]
        self.layers = nn.ModuleList(EnsembleLinear(cfg.num_members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = EnsembleLinear(cfg.num_members, dims[-1], 2 * self.out_dim)
        self.act = nn.SiLU()
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), -10.0))
        for name, size in (("in_mean", obs_dim + num_actions), ("in_std", obs_dim + num_actions),
                           ("out_mean", self.out_dim), ("out_std", self.out_dim),
                           ("obs_low", obs_dim), ("obs_high", obs_dim)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name or "low" in name else torch.ones(size))
        self.register_buffer("elites", torch.arange(cfg.num_elites))
        self.register_buffer("holdout_mse", torch.full((cfg.num_members,), float("inf")))

    # ------------------------------------------------------------------ model
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized ``(E, B, in)`` inputs -> normalized means and log-variances ``(E, B, out)``."""
        h = x
        for layer in self.layers:
            h = self.act(layer(h))
        mean, logvar = self.head(h).chunk(2, dim=-1)
        # Soft bounds (PETS): smooth, and the bounds themselves are learned.
        logvar = self.max_logvar - nn.functional.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + nn.functional.softplus(logvar - self.min_logvar)
        return mean, logvar

    def _inputs(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return (torch.cat([obs, action], dim=-1) - self.in_mean) / self.in_std

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of ``(delta obs, reward)`` per member, in data units: ``(E, B, obs_dim + 1)``."""
        x = self._inputs(obs, action).expand(self.cfg.num_members, -1, -1)
        mean, logvar = self(x)
        return mean * self.out_std + self.out_mean, (0.5 * logvar).exp() * self.out_std

    # --------------------------------------------------------------- training
    def fit(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray,
            generator: torch.Generator | None = None, progress: Callable[[int, dict], None] | None = None) -> dict:
        """Train on the transitions; return held-out statistics. ``progress(steps, info)``
        is called at every held-out check."""
        cfg = self.cfg
        g = generator or torch.Generator().manual_seed(0)
        dev = self.in_mean.device
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
        obs_t, act_t, next_t, rew_t = t(obs), t(action), t(next_obs), t(reward).reshape(-1, 1)
        inputs = torch.cat([obs_t, act_t], dim=1)
        targets = torch.cat([next_t - obs_t, rew_t], dim=1)
        n = inputs.shape[0]
        n_hold = min(max(1, int(round(n * cfg.holdout_fraction))), 5000) if n > 10 else 0
        perm = torch.randperm(n, generator=g).to(dev)
        hold, train = perm[:n_hold], perm[n_hold:]
        with torch.no_grad():
            self.in_mean.copy_(inputs[train].mean(0))
            self.in_std.copy_(inputs[train].std(0).clamp_min(1e-6))
            self.out_mean.copy_(targets[train].mean(0))
            self.out_std.copy_(targets[train].std(0).clamp_min(1e-6))
            both = torch.cat([obs_t, next_t])
            self.obs_low.copy_(both.min(0).values)
            self.obs_high.copy_(both.max(0).values)
        x_all = (inputs - self.in_mean) / self.in_std
        y_all = (targets - self.out_mean) / self.out_std
        decay = [p for layer in self.layers for p in (layer.weight,)] + [self.head.weight]
        rest = [p for p in self.parameters() if all(p is not d for d in decay)]
        opt = torch.optim.Adam([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest}], lr=cfg.learning_rate)
        best = torch.full((cfg.num_members,), float("inf"))
        best_state = None
        since = 0
        steps = 0
        m = cfg.num_members
        while steps < cfg.max_steps and len(train):
            # Each member draws its own minibatch (a bootstrap-like view of the data).
            idx = train[torch.randint(len(train), (m, min(cfg.batch_size, len(train))), generator=g).to(dev)]
            loss = gaussian_nll(*self(x_all[idx]), y_all[idx]).sum() + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if n_hold and (steps % cfg.eval_interval == 0 or steps == cfg.max_steps):
                mse = self.holdout_error(x_all[hold], y_all[hold])
                improved = (best - mse) / best.abs().clamp_min(1e-12) > 0.01
                if improved.any():
                    best = torch.where(improved, mse, best)
                    best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
                    since = 0
                else:
                    since += 1
                if progress is not None:
                    progress(steps, {"holdout_mse": float(mse.mean())})
                if since >= cfg.patience:
                    break
        if best_state is not None:
            self.load_state_dict(best_state)
        mse = self.holdout_error(x_all[hold], y_all[hold]) if n_hold else torch.zeros(m)
        with torch.no_grad():
            self.holdout_mse.copy_(mse)
            self.elites.copy_(torch.argsort(mse)[: cfg.num_elites].to(self.elites.device))
        return {"steps": steps, "holdout_mse": mse.tolist(), "elites": self.elites.tolist(), "holdout_rows": int(n_hold)}

    @torch.no_grad()
    def holdout_error(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member MSE of the mean prediction in normalized target units."""
        mean, _ = self(x.expand(self.cfg.num_members, -1, -1))
        return (mean - y).pow(2).mean(dim=(1, 2)).cpu()

    # ---------------------------------------------------------------- rollout
    @torch.no_grad()
    def step(self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None,
             deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model step: ``(next_obs, reward, terminal)``, one random elite per sample."""
        mean, std = self.predict(obs, action)
        b = obs.shape[0]
        pick = self.elites[torch.randint(len(self.elites), (b,), generator=generator).to(obs.device)]
        rows = torch.arange(b, device=obs.device)
        mu, sd = mean[pick, rows], std[pick, rows]
        if not deterministic:
            mu = mu + sd * torch.randn(mu.shape, generator=generator).to(mu.device)
        next_obs = obs + mu[:, : self.obs_dim]
        reward = mu[:, self.obs_dim]
        return next_obs, reward, self.out_of_range(next_obs)

    def out_of_range(self, obs: torch.Tensor) -> torch.Tensor:
        """The terminal function: the observation left the (widened) box of the data."""
        span = (self.obs_high - self.obs_low) * self.cfg.range_margin
        return ((obs < self.obs_low - span) | (obs > self.obs_high + span)).any(dim=-1)

    @torch.no_grad()
    def rollout(self, policy: Callable[[torch.Tensor], torch.Tensor], start_obs: torch.Tensor, horizon: int,
                q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, gamma: float = 0.99,
                generator: torch.Generator | None = None) -> dict[str, float]:
        """Roll ``policy`` (obs -> action) out in the model from ``start_obs`` for up to
        ``horizon`` steps. Returns the mean of ``q_fn(s, a)`` over every visited
        (non-terminated) state (Uni-O4's OPE score), the mean model reward, the mean
        discounted model return per start state, and the mean rollout length."""
        obs = start_obs
        b = obs.shape[0]
        alive = torch.ones(b, dtype=torch.bool, device=obs.device)
        q_sum, r_sum, count = 0.0, 0.0, 0
        ret = torch.zeros(b, device=obs.device)
        length = torch.zeros(b, device=obs.device)
        for t in range(horizon):
            action = policy(obs)
            if q_fn is not None:
                q_sum += float(q_fn(obs, action)[alive].sum())
            next_obs, reward, terminal = self.step(obs, action, generator)
            r_sum += float(reward[alive].sum())
            count += int(alive.sum())
            ret += (gamma**t) * reward * alive
            length += alive
            alive = alive & ~terminal
            if not alive.any():
                break
            # Terminated samples keep being stepped (batched) but are masked out; they
            # stay at their last in-range state so they cannot blow up.
            obs = torch.where(alive[:, None], next_obs, obs)
        return {
            "q_mean": q_sum / max(count, 1),
            "reward_mean": r_sum / max(count, 1),
            "return_mean": float(ret.mean()),
            "length_mean": float(length.mean()),
        }


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-member Gaussian negative log-likelihood (without the constant), averaged
    over samples and dimensions: ``(E,)``."""
    return (((mean - target) ** 2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2))

