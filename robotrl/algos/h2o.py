"""H2O: dynamics-aware hybrid offline-and-online RL (Niu et al., NeurIPS 2022).

"Real" data is a fixed dataset from the target domain; "sim" data comes online
from a simulator whose dynamics differ. SAC learns from batches of both halves
(policy and temperature on all states), with three changes to the critic loss:

* two classifiers tell real (class 0) from sim (class 1): ``D_sa(s, a)`` and
  ``D_sas(s, a, s')`` (3-layer 256-unit ReLU MLPs, two logits squashed to
  ``2 tanh``), trained by cross-entropy with Gaussian input noise (std 0.1);
  ``P_sas = softmax(D_sas + D_sa)`` so ``D_sas`` learns what ``s'`` adds;
* the dynamics ratio ``w(s,a,s') = p_real(s'|s,a) / p_sim(s'|s,a)
  = P_sas(real) P_sa(sim) / (P_sas(sim) P_sa(real))``, clipped to [1e-5, 1],
  weights each sim transition's squared Bellman error;
* a conservative term pushes Q down where the dynamics gap is large:
  ``min_q_weight * (logsumexp_sim(Q(s,a) + log omega) - mean_real Q(s,a))`` with
  ``omega = u / sum(u)`` over the sim batch and ``u(s,a)`` the mean of
  ``log(p_sim / p_real)`` over 10 next states ``s' + N(0, std of the real data's
  states)``, clipped to [1e-45, 10].

Defaults follow the reference code (SimpleSAC-based): batch 256 half real / half
sim, lr 3e-4 for everything, min_q_weight 0.01, CQL temperature 1, no Lagrange
multiplier, soft Q backup *without* the entropy term (``backup_entropy: false``),
target entropy -|A|, sim buffer 10x the dataset, 1000 env steps and 1000
gradient steps per epoch, evaluation in the real domain.

Deliberate differences from the reference:

* env steps and gradient steps are interleaved per vector-env step at the same
  1:1 ratio, rather than 1000 env steps followed by 1000 updates;
* the networks (actor, critics, classifiers) normalize their inputs with the real
  dataset's statistics (computed once); the input noise (0.1) is added to the
  raw inputs before normalization, as in the reference;
* both classifiers train from one summed loss with one optimizer, which is what
  the reference's two backward passes before two optimizer steps amount to (D_sa
  receives the gradients of both losses there too);
* the classifiers see the ``critic`` observation group (full state) when the
  dataset and simulator both have it; the actor sees ``policy``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robotrl.algos.losses import polyak_update
from robotrl.algos.sac import SAC, SACConfig, config_from_dict, critic_loss
from robotrl.policies.networks import EmpiricalNormalization, mlp


@dataclass
class H2OConfig(SACConfig):
    # SAC settings of the reference
    backup_entropy: bool = False
    warmup_steps: int = 0  # the reference collects with the policy from the start
    real_fraction: float = 0.5  # share of each batch drawn from the real dataset
    buffer_ratio: float = 10.0  # sim replay capacity = buffer_ratio * dataset size
    # classifiers
    discriminator_hidden: tuple = (256, 256)
    discriminator_lr: float = 3e-4
    discriminator_noise: float = 0.1  # std of Gaussian noise on classifier inputs
    # dynamics ratio and gap
    ratio_clip_min: float = 1e-5
    ratio_clip_max: float = 1.0
    gap_samples: int = 10  # perturbed next states per (s, a) for u(s, a)
    gap_noise_scale: float = 1.0  # perturbation std, in units of the real states' std
    gap_clip_min: float = 1e-45
    gap_clip_max: float = 10.0
    # conservative term
    min_q_weight: float = 0.01
    cql_temperature: float = 1.0
    eval_interval: int = 10000  # env steps between target-domain evaluations

    @classmethod
    def from_dict(cls, cfg: dict) -> "H2OConfig":
        out = config_from_dict(cls, cfg, tuple_keys=("hidden", "discriminator_hidden"))
        if not 0.0 < out.real_fraction < 1.0:
            raise ValueError(f"h2o real_fraction must be in (0, 1), got {out.real_fraction}")
        return out


# ------------------------------------------------------------------- losses
def discriminator_loss(real_logits, sim_logits):
    """Cross-entropy with real = class 0, sim = class 1 (mean over each half, summed)."""
    real = F.cross_entropy(real_logits, torch.zeros(len(real_logits), dtype=torch.long, device=real_logits.device))
    sim = F.cross_entropy(sim_logits, torch.ones(len(sim_logits), dtype=torch.long, device=sim_logits.device))
    return real + sim


def log_real_sim_ratio(sa_logits, sas_logits):
    """log p_real(s'|s,a) - log p_sim(s'|s,a) from the two classifiers' logits
    (``(batch, 2)`` each; column 0 = real): with ``P_sas = softmax(sas + sa)``,
    ``log[P_sas(real) P_sa(sim) / (P_sas(sim) P_sa(real))]``."""
    log_p_sas = F.log_softmax(sas_logits + sa_logits, dim=-1)
    log_p_sa = F.log_softmax(sa_logits, dim=-1)
    return (log_p_sas[:, 0] - log_p_sas[:, 1]) - (log_p_sa[:, 0] - log_p_sa[:, 1])


def dynamics_ratio(sa_logits, sas_logits, clip_min: float = 1e-5, clip_max: float = 1.0):
    """The importance weight of a sim transition, w = p_real/p_sim, clipped."""
    return log_real_sim_ratio(sa_logits, sas_logits).exp().clamp(clip_min, clip_max)


def dynamics_gap(log_sim_real, clip_min: float = 1e-45, clip_max: float = 10.0):
    """u(s, a): the mean of log(p_sim/p_real) over the sampled next states (last
    axis), clipped positive so that it can weight a batch."""
    return log_sim_real.mean(dim=-1).clamp(clip_min, clip_max)


def conservative_penalty(q_sim, q_real, omega, temperature: float = 1.0):
    """Sum over the Q ensemble of ``T logsumexp((Q_sim + log omega) / T) - mean Q_real``.

    ``q_sim`` ``(num_q, n_sim)``, ``q_real`` ``(num_q, n_real)``, ``omega`` ``(n_sim,)``
    (non-negative, sums to 1). It lowers Q where the sim-vs-real gap is large and
    raises it on real data."""
    gap = temperature * torch.logsumexp((q_sim + torch.log(omega)) / temperature, dim=-1)
    return (gap - q_real.mean(dim=-1)).sum()


# ------------------------------------------------------------ classifiers
class Discriminator(nn.Module):
    """Real-vs-sim classifier over concatenated inputs: 2 logits in [-2, 2]."""

    def __init__(self, input_sizes: list[int], hidden=(256, 256)):
        super().__init__()
        self.net = mlp(sum(input_sizes), hidden, 2, "relu")
        self.norms = nn.ModuleList(EmpiricalNormalization(d) for d in input_sizes)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = torch.cat([norm(v) for norm, v in zip(self.norms, inputs)], dim=-1)
        return 2.0 * torch.tanh(self.net(x))


# -------------------------------------------------------------------- H2O
class H2O(SAC):
    def __init__(self, cfg: H2OConfig, obs_sizes: dict[str, int], num_actions: int, device="cpu",
                 action_bound: float = 1.0, critic_group: str | None = None):
        super().__init__(cfg, obs_sizes, num_actions, device, action_bound, critic_group)
        s = obs_sizes[self.critic_group]
        self.d_sa = Discriminator([s, num_actions], cfg.discriminator_hidden).to(self.device)
        self.d_sas = Discriminator([s, num_actions, s], cfg.discriminator_hidden).to(self.device)
        self.disc_opt = torch.optim.Adam([*self.d_sa.parameters(), *self.d_sas.parameters()], lr=cfg.discriminator_lr)
        self.register_state_std(torch.ones(s, device=self.device))

    def register_state_std(self, std: torch.Tensor) -> None:
        self.state_std = std.to(self.device)

    def prepare(self, real) -> None:
        """Once, before training, from the real dataset (a ReplayBuffer):
        normalization statistics of every network and the states' std."""
        g = self.critic_group
        obs = real.obs[g][: real.size]
        act = real.action[: real.size]
        with torch.no_grad():
            if self.cfg.normalize_obs:
                self.actor.obs_norm.update(real.obs["policy"][: real.size])
                self.critic.obs_norm.update(obs)
                self.critic_target.obs_norm.load_state_dict(self.critic.obs_norm.state_dict())
            for disc, inputs in ((self.d_sa, (obs, act)), (self.d_sas, (obs, act, real.next_obs[g][: real.size]))):
                for norm, x in zip(disc.norms, inputs):
                    norm.update(x)
        self.state_std = real.obs_std(g)

    def update_normalization(self, obs) -> None:
        """Fixed statistics (those of the real data, see :meth:`prepare`)."""

    # ------------------------------------------------------------ classifiers
    def classifier_logits(self, obs, action, next_obs):
        sa = self.d_sa(obs, action)
        return sa, self.d_sas(obs, action, next_obs)

    def update_discriminators(self, real, sim) -> dict[str, float]:
        g, std = self.critic_group, self.cfg.discriminator_noise

        def noisy(batch):
            x = (batch["obs"][g], batch["action"], batch["next_obs"][g])
            return [v + std * torch.randn_like(v) for v in x] if std > 0 else list(x)

        real_sa, real_sas = self.classifier_logits(*noisy(real))
        sim_sa, sim_sas = self.classifier_logits(*noisy(sim))
        sa_loss = discriminator_loss(real_sa, sim_sa)
        sas_loss = discriminator_loss(real_sas + real_sa, sim_sas + sim_sa)
        self.disc_opt.zero_grad(set_to_none=True)
        (sa_loss + sas_loss).backward()
        self.disc_opt.step()
        return {"d_sa": sa_loss.item(), "d_sas": sas_loss.item()}

    @torch.no_grad()
    def importance_weight(self, batch) -> torch.Tensor:
        g = self.critic_group
        sa, sas = self.classifier_logits(batch["obs"][g], batch["action"], batch["next_obs"][g])
        return dynamics_ratio(sa, sas, self.cfg.ratio_clip_min, self.cfg.ratio_clip_max)

    @torch.no_grad()
    def gap(self, batch) -> torch.Tensor:
        """u(s, a) over the batch, from ``gap_samples`` perturbed next states each."""
        g, k = self.critic_group, self.cfg.gap_samples
        obs = batch["obs"][g].repeat_interleave(k, dim=0)
        action = batch["action"].repeat_interleave(k, dim=0)
        nxt = batch["next_obs"][g].repeat_interleave(k, dim=0)
        nxt = nxt + torch.randn_like(nxt) * self.state_std * self.cfg.gap_noise_scale
        sa, sas = self.classifier_logits(obs, action, nxt)
        log_sim_real = -log_real_sim_ratio(sa, sas).reshape(-1, k)
        return dynamics_gap(log_sim_real, self.cfg.gap_clip_min, self.cfg.gap_clip_max)

    # -------------------------------------------------------------- update
    def update(self, real, sim, disc_real=None, disc_sim=None) -> dict[str, float]:
        """One step: classifiers on (``disc_real``, ``disc_sim``), then SAC with the
        H2O critic loss on the real half ``real`` and the sim half ``sim``."""
        cfg, g = self.cfg, self.critic_group
        out = self.update_discriminators(real if disc_real is None else disc_real, sim if disc_sim is None else disc_sim)

        w = self.importance_weight(sim)
        u = self.gap(sim)
        omega = u / u.sum()
        q_real = self.critic(real["obs"][g], real["action"])
        q_sim = self.critic(sim["obs"][g], sim["action"])
        bellman = critic_loss(q_real, self.q_target(real)) + critic_loss(q_sim, self.q_target(sim), weight=w)
        penalty = conservative_penalty(q_sim, q_real, omega, cfg.cql_temperature)
        c_loss = bellman + cfg.min_q_weight * penalty
        self.step_critic(c_loss)

        policy_obs = torch.cat([real["obs"]["policy"], sim["obs"]["policy"]])
        critic_obs = torch.cat([real["obs"][g], sim["obs"][g]])
        out.update(self.step_actor_and_alpha(policy_obs, critic_obs))
        polyak_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        out.update(
            critic=c_loss.item(), bellman=bellman.item(), conservative=penalty.item(),
            q_real=q_real.mean().item(), q_sim=q_sim.mean().item(),
            ratio_mean=w.mean().item(), gap_mean=u.mean().item(), omega_std=omega.std().item(),
        )
        return out

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(d_sa=self.d_sa.state_dict(), d_sas=self.d_sas.state_dict(),
                     disc_opt=self.disc_opt.state_dict(), state_std=self.state_std.cpu())
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.d_sa.load_state_dict(state["d_sa"])
        self.d_sas.load_state_dict(state["d_sas"])
        self.disc_opt.load_state_dict(state["disc_opt"])
        self.state_std = state["state_std"].to(self.device)
