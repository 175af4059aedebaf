"""What every runner does with its run directory, whatever the algorithm.

::

    config.yaml          resolved config of the run
    checkpoints/         latest.pt (atomic, resumable)
    tb/                  TensorBoard scalars
    artifact/            policy.onnx + policy.yaml
    eval.json, report.md, return_curve.png

``open_run`` decides, before anything is written, whether the directory may be
used (a fresh one, or ``resume=true`` with a readable checkpoint of the same
task and algorithm); ``finish_run`` exports, evaluates and reports.
"""
from __future__ import annotations

import random
import sys
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from robotrl.checkpoint import CheckpointError, load_checkpoint
from robotrl.evaluate import evaluate, format_eval, write_eval
from robotrl.export import export_artifact
from robotrl.report import write_report

CHECKPOINT = "checkpoints/latest.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def open_run(cfg: dict[str, Any]) -> dict | None:
    """The checkpoint to resume from (``resume=true``), or None for a fresh run.

    Reads and validates the checkpoint before anything in the directory is
    touched, so a bad checkpoint leaves the run exactly as it was. A directory that
    already holds a run is refused without ``resume=true``."""
    out = Path(cfg["out"])
    if cfg.get("resume"):
        state = load_checkpoint(out / CHECKPOINT)
        saved = state.get("config", {})
        for key in ("task", "algo"):
            if saved.get(key, {}).get("name") != cfg[key]["name"]:
                raise CheckpointError(
                    f"checkpoint {out / CHECKPOINT} is from {key} {saved.get(key, {}).get('name')!r}, not {cfg[key]['name']!r}"
                )
        return state
    if (out / CHECKPOINT).exists():
        raise FileExistsError(f"{out} already holds a run; pass resume=true to continue it or choose another out=DIR")
    return None


def continue_args(out: Path) -> list[str] | None:
    """How a benchmark continues one of its runs after an interruption: None when
    the run finished (it has its eval.json), ``["resume=true"]`` when it has a
    checkpoint, ``[]`` for a fresh start (a folder with neither is removed: it was
    stopped before anything worth continuing was written)."""
    if (out / "eval.json").exists():
        return None
    if (out / CHECKPOINT).exists():
        return ["resume=true"]
    if out.exists():
        shutil.rmtree(out)
    return []


def write_config(out: Path, cfg: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def progress_bar(total: int, initial: int, desc: str, enabled: bool, unit: str = "step") -> tqdm:
    return tqdm(
        total=total, initial=min(initial, total), unit=unit, unit_scale=True, desc=desc, disable=not enabled,
        dynamic_ncols=True,
        # In a log file (no terminal) a redraw per iteration would flood it.
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )


def finish_run(
    out: Path, cfg: dict, module, task_or_env, obs_layout, eval_task, history: dict, train: dict,
    sim_kwargs: dict, progress: bool = True, notes: list[str] | None = None,
) -> dict:
    """Export ``module`` (obs -> action) to ``out/artifact``, evaluate the exported
    file on ``eval_task`` (a Task, or an env name for external backends), write
    eval.json and report.md (with ``notes`` appended) and print the summary."""
    from robotrl.policies.artifact import ArtifactPolicy

    sim = cfg["sim"]["name"]
    folder = export_artifact(module, task_or_env, obs_layout, out / "artifact", cfg, sim=sim, name=cfg["task"]["name"])
    result = evaluate(
        ArtifactPolicy(folder), eval_task, int(cfg["eval_episodes"]), seed=int(cfg["seed"]) + 10_000,
        sim=sim, progress=progress, env_kwargs=sim_kwargs,
    )
    result["train"] = train
    write_eval(result, out)
    report = write_report(out, cfg, history, result)
    if notes:
        report.write_text(report.read_text() + "\n" + "\n".join(notes) + "\n")
    print(format_eval(result))
    return result
