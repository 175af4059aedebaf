"""Captions of a task's frames computed from its state, to train a CLIP model on renders.

Each task registers a :class:`CaptionSpec`: caption classes (several phrasings
each, the first canonical) placed along one coordinate of the state, and a sampler
of ``qpos`` covering the states a policy will visit (not only reset states). The
first class is the goal and the last the state to avoid; a reward from the trained
model ought to rise as the coordinate falls, which is how finetune checks it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class CaptionSpec:
    """Captions along one coordinate of the state (e.g. degrees away from upright),
    lowest = best: each class of captions sits at a point of that coordinate."""

    classes: tuple[tuple[str, ...], ...]  # phrasings per class; the first is canonical
    centers: tuple[float, ...]  # each class's place on the coordinate, ascending
    coordinate: Callable[[np.ndarray], np.ndarray]  # qpos (B, nq) -> (B,)
    width: float  # how far along the coordinate a caption still partly applies
    # (task, rng, n) -> qpos (n, nq)
    sample: Callable[[object, np.random.Generator, int], np.ndarray]

    @property
    def canonical(self) -> list[str]:
        return [c[0] for c in self.classes]

    @property
    def goal(self) -> str:
        return self.classes[0][0]

    @property
    def negative(self) -> str:
        return self.classes[-1][0]

    def label(self, qpos: np.ndarray) -> np.ndarray:
        """The class of each state: the nearest center."""
        return np.abs(self.coordinate(qpos)[:, None] - np.asarray(self.centers)).argmin(1)

    def targets(self, qpos: np.ndarray) -> np.ndarray:
        """Soft labels (B, C): a Gaussian of width ``width`` around each center.

        Hard labels would teach the model that all wrong captions are equally wrong,
        and "hanging down" would score a nearly upright pole no worse than a
        horizontal one. Soft labels make the caption logits fall off with distance
        along the coordinate, so cos(frame, goal) - cos(frame, negative) rises
        steadily as the state approaches the goal: a reward to climb."""
        logits = -0.5 * ((self.coordinate(qpos)[:, None] - np.asarray(self.centers)) / self.width) ** 2
        w = np.exp(logits - logits.max(1, keepdims=True))
        return w / w.sum(1, keepdims=True)


_SPECS: dict[str, CaptionSpec] = {}


def register_captions(task: str, spec: CaptionSpec) -> None:
    _SPECS[task] = spec


def caption_spec(task: str) -> CaptionSpec:
    if task not in _SPECS:
        raise KeyError(f"no captions for task {task!r}; tasks with captions: {', '.join(sorted(_SPECS))}")
    return _SPECS[task]


def caption(task: str, qpos: np.ndarray, rng: np.random.Generator | None = None) -> list[str]:
    """One caption per state: the canonical phrasing, or a random one given ``rng``."""
    spec = caption_spec(task)
    labels = spec.label(np.atleast_2d(qpos))
    if rng is None:
        return [spec.classes[k][0] for k in labels]
    return [spec.classes[k][rng.integers(len(spec.classes[k]))] for k in labels]


# ------------------------------------------------------------------ hinged poles
def _tilt_deg(angle: np.ndarray) -> np.ndarray:
    """Degrees away from upright, in [0, 180], whichever way round the pole went."""
    return np.degrees(np.abs(np.angle(np.exp(1j * angle))))


# Five classes rather than three: with the soft labels, the five caption embeddings
# line up along the swing and pin the reward's slope at more points of it.
_POLE_CENTERS = (0.0, 45.0, 90.0, 135.0, 180.0)
_POLE_WIDTH = 40.0


def _pole_classes(thing: str) -> tuple[tuple[str, ...], ...]:
    return (
        (f"a {thing} standing upright", f"an upright {thing}", f"the {thing} points straight up"),
        (f"a {thing} tilted up", f"a tilted {thing} pointing up", f"a {thing} leaning, above horizontal"),
        (f"a horizontal {thing}", f"a {thing} lying sideways", f"the {thing} points to the side"),
        (f"a {thing} tilted down", f"a tilted {thing} pointing down", f"a {thing} leaning, below horizontal"),
        (f"a {thing} hanging down", f"a {thing} hanging straight down", f"the {thing} points straight down"),
    )


def _cartpole_sample(task, rng: np.random.Generator, n: int) -> np.ndarray:
    # Every pole angle and most of the rail: a swing-up policy passes through all of them.
    half = 0.75 * float(task.model.jnt_range[0, 1])
    return np.stack([rng.uniform(-half, half, n), rng.uniform(-math.pi, math.pi, n)], axis=1)


register_captions("cartpole_swingup", CaptionSpec(
    classes=_pole_classes("pole"),
    centers=_POLE_CENTERS,
    coordinate=lambda qpos: _tilt_deg(qpos[:, 1]),
    width=_POLE_WIDTH,
    sample=_cartpole_sample,
))

register_captions("pendulum_swingup", CaptionSpec(
    classes=_pole_classes("pendulum"),
    centers=_POLE_CENTERS,
    coordinate=lambda qpos: _tilt_deg(qpos[:, 0]),
    width=_POLE_WIDTH,
    sample=lambda task, rng, n: rng.uniform(-math.pi, math.pi, (n, 1)),
))


# -------------------------------------------------------------------- quadruped
def _trunk_tilt_deg(qpos: np.ndarray) -> np.ndarray:
    """Degrees between the trunk's up axis and the world's, from the free joint's
    quaternion (w, x, y, z)."""
    x, y = qpos[:, 4], qpos[:, 5]
    return np.degrees(np.arccos(np.clip(1.0 - 2.0 * (x * x + y * y), -1.0, 1.0)))


def _quadruped_sample(task, rng: np.random.Generator, n: int) -> np.ndarray:
    # A tilt of the trunk about a random horizontal axis, from standing to upside
    # down; the trunk height falls with the tilt so a fallen robot lies near the floor.
    # These poses are not physically settled: good enough to caption, not to simulate.
    tilt = np.pi * rng.uniform(0, 1, n) ** 2  # more near standing, where a walker spends its time
    axis = rng.uniform(-math.pi, math.pi, n)
    yaw = rng.uniform(-math.pi, math.pi, n)
    tilt_q = np.stack([np.cos(tilt / 2), np.sin(tilt / 2) * np.cos(axis),
                       np.sin(tilt / 2) * np.sin(axis), np.zeros(n)], axis=1)
    yaw_q = np.stack([np.cos(yaw / 2), np.zeros(n), np.zeros(n), np.sin(yaw / 2)], axis=1)
    quat = _quat_mul(yaw_q, tilt_q)
    height = np.maximum(task.spawn_height * np.cos(tilt), 0.1)
    pos = np.stack([np.zeros(n), np.zeros(n), height], axis=1)
    joints = task.default_pose + rng.uniform(-0.4, 0.4, (n, task.default_pose.size))
    return np.concatenate([pos, quat, joints], axis=1)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a.T
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=1)


register_captions("quadruped_walk", CaptionSpec(
    classes=(
        ("a robot standing", "a four-legged robot standing upright", "a robot on its feet"),
        ("a robot tilting", "a robot leaning over", "a robot losing its balance"),
        ("a robot fallen over", "a robot lying on its side", "a four-legged robot that fell down"),
    ),
    # Classes meet at ~22 and ~77 deg: fallen is past the task's own 60 deg fall limit.
    centers=(0.0, 45.0, 110.0),
    coordinate=_trunk_tilt_deg,
    width=30.0,
    sample=_quadruped_sample,
))
