"""What is in a dataset: size, episodes, returns, costs, action coverage and
observation ranges, as a table, a JSON file and a histogram of episode returns."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.datasets.dataset import Dataset


def _stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, np.float64)
    if not len(x):
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def action_coverage(action: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """Per action dimension, the fraction of ``bins`` equal bins over ``[low, high]``
    that hold at least one action: ~1 for random data, small for a narrow expert."""
    span = np.where(high > low, high - low, 1.0)
    idx = np.clip(((action - low) / span * bins).astype(np.int64), 0, bins - 1)
    return np.array([len(np.unique(idx[:, j])) / bins for j in range(action.shape[1])])


def dataset_info(ds: Dataset, bins: int = 20) -> dict[str, Any]:
    """Summary statistics of ``ds`` (JSON-ready)."""
    meta = ds.meta
    lengths = np.diff(np.concatenate([[-1], ds.episode_ends]))
    clip = meta.get("action_clip")
    if clip is not None and np.isfinite(clip):
        low, high = np.full(ds.action.shape[1], -float(clip)), np.full(ds.action.shape[1], float(clip))
    else:
        # Unknown bounds (imports): coverage of the data's own range.
        low, high = ds.action.min(axis=0), ds.action.max(axis=0)
    coverage = action_coverage(ds.action, low, high, bins) if len(ds) else np.zeros(ds.action.shape[1])
    names = meta.get("action_names") or [f"a{i}" for i in range(ds.action.shape[1])]
    actions = [
        {"name": str(names[j]), "min": float(ds.action[:, j].min()), "max": float(ds.action[:, j].max()),
         "mean": float(ds.action[:, j].mean()), "std": float(ds.action[:, j].std()), "coverage": float(coverage[j])}
        for j in range(ds.action.shape[1])
    ] if len(ds) else []
    obs = {}
    for group, a in ds.obs.items():
        terms, col = [], 0
        for name, width in meta["obs_layout"][group]:
            block = a[:, col: col + int(width)]
            col += int(width)
            terms.append({"name": name, "width": int(width),
                          "min": block.min(axis=0).tolist() if len(a) else [],
                          "max": block.max(axis=0).tolist() if len(a) else []})
        obs[group] = terms
    src = meta.get("source", {})
    return {
        "task": meta.get("task"),
        "env_id": meta.get("env_id"),
        "domain": meta.get("domain"),
        "quality": src.get("quality", src.get("kind")),
        "transitions": len(ds),
        "episodes": int(len(ds.episode_ends)),
        "terminated": int(ds.terminated.sum()),
        "truncated": int(ds.truncated.sum()),
        "cut_episodes": src.get("cut_episodes"),
        "return": _stats(ds.episode_returns),
        "cost": {**_stats(ds.episode_costs), "nonzero_rows": int(np.count_nonzero(ds.cost))},
        "length": _stats(lengths),
        "action_coverage_bins": int(bins),
        "action": actions,
        "obs": obs,
    }


def format_info(info: dict, path: str | Path | None = None) -> str:
    """A plain-text table of :func:`dataset_info`."""
    r, c, n = info["return"], info["cost"], info["length"]
    lines = [
        f"dataset {path or ''}".rstrip(),
        f"  task {info['task'] or info['env_id']}  domain {info['domain']}  quality {info['quality']}",
        f"  {info['transitions']} transitions, {info['episodes']} episodes "
        f"({info['terminated']} terminated, {info['truncated']} truncated"
        + (f", {info['cut_episodes']} cut by the budget)" if info.get("cut_episodes") else ")"),
        f"  {'':8}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}",
    ]
    for label, s in (("return", r), ("cost", c), ("length", n)):
        lines.append(f"  {label:8}{s['mean']:10.2f}{s['std']:10.2f}{s['min']:10.2f}{s['max']:10.2f}")
    lines.append(f"  {'action':16}{'min':>9}{'max':>9}{'std':>9}{'coverage':>10}")
    for a in info["action"]:
        lines.append(f"  {a['name'][:16]:16}{a['min']:9.3f}{a['max']:9.3f}{a['std']:9.3f}{a['coverage']:10.2f}")
    for group, terms in info["obs"].items():
        lines.append(f"  obs/{group:12}{'width':>6}{'min':>10}{'max':>10}")
        for t in terms:
            lo = min(t["min"]) if t["min"] else float("nan")
            hi = max(t["max"]) if t["max"] else float("nan")
            lines.append(f"    {t['name'][:14]:14}{t['width']:6d}{lo:10.3f}{hi:10.3f}")
    return "\n".join(lines)


def write_info(ds: Dataset, info: dict, path: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """``<stem>_info.json`` and ``<stem>_returns.png`` (returns, and costs when any
    are nonzero) beside ``path`` or in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    folder = Path(out) if out else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{path.stem}_info.json"
    json_path.write_text(json.dumps(info, indent=2))

    panels = [("episode return", ds.episode_returns)]
    if ds.cost.any():
        panels.append(("episode cost", ds.episode_costs))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels):
        ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="tab:blue", alpha=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("episodes")
    fig.suptitle(f"{path.name}: {info['task'] or info['env_id']} [{info['domain']}], {info['episodes']} episodes")
    fig.tight_layout()
    png_path = folder / f"{path.stem}_returns.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return json_path, png_path
