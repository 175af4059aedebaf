"""The on-disk dataset format (``FORMAT.md``): one compressed ``.npz`` of plain
arrays plus the metadata as a JSON string. Loading never unpickles, and every
file is validated so a bad one fails here, with the field and rows named, rather
than deep inside a learner.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.datasets.dataset import Dataset

FORMAT_VERSION = 1
FLOAT_FIELDS = ("action", "reward", "cost")
FLAG_FIELDS = ("terminated", "truncated")
REQUIRED_META = ("task", "obs_layout", "action_names")
SHOWN_ROWS = 5


class DatasetError(ValueError):
    """A dataset file (or in-memory dataset) that is missing, corrupt or inconsistent."""


def _rows(mask: np.ndarray) -> str:
    ids = np.flatnonzero(mask)
    shown = ", ".join(map(str, ids[:SHOWN_ROWS])) + (", ..." if len(ids) > SHOWN_ROWS else "")
    return f"{len(ids)} rows [{shown}]"


def _json_safe(value: Any) -> Any:
    """Metadata as plain JSON types (layouts hold tuples, configs numpy scalars)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def task_spec(task) -> tuple[dict[str, int], int]:
    """``(obs_sizes, num_actions)`` of a robotrl Task or a VecEnv. A Task does not
    know its observation widths until observed, so it is built once, one env."""
    if hasattr(task, "obs_sizes"):
        return dict(task.obs_sizes), int(task.num_actions)
    from robotrl.sim.mujoco_backend import MujocoVecEnv

    env = MujocoVecEnv(task, 1, nthread=1, randomize=False)
    try:
        return dict(env.obs_sizes), int(env.num_actions)
    finally:
        env.close()


def validate(ds: Dataset, source: str = "dataset", task=None) -> None:
    """Raise :class:`DatasetError` naming ``source``, the field, the rows and the
    reason for the first problem found; ``task`` (a Task or VecEnv) adds checks of
    observation sizes and action count against it."""

    def fail(field: str, reason: str):
        raise DatasetError(f"{source}: field '{field}': {reason}")

    if not isinstance(ds.meta, dict):
        fail("meta_json", "metadata must be a JSON object")
    for key in REQUIRED_META:
        if key not in ds.meta:
            fail("meta_json", f"metadata key '{key}' is missing")
    if not isinstance(ds.obs, dict) or "policy" not in ds.obs:
        fail("obs/policy", "missing (every dataset has a 'policy' observation group)")
    if set(ds.next_obs) != set(ds.obs):
        missing = sorted(set(ds.obs) ^ set(ds.next_obs))
        fail(f"next_obs/{missing[0]}", f"obs groups {sorted(ds.obs)} and next_obs groups {sorted(ds.next_obs)} differ")

    action = np.asarray(ds.action)
    if action.ndim != 2:
        fail("action", f"must be 2-D (rows, num_actions), got shape {action.shape}")
    n, num_actions = action.shape
    arrays = {"action": action, "reward": np.asarray(ds.reward), "cost": np.asarray(ds.cost),
              "terminated": np.asarray(ds.terminated), "truncated": np.asarray(ds.truncated)}
    for name in ("reward", "cost", *FLAG_FIELDS):
        a = arrays[name]
        if a.shape != (n,):
            fail(name, f"shape {a.shape} does not match the {n} rows of 'action' (expected ({n},))")
    for name in FLAG_FIELDS:
        if arrays[name].dtype != np.bool_:
            fail(name, f"must be boolean, got dtype {arrays[name].dtype}")

    layout = ds.meta["obs_layout"]
    try:
        widths = {g: sum(int(w) for _, w in terms) for g, terms in layout.items()}
    except (AttributeError, TypeError, ValueError):
        fail("meta_json", "obs_layout must map each observation group to a list of [name, width] pairs")
    if not isinstance(ds.meta["action_names"], list):
        fail("meta_json", "action_names must be a list")
    for kind, groups in (("obs", ds.obs), ("next_obs", ds.next_obs)):
        for group, a in groups.items():
            a = np.asarray(a)
            field = f"{kind}/{group}"
            if a.ndim != 2:
                fail(field, f"must be 2-D (rows, width), got shape {a.shape}")
            if a.shape[0] != n:
                fail(field, f"has {a.shape[0]} rows but 'action' has {n}")
            if group not in widths:
                fail("meta_json", f"obs_layout has no entry for observation group '{group}'")
            width = widths[group]
            if a.shape[1] != width:
                fail(field, f"width {a.shape[1]} does not match meta obs_layout['{group}'] (total {width})")
            arrays[field] = a
    if len(ds.meta["action_names"]) != num_actions:
        fail("action", f"{num_actions} action columns but meta action_names lists {len(ds.meta['action_names'])}")

    for name, a in arrays.items():
        if name in FLAG_FIELDS:
            continue
        if not np.issubdtype(a.dtype, np.floating):
            fail(name, f"must be floating point, got dtype {a.dtype}")
        finite = np.isfinite(a) if a.ndim == 1 else np.isfinite(a).all(axis=1)
        if not finite.all():
            fail(name, f"non-finite values (NaN/inf) in {_rows(~finite)}")

    if n and not (arrays["terminated"][-1] or arrays["truncated"][-1]):
        fail("terminated", f"the last row ({n - 1}) ends no episode (neither terminated nor truncated)")

    if task is not None:
        name = getattr(task, "name", None) or getattr(getattr(task, "task", None), "name", "the task")
        sizes, task_actions = task_spec(task)
        if num_actions != task_actions:
            fail("action", f"{num_actions} actions per row but task {name} takes {task_actions}")
        for group in ds.obs:
            a = arrays[f"obs/{group}"]
            if group not in sizes:
                fail(f"obs/{group}", f"task {name} has no observation group '{group}' (groups: {', '.join(sizes)})")
            if a.shape[1] != sizes[group]:
                fail(f"obs/{group}", f"width {a.shape[1]} but task {name} observes {sizes[group]}")


def save_dataset(ds: Dataset, path: str | os.PathLike) -> Path:
    """Validate ``ds`` and write it to ``path`` (``.npz``) atomically: readers see
    the old file or the whole new one, never a half-written one."""
    path = Path(path)
    validate(ds, source=f"{path} (before saving)")
    arrays: dict[str, np.ndarray] = {
        "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
        "meta_json": np.asarray(json.dumps(_json_safe(ds.meta), sort_keys=True)),
        "action": np.asarray(ds.action, np.float32),
        "reward": np.asarray(ds.reward, np.float32),
        "cost": np.asarray(ds.cost, np.float32),
        "terminated": np.asarray(ds.terminated, np.bool_),
        "truncated": np.asarray(ds.truncated, np.bool_),
    }
    for group in ds.obs:
        arrays[f"obs/{group}"] = np.asarray(ds.obs[group], np.float32)
        arrays[f"next_obs/{group}"] = np.asarray(ds.next_obs[group], np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, with a corrupt or pickled one reported by name."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npz dataset (truncated or corrupt?): {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single .npy array, not an .npz dataset")
    out = {}
    with npz:
        for key in npz.files:
            try:
                out[key] = npz[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise DatasetError(f"{path}: field '{key}': holds Python objects (pickle), which are refused") from None
                raise DatasetError(f"{path}: field '{key}': unreadable: {exc}") from exc
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                raise DatasetError(f"{path}: field '{key}': corrupt data (truncated file?): {exc}") from exc
    return out


def load_dataset(path: str | os.PathLike, task=None) -> Dataset:
    """Read and validate a dataset file; ``task`` (a Task or VecEnv) also checks
    it fits that task. Float fields come back float32, flags bool."""
    path = Path(path)
    arrays = _read_arrays(path)

    def fail(field: str, reason: str):
        raise DatasetError(f"{path}: field '{field}': {reason}")

    for key in ("format_version", "meta_json", "action", "reward", "cost", *FLAG_FIELDS, "obs/policy", "next_obs/policy"):
        if key not in arrays:
            fail(key, "missing")
    version = arrays["format_version"]
    if version.shape != () or not np.issubdtype(version.dtype, np.integer):
        fail("format_version", f"must be an integer scalar, got {version.dtype} {version.shape}")
    if int(version) > FORMAT_VERSION:
        fail("format_version", f"{int(version)} is newer than this robotrl reads ({FORMAT_VERSION}); upgrade robotrl")
    meta_text = arrays["meta_json"]
    if meta_text.shape != () or meta_text.dtype.kind != "U":
        fail("meta_json", f"must be a string scalar, got {meta_text.dtype} {meta_text.shape}")
    try:
        meta = json.loads(str(meta_text))
    except json.JSONDecodeError as exc:
        fail("meta_json", f"not valid JSON: {exc}")

    obs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("obs/")}
    next_obs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("next_obs/")}
    ds = Dataset(
        obs=obs, action=arrays["action"], reward=arrays["reward"], cost=arrays["cost"],
        next_obs=next_obs, terminated=arrays["terminated"], truncated=arrays["truncated"], meta=meta,
    )
    validate(ds, source=str(path), task=task)

    def f32(a):
        return a.astype(np.float32, copy=False)

    return Dataset(
        obs={g: f32(a) for g, a in obs.items()}, action=f32(ds.action), reward=f32(ds.reward), cost=f32(ds.cost),
        next_obs={g: f32(a) for g, a in next_obs.items()}, terminated=ds.terminated, truncated=ds.truncated, meta=meta,
    )
