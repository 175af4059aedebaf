"""Importers from other offline-RL formats into a robotrl :class:`Dataset`:
D4RL/DSRL-style HDF5 files and Minari datasets. Foreign observations become the
``policy`` group; with ``task`` they must fit that robotrl task."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robotrl.datasets.dataset import Dataset
from robotrl.datasets.format import DatasetError, validate

HDF5_REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")


def task_description(task, task_config: Mapping | None = None) -> dict[str, Any]:
    """The metadata a robotrl task gives an imported dataset (its policy layout,
    action names, clip and control period), from a one-env build of the task."""
    from robotrl.sim import make_task
    from robotrl.sim.mujoco_backend import MujocoVecEnv

    if isinstance(task, str):
        task = make_task(task, task_config)
    env = MujocoVecEnv(task, 1, nthread=1, randomize=False)
    try:
        return {
            "task": task.name,
            "obs_layout": {"policy": [[n, int(w)] for n, w in env.obs_layout["policy"]]},
            "action_names": list(env.action_names),
            "action_clip": float(env.cfg["action_clip"]),
            "control_dt": float(env.step_dt),
            "policy_width": int(env.obs_sizes["policy"]),
            "num_actions": int(env.num_actions),
        }
    finally:
        env.close()


def _finish(source: str, obs, next_obs, action, reward, cost, terminated, truncated, meta, task, task_config) -> Dataset:
    """Attach the task (or generic) description, then validate against it."""
    if task is not None:
        desc = task_description(task, task_config)
        width, num_actions = desc.pop("policy_width"), desc.pop("num_actions")
        if obs.shape[1] != width or action.shape[1] != num_actions:
            raise DatasetError(
                f"{source}: observations are {obs.shape[1]} wide with {action.shape[1]} actions, but task "
                f"{desc['task']} has {width} policy observations and {num_actions} actions"
            )
        meta.update(desc)
    else:
        meta.setdefault("task", None)
        meta.setdefault("obs_layout", {"policy": [["observations", int(obs.shape[1])]]})
        meta["action_names"] = [f"a{i}" for i in range(action.shape[1])]
        meta.setdefault("action_clip", None)
        meta.setdefault("control_dt", None)
    meta.setdefault("sim", "import")
    meta["domain"] = meta.get("domain") or "unknown"
    meta.setdefault("dynamics_shift", None)
    from robotrl.export import source_revision

    meta["robotrl_revision"] = source_revision()
    meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ds = Dataset(
        obs={"policy": obs.astype(np.float32)}, action=action.astype(np.float32),
        reward=reward.astype(np.float32), cost=cost.astype(np.float32),
        next_obs={"policy": next_obs.astype(np.float32)},
        terminated=terminated.astype(bool), truncated=truncated.astype(bool), meta=meta,
    )
    validate(ds, source=source)
    return ds


# ---------------------------------------------------------------- D4RL / DSRL
def _derive_next(obs, terminated, timeouts):
    """``next_observations`` from the following row within each episode. A
    terminal row gets its own observation (a placeholder: never bootstrapped
    from). A row cut by a time-out, or the file's last row if not terminal, has no
    next observation: it is dropped and the row before it (if still in the same
    episode) becomes the episode's truncated end. Returns (next_obs, keep, truncated)."""
    next_obs = np.empty_like(obs)
    next_obs[:-1] = obs[1:]
    next_obs[terminated] = obs[terminated]
    next_obs[-1] = obs[-1]
    keep = ~timeouts
    keep[-1] = bool(terminated[-1])
    dropped = np.flatnonzero(~keep)
    prev = dropped[dropped > 0] - 1
    # Only a kept, unfinished row continues into the dropped one; otherwise the
    # dropped row began its own (now empty) episode.
    prev = prev[keep[prev] & ~terminated[prev]]
    truncated = np.zeros(len(obs), bool)
    truncated[prev] = True
    return next_obs, keep, truncated


def import_hdf5(
    path: str | os.PathLike,
    task=None,
    task_config: Mapping | None = None,
    env_id: str | None = None,
    domain: str | None = None,
) -> Dataset:
    """A D4RL/DSRL-style HDF5 file: ``observations, actions, rewards, terminals,
    timeouts``, optional ``next_observations`` and ``costs`` (DSRL)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file does not exist")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in HDF5_REQUIRED if k not in f]
            if missing:
                raise DatasetError(f"{path}: field '{missing[0]}': missing (D4RL files have {', '.join(HDF5_REQUIRED)})")
            data = {k: np.asarray(f[k][()]) for k in (*HDF5_REQUIRED, "next_observations", "costs") if k in f}
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file: {exc}") from exc

    obs = data["observations"].reshape(len(data["observations"]), -1)
    action = data["actions"].reshape(len(data["actions"]), -1)
    n = len(obs)
    for key in ("actions", "rewards", "terminals", "timeouts", "next_observations", "costs"):
        if key in data and len(data[key]) != n:
            raise DatasetError(f"{path}: field '{key}': {len(data[key])} rows but 'observations' has {n}")
    reward = data["rewards"].reshape(n)
    cost = data["costs"].reshape(n) if "costs" in data else np.zeros(n, np.float32)
    terminated = data["terminals"].reshape(n).astype(bool)
    # A row both terminal and timed out ended in a terminal state.
    truncated = data["timeouts"].reshape(n).astype(bool) & ~terminated
    if "next_observations" in data:
        next_obs = data["next_observations"].reshape(n, -1)
        truncated[-1] = truncated[-1] | ~terminated[-1]  # a file cut mid-episode
        keep = np.ones(n, bool)
    else:
        next_obs, keep, truncated = _derive_next(obs, terminated, truncated)
    env_name = env_id or attrs.get("env_name") or attrs.get("env_id") or path.stem
    meta = {
        "task": None, "env_id": None if task else str(env_name), "domain": domain,
        "source": {"kind": "hdf5", "path": str(path.resolve()), "rows_in_file": int(n),
                   "dropped_rows": int((~keep).sum()), "derived_next_obs": "next_observations" not in data,
                   "has_costs": "costs" in data},
    }
    return _finish(str(path), obs[keep], next_obs[keep], action[keep], reward[keep], cost[keep],
                   terminated[keep], truncated[keep], meta, task, task_config)


# ---------------------------------------------------------------------- Minari
def _minari_dataset(source: str | os.PathLike):
    """A local Minari dataset from a folder (the dataset's own or its ``data``
    folder) or a dataset id in the local Minari root; never downloads."""
    import minari
    from minari import MinariDataset

    p = Path(source)
    try:
        if p.is_dir():
            return MinariDataset(p / "data" if (p / "data").is_dir() else p)
        return minari.load_dataset(str(source), download=False)
    except FileNotFoundError as exc:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise DatasetError(f"{source}: neither a Minari dataset folder nor a dataset id in the local Minari root "
                           f"({root}); robotrl does not download datasets") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{source}: not a readable Minari dataset: {exc}") from exc


def _flat_obs(obs, space) -> tuple[np.ndarray, list[list]]:
    """Episode observations as (T, width) with their layout; Dict spaces flatten
    key by key in the space's order."""
    if isinstance(obs, dict):
        keys = list(getattr(space, "spaces", obs).keys())
        parts = [np.asarray(obs[k]).reshape(len(obs[k]), -1) for k in keys]
        return np.concatenate(parts, axis=1), [[str(k), int(p.shape[1])] for k, p in zip(keys, parts)]
    a = np.asarray(obs)
    a = a.reshape(len(a), -1)
    return a, [["observations", int(a.shape[1])]]


def import_minari(
    source: str | os.PathLike,
    task=None,
    task_config: Mapping | None = None,
    env_id: str | None = None,
    domain: str | None = None,
) -> Dataset:
    """Every episode of a local Minari dataset. Costs come from the step infos'
    ``cost`` when present. An episode that ends neither terminated nor truncated
    (a recording stopped mid-episode) ends truncated."""
    md = _minari_dataset(source)
    rows: dict[str, list] = {k: [] for k in ("obs", "next", "act", "rew", "cost", "term", "trunc")}
    layout = None
    for ep in md.iterate_episodes():
        o, layout = _flat_obs(ep.observations, md.observation_space)
        t = len(ep.actions)
        if t == 0:
            continue
        rows["obs"].append(o[:t])
        rows["next"].append(o[1: t + 1])
        rows["act"].append(np.asarray(ep.actions).reshape(t, -1))
        rows["rew"].append(np.asarray(ep.rewards, np.float64).reshape(t))
        info_cost = (ep.infos or {}).get("cost")
        # Minari keeps the reset's info too, so per-step infos have t + 1 entries.
        rows["cost"].append(np.asarray(info_cost, np.float64).reshape(-1)[-t:] if info_cost is not None else np.zeros(t))
        term = np.asarray(ep.terminations, bool).reshape(t)
        trunc = np.asarray(ep.truncations, bool).reshape(t) & ~term
        trunc[-1] |= ~term[-1]
        rows["term"].append(term)
        rows["trunc"].append(trunc)
    if not rows["act"]:
        raise DatasetError(f"{source}: the Minari dataset holds no steps")
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    spec_env = getattr(md, "env_spec", None)
    space = md.action_space
    low, high = np.asarray(getattr(space, "low", np.nan)), np.asarray(getattr(space, "high", np.nan))
    symmetric = low.size and np.all(np.isfinite(high)) and np.allclose(-low, high) and np.allclose(high, high.flat[0])
    meta = {
        "task": None,
        "env_id": None if task else (env_id or (spec_env.id if spec_env else None)),
        "domain": domain,
        "obs_layout": {"policy": layout},
        "action_clip": float(high.flat[0]) if symmetric else None,
        "source": {"kind": "minari", "dataset_id": md.spec.dataset_id, "path": str(source),
                   "env_id": spec_env.id if spec_env else None, "episodes": int(md.total_episodes),
                   "action_low": low.reshape(-1).tolist(), "action_high": high.reshape(-1).tolist()},
    }
    if task is not None:
        meta.pop("obs_layout")
        meta.pop("action_clip")
    return _finish(str(source), cat["obs"], cat["next"], cat["act"], cat["rew"], cat["cost"],
                   cat["term"], cat["trunc"], meta, task, task_config)


IMPORTERS = {"hdf5": import_hdf5, "minari": import_minari}
