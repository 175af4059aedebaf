"""Rewards from language: pure functions of unit-norm CLIP embeddings, and VlmReward.

The formulas are those of ALGORITHMS.md ("VLM-derived rewards"). Image embeddings
``x`` are (B, D), prompt embeddings (P, D) or (D,); numpy in gives numpy out, torch
in gives torch out. Several prompts for one side are reduced to their mean
embedding, renormalized: the prompt-ensembling CLIP uses for zero-shot classes and
VLM-RMs uses for its goal and baseline, so extra phrasings sharpen a direction
rather than each adding a separate target.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

KINDS = ("contrasting", "goal_baseline", "cosine")
COMBINE_MODES = ("sum", "product", "gate")


def _tensors(*arrays) -> list[torch.Tensor]:
    return [torch.as_tensor(a) for a in arrays]


def _like(out: torch.Tensor, ref):
    return out.cpu().numpy() if isinstance(ref, np.ndarray) else out


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def mean_direction(prompts) -> torch.Tensor:
    """(P, D) or (D,) prompt embeddings -> the unit mean direction (D,)."""
    (e,) = _tensors(prompts)
    return _unit(e.reshape(-1, e.shape[-1]).mean(0))


def cosine(x, goal):
    """cos(x, g) per image: the plain CLIP reward."""
    xt, g = _tensors(x, goal)
    return _like(_unit(xt) @ mean_direction(g).to(xt), x)


def contrasting_goal(x, pos, neg, delta: float = 0.03):
    """VLM-RL: z = cos(x, e_neg) - cos(x, e_pos); r = 1 - clip(z, 0, delta) / delta.

    1 wherever the frame is at least as close to the goal as to what to avoid,
    0 once it is ``delta`` closer to the negative, linear in between.
    """
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    xt, p, n = _tensors(x, pos, neg)
    xt = _unit(xt)
    z = xt @ mean_direction(n).to(xt) - xt @ mean_direction(p).to(xt)
    return _like(1.0 - z.clamp(0.0, delta) / delta, x)


def goal_baseline(x, goal, baseline, alpha: float):
    """VLM-RMs: r = 1 - 0.5 |(x - g) P|^2, P = alpha d d^T / |d|^2 + (1 - alpha) I, d = g - b.

    alpha = 1 keeps only the component of x - g along the baseline-to-goal
    direction; alpha = 0 is 1 - 0.5 |x - g|^2 = cos(x, g), plain similarity.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    xt, gt, bt = _tensors(x, goal, baseline)
    g, b = mean_direction(gt).to(xt), mean_direction(bt).to(xt)
    y = _unit(xt) - g
    d = g - b
    if alpha > 0 and float(d.norm()) < 1e-8:
        raise ValueError("goal and baseline prompts have the same embedding; the projection is undefined")
    # P is symmetric, so (x - g) P = alpha (y.d) d / |d|^2 + (1 - alpha) y; no D x D matrix.
    along = (y @ d)[:, None] * d / d.dot(d).clamp_min(1e-12)
    yp = alpha * along + (1.0 - alpha) * y
    return _like(1.0 - 0.5 * (yp * yp).sum(-1), x)


def to_unit_interval(score, kind: str):
    """A score of ``kind`` mapped onto [0, 1] (contrasting scores already are;
    cosine and goal_baseline scores lie in [-1, 1])."""
    if kind not in KINDS:
        raise ValueError(f"unknown VLM reward kind {kind!r}; known: {', '.join(KINDS)}")
    s = score if kind == "contrasting" else (score + 1.0) / 2.0
    return np.clip(s, 0.0, 1.0) if isinstance(score, np.ndarray) else torch.as_tensor(s).clamp(0.0, 1.0)


def safety_cost(x, unsafe, safe, delta: float = 0.03):
    """A cost in [0, 1] from a "negative goal" (e.g. "a robot fallen over"): 1 when the
    frame is at least as close to the unsafe prompts as to the safe ones, 0 once it
    is ``delta`` closer to the safe ones. It is :func:`contrasting_goal` with the
    roles swapped: a thresholded contrast stays informative where the raw
    similarities of a large CLIP all sit near 0.25."""
    return contrasting_goal(x, pos=unsafe, neg=safe, delta=delta)


def combine(vlm_reward, state_reward, mode: str = "sum", weight: float = 1.0, threshold: float = 0.5):
    """The VLM reward together with the task's own reward.

    - ``sum``: state + weight * vlm.
    - ``product``: state * (1 - weight + weight * vlm), the VLM score in [0, 1] scaling
      the task reward (as VLM-RL scales the desired speed); weight 0 ignores the VLM.
    - ``gate``: the state reward where vlm >= threshold, else 0.
    """
    if mode == "sum":
        return state_reward + weight * vlm_reward
    if mode == "product":
        return state_reward * (1.0 - weight + weight * vlm_reward)
    if mode == "gate":
        return state_reward * (vlm_reward >= threshold)
    raise ValueError(f"unknown combine mode {mode!r}; known: {', '.join(COMBINE_MODES)}")


class VlmReward:
    """Frames -> rewards with a CLIP model and prompts fixed at construction.

    ``config`` keys: ``kind`` (contrasting | goal_baseline | cosine), ``goal`` prompts,
    ``negative`` (contrasting) or ``baseline`` (goal_baseline) prompts, ``alpha``,
    ``delta``, ``model``, ``weights``, ``device``. Other keys (how a trainer combines or
    schedules the reward) are left to their owners. Pass ``encoder`` to share one
    loaded model between several rewards.
    """

    def __init__(self, config: Mapping, encoder=None):
        from robotrl.vlm.encoders import ClipEncoder, check_prompts

        self.kind = config.get("kind", "contrasting")
        if self.kind not in KINDS:
            raise ValueError(f"unknown VLM reward kind {self.kind!r}; known: {', '.join(KINDS)}")
        self.alpha = float(config.get("alpha", 0.5))
        self.delta = float(config.get("delta", 0.03))
        if self.kind == "goal_baseline" and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"vlm.alpha must be in [0, 1], got {self.alpha}")
        if self.kind == "contrasting" and self.delta <= 0:
            raise ValueError(f"vlm.delta must be > 0, got {self.delta}")
        goal = check_prompts(config.get("goal"), "vlm.goal")
        other = {"contrasting": "negative", "goal_baseline": "baseline"}.get(self.kind)
        others = check_prompts(config.get(other), f"vlm.{other} (needed by kind={self.kind})") if other else None

        self.encoder = encoder or ClipEncoder(config.get("model"), config.get("weights"),
                                              config.get("device") or "cpu")
        self.goal = self.encoder.encode_text(goal)
        self.other = self.encoder.encode_text(others) if others else None

    def score_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (B, D) -> rewards (B,)."""
        if self.kind == "contrasting":
            return contrasting_goal(x, self.goal, self.other, self.delta)
        if self.kind == "goal_baseline":
            return goal_baseline(x, self.goal, self.other, self.alpha)
        return cosine(x, self.goal)

    def __call__(self, frames) -> np.ndarray:
        """uint8 frames (B, H, W, 3) -> float32 rewards (B,)."""
        scores = self.score_embeddings(self.encoder.encode_images(frames))
        return scores.cpu().numpy().astype(np.float32)
