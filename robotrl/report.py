"""The human reports: a run's report.md with a return-curve PNG, and eval.md of
``robotrl eval`` (with a link to the evaluation video when one was recorded)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_return_curve(history: dict, path: Path, title: str, cost_limit: float | None = None) -> Path:
    fig, ax1 = plt.subplots(figsize=(7, 4), dpi=100)
    ax1.plot(history["env_steps"], history["return"], color="tab:blue", label="mean episode return")
    ax1.set_xlabel("env steps")
    ax1.set_ylabel("mean episode return (last 200 episodes)")
    ax1.grid(alpha=0.3)
    if history.get("cost"):
        # Constrained training: the episode cost against its limit on a second axis.
        axc = ax1.twinx()
        axc.plot(history["env_steps"], history["cost"], color="tab:red", alpha=0.8, label="episode cost")
        if cost_limit is not None:
            axc.axhline(cost_limit, color="tab:red", linestyle="--", linewidth=1, label="cost limit")
        axc.set_ylabel("mean episode cost", color="tab:red")
    if history.get("wall_time"):
        ax2 = ax1.twiny()
        ax2.set_xlim(0, history["wall_time"][-1])
        ax2.set_xlabel("wall-clock seconds")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def evaluation_section(result: dict, out: Path) -> list[str]:
    """Markdown lines of an evaluation: the table and, when recorded, the video
    (linked relative to ``out``, the report's folder)."""
    lines = [
        f"## Evaluation ({result['episodes']} episodes, deterministic actions)",
        "",
        "| quantity | mean | std |",
        "|---|---|---|",
        f"| return | {result['return_mean']:.2f} | {result['return_std']:.2f} |",
        f"| cost | {result['cost_mean']:.2f} | {result['cost_std']:.2f} |",
        f"| episode length | {result['length_mean']:.1f} | {result['length_std']:.1f} |",
    ]
    for k, v in result["metrics"].items():
        lines.append(f"| {k} | {v:.3f} | |" if isinstance(v, float) else f"| {k} | {v} | |")
    if result.get("video"):
        rel = os.path.relpath(result["video"], out)
        # A GIF shows inline in Markdown viewers; an MP4 is a link.
        link = f"![evaluation video]({rel})" if rel.endswith(".gif") else f"[{Path(rel).name}]({rel})"
        lines += ["", f"Video of the first episodes (tiled; a finished episode stays dimmed): {link}"]
    return lines


def write_report(out: Path, cfg: dict, history: dict, result: dict) -> Path:
    out = Path(out)
    plot_return_curve(history, out / "return_curve.png", f"{cfg['task']['name']} — {cfg['algo']['name']}",
                      cost_limit=cfg["algo"].get("cost_limit"))
    train = result.get("train", {})
    lines = [
        f"# {cfg['task']['name']} — {cfg['algo']['name']} on {cfg['sim']['name']}",
        "",
        f"- env steps: {train.get('env_steps', 0):,} in {train.get('iterations', 0)} iterations, "
        f"{train.get('wall_time_s', 0.0):.1f} s ({train.get('steps_per_s', 0.0):,.0f} steps/s)",
        f"- num_envs: {cfg['num_envs']}, seed: {cfg['seed']}",
        "- artifact: [artifact/policy.yaml](artifact/policy.yaml)",
        "",
        "![return curve](return_curve.png)",
        "",
        *evaluation_section(result, out),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_eval_report(result: dict, out: Path, policy: str) -> Path:
    """``eval.md`` beside ``eval.json``: what ``robotrl eval`` measured."""
    out = Path(out)
    lines = [f"# Evaluation of {policy} on {result['task']}", "", *evaluation_section(result, out), ""]
    path = out / "eval.md"
    path.write_text("\n".join(lines))
    return path
