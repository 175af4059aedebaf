"""Distil the VLM reward into a small state-based reward model, trained online.

Only a small fraction of env steps is rendered and scored by the VLM; the model
learns state -> VLM score from those pairs and gives every step its reward at the
cost of one MLP forward pass, so training rarely waits for the VLM (the manner of
Found-RL / ONI). The state is the env's privileged ``critic`` observation group when
it has one: the frame shows the whole scene, which the robot's own sensors may not.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from robotrl.policies.networks import EmpiricalNormalization, mlp


@dataclass
class DistillConfig:
    fraction: float = 0.02        # share of env steps rendered and scored by the VLM
    # Frames rendered together: reading a frame back costs ~3 ms whatever its size on
    # a CPU (llvmpipe), so the fraction is taken in batches, not a few envs per step.
    render_batch: int = 64
    warmup_frames: int = 2048     # scored frames before the model's rewards are used
    capacity: int = 200_000       # pairs kept (oldest dropped first)
    hidden: tuple[int, ...] = (64, 64)
    lr: float = 1e-3
    batch_size: int = 256
    updates_per_rollout: int = 20

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "DistillConfig":
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise KeyError(f"unknown vlm.distill keys {unknown}; known: {sorted(known)}")
        if "hidden" in cfg:
            cfg["hidden"] = tuple(int(h) for h in cfg["hidden"])
        out = cls(**cfg)
        if not 0.0 < out.fraction <= 1.0:
            raise ValueError(f"vlm.distill.fraction must be in (0, 1], got {out.fraction}")
        return out


class DistilledReward:
    def __init__(self, obs_size: int, cfg: DistillConfig, device="cpu", seed: int = 0):
        self.cfg = cfg
        self.device = torch.device(device)
        self.norm = EmpiricalNormalization(obs_size).to(self.device)
        # Its own seed, without moving the global RNG the policy's sampling uses.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = mlp(obs_size, list(cfg.hidden), 1, "elu").to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.obs = torch.zeros(cfg.capacity, obs_size, device=self.device)
        self.target = torch.zeros(cfg.capacity, device=self.device)
        self.size = 0
        self._next = 0
        self.seen = 0
        self._gen = torch.Generator(device="cpu").manual_seed(seed)

    @property
    def ready(self) -> bool:
        return self.seen >= self.cfg.warmup_frames

    def add(self, obs: torch.Tensor, scores: np.ndarray | torch.Tensor) -> None:
        obs = obs.to(self.device, torch.float32)
        scores = torch.as_tensor(scores, dtype=torch.float32, device=self.device)
        n = len(obs)
        idx = (self._next + torch.arange(n, device=self.device)) % self.cfg.capacity
        self.obs[idx] = obs
        self.target[idx] = scores
        self._next = int((self._next + n) % self.cfg.capacity)
        self.size = min(self.size + n, self.cfg.capacity)
        self.seen += n
        self.norm.update(obs)

    def fit(self, updates: int | None = None) -> float:
        """A few gradient steps on the pairs so far; returns the last batch's MSE."""
        if self.size == 0:
            return float("nan")
        loss = torch.zeros(())
        for _ in range(updates or self.cfg.updates_per_rollout):
            idx = torch.randint(self.size, (min(self.cfg.batch_size, self.size),), generator=self._gen).to(self.device)
            pred = self.net(self.norm(self.obs[idx])).squeeze(-1)
            loss = torch.mean((pred - self.target[idx]) ** 2)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(obs.to(self.device, torch.float32))).squeeze(-1)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "norm": self.norm.state_dict(), "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.norm.load_state_dict(state["norm"])
        self.seen = int(state["seen"])
