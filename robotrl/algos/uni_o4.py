"""Uni-O4 (Lei et al. 2023): offline and online RL with one on-policy objective.

Offline, on a dataset of the target domain (all networks read the ``policy``
observation group, normalized with the dataset's fixed statistics):

1. *Ensemble behaviour cloning*: ``num_policies`` (4) Gaussian policies, each exactly
   the PPO actor of :class:`~robotrl.policies.networks.ActorCritic` (MLP mean,
   state-independent ``log_std``), so online PPO loads them as they are. Member ``i``
   minimizes ``-log pi_i(a|s) - alpha (log pi_i(a|s) - max_{j != i} log pi_j(a|s))``
   (:func:`ensemble_bc_loss`, alpha 0.1; the other members' term is detached, as in
   the reference).
2. *IQL-style critics*: twin Q by TD on dataset transitions with target
   ``r + gamma (1 - terminated) V(s')``, V by expectile (0.7) regression on
   ``min(Q_target)``.
3. *A dynamics ensemble* (:mod:`robotrl.algos.dynamics_model`) for offline policy
   evaluation.
4. *Multi-step improvement* (BPPO-style): each member is improved by the clipped-ratio
   objective (:func:`offline_improvement_loss`) against its *behaviour copy*, with
   advantages ``min Q(s, a) - V(s)`` on actions sampled from that copy, normalized;
   clip 0.25 and lr 1e-4 decayed linearly to zero; gradient norm clipped at 0.5.
   Every ``ope_interval`` steps the OPE score of every member is computed -- the mean
   of ``min Q(s, a)`` over the states of dynamics-model rollouts from dataset states
   with the member's deterministic action, as in the reference's ``dynamics_eval`` --
   and a member's behaviour copy is replaced by the current policy only when its
   score beats the member's best so far.
5. *Selection*: the behaviour copy (the last OPE-accepted policy) of the member with
   the best OPE score is the offline policy. With ``online_selection`` (off by
   default, and reported when used) the members are instead ranked by a few real
   episodes, as the reference code does.

Online, :class:`robotrl.algos.ppo.PPO` starts from the selected actor (weights,
normalization, ``log_std``) and the offline V as its critic; the runner
(:mod:`robotrl.uni_o4_runner`) drives both phases.

Deliberate differences from the reference (see also the runner and the config):
the OPE compares old and new scores on one fixed set of start states and one random
stream (common random numbers), not a fresh sample per check; the selected policy is
the OPE-accepted behaviour copy, not the last iterate; target-Q updates are Polyak
every step; BC and Q/V train side by side in one pre-training loop, with step counts
and learning rates (BC 1e-3, Q/V 1e-3, tau 0.01) sized for small tasks rather than
the reference's 0.4 M BC and 2 M critic steps at 1e-4; the networks are the PPO
ActorCritic's (ELU MLPs) so that online PPO loads them unchanged.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from robotrl.algos.dynamics_model import DynamicsConfig, DynamicsEnsemble
from robotrl.algos.losses import expectile_loss, polyak_update
from robotrl.algos.ppo import surrogate_loss
from robotrl.policies.networks import ActorCritic, EmpiricalNormalization, QEnsemble, ValueNetwork, mlp


@dataclass
class UniO4Config:
    gamma: float = 0.99
    # The architecture shared with online PPO (ActorCritic's actor and critic).
    actor_hidden: tuple = (256, 128, 128)
    critic_hidden: tuple = (256, 128, 128)
    activation: str = "elu"
    init_noise_std: float = 1.0
    # Pre-training: BC ensemble and IQL critics, one minibatch each per step.
    offline_steps: int = 20000
    batch_size: int = 512
    num_policies: int = 4
    bc_alpha: float = 0.1
    bc_learning_rate: float = 1e-3
    q_hidden: tuple = (256, 256)
    critic_learning_rate: float = 1e-3
    expectile: float = 0.7
    tau: float = 0.01
    # Multi-step improvement with the OPE gate.
    improve_steps: int = 2000
    improve_learning_rate: float = 1e-4
    clip_ratio: float = 0.25
    improve_max_grad_norm: float = 0.5
    entropy_weight: float = 0.0
    ope_interval: int = 100
    ope_batch: int = 512
    ope_horizon: int = 100
    # Rank the members by real episodes instead of OPE (the reference code's habit).
    online_selection: bool = False
    online_selection_episodes: int = 4
    # Also evaluate the best-by-OPE BC member in the target domain (a baseline for
    # the report; it plays no part in training or selection).
    evaluate_bc: bool = True
    dynamics: dict = field(default_factory=dict)
    # Online fine-tuning (PPOConfig fields plus actor/critic learning rates).
    online: dict = field(default_factory=dict)
    online_domain: str = "real"  # real | sim
    freeze_obs_norm: bool = True
    critic_from_offline: bool = True

    @classmethod
    def from_dict(cls, cfg: dict) -> "UniO4Config":
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known - {"name"}
        if unknown:
            raise KeyError(f"unknown uni_o4 settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: v for k, v in cfg.items() if k in known}
        for key in ("actor_hidden", "critic_hidden", "q_hidden"):
            if key in values:
                values[key] = tuple(int(w) for w in values[key])
        for key in ("dynamics", "online"):
            values[key] = dict(values.get(key) or {})
        out = cls(**values)
        if out.online_domain not in ("real", "sim"):
            raise ValueError(f"algo.online_domain must be 'real' or 'sim', got {out.online_domain!r}")
        return out


# ------------------------------------------------------------------- losses
def ensemble_bc_loss(log_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-member loss ``(K,)`` of the diverse ensemble BC, from the dataset actions'
    log-likelihoods ``log_probs`` of shape ``(K, batch)`` (member ``i`` in row ``i``):

        -log pi_i(a|s) - alpha * (log pi_i(a|s) - max_{j != i} log pi_j(a|s)),

    averaged over the batch. The others' maximum is detached (it is their data
    term, not member ``i``'s), so member ``i``'s gradient is that of its own
    likelihood, scaled by ``1 + alpha``; with one member the term is zero."""
    k = log_probs.shape[0]
    if k == 1:
        return -log_probs.mean(dim=1)
    others = log_probs.detach().unsqueeze(0).expand(k, -1, -1).clone()  # (i, j, batch)
    eye = torch.eye(k, dtype=torch.bool, device=log_probs.device)
    others[eye] = -torch.inf
    max_other = others.max(dim=1).values  # (K, batch)
    return (-log_probs - alpha * (log_probs - max_other)).mean(dim=1)


def iql_value_loss(q_target: torch.Tensor, v: torch.Tensor, expectile: float) -> torch.Tensor:
    """Expectile regression of V(s) towards min-twin target Q(s, a)."""
    return expectile_loss(q_target - v, expectile)


def iql_q_loss(q: torch.Tensor, reward: torch.Tensor, not_done: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """TD loss of the twin Q ``(num_q, batch)`` towards ``r + gamma (1 - terminated) V(s')``,
    summed over the twins (the reference's)."""
    target = (reward + gamma * not_done * next_v).detach()
    return (q - target).pow(2).mean(dim=1).sum()


def normalize_advantage(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return (adv - adv.mean()) / (adv.std() + eps)


def offline_improvement_loss(log_probs, old_log_probs, advantages, clip: float, entropy=None, entropy_weight: float = 0.0):
    """BPPO's clipped-ratio objective against the behaviour copy, as a loss:
    ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) - w * entropy``."""
    loss = surrogate_loss(log_probs, old_log_probs, advantages, clip)
    if entropy is not None and entropy_weight:
        loss = loss - entropy_weight * entropy.mean()
    return loss


def linear_decay(value: float, step: int, total: int) -> float:
    """``value`` falling linearly to zero over ``total`` steps (the reference's clip and lr)."""
    return value * max(0.0, 1.0 - step / max(total, 1))


# ------------------------------------------------------------------ networks
class GaussianActor(nn.Module):
    """The actor half of :class:`ActorCritic`, with the same parameter names
    (``actor``, ``actor_norm``, ``log_std``), so its weights load into PPO's model."""

    def __init__(self, obs_dim: int, num_actions: int, hidden, activation: str = "elu", init_noise_std: float = 1.0):
        super().__init__()
        self.actor = mlp(obs_dim, hidden, num_actions, activation)
        self.actor_norm = EmpiricalNormalization(obs_dim)
        self.log_std = nn.Parameter(torch.full((num_actions,), float(init_noise_std)).log())
        nn.init.orthogonal_(self.actor[-1].weight, gain=0.01)
        nn.init.zeros_(self.actor[-1].bias)

    def action_mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.actor_norm(obs))

    def distribution(self, obs: torch.Tensor) -> Normal:
        mean = self.action_mean(obs)
        return Normal(mean, self.log_std.exp().expand_as(mean))

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs).log_prob(action).sum(-1)


def load_into_actor_critic(model: ActorCritic, actor: GaussianActor, value: ValueNetwork | None = None) -> None:
    """Copy an offline actor (and V, if its shapes fit the critic) into PPO's model."""
    model.actor.load_state_dict(actor.actor.state_dict())
    if isinstance(model.actor_norm, EmpiricalNormalization):
        model.actor_norm.load_state_dict(actor.actor_norm.state_dict())
    with torch.no_grad():
        model.log_std.copy_(actor.log_std)
    if value is not None:
        model.critic.load_state_dict(value.net.state_dict())
        if isinstance(model.critic_norm, EmpiricalNormalization):
            model.critic_norm.load_state_dict(value.obs_norm.state_dict())


def _fix_normalization(norm: EmpiricalNormalization, obs: torch.Tensor) -> None:
    """Set ``norm`` to the statistics of ``obs`` and stop it from updating further."""
    norm.mean.copy_(obs.mean(0))
    norm.var.copy_(obs.var(0, unbiased=False))
    norm.count.fill_(obs.shape[0])
    norm.until = 0


class TorchPolicy:
    """A torch module (obs -> action) behind the :class:`Policy` interface, for
    evaluating offline policies without exporting them."""

    def __init__(self, module: nn.Module, obs_layout, action_names):
        self.module, self.obs_layout, self.action_names = module, list(obs_layout), list(action_names)

    def reset(self, env_ids=None) -> None:
        pass

    @torch.no_grad()
    def act(self, obs) -> np.ndarray:
        obs = obs["policy"] if isinstance(obs, dict) else obs
        return self.module(torch.as_tensor(np.asarray(obs, np.float32))).cpu().numpy()


class MeanAction(nn.Module):
    def __init__(self, actor: GaussianActor):
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.action_mean(obs)


# ------------------------------------------------------------------ algorithm
class UniO4:
    """The offline phase of Uni-O4: data, networks, optimizers, steps and the OPE gate."""

    def __init__(self, cfg: UniO4Config, obs_dim: int, num_actions: int, device="cpu", seed: int = 0,
                 action_clip: float = 1.0):
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_dim, self.num_actions = obs_dim, num_actions
        self.action_clip = float(action_clip)
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        k = cfg.num_policies
        make_actor = lambda: GaussianActor(obs_dim, num_actions, cfg.actor_hidden, cfg.activation, cfg.init_noise_std)  # noqa: E731
        self.members = nn.ModuleList(make_actor() for _ in range(k)).to(self.device)
        self.behavior = copy.deepcopy(self.members)
        self.q = QEnsemble(obs_dim, num_actions, cfg.q_hidden, "relu", num_q=2).to(self.device)
        self.q_target = copy.deepcopy(self.q)
        # V has the PPO critic's architecture, so it can initialize the online critic.
        self.v = ValueNetwork(obs_dim, cfg.critic_hidden, cfg.activation).to(self.device)
        self.dynamics = DynamicsEnsemble(obs_dim, num_actions, DynamicsConfig.from_dict(cfg.dynamics)).to(self.device)
        self.bc_optimizer = torch.optim.Adam(self.members.parameters(), lr=cfg.bc_learning_rate, foreach=True)
        self.q_optimizer = torch.optim.Adam(self.q.parameters(), lr=cfg.critic_learning_rate, foreach=True)
        self.v_optimizer = torch.optim.Adam(self.v.parameters(), lr=cfg.critic_learning_rate, foreach=True)
        self.improve_optimizer = torch.optim.Adam(self.members.parameters(), lr=cfg.improve_learning_rate, foreach=True)
        self.best_scores = np.full(k, -np.inf)
        self.accepted = np.zeros(k, dtype=int)  # how often each behaviour copy was replaced
        self.data: dict[str, torch.Tensor] | None = None
        self.ope_start: torch.Tensor | None = None

    # --------------------------------------------------------------- data
    def set_dataset(self, ds) -> None:
        """Hold the dataset's ``policy``-group transitions as tensors and fix every
        network's observation normalization to the dataset's statistics."""
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=self.device)  # noqa: E731
        self.data = {
            "obs": t(ds.obs["policy"]),
            "action": t(ds.action),
            "reward": t(ds.reward),
            "next_obs": t(ds.next_obs["policy"]),
            # Time-outs are not terminal: bootstrap through them.
            "not_done": 1.0 - t(ds.terminated),
        }
        obs = self.data["obs"]
        with torch.no_grad():
            for net in [*self.members, *self.behavior]:
                _fix_normalization(net.actor_norm, obs)
            for net in (self.q, self.q_target):
                _fix_normalization(net.obs_norm, obs)
            _fix_normalization(self.v.obs_norm, obs)
        g = torch.Generator().manual_seed(self.seed + 1)
        n = obs.shape[0]
        self.ope_start = obs[torch.randint(n, (min(self.cfg.ope_batch, n),), generator=g).to(self.device)]

    def _batch(self) -> dict[str, torch.Tensor]:
        n = self.data["obs"].shape[0]
        idx = torch.randint(n, (min(self.cfg.batch_size, n),), generator=self.generator).to(self.device)
        return {k: v[idx] for k, v in self.data.items()}

    # ----------------------------------------------------------- pretrain
    def pretrain_step(self) -> dict[str, float]:
        """One minibatch of ensemble BC and one of IQL Q/V."""
        cfg = self.cfg
        b = self._batch()
        log_probs = torch.stack([m.log_prob(b["obs"], b["action"]) for m in self.members])
        bc = ensemble_bc_loss(log_probs, cfg.bc_alpha)
        self.bc_optimizer.zero_grad(set_to_none=True)
        bc.sum().backward()
        self.bc_optimizer.step()

        with torch.no_grad():
            q_t = self.q_target(b["obs"], b["action"]).min(0).values
        vloss = iql_value_loss(q_t, self.v(b["obs"]), cfg.expectile)
        self.v_optimizer.zero_grad(set_to_none=True)
        vloss.backward()
        self.v_optimizer.step()
        with torch.no_grad():
            next_v = self.v(b["next_obs"])
        q = self.q(b["obs"], b["action"])
        qloss = iql_q_loss(q, b["reward"], b["not_done"], next_v, cfg.gamma)
        self.q_optimizer.zero_grad(set_to_none=True)
        qloss.backward()
        self.q_optimizer.step()
        polyak_update(self.q_target, self.q, cfg.tau)
        return {"bc": bc.mean().item(), "bc_nll": -log_probs.mean().item(), "q": qloss.item(), "v": vloss.item(),
                "q_mean": q.mean().item()}

    def fit_dynamics(self, progress=None) -> dict:
        d = self.data
        return self.dynamics.fit(
            d["obs"].cpu().numpy(), d["action"].cpu().numpy(), d["next_obs"].cpu().numpy(), d["reward"].cpu().numpy(),
            generator=torch.Generator().manual_seed(self.seed + 2), progress=progress,
        )

    # ------------------------------------------------------------ improve
    def start_improvement(self) -> np.ndarray:
        """Behaviour copies := the BC members; their OPE scores are the bar to beat."""
        self.behavior.load_state_dict(self.members.state_dict())
        self.best_scores = self.ope_scores(self.behavior)
        return self.best_scores

    def improve_step(self, step: int, total: int) -> dict[str, float]:
        cfg = self.cfg
        clip = linear_decay(cfg.clip_ratio, step, total)
        lr = linear_decay(cfg.improve_learning_rate, step, total)
        for group in self.improve_optimizer.param_groups:
            group["lr"] = lr
        obs = self._batch()["obs"]
        losses = []
        with torch.no_grad():
            v = self.v(obs)
        for member, old in zip(self.members, self.behavior):
            with torch.no_grad():
                old_dist = old.distribution(obs)
                action = old_dist.sample()
                old_lp = old_dist.log_prob(action).sum(-1)
                adv = normalize_advantage(self.q(obs, action).min(0).values - v)
            dist = member.distribution(obs)
            lp = dist.log_prob(action).sum(-1)
            losses.append(offline_improvement_loss(lp, old_lp, adv, clip, dist.entropy().sum(-1), cfg.entropy_weight))
        self.improve_optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        for member in self.members:
            nn.utils.clip_grad_norm_(member.parameters(), cfg.improve_max_grad_norm)
        self.improve_optimizer.step()
        return {"improve": torch.stack(losses).mean().item(), "clip": clip, "lr": lr}

    @torch.no_grad()
    def ope_score(self, actor: GaussianActor) -> dict[str, float]:
        """Roll the actor's deterministic action out in the dynamics model from the
        fixed OPE start states with a fixed random stream; ``q_mean`` is the score."""
        clip = self.action_clip
        policy = lambda s: actor.action_mean(s).clamp(-clip, clip)  # noqa: E731
        q_fn = lambda s, a: self.q(s, a).min(0).values  # noqa: E731
        g = torch.Generator().manual_seed(self.seed + 3)
        return self.dynamics.rollout(policy, self.ope_start, self.cfg.ope_horizon, q_fn, self.cfg.gamma, generator=g)

    def ope_scores(self, actors) -> np.ndarray:
        return np.array([self.ope_score(a)["q_mean"] for a in actors])

    def ope_gate(self) -> tuple[np.ndarray, np.ndarray]:
        """Score the current members; replace the behaviour copy of each that improved."""
        scores = self.ope_scores(self.members)
        improved = scores > self.best_scores
        for i in np.flatnonzero(improved):
            self.behavior[i].load_state_dict(self.members[i].state_dict())
            self.best_scores[i] = scores[i]
            self.accepted[i] += 1
        return scores, improved

    def select_by_ope(self) -> int:
        return int(np.argmax(self.best_scores))

    # --------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "members": self.members.state_dict(),
            "behavior": self.behavior.state_dict(),
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "v": self.v.state_dict(),
            "dynamics": self.dynamics.state_dict(),
            "bc_optimizer": self.bc_optimizer.state_dict(),
            "q_optimizer": self.q_optimizer.state_dict(),
            "v_optimizer": self.v_optimizer.state_dict(),
            "improve_optimizer": self.improve_optimizer.state_dict(),
            "best_scores": torch.as_tensor(self.best_scores, dtype=torch.float64),
            "accepted": torch.as_tensor(self.accepted),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.members.load_state_dict(state["members"])
        self.behavior.load_state_dict(state["behavior"])
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.v.load_state_dict(state["v"])
        self.dynamics.load_state_dict(state["dynamics"])
        for name in ("bc_optimizer", "q_optimizer", "v_optimizer", "improve_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        self.best_scores = state["best_scores"].numpy().copy()
        self.accepted = state["accepted"].numpy().copy()
        self.generator.set_state(state["generator"])
        # Loaded normalizers must stay fixed too (``until`` is not part of the state).
        for net in [*self.members, *self.behavior]:
            net.actor_norm.until = 0
        for norm in (self.q.obs_norm, self.q_target.obs_norm, self.v.obs_norm):
            norm.until = 0
