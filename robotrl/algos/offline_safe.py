"""Offline safe RL: the common interface of the safe offline algorithms, the
baselines ``bc_all``, ``bc_safe`` and ``cpq``, and a small training loop.

Interface (``fisor``, ``bc_all``, ``bc_safe``, ``cpq``; see :data:`ALGOS`)::

    algo = ALGOS[name](cfg, obs_dim, num_actions, action_bound, device, seed)
    data = algo.training_data(dataset)   # the rows to sample (bc_safe: safe episodes);
                                         # refuses a dataset without costs
    algo.fit_normalization(data)         # observation (and reward) statistics, once
    algo.update(batch) -> dict           # one gradient step; batch: torch tensors
                                         # obs, action, reward, cost, next_obs, terminated
    algo.act(obs) -> action              # deterministic (FISOR: least risky of N)
    algo.state_dict() / load_state_dict()
    algo.inference_module()              # torch module obs -> action, for ONNX export

:func:`train_offline` drives exactly these calls.

Baselines, after OSRL (liuzuxin/OSRL, the DSRL baselines):

* ``bc_all``: behaviour cloning (MLP, tanh-bounded, MSE) on every transition;
* ``bc_safe``: the same on the episodes whose episode cost is <= ``cost_limit``;
* ``cpq`` (Constraints Penalized Q-learning, Xu et al. AAAI 2022): a VAE of the
  behaviour actions marks the policy's out-of-distribution actions (the 25% of
  sampled actions with the largest VAE KL); the cost critic is trained to *raise*
  its value on them (a penalty weighted by a multiplier ``alpha`` in
  ``[0, alpha_max]``, driven by ``qc_thres - Q_c(ood)``), so they look unsafe; the
  reward backup and the actor objective count ``Q_r`` only where
  ``Q_c <= q_thres`` (``q_thres`` = the cost limit as a discounted per-step rate).
  CPQ over BCQ-Lag: one actor and two critics plus a VAE, no perturbation network
  and no PID multiplier, and the whole method is the two masked objectives above,
  so a faithful version is short. Deliberate difference from OSRL: the OOD penalty
  is evaluated by the *current* cost critic so it has a gradient (OSRL computes it
  under ``no_grad`` from the target critic, which leaves only the Bellman term).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from robotrl.algos.losses import polyak_update
from robotrl.datasets.dataset import Dataset
from robotrl.policies.networks import EmpiricalNormalization, QEnsemble, TanhGaussianActor, mlp


# ------------------------------------------------------------------ checks
def check_cost_limit(cost_limit: float, algo: str) -> None:
    if cost_limit is None or not np.isfinite(cost_limit) or cost_limit < 0:
        raise ValueError(f"algo={algo}: cost_limit must be a finite number >= 0 (episode cost), got {cost_limit}")


def require_costs(dataset: Dataset, algo: str) -> None:
    """A safety algorithm needs a cost signal: a cost column with some nonzero entry."""
    cost = getattr(dataset, "cost", None)
    where = dataset.meta.get("task") or dataset.meta.get("env_id") or "the dataset"
    if cost is None or np.size(cost) == 0:
        raise ValueError(f"algo={algo} needs a dataset with costs: {where} has no cost column")
    cost = np.asarray(cost)
    if not np.isfinite(cost).all():
        raise ValueError(f"algo={algo} needs finite costs: {where} has non-finite cost rows "
                         f"{np.flatnonzero(~np.isfinite(cost))[:10].tolist()}")
    if not np.any(cost != 0):
        raise ValueError(
            f"algo={algo} needs a dataset with costs: the cost column of {where} is all zero "
            f"({len(cost)} rows), so there is nothing to learn safety from. Collect it on a safety task "
            f"(point_goal_hazards, car_goal_hazards, hopper_velocity, ...; cost = extras['cost'])."
        )


def reward_normalizer(dataset: Dataset) -> float:
    """``max episode length / (max - min episode return)`` (the FISOR/DSRL reward scaling);
    1 when all episode returns are equal."""
    returns = dataset.episode_returns
    lengths = np.diff(np.concatenate([dataset.episode_starts, [len(dataset)]]))
    spread = float(returns.max() - returns.min()) if len(returns) else 0.0
    return float(lengths.max()) / spread if spread > 1e-6 else 1.0


def safe_episode_mask(dataset: Dataset, cost_limit: float) -> np.ndarray:
    """Row mask of the episodes whose summed cost is <= ``cost_limit``."""
    costs = dataset.episode_costs
    lengths = np.diff(np.concatenate([dataset.episode_starts, [len(dataset)]]))
    keep = costs <= cost_limit + 1e-9
    if not keep.any():
        raise ValueError(f"bc_safe: no episode of the dataset has cost <= cost_limit={cost_limit} "
                         f"(lowest episode cost {costs.min():.3g}); raise cost_limit or collect safer data")
    return np.repeat(keep, lengths)


def subset(dataset: Dataset, rows: np.ndarray) -> Dataset:
    """The dataset restricted to a row mask of whole episodes."""
    return Dataset(
        obs={g: v[rows] for g, v in dataset.obs.items()},
        action=dataset.action[rows], reward=dataset.reward[rows], cost=dataset.cost[rows],
        next_obs={g: v[rows] for g, v in dataset.next_obs.items()},
        terminated=dataset.terminated[rows], truncated=dataset.truncated[rows], meta=dict(dataset.meta),
    )


def config_from_dict(cls, cfg: dict, algo: str, tuple_keys=()):
    known = {f.name for f in fields(cls)}
    unknown = set(cfg) - known - {"name"}
    if unknown:
        raise KeyError(f"unknown {algo} settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: v for k, v in cfg.items() if k in known}
    for key in tuple_keys:
        if key in values:
            values[key] = tuple(int(w) for w in values[key])
    out = cls(**values)
    check_cost_limit(out.cost_limit, algo)
    return out


# --------------------------------------------------------------- base class
class OfflineSafeAlgo:
    """What the four algorithms share: construction, the data checks, observation
    normalization of every network that reads observations."""

    name = "offline"
    needs_costs = True

    def __init__(self, cfg, obs_dim: int, num_actions: int, action_bound: float = 1.0, device="cpu", seed: int = 0):
        self.cfg = cfg
        self.obs_dim, self.num_actions = int(obs_dim), int(num_actions)
        self.action_bound = float(action_bound)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.num_updates = 0

    def _obs_modules(self) -> tuple[nn.Module, ...]:
        return ()

    def check_dataset(self, dataset: Dataset, costs: bool = True) -> None:
        if costs and self.needs_costs:
            require_costs(dataset, self.name)
        if dataset.obs["policy"].shape[1] != self.obs_dim or dataset.action.shape[1] != self.num_actions:
            raise ValueError(f"algo={self.name} was built for {self.obs_dim} observations and {self.num_actions} "
                             f"actions; the dataset has {dataset.obs['policy'].shape[1]} and {dataset.action.shape[1]}")

    def training_data(self, dataset: Dataset) -> Dataset:
        """The rows to train on (all of them, but for bc_safe)."""
        self.check_dataset(dataset)
        self._costs_checked = True
        return dataset

    def fit_normalization(self, dataset: Dataset) -> None:
        # The cost check belongs to the full dataset (training_data); bc_safe's safe
        # subset may well have no cost at all.
        self.check_dataset(dataset, costs=not getattr(self, "_costs_checked", False))
        if not getattr(self.cfg, "normalize_obs", True):
            return
        obs = torch.as_tensor(dataset.obs["policy"], dtype=torch.float32, device=self.device)
        for module in self._obs_modules():
            for norm in (m for m in module.modules() if isinstance(m, EmpiricalNormalization)):
                norm.update(obs)


# ----------------------------------------------------------------------- BC
@dataclass
class BCConfig:
    """OSRL's BC defaults (256-256 ReLU, tanh output, MSE, lr 1e-3, batch 512)."""

    actor_lr: float = 1e-3
    hidden: tuple = (256, 256)
    activation: str = "relu"
    batch_size: int = 512
    cost_limit: float = 10.0  # bc_safe keeps episodes with episode cost <= cost_limit
    normalize_obs: bool = True
    chunk_steps: int = 1000
    eval_interval: int = 10000

    @classmethod
    def from_dict(cls, cfg: dict, algo: str = "bc") -> "BCConfig":
        return config_from_dict(cls, cfg, algo, ("hidden",))


class BoundedMLPActor(nn.Module):
    """``bound * tanh(mlp(norm(obs)))``, the deterministic BC policy."""

    def __init__(self, obs_dim, num_actions, hidden, activation, action_bound):
        super().__init__()
        self.obs_norm = EmpiricalNormalization(obs_dim)
        self.net = mlp(obs_dim, hidden, num_actions, activation)
        self.register_buffer("action_bound", torch.tensor(float(action_bound)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_bound * torch.tanh(self.net(self.obs_norm(obs)))


def bc_loss(pred_action, action):
    return F.mse_loss(pred_action, action)


class BCAll(OfflineSafeAlgo):
    name = "bc_all"
    needs_costs = False  # plain BC; a baseline, not a safety method

    def __init__(self, cfg: BCConfig, obs_dim, num_actions, action_bound=1.0, device="cpu", seed=0):
        super().__init__(cfg, obs_dim, num_actions, action_bound, device, seed)
        torch.manual_seed(seed)
        self.actor = BoundedMLPActor(obs_dim, num_actions, cfg.hidden, cfg.activation, action_bound).to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)

    def _obs_modules(self):
        return (self.actor,)

    def update(self, batch) -> dict[str, float]:
        loss = bc_loss(self.actor(batch["obs"]), batch["action"])
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.num_updates += 1
        return {"actor": loss.item()}

    @torch.no_grad()
    def act(self, obs) -> torch.Tensor:
        return self.actor(torch.as_tensor(obs, dtype=torch.float32, device=self.device))

    def inference_module(self) -> nn.Module:
        return copy.deepcopy(self.actor).cpu().eval()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.num_updates = int(state["num_updates"])


class BCSafe(BCAll):
    name = "bc_safe"
    needs_costs = True

    def training_data(self, dataset: Dataset) -> Dataset:
        self.check_dataset(dataset)
        self._costs_checked = True
        return subset(dataset, safe_episode_mask(dataset, self.cfg.cost_limit))


# ---------------------------------------------------------------------- CPQ
@dataclass
class CPQConfig:
    """OSRL's CPQ defaults."""

    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    vae_lr: float = 1e-3
    batch_size: int = 512
    actor_hidden: tuple = (300, 300)
    critic_hidden: tuple = (400, 400)
    vae_hidden: int = 400
    alpha_max: float = 1.0
    sample_action_num: int = 10
    ood_quantile: float = 0.75  # sampled actions with VAE KL above this quantile count as OOD
    gamma: float = 0.99
    tau: float = 0.005
    beta: float = 0.5  # KL weight of the VAE
    num_q: int = 2
    num_qc: int = 2
    qc_scalar: float = 1.5  # OOD cost threshold = qc_scalar * q_thres
    cost_limit: float = 10.0
    episode_len: int = 0  # for q_thres; 0: the dataset's longest episode
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    normalize_obs: bool = True
    chunk_steps: int = 1000
    eval_interval: int = 10000

    @classmethod
    def from_dict(cls, cfg: dict) -> "CPQConfig":
        return config_from_dict(cls, cfg, "cpq", ("actor_hidden", "critic_hidden"))


class VAE(nn.Module):
    """BCQ's conditional VAE of behaviour actions (latent 2 x actions)."""

    def __init__(self, obs_dim, num_actions, hidden: int, action_bound: float):
        super().__init__()
        self.latent_dim = 2 * num_actions
        self.obs_norm = EmpiricalNormalization(obs_dim)
        self.encoder = nn.Sequential(nn.Linear(obs_dim + num_actions, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, self.latent_dim)
        self.log_std = nn.Linear(hidden, self.latent_dim)
        self.decoder = nn.Sequential(nn.Linear(obs_dim + self.latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))
        self.action_bound = float(action_bound)

    def encode(self, obs, action):
        z = self.encoder(torch.cat([self.obs_norm(obs), action], -1))
        return self.mean(z), self.log_std(z).clamp(-4, 15).exp()

    def forward(self, obs, action):
        mean, std = self.encode(obs, action)
        z = mean + std * torch.randn_like(std)
        recon = self.action_bound * torch.tanh(self.decoder(torch.cat([self.obs_norm(obs), z], -1)))
        return recon, mean, std


def vae_kl(mean, std):
    """Per-sample KL(N(mean, std) || N(0, I)), averaged over latent dims (as OSRL)."""
    return -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean(-1)


def cpq_reward_backup(reward, next_q_r, next_q_c, terminated, gamma: float, q_thres: float):
    """Constraints-penalized Bellman target: future reward counts only where Q_c <= q_thres."""
    return reward + gamma * (1.0 - terminated) * (next_q_c <= q_thres).float() * next_q_r


def cpq_actor_loss(q_r, q_c, q_thres: float):
    return -((q_c <= q_thres).float() * q_r).mean()


class CPQ(OfflineSafeAlgo):
    name = "cpq"
    needs_costs = True

    def __init__(self, cfg: CPQConfig, obs_dim, num_actions, action_bound=1.0, device="cpu", seed=0):
        super().__init__(cfg, obs_dim, num_actions, action_bound, device, seed)
        torch.manual_seed(seed)
        dev = self.device
        self.actor = TanhGaussianActor(obs_dim, num_actions, cfg.actor_hidden, "relu", action_bound).to(dev)
        self.critic = QEnsemble(obs_dim, num_actions, cfg.critic_hidden, "relu", cfg.num_q).to(dev)
        self.cost_critic = QEnsemble(obs_dim, num_actions, cfg.critic_hidden, "relu", cfg.num_qc).to(dev)
        self.vae = VAE(obs_dim, num_actions, cfg.vae_hidden, action_bound).to(dev)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.cost_critic_opt = torch.optim.Adam(self.cost_critic.parameters(), lr=cfg.critic_lr)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.vae_lr)
        self.alpha = 0.0
        self.set_episode_len(cfg.episode_len or 1000)

    def set_episode_len(self, episode_len: int) -> None:
        g, L = self.cfg.gamma, int(episode_len)
        self.episode_len = L
        # The episode cost limit as the discounted value of a constant per-step cost.
        self.q_thres = self.cfg.cost_limit * (1 - g**L) / (1 - g) / L
        self.qc_thres = self.cfg.qc_scalar * self.q_thres

    def _obs_modules(self):
        return (self.actor, self.critic, self.cost_critic, self.vae, self.critic_target, self.cost_critic_target)

    def fit_normalization(self, dataset: Dataset) -> None:
        super().fit_normalization(dataset)
        if not self.cfg.episode_len:
            lengths = np.diff(np.concatenate([dataset.episode_starts, [len(dataset)]]))
            self.set_episode_len(int(lengths.max()))

    def update(self, batch) -> dict[str, float]:
        c = self.cfg
        obs, action, next_obs = batch["obs"], batch["action"], batch["next_obs"]
        reward, cost = batch["reward"] * c.reward_scale, batch["cost"] * c.cost_scale
        term = batch["terminated"].float()

        recon, mean, std = self.vae(obs, action)
        vae_loss = F.mse_loss(recon, action) + c.beta * vae_kl(mean, std).mean()
        self._step(self.vae_opt, vae_loss)

        with torch.no_grad():
            next_a, _ = self.actor(next_obs)
            next_q_r = self.critic_target(next_obs, next_a).min(0).values
            next_q_c = self.cost_critic_target(next_obs, next_a).min(0).values
            target_r = cpq_reward_backup(reward, next_q_r, next_q_c, term, c.gamma, self.q_thres)
            target_c = cost + c.gamma * next_q_c  # OSRL: no terminal mask on the cost backup
        critic_loss = (self.critic(obs, action) - target_r).pow(2).mean(1).sum()
        self._step(self.critic_opt, critic_loss)

        # OOD actions: the policy's samples the VAE finds least likely (top KL quantile).
        n, k = obs.shape[0], c.sample_action_num
        with torch.no_grad():
            rep = obs.repeat(k, 1)
            sampled, _ = self.actor(rep)
            _, m, s = self.vae(rep, sampled)
            kl = vae_kl(m, s).reshape(k, n)
            ood = (kl >= torch.quantile(kl, c.ood_quantile)).float()
        qc_sampled = self.cost_critic(rep, sampled).min(0).values.reshape(k, n)
        qc_ood = (ood * qc_sampled).mean(0)
        self.alpha = float(np.clip(self.alpha + c.alpha_lr * (self.qc_thres - qc_ood.mean().item()), 0.0, c.alpha_max))
        qc = self.cost_critic(obs, action)
        cost_critic_loss = (qc - target_c).pow(2).mean(1).sum() - self.alpha * (qc_ood.mean() - self.qc_thres)
        self._step(self.cost_critic_opt, cost_critic_loss)

        self.critic.requires_grad_(False)
        self.cost_critic.requires_grad_(False)
        a, _ = self.actor(obs)
        actor_loss = cpq_actor_loss(self.critic(obs, a).min(0).values, self.cost_critic(obs, a).min(0).values,
                                    self.q_thres)
        self._step(self.actor_opt, actor_loss)
        self.critic.requires_grad_(True)
        self.cost_critic.requires_grad_(True)

        polyak_update(self.critic_target, self.critic, c.tau)
        polyak_update(self.cost_critic_target, self.cost_critic, c.tau)
        self.num_updates += 1
        return {"vae": vae_loss.item(), "critic": critic_loss.item(), "cost_critic": cost_critic_loss.item(),
                "actor": actor_loss.item(), "alpha": self.alpha, "qc_ood": qc_ood.mean().item(),
                "qc_mean": qc.mean().item(), "q_thres": self.q_thres}

    @staticmethod
    def _step(opt, loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def act(self, obs) -> torch.Tensor:
        return self.actor.deterministic(torch.as_tensor(obs, dtype=torch.float32, device=self.device))

    def inference_module(self) -> nn.Module:
        return _Deterministic(self.actor)

    _modules = ("actor", "critic", "cost_critic", "vae", "critic_target", "cost_critic_target",
                "actor_opt", "critic_opt", "cost_critic_opt", "vae_opt")

    def state_dict(self) -> dict:
        state = {k: getattr(self, k).state_dict() for k in self._modules}
        state.update(alpha=self.alpha, episode_len=self.episode_len, num_updates=self.num_updates)
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in self._modules:
            getattr(self, k).load_state_dict(state[k])
        self.alpha = float(state["alpha"])
        self.set_episode_len(int(state["episode_len"]))
        self.num_updates = int(state["num_updates"])


class _Deterministic(nn.Module):
    def __init__(self, actor: TanhGaussianActor):
        super().__init__()
        self.actor = copy.deepcopy(actor).cpu().eval()

    def forward(self, obs):
        return self.actor.deterministic(obs)


# ----------------------------------------------------------------- registry
def _fisor():
    from robotrl.algos.fisor import FISOR, FISORConfig

    return FISOR, FISORConfig.from_dict


ALGOS = {
    "bc_all": lambda: (BCAll, lambda cfg: BCConfig.from_dict(cfg, "bc_all")),
    "bc_safe": lambda: (BCSafe, lambda cfg: BCConfig.from_dict(cfg, "bc_safe")),
    "cpq": lambda: (CPQ, CPQConfig.from_dict),
    "fisor": _fisor,
}


def make_offline_safe(name: str, cfg: dict | None, obs_dim: int, num_actions: int, action_bound: float = 1.0,
                      device="cpu", seed: int = 0):
    """Build algorithm ``name`` from a config mapping (unknown keys refused)."""
    if name not in ALGOS:
        raise KeyError(f"unknown offline safe algorithm {name!r}; available: {', '.join(ALGOS)}")
    cls, parse = ALGOS[name]()
    return cls(parse(dict(cfg or {})), obs_dim, num_actions, action_bound, device, seed)


# -------------------------------------------------------------- train loop
def dataset_tensors(dataset: Dataset, device="cpu", obs_group: str = "policy") -> dict[str, torch.Tensor]:
    dev = torch.device(device)
    f = lambda x: torch.as_tensor(np.asarray(x, np.float32), device=dev)  # noqa: E731
    return {"obs": f(dataset.obs[obs_group]), "action": f(dataset.action), "reward": f(dataset.reward),
            "cost": f(dataset.cost), "next_obs": f(dataset.next_obs[obs_group]),
            "terminated": f(dataset.terminated)}


def train_offline(algo, dataset: Dataset, steps: int, batch_size: int | None = None, progress: bool = True,
                  seed: int = 0, log_every: int = 1000) -> list[dict[str, float]]:
    """``steps`` gradient steps of ``algo`` on uniformly sampled batches of ``dataset``
    (after :meth:`training_data` and :meth:`fit_normalization`). Returns the mean of
    each logged quantity per ``log_every`` steps."""
    from tqdm import tqdm

    data = algo.training_data(dataset)
    algo.fit_normalization(data)
    tensors = dataset_tensors(data, algo.device)
    n = len(data)
    batch_size = int(batch_size or algo.cfg.batch_size)
    gen = torch.Generator().manual_seed(seed)
    history, acc = [], {}
    for step in tqdm(range(int(steps)), desc=f"train {algo.name}", disable=not progress):
        idx = torch.randint(0, n, (batch_size,), generator=gen).to(algo.device)
        info = algo.update({k: v[idx] for k, v in tensors.items()})
        for k, v in info.items():
            acc.setdefault(k, []).append(v)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.append({k: float(np.mean(v)) for k, v in acc.items()})
            acc = {}
    return history
