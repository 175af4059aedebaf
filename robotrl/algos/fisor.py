"""FISOR: feasibility-guided safe offline RL (Zheng et al., ICLR 2024), after the
authors' JAX code (ZhengYinan-AIR/FISOR, ``jaxrl5/agents/fisor/fisor.py``).

A hard constraint (no violation ever) becomes "stay in the largest feasible region
the data supports". Three decoupled parts, each trained from the dataset only:

1. **Feasibility** (Hamilton-Jacobi reachability on the cost). The constraint
   signal is ``h = +cost_scale`` where cost > 0 else ``-1``. ``Q_h`` (a 2-member
   ensemble, aggregated by *max*: pessimistic) regresses onto the discounted
   reachability target ``(1 - gamma) h + gamma max(h, V_h(s'))`` (``h`` at a
   terminal state); ``V_h`` is fitted to ``max_i Q_h_target_i(s, a)`` by a
   *reversed* expectile (weight ``tau`` where ``Q_h < V_h``), so it approaches the
   lowest (safest) feasibility value reachable with the dataset's actions. The
   feasible region is ``V_h(s) <= 0``: from there the data shows a way never to
   violate.
2. **Reward critic**: IQL (``V_r`` by expectile ``tau`` of ``min_i Q_r_target``,
   ``Q_r`` onto ``r + gamma (1 - terminated) V_r(s')``).
3. **Policy**: a DDPM diffusion policy (:mod:`robotrl.policies.diffusion`, 5 steps,
   VP schedule, LayerNorm-ResNet) trained by weighted behaviour cloning:
   in infeasible states (``V_h > 0``) ``w = clip(exp(k_c (V_h - Q_h)), 1, 150)``
   (move toward the region, lower ``Q_h`` is better); in feasible states whose
   action stays feasible (``V_h <= 0`` and ``Q_h <= 0``)
   ``w = clip(exp(k_r (Q_r - V_r)), 0, 100)``; else ``w = 0``. Advantages come from
   the target critics, values from the current value nets, as in the reference.

Acting: sample ``N`` (16) actions from the EMA ("target") diffusion model, keep the
one with the lowest ``Q_h`` (``selection="min_qh"``, the reference's ``minqc``).
``selection="feasible_max_qr"`` instead keeps the highest-``Q_r`` sample among
those with ``Q_h <= 0`` (lowest ``Q_h`` when none is) — an option, not the paper's.

Per :meth:`FISOR.update` (the reference's order): ``actor_updates`` actor steps on
equal slices of the batch (reference: 2 x 1024), then ``V_r``, ``Q_r``, ``V_h``,
``Q_h`` on the first ``critic_batch_size`` (256) rows, Polyak updates of the target
critics (tau 0.005) and of the EMA actor (0.001).

Defaults are the reference's main-result config (``configs/train_config.py``):
lr 3e-4 everywhere, cosine decay of the actor lr over 3e6 steps, expectiles 0.9/0.9,
cost_scale 25, temperatures 5 (cost) and 3 (reward), cost_ub 150, T=5, N=16,
dropout 0.1, 3 LayerNorm residual blocks, rewards scaled by
``max_episode_length / (max - min episode return)``.

Deliberate differences from the reference:

* time-outs (``truncated``) bootstrap; the reference folds them into ``done``;
* observations are normalized by dataset statistics (inside every network);
* actions are divided by the task's action bound into ``[-1, 1]`` for the
  diffusion; the reference also clips dataset actions to ``1 - 1e-5``;
* the per-sample exp-clip weights and the losses are pure functions below.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from robotrl.algos.losses import expectile_loss, polyak_update
from robotrl.algos.offline_safe import OfflineSafeAlgo, check_cost_limit, reward_normalizer
from robotrl.policies.diffusion import (DiffusionDenoiser, DiffusionSampler, beta_schedule, noise_actions,
                                        weighted_denoising_loss)
from robotrl.policies.networks import QEnsemble, ValueNetwork

SELECTIONS = ("min_qh", "feasible_max_qr")


@dataclass
class FISORConfig:
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    actor_tau: float = 0.001  # EMA rate of the acting diffusion model
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    lr_decay_steps: int = 3_000_000  # cosine decay of the actor lr (0: constant)
    batch_size: int = 2048  # rows per update; the actor steps on `actor_updates` equal slices
    actor_updates: int = 2
    critic_batch_size: int = 256  # the critics use the first rows of the batch
    critic_hidden: tuple = (256, 256)
    activation: str = "relu"
    num_q: int = 2
    reward_expectile: float = 0.9
    feasibility_expectile: float = 0.9
    cost_scale: float = 25.0  # h = +cost_scale where cost > 0, else -1
    reward_temperature: float = 3.0
    cost_temperature: float = 5.0
    reward_max_weight: float = 100.0
    cost_min_weight: float = 1.0
    cost_max_weight: float = 150.0  # the reference's cost_ub
    diffusion_steps: int = 5  # T
    beta_schedule: str = "vp"
    ddpm_temperature: float = 1.0
    clip_sampler: bool = True
    num_samples: int = 16  # N candidate actions at run time
    selection: str = "min_qh"
    actor_width: int = 256
    actor_blocks: int = 3
    actor_dropout: float = 0.1
    actor_layer_norm: bool = True
    time_dim: int = 64
    cond_hidden: tuple = (128, 128)
    normalize_obs: bool = True
    normalize_reward: bool = True
    # FISOR enforces the hard constraint (zero violation); the limit is not used in
    # training and is kept so every safe algorithm and the benchmark share one key.
    cost_limit: float = 10.0
    # ---- the runner's side
    chunk_steps: int = 1000
    eval_interval: int = 10000

    @classmethod
    def from_dict(cls, cfg: dict) -> "FISORConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known - {"name"}
        if unknown:
            raise KeyError(f"unknown FISOR settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: v for k, v in cfg.items() if k in known}
        for key in ("critic_hidden", "cond_hidden"):
            if key in values:
                values[key] = tuple(int(w) for w in values[key])
        out = cls(**values)
        check_cost_limit(out.cost_limit, "fisor")
        if out.selection not in SELECTIONS:
            raise ValueError(f"fisor selection must be one of {SELECTIONS}, got {out.selection!r}")
        for key in ("reward_expectile", "feasibility_expectile"):
            if not 0.0 < getattr(out, key) < 1.0:
                raise ValueError(f"fisor {key} must be in (0, 1), got {getattr(out, key)}")
        if out.cost_scale <= 0:
            raise ValueError(f"fisor cost_scale must be > 0, got {out.cost_scale}")
        if out.num_samples < 1 or out.diffusion_steps < 1 or out.actor_updates < 1:
            raise ValueError("fisor num_samples, diffusion_steps and actor_updates must be >= 1")
        return out


# ------------------------------------------------------------------- losses
def constraint_signal(cost: torch.Tensor, cost_scale: float) -> torch.Tensor:
    """h = +cost_scale where the step costs (cost > 0), else -1."""
    return torch.where(cost > 0, torch.full_like(cost, float(cost_scale)), torch.full_like(cost, -1.0))


def reachability_target(h, next_v_h, terminated, gamma: float):
    """Discounted HJ reachability backup ``(1 - g) h + g max(h, V_h(s'))``; ``h`` at a terminal."""
    nonterminal = (1.0 - gamma) * h + gamma * torch.maximum(h, next_v_h)
    return torch.where(terminated > 0, h, nonterminal)


def feasibility_value_loss(q_h_max, v_h, expectile: float):
    """Reversed expectile: weight ``expectile`` where ``Q_h < V_h`` (pulls V_h to the
    low, safe end of the data's actions), ``1 - expectile`` elsewhere."""
    return expectile_loss(q_h_max.detach() - v_h, 1.0 - expectile)


def reward_value_loss(q_r_min, v_r, expectile: float):
    """IQL: weight ``expectile`` where ``Q_r > V_r``."""
    return expectile_loss(q_r_min.detach() - v_r, expectile)


def q_regression_loss(q, target):
    """Mean squared error of every ensemble member ``(num_q, batch)`` to ``target``."""
    return (q - target.detach().unsqueeze(0)).pow(2).mean()


def feasibility_weights(q_r, v_r, q_h, v_h, reward_temperature: float, cost_temperature: float,
                        reward_max_weight: float = 100.0, cost_min_weight: float = 1.0,
                        cost_max_weight: float = 150.0):
    """FISOR's behaviour-cloning weights (no gradient).

    infeasible (V_h > 0):            clip(exp(k_c (V_h - Q_h)), cost_min, cost_max)
    feasible and Q_h <= 0:           clip(exp(k_r (Q_r - V_r)), 0, reward_max)
    feasible but Q_h > 0:            0
    """
    with torch.no_grad():
        infeasible = v_h > 0
        safe = (~infeasible) & (q_h <= 0)
        cost_w = torch.exp((v_h - q_h) * cost_temperature).clamp(cost_min_weight, cost_max_weight)
        reward_w = torch.exp((q_r - v_r) * reward_temperature).clamp(0.0, reward_max_weight)
        return infeasible.float() * cost_w + safe.float() * reward_w


def select_least_risky(q_h: torch.Tensor, q_r: torch.Tensor | None = None, selection: str = "min_qh") -> torch.Tensor:
    """Index ``(batch,)`` of the chosen candidate among ``(batch, N)`` scores.

    ``min_qh``: lowest Q_h. ``feasible_max_qr``: highest Q_r among candidates with
    Q_h <= 0, lowest Q_h when no candidate is feasible."""
    if selection == "min_qh" or q_r is None:
        return q_h.argmin(dim=1)
    feasible = q_h <= 0
    best_r = torch.where(feasible, q_r, torch.full_like(q_r, -torch.inf)).argmax(dim=1)
    return torch.where(feasible.any(dim=1), best_r, q_h.argmin(dim=1))


# ------------------------------------------------------------- acting module
class LeastRiskyOfN(nn.Module):
    """``obs -> action``: N diffusion samples per observation (noise drawn inside),
    scored by the pessimistic (max over the ensemble) feasibility critic; keeps the
    least risky. One ONNX graph (noise via ``RandomNormalLike``)."""

    def __init__(self, sampler: DiffusionSampler, safety_critic: QEnsemble, num_samples: int,
                 reward_critic: QEnsemble | None = None, selection: str = "min_qh"):
        super().__init__()
        self.sampler = sampler
        self.safety_critic = safety_critic
        self.reward_critic = reward_critic if selection != "min_qh" else None
        self.num_samples = int(num_samples)
        self.selection = selection
        self.num_actions = int(sampler.denoiser.net.out.out_features)

    def candidates(self, obs: torch.Tensor, noise: torch.Tensor):
        """(repeated obs, actions) for noise ``(batch * N, T, A)``."""
        rep = obs.repeat_interleave(self.num_samples, dim=0)
        return rep, self.sampler(rep, noise)

    def choose(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        rep, actions = self.candidates(obs, noise)
        q_h = self.safety_critic(rep, actions).max(dim=0).values.reshape(-1, self.num_samples)
        q_r = None
        if self.reward_critic is not None:
            q_r = self.reward_critic(rep, actions).min(dim=0).values.reshape(-1, self.num_samples)
        idx = select_least_risky(q_h, q_r, self.selection)
        actions = actions.reshape(-1, self.num_samples, self.num_actions)
        return torch.gather(actions, 1, idx.reshape(-1, 1, 1).expand(-1, 1, self.num_actions)).squeeze(1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # A (batch * N, T, A) template whose shape follows the batch; randn_like
        # exports as RandomNormalLike, so the noise is drawn inside the graph.
        template = obs[:, :1].repeat_interleave(self.num_samples, dim=0).unsqueeze(-1)
        template = template.expand(-1, self.sampler.steps, self.num_actions)
        return self.choose(obs, torch.randn_like(template))


# -------------------------------------------------------------------- FISOR
class FISOR(OfflineSafeAlgo):
    name = "fisor"
    needs_costs = True

    def __init__(self, cfg: FISORConfig, obs_dim: int, num_actions: int, action_bound: float = 1.0,
                 device="cpu", seed: int = 0):
        super().__init__(cfg, obs_dim, num_actions, action_bound, device, seed)
        torch.manual_seed(seed)
        c = cfg
        dev = self.device
        self.denoiser = DiffusionDenoiser(obs_dim, num_actions, c.actor_width, c.actor_blocks, c.actor_dropout,
                                          c.actor_layer_norm, c.time_dim, c.cond_hidden).to(dev)
        self.target_denoiser = copy.deepcopy(self.denoiser).requires_grad_(False).eval()
        self.betas = beta_schedule(c.beta_schedule, c.diffusion_steps).to(dev)
        self.alpha_hats = torch.cumprod(1 - self.betas, 0)
        self.reward_critic = QEnsemble(obs_dim, num_actions, c.critic_hidden, c.activation, c.num_q).to(dev)
        self.reward_critic_target = copy.deepcopy(self.reward_critic).requires_grad_(False)
        self.reward_value = ValueNetwork(obs_dim, c.critic_hidden, c.activation).to(dev)
        self.safety_critic = QEnsemble(obs_dim, num_actions, c.critic_hidden, c.activation, c.num_q).to(dev)
        self.safety_critic_target = copy.deepcopy(self.safety_critic).requires_grad_(False)
        self.feasibility_value = ValueNetwork(obs_dim, c.critic_hidden, c.activation).to(dev)
        self.actor_opt = torch.optim.Adam(self.denoiser.parameters(), lr=c.actor_lr, foreach=True)
        self.actor_sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, T_max=int(c.lr_decay_steps))
                            if c.lr_decay_steps > 0 else None)
        self.reward_critic_opt = torch.optim.Adam(self.reward_critic.parameters(), lr=c.critic_lr, foreach=True)
        self.safety_critic_opt = torch.optim.Adam(self.safety_critic.parameters(), lr=c.critic_lr, foreach=True)
        self.reward_value_opt = torch.optim.Adam(self.reward_value.parameters(), lr=c.value_lr, foreach=True)
        self.feasibility_value_opt = torch.optim.Adam(self.feasibility_value.parameters(), lr=c.value_lr, foreach=True)
        self.generator = torch.Generator(device=dev).manual_seed(seed)
        self.reward_scale = 1.0

    def _obs_modules(self):
        return (self.denoiser, self.target_denoiser, self.reward_critic, self.reward_critic_target,
                self.reward_value, self.safety_critic, self.safety_critic_target, self.feasibility_value)

    def fit_normalization(self, dataset) -> None:
        super().fit_normalization(dataset)
        if self.cfg.normalize_reward:
            self.reward_scale = reward_normalizer(dataset)

    # ------------------------------------------------------------ values
    @torch.no_grad()
    def feasibility(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """``V_h(s)`` (or pessimistic ``Q_h(s, a)`` given actions); <= 0 means feasible."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if action is None:
            return self.feasibility_value(obs)
        action = torch.as_tensor(action, dtype=torch.float32, device=self.device)
        return self.safety_critic_target(obs, action).max(dim=0).values

    # ------------------------------------------------------------ update
    def _actor_step(self, obs, action):
        c = self.cfg
        n = obs.shape[0]
        t = torch.randint(0, c.diffusion_steps, (n,), generator=self.generator, device=self.device)
        noise = torch.randn(n, self.num_actions, generator=self.generator, device=self.device)
        a = (action / self.action_bound).clamp(-1.0, 1.0)
        noisy = noise_actions(a, t, noise, self.alpha_hats)
        with torch.no_grad():
            q_r = self.reward_critic_target(obs, action).min(dim=0).values
            v_r = self.reward_value(obs)
            q_h = self.safety_critic_target(obs, action).max(dim=0).values
            v_h = self.feasibility_value(obs)
            w = feasibility_weights(q_r, v_r, q_h, v_h, c.reward_temperature, c.cost_temperature,
                                    c.reward_max_weight, c.cost_min_weight, c.cost_max_weight)
        self.denoiser.train()
        eps = self.denoiser(obs, noisy, t.float().unsqueeze(-1))
        loss = weighted_denoising_loss(eps, noise, w)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        if self.actor_sched is not None:
            self.actor_sched.step()
        polyak_update(self.target_denoiser, self.denoiser, c.actor_tau)
        return loss, w, v_h

    def update(self, batch) -> dict[str, float]:
        """One update: the actor steps, then the critics (the reference's order)."""
        info = self.update_actor(batch)
        info.update(self.update_critics(batch))
        self.num_updates += 1
        return info

    def update_actor(self, batch) -> dict[str, float]:
        """``actor_updates`` weighted denoising steps on equal slices of the batch."""
        c = self.cfg
        obs, action = batch["obs"], batch["action"]
        for part in zip(obs.chunk(c.actor_updates), action.chunk(c.actor_updates)):
            actor_loss, w, _ = self._actor_step(*part)
        return {"actor": actor_loss.item(), "weight_mean": w.mean().item(),
                "actor_lr": self.actor_opt.param_groups[0]["lr"]}

    def update_critics(self, batch) -> dict[str, float]:
        """V_r, Q_r, V_h, Q_h on the first ``critic_batch_size`` rows. The critics never
        read the policy, so they can also be trained alone (FISOR's decoupling)."""
        c = self.cfg
        obs, action = batch["obs"], batch["action"]
        nb = min(c.critic_batch_size, obs.shape[0])
        o, a, o2 = obs[:nb], action[:nb], batch["next_obs"][:nb]
        r = batch["reward"][:nb] * self.reward_scale
        cost, term = batch["cost"][:nb], batch["terminated"][:nb].float()

        # Reward critic (IQL): V_r, then Q_r.
        with torch.no_grad():
            q_r_t = self.reward_critic_target(o, a).min(dim=0).values
        v_r = self.reward_value(o)
        v_r_loss = reward_value_loss(q_r_t, v_r, c.reward_expectile)
        self._step(self.reward_value_opt, v_r_loss)
        with torch.no_grad():
            target_r = r + c.gamma * (1.0 - term) * self.reward_value(o2)
        q_r = self.reward_critic(o, a)
        q_r_loss = q_regression_loss(q_r, target_r)
        self._step(self.reward_critic_opt, q_r_loss)
        polyak_update(self.reward_critic_target, self.reward_critic, c.tau)

        # Feasibility: V_h (reversed expectile of the pessimistic target Q_h), then Q_h.
        with torch.no_grad():
            q_h_t = self.safety_critic_target(o, a).max(dim=0).values
        v_h = self.feasibility_value(o)
        v_h_loss = feasibility_value_loss(q_h_t, v_h, c.feasibility_expectile)
        self._step(self.feasibility_value_opt, v_h_loss)
        with torch.no_grad():
            h = constraint_signal(cost, c.cost_scale)
            target_h = reachability_target(h, self.feasibility_value(o2), term, c.gamma)
        q_h = self.safety_critic(o, a)
        q_h_loss = q_regression_loss(q_h, target_h)
        self._step(self.safety_critic_opt, q_h_loss)
        polyak_update(self.safety_critic_target, self.safety_critic, c.tau)

        return {
            "reward_value": v_r_loss.item(),
            "reward_critic": q_r_loss.item(),
            "feasibility_value": v_h_loss.item(),
            "safety_critic": q_h_loss.item(),
            "q_r_mean": q_r.mean().item(),
            "v_h_mean": v_h.mean().item(),
            "feasible_fraction": (v_h <= 0).float().mean().item(),
        }

    @staticmethod
    def _step(opt, loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # ------------------------------------------------------------ acting
    def sampler(self) -> DiffusionSampler:
        """The EMA diffusion model as a sampler (shares parameters with the algorithm)."""
        return DiffusionSampler(self.target_denoiser, self.betas, self.action_bound,
                                self.cfg.ddpm_temperature, self.cfg.clip_sampler)

    def _selector(self) -> LeastRiskyOfN:
        return LeastRiskyOfN(self.sampler(), self.safety_critic_target, self.cfg.num_samples,
                             self.reward_critic_target, self.cfg.selection)

    @torch.no_grad()
    def act(self, obs) -> torch.Tensor:
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        single = obs.ndim == 1
        obs = obs.reshape(1, -1) if single else obs
        sel = self._selector().eval()
        noise = torch.randn(obs.shape[0] * self.cfg.num_samples, self.cfg.diffusion_steps, self.num_actions,
                            generator=self.generator, device=self.device)
        action = sel.choose(obs, noise)
        return action[0] if single else action

    def inference_module(self) -> nn.Module:
        return copy.deepcopy(self._selector()).cpu().eval()

    # ------------------------------------------------------------ checkpoints
    _modules = ("denoiser", "target_denoiser", "reward_critic", "reward_critic_target", "reward_value",
                "safety_critic", "safety_critic_target", "feasibility_value", "actor_opt", "reward_critic_opt",
                "safety_critic_opt", "reward_value_opt", "feasibility_value_opt")

    def state_dict(self) -> dict:
        state = {k: getattr(self, k).state_dict() for k in self._modules}
        state["actor_sched"] = self.actor_sched.state_dict() if self.actor_sched is not None else None
        state["generator"] = self.generator.get_state()
        state["reward_scale"] = self.reward_scale
        state["num_updates"] = self.num_updates
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in self._modules:
            getattr(self, k).load_state_dict(state[k])
        if self.actor_sched is not None and state.get("actor_sched") is not None:
            self.actor_sched.load_state_dict(state["actor_sched"])
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        self.reward_scale = float(state["reward_scale"])
        self.num_updates = int(state["num_updates"])
