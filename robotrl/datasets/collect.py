"""Collect a dataset from any robotrl task and backend, in the simulator or a
target domain, with policy artifacts, noise and random actions mixed per episode
(quality presets in ``FORMAT.md``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from robotrl.datasets.dataset import Dataset

QUALITIES = ("random", "medium", "expert", "medium-replay", "custom")
MEDIUM_NOISE = 0.1
REPLAY_RANDOM_FRACTION = 0.2
REPLAY_NOISE_LEVELS = (0.0, 0.1, 0.3)


@dataclass(frozen=True)
class Source:
    """One behaviour an episode can follow: uniform random actions
    (``policy=None``) or artifact ``policy`` (an index) plus Gaussian noise."""

    policy: int | None
    noise_std: float = 0.0
    weight: float = 1.0


def quality_sources(
    quality: str | None, num_policies: int, noise_std: float | None = None, random_fraction: float = 0.0
) -> list[Source]:
    """The per-episode mixture of a quality preset (see ``FORMAT.md``)."""
    if quality is None:
        quality = "custom" if num_policies else "random"
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; available: {', '.join(QUALITIES)}")
    if quality == "random":
        if num_policies:
            raise ValueError("quality=random takes no policy (its actions are uniform random)")
        return [Source(None)]
    if not num_policies:
        raise ValueError(f"quality={quality} needs a policy artifact (policy=DIR)")
    if quality in ("medium", "expert") and num_policies != 1:
        raise ValueError(f"quality={quality} takes exactly one policy artifact, got {num_policies}")
    if quality == "medium":
        return [Source(0, MEDIUM_NOISE if noise_std is None else float(noise_std))]
    if quality == "expert":
        if noise_std:
            raise ValueError("quality=expert adds no noise; use quality=medium or quality=custom for noise_std")
        return [Source(0, 0.0)]
    if quality == "medium-replay":
        share = (1.0 - REPLAY_RANDOM_FRACTION) / (num_policies * len(REPLAY_NOISE_LEVELS))
        return [Source(None, 0.0, REPLAY_RANDOM_FRACTION)] + [
            Source(p, s, share) for p in range(num_policies) for s in REPLAY_NOISE_LEVELS
        ]
    # custom: the given artifacts with one noise level, plus a share of random episodes.
    if not 0.0 <= random_fraction < 1.0:
        raise ValueError(f"random_fraction must be in [0, 1), got {random_fraction}")
    out = [Source(p, float(noise_std or 0.0), (1.0 - random_fraction) / num_policies) for p in range(num_policies)]
    return out + ([Source(None, 0.0, random_fraction)] if random_fraction > 0 else [])


def expand_policy_paths(policies: str | Sequence[str] | None) -> list[str]:
    """Artifact folders; a glob (``run/artifacts/*``) expands in sorted order, so
    checkpoints saved along a run come oldest first when their names sort so."""
    import glob

    if not policies:
        return []
    if isinstance(policies, (str, os.PathLike)):
        policies = [policies]
    out: list[str] = []
    for p in map(str, policies):
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        if not matches:
            raise ValueError(f"policy pattern {p!r} matches no artifact folder")
        out += matches
    return out


def domain_record(real_domain, task=None) -> tuple[str, dict]:
    """``(domain name, shift fields)`` for the metadata: a name of
    ``DOMAINS``, "sim" for none, "custom" for a mapping."""
    from robotrl.sim.domains import DOMAINS, resolve_domain

    if real_domain is None and task is not None:
        real_domain = task.config.get("dynamics_shift")
    shift = resolve_domain(real_domain)
    if shift.is_identity:
        return "sim", {}
    if isinstance(real_domain, str):
        return real_domain, shift.as_dict()
    name = next((k for k, v in DOMAINS.items() if v == shift), "custom")
    return name, shift.as_dict()


def _policy_name(policy) -> str:
    """An artifact by its folder; any other Policy object (a shield, a scripted
    controller) by its class."""
    folder = getattr(policy, "folder", None)
    return str(Path(folder).resolve()) if folder is not None else f"<{type(policy).__name__}>"


def _policy_obs_check(policy, env, name: str) -> None:
    obs_dim = sum(int(w) for _, w in policy.obs_layout)
    num_actions = len(policy.action_names)
    if obs_dim != env.obs_sizes["policy"] or num_actions != env.num_actions:
        raise ValueError(
            f"policy {_policy_name(policy)} takes {obs_dim} observations "
            f"and gives {num_actions} actions, but task {name} has {env.obs_sizes['policy']} and {env.num_actions}"
        )


def env_shares(transitions: int, num_envs: int) -> np.ndarray:
    """Rows env i contributes to ``collect``'s ``transitions``: the first
    (transitions % num_envs) envs one more."""
    return np.full(num_envs, transitions // num_envs) + (np.arange(num_envs) < transitions % num_envs)


def row_layout(transitions: int, num_envs: int) -> tuple[np.ndarray, np.ndarray]:
    """``(step, env)`` of every row of ``collect``'s dataset: each env's steps lie
    contiguously, env 0 first."""
    shares = env_shares(transitions, num_envs)
    return np.concatenate([np.arange(s) for s in shares]), np.repeat(np.arange(num_envs), shares)


def collect(
    task,
    transitions: int,
    *,
    policies: Sequence[Any] = (),
    quality: str | None = None,
    noise_std: float | None = None,
    random_fraction: float = 0.0,
    sim: str = "mujoco",
    env_kwargs: Mapping | None = None,
    task_config: Mapping | None = None,
    real_domain: str | Mapping | None = None,
    num_envs: int = 16,
    seed: int = 0,
    randomize: bool = False,
    progress: bool = True,
) -> Dataset:
    """``transitions`` rows of ``task`` (a name, a Task, or an env id for the
    gymnasium/brax backends) in the simulator or target domain ``real_domain``.
    ``policies`` are artifact folders or Policy objects (e.g. ``ArtifactPolicy``)."""
    import torch
    from tqdm import tqdm

    from robotrl.export import source_revision
    from robotrl.policies.artifact import ArtifactPolicy
    from robotrl.sim import EXTERNAL_SIMS, make_env, make_task
    from robotrl.sim.domains import domain_task_config

    transitions = int(transitions)
    if transitions < 1:
        raise ValueError(f"transitions must be >= 1, got {transitions}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    # Artifact folders are loaded; anything with act() is a Policy already.
    policies = [p if hasattr(p, "act") else ArtifactPolicy(p) for p in policies]
    sources = quality_sources(quality, len(policies), noise_std, random_fraction)
    quality = quality or ("custom" if policies else "random")

    external = sim in EXTERNAL_SIMS
    if external:
        if real_domain not in (None, "", "sim", "none"):
            raise ValueError(f"real_domain={real_domain} shifts robotrl tasks only, not {sim} envs")
        domain, shift = "sim", {}
    elif isinstance(task, str):
        task = make_task(task, domain_task_config(task_config, real_domain))
        domain, shift = domain_record(real_domain, task)
    else:
        if real_domain not in (None, "", "sim", "none"):
            raise ValueError("give a task name with real_domain, or build the Task with domain_task_config")
        domain, shift = domain_record(None, task)
    name = task if isinstance(task, str) else task.name

    num_envs = min(int(num_envs), transitions)
    shares = env_shares(transitions, num_envs)
    steps = int(shares.max())

    env = make_env(task, num_envs, sim=sim, seed=seed, randomize=randomize, **dict(env_kwargs or {}))
    try:
        for p in policies:
            _policy_obs_check(p, env, name)
        clip = float(getattr(env, "cfg", {}).get("action_clip", 1.0))
        rng = np.random.default_rng(seed)
        weights = np.array([s.weight for s in sources], dtype=np.float64)
        weights /= weights.sum()

        def draw(k: int) -> np.ndarray:
            return rng.choice(len(sources), size=k, p=weights)

        source = draw(num_envs)
        groups = dict(env.obs_sizes)
        buf_obs = {g: np.zeros((steps, num_envs, w), np.float32) for g, w in groups.items()}
        buf_next = {g: np.zeros((steps, num_envs, w), np.float32) for g, w in groups.items()}
        buf_act = np.zeros((steps, num_envs, env.num_actions), np.float32)
        buf_rew, buf_cost = np.zeros((steps, num_envs), np.float32), np.zeros((steps, num_envs), np.float32)
        buf_term, buf_trunc = np.zeros((steps, num_envs), bool), np.zeros((steps, num_envs), bool)

        obs = {g: v.cpu().numpy() for g, v in env.reset().items()}
        bar = tqdm(total=transitions, desc=f"collect {name}", unit="tr", disable=not progress)
        for t in range(steps):
            action = _act(sources, source, policies, obs["policy"], env.num_actions, clip, rng)
            nxt, reward, done, extras = env.step(torch.from_numpy(action))
            nxt = {g: v.cpu().numpy() for g, v in nxt.items()}
            done = done.cpu().numpy().astype(bool)
            time_outs = extras["time_outs"].cpu().numpy().astype(bool)
            for g in groups:
                buf_obs[g][t] = obs[g]
                buf_next[g][t] = nxt[g]
            if done.any():
                # The returned obs of a finished env is its next episode's first;
                # its transition ends at the true last observation.
                ids = np.asarray(extras["final_ids"])
                for g in groups:
                    buf_next[g][t, ids] = extras["final_observations"][g]
                source[done] = draw(int(done.sum()))
            buf_act[t] = action
            buf_rew[t] = reward.cpu().numpy()
            buf_cost[t] = extras["cost"].cpu().numpy()
            buf_term[t] = done & ~time_outs
            buf_trunc[t] = time_outs
            obs = nxt
            bar.update(int((shares > t).sum()))
        bar.close()
        layout = {g: [[n, int(w)] for n, w in terms] for g, terms in env.obs_layout.items()}
        action_names = list(env.action_names)
        control_dt = float(env.step_dt)
    finally:
        env.close()

    # Cut each env's stream at its share; an episode still running there ends truncated.
    last = shares - 1
    envs = np.arange(num_envs)
    cut = ~(buf_term[last, envs] | buf_trunc[last, envs])
    buf_trunc[last[cut], envs[cut]] = True
    t_idx, e_idx = row_layout(transitions, num_envs)

    meta = {
        "task": None if external else name,
        "env_id": name if external else None,
        "sim": sim,
        "domain": domain,
        "dynamics_shift": shift,
        "obs_layout": layout,
        "action_names": action_names,
        "action_clip": clip,
        "control_dt": control_dt,
        "source": {
            "kind": "collect",
            "quality": quality,
            "policies": [_policy_name(p) for p in policies],
            "mixture": [{"policy": s.policy, "noise_std": s.noise_std, "weight": float(w)} for s, w in zip(sources, weights)],
            "noise_std": noise_std,
            "random_fraction": random_fraction,
            "seed": int(seed),
            "num_envs": int(num_envs),
            "randomize": bool(randomize),
            "cut_episodes": int(cut.sum()),
        },
        "robotrl_revision": source_revision(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Dataset(
        obs={g: a[t_idx, e_idx] for g, a in buf_obs.items()},
        action=buf_act[t_idx, e_idx],
        reward=buf_rew[t_idx, e_idx],
        cost=buf_cost[t_idx, e_idx],
        next_obs={g: a[t_idx, e_idx] for g, a in buf_next.items()},
        terminated=buf_term[t_idx, e_idx],
        truncated=buf_trunc[t_idx, e_idx],
        meta=meta,
    )


def _act(sources, source, policies, obs_policy, num_actions, clip, rng) -> np.ndarray:
    """One batch of actions, each env following its episode's source; every
    policy runs once on the rows that use it."""
    n = len(source)
    action = np.zeros((n, num_actions), np.float32)
    policy_of = np.array([-1 if s.policy is None else s.policy for s in sources])[source]
    noise = np.array([s.noise_std for s in sources])[source]
    rand = policy_of == -1
    if rand.any():
        action[rand] = rng.uniform(-clip, clip, (int(rand.sum()), num_actions))
    for p in np.unique(policy_of[~rand]):
        rows = policy_of == p
        action[rows] = np.asarray(policies[p].act(obs_policy[rows]), np.float32).reshape(-1, num_actions)
    noisy = ~rand & (noise > 0)
    if noisy.any():
        action[noisy] += noise[noisy, None] * rng.standard_normal((int(noisy.sum()), num_actions))
    return np.clip(action, -clip, clip).astype(np.float32)


def describe(ds: Dataset, path: str | Path | None = None) -> str:
    """The one-line summary printed after collecting or importing."""
    returns = ds.episode_returns
    src = ds.meta.get("source", {})
    where = ds.meta.get("task") or ds.meta.get("env_id") or "?"
    line = (
        f"{len(ds)} transitions, {len(returns)} episodes ({src.get('cut_episodes', 0)} cut) of {where}"
        f" [{ds.meta.get('domain', 'sim')}] quality={src.get('quality', src.get('kind', '?'))}:"
        f" return {returns.mean():.2f} ± {returns.std():.2f}" if len(returns) else f"{len(ds)} transitions"
    )
    if ds.cost.any():
        line += f", cost {ds.episode_costs.mean():.2f}"
    return line + (f" -> {path}" if path else "")
