"""VLM rewards: what rendering and scoring frames costs, and what it costs training.

1. Frames/s of render + encode (and of each alone) at batch 1, 16 and 64: the
   batched renderer (``robotrl.sim.render``) on ``cartpole_swingup`` frames and the
   CLIP image tower. ``ratio`` = frames/s over the same stage at batch 1.
2. Training env steps/s of PPO on ``cartpole_swingup`` with ``reward=vlm`` in each
   mode (sync, async, distilled) against the same PPO with the task's own reward,
   measured in the same run. ``ratio`` = the mode's steps/s over the no-VLM steps/s.
   Issue target: distilled keeps >= 50% of the no-VLM throughput.

The CLIP model is the small one ``robotrl vlm finetune`` trains (``--weights DIR``
reuses one; otherwise a small one is trained first, its time not counted).

    python benchmarks/vlm_reward.py --json out.json [--quick] [--weights DIR]
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import parser, print_table, write_json

TASK = "cartpole_swingup"
PROMPTS = ["vlm.kind=goal_baseline", "vlm.goal=[a pole standing upright]", "vlm.baseline=[a pole hanging down]"]
# Env steps per mode: the slow modes get fewer (steps/s is a rate; each budget is in the JSON).
FULL = dict(finetune_frames=3000, batches=(1, 16, 64), reps=20, steps={"state": 262_144, "sync": 16_384, "async": 16_384, "distilled": 262_144})
QUICK = dict(finetune_frames=1000, batches=(1, 16, 64), reps=3, steps={"state": 16_384, "sync": 8_192, "async": 8_192, "distilled": 16_384})
NUM_ENVS, STEPS_PER_ENV = 128, 64  # the tuned cartpole PPO settings: 8192 steps per iteration


def small_model(work: Path, frames: int) -> Path:
    from robotrl.cli import main

    out = work / "clip"
    code = main(["vlm", "finetune", f"task={TASK}", f"out={out}", f"frames={frames}", "progress=false"])
    if code != 0:
        raise RuntimeError(f"robotrl vlm finetune failed with exit code {code}")
    return out


def frame_rates(weights: Path, p: dict) -> list[dict]:
    import torch

    from robotrl.sim import make_task
    from robotrl.sim.render import BatchRenderer, render_config
    from robotrl.vlm.encoders import ClipEncoder

    task = make_task(TASK)
    renderer = BatchRenderer(task.model, render_config(task))
    encoder = ClipEncoder(None, weights)
    rng = np.random.default_rng(0)
    rows, base = [], {}
    for b in p["batches"]:
        qpos = np.zeros((b, task.model.nq))
        qpos[:, 0] = rng.uniform(-1, 1, b)
        qpos[:, 1] = rng.uniform(-np.pi, np.pi, b)
        frames = renderer.render(qpos)
        encoder.encode_images(frames)  # warm-up
        times = {"render": 0.0, "encode": 0.0}
        for _ in range(p["reps"]):
            t0 = time.perf_counter()
            frames = renderer.render(qpos)
            t1 = time.perf_counter()
            with torch.no_grad():
                encoder.encode_images(frames)
            t2 = time.perf_counter()
            times["render"] += t1 - t0
            times["encode"] += t2 - t1
        times["render+encode"] = times["render"] + times["encode"]
        for stage, t in times.items():
            fps = b * p["reps"] / t
            base.setdefault(stage, fps)
            rows.append({"metric": "frames_per_s", "stage": stage, "batch": b, "frames_per_s": fps,
                         "ratio": fps / base[stage], "ratio_of": f"{stage} frames/s at batch 1"})
    renderer.close()
    return rows


def train_rate(mode: str, steps: int, weights: Path, work: Path) -> dict:
    from robotrl.cli import main

    out = work / f"train_{mode}"
    args = ["train", f"task={TASK}", f"steps={steps}", f"num_envs={NUM_ENVS}", f"algo.num_steps_per_env={STEPS_PER_ENV}",
            "eval_episodes=1", "progress=false", f"out={out}", "seed=0"]
    if mode != "state":
        args += ["reward=vlm", f"vlm.mode={mode}", f"vlm.weights={weights}", *PROMPTS]
    code = main(args)
    if code != 0:
        raise RuntimeError(f"robotrl {' '.join(args)} failed with exit code {code}")
    train = json.loads((out / "eval.json").read_text())["train"]
    return {"steps": train["env_steps"], "wall_s": train["wall_time_s"], "steps_per_s": train["steps_per_s"]}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, help="a folder from `robotrl vlm finetune` (default: train a small one)")
    args = p.parse_args()
    preset = QUICK if args.quick else FULL
    os.environ.setdefault("MUJOCO_GL", "egl")
    with tempfile.TemporaryDirectory(prefix="vlm_bench_") as tmp:
        work = Path(tmp)
        weights = args.weights or small_model(work, preset["finetune_frames"])
        rows = frame_rates(weights, preset)
        rates = {mode: train_rate(mode, n, weights, work) for mode, n in preset["steps"].items()}
    ref = rates["state"]["steps_per_s"]
    for mode, r in rates.items():
        rows.append({"metric": "train_steps_per_s", "mode": mode if mode != "state" else "no VLM (task reward)",
                     **r, "ratio": r["steps_per_s"] / ref, "ratio_of": "steps/s over no-VLM steps/s"})
    distilled = next(r for r in rows if r.get("mode") == "distilled")
    target_met = distilled["ratio"] >= 0.5
    print_table([r for r in rows if r["metric"] == "frames_per_s"],
                [("stage", "stage"), ("batch", "batch"), ("frames_per_s", "frames/s"), ("ratio", "ratio")])
    print()
    print_table([r for r in rows if r["metric"] == "train_steps_per_s"],
                [("mode", "reward"), ("steps", "env steps"), ("steps_per_s", "steps/s"), ("ratio", "ratio")])
    print(f"\ndistilled keeps {distilled['ratio']:.0%} of the no-VLM training throughput "
          f"(target >= 50%: {'met' if target_met else 'NOT met'})")
    write_json(args.json, "vlm_reward", rows, quick=args.quick, task=TASK, num_envs=NUM_ENVS,
               distilled_target_met=target_met)


if __name__ == "__main__":
    main()
