"""A few-step diffusion policy (DDPM) for robot control: the denoiser network, the
noise schedules and a sampler a robot can run.

This is the policy class of FISOR (Zheng et al., ICLR 2024), itself IDQL's
(Hansen-Estruch et al. 2023): a DDPM over actions with few (5) denoising steps and
the discrete VP noise schedule, whose noise predictor ``eps(s, a_t, t)`` is

    t -> learnable Fourier features (time_dim) -> MLP(128, 128, mish)  = cond
    [a_t, s, cond] -> Dense(hidden) -> num_blocks x [dropout, LayerNorm,
                      Dense(4 hidden), mish, Dense(hidden), + residual]
                   -> mish -> Dense(num_actions)

Actions live in ``[-1, 1]`` inside the diffusion (the dataset's actions divided by
``action_bound``); the sampler clips every step to ``[-1, 1]`` (the reference's
``clip_sampler``) and scales back by ``action_bound``.

Running on a robot / exporting to ONNX. All randomness of the sampler is one
input: ``DiffusionSampler.forward(obs, noise)`` with ``noise`` of shape
``(batch, T, num_actions)`` (standard normal; slice 0 is the initial ``a_T``,
slice ``k >= 1`` the noise added after denoising step ``T-k``; the last step adds
none). The K-step loop is unrolled at trace time, so the whole sampler is one
ONNX graph with inputs ``obs`` and ``noise``. :func:`sample` draws the noise for
you. Observation normalization is inside the denoiser (raw observations in).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from robotrl.policies.networks import EmpiricalNormalization


# ------------------------------------------------------------------ schedules
def vp_beta_schedule(steps: int) -> torch.Tensor:
    """The discrete variance-preserving schedule of IDQL/FISOR (b_min 0.1, b_max 10):
    ``beta_t = 1 - exp(-b_min/T - (b_max - b_min)(2t - 1) / (2 T^2))`` for t = 1..T."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    b_max, b_min = 10.0, 0.1
    alpha = torch.exp(-b_min / steps - 0.5 * (b_max - b_min) * (2 * t - 1) / steps**2)
    return (1 - alpha).float()


def cosine_beta_schedule(steps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule."""
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
    alphas_cumprod = torch.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(0, 0.999).float()


def linear_beta_schedule(steps: int) -> torch.Tensor:
    return torch.linspace(1e-4, 2e-2, steps)


BETA_SCHEDULES = {"vp": vp_beta_schedule, "cosine": cosine_beta_schedule, "linear": linear_beta_schedule}


def beta_schedule(name: str, steps: int) -> torch.Tensor:
    if name not in BETA_SCHEDULES:
        raise KeyError(f"unknown beta schedule {name!r}; available: {', '.join(BETA_SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {steps}")
    return BETA_SCHEDULES[name](steps)


# ------------------------------------------------------------------- network
class FourierFeatures(nn.Module):
    """Learnable Fourier features of the (scalar) time index: ``[cos 2pi t W, sin 2pi t W]``."""

    def __init__(self, output_size: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(output_size // 2, 1) * 0.2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * t @ self.kernel.T
        return torch.cat([torch.cos(f), torch.sin(f)], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float, layer_norm: bool):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.act = nn.Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(self.dropout(x)))))


class MLPResNet(nn.Module):
    """IDQL's LayerNorm-ResNet: Dense(width), residual blocks, mish, Dense(out)."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, num_blocks: int = 3,
                 dropout: float = 0.1, layer_norm: bool = True):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, dropout, layer_norm) for _ in range(num_blocks)))
        self.act = nn.Mish()
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.blocks(self.inp(x))))


class DiffusionDenoiser(nn.Module):
    """The noise predictor ``eps(obs, a_t, t)``; ``t`` is the step index as a float
    column ``(batch, 1)``. Raw observations in (normalized inside)."""

    def __init__(self, obs_dim: int, num_actions: int, width: int = 256, num_blocks: int = 3,
                 dropout: float = 0.1, layer_norm: bool = True, time_dim: int = 64,
                 cond_hidden: Sequence[int] = (128, 128)):
        super().__init__()
        self.obs_norm = EmpiricalNormalization(obs_dim)
        self.time_features = FourierFeatures(time_dim)
        layers: list[nn.Module] = []
        last = time_dim
        for i, w in enumerate(cond_hidden):
            layers.append(nn.Linear(last, w))
            if i + 1 < len(cond_hidden):
                layers.append(nn.Mish())
            last = w
        self.cond = nn.Sequential(*layers)
        self.net = MLPResNet(num_actions + obs_dim + last, num_actions, width, num_blocks, dropout, layer_norm)

    def forward(self, obs: torch.Tensor, noisy_action: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = self.cond(self.time_features(t))
        return self.net(torch.cat([noisy_action, self.obs_norm(obs), cond], dim=-1))


# ------------------------------------------------------------------- training
def diffusion_schedule(betas: torch.Tensor) -> dict[str, torch.Tensor]:
    alphas = 1 - betas
    return {"betas": betas, "alphas": alphas, "alpha_hats": torch.cumprod(alphas, 0)}


def noise_actions(actions: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_hats: torch.Tensor):
    """The forward process ``sqrt(abar_t) a + sqrt(1 - abar_t) eps`` at integer steps ``t``."""
    ab = alpha_hats[t].unsqueeze(-1)
    return ab.sqrt() * actions + (1 - ab).sqrt() * noise


def weighted_denoising_loss(eps_pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None = None):
    """``E[w ||eps_pred - eps||^2]`` (squared error summed over action dims, as the reference)."""
    err = (eps_pred - noise).pow(2).sum(-1)
    return (err if weights is None else err * weights.detach()).mean()


# -------------------------------------------------------------------- sampler
class DiffusionSampler(nn.Module):
    """DDPM reverse process, unrolled over the ``T`` steps: ``(obs, noise) -> action``.

    ``noise`` is ``(batch, T, num_actions)`` standard normal (see the module doc).
    ``temperature`` scales the noise added between steps (the reference's
    ``ddpm_temperature``)."""

    def __init__(self, denoiser: DiffusionDenoiser, betas: torch.Tensor, action_bound: float = 1.0,
                 temperature: float = 1.0, clip: bool = True):
        super().__init__()
        self.denoiser = denoiser
        sched = diffusion_schedule(betas.float())
        for k, v in sched.items():
            self.register_buffer(k, v.clone())
        self.steps = int(betas.shape[0])
        self.action_bound = float(action_bound)
        self.temperature = float(temperature)
        self.clip = bool(clip)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = noise[:, 0]
        ones = torch.ones_like(obs[:, :1])
        for k, t in enumerate(range(self.steps - 1, -1, -1)):
            eps = self.denoiser(obs, x, ones * float(t))
            x = (x - (1 - self.alphas[t]) / (1 - self.alpha_hats[t]).sqrt() * eps) / self.alphas[t].sqrt()
            if t > 0:
                x = x + self.betas[t].sqrt() * self.temperature * noise[:, k + 1]
            if self.clip:
                x = x.clamp(-1.0, 1.0)
        return x.clamp(-1.0, 1.0) * self.action_bound

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(obs.shape[0], self.steps, self.denoiser.net.out.out_features,
                            generator=generator, device=obs.device)
        return self(obs, noise)


def sample(sampler: DiffusionSampler, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one action per observation row."""
    return sampler.sample(obs, generator)
