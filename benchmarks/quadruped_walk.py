"""Time for `robotrl train task=quadruped_walk` to a walking policy on this machine.

Runs the real CLI with the task's tuned defaults, then reads the evaluation the
run wrote. Walking means: mean velocity tracking >= 0.8 of the command and no
falls in evaluation. ratio = 900 s budget / measured wall-clock (> 1: within the
15-minute budget). --quick runs 1 M steps as a smoke test of the same path.

    python benchmarks/quadruped_walk.py --json results/quadruped_walk.json [--quick] [--out runs/quad]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import parser, print_table, write_json  # noqa: E402

BUDGET_S = 900.0


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="keep the run directory here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp()) / "quadruped_walk"
    if out.exists():
        shutil.rmtree(out)
    cmd = [os.path.join(os.path.dirname(sys.executable), "robotrl"), "train", "task=quadruped_walk",
           f"seed={args.seed}", f"out={out}", "progress=false"]
    if args.quick:
        cmd += ["steps=1000000", "num_envs=512", "eval_episodes=8"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    result = json.loads((out / "eval.json").read_text())
    m = result["metrics"]
    walking = m["velocity_tracking"] >= 0.8 and m["falls"] == 0
    row = {
        "task": "quadruped_walk", "env_steps": result["train"]["env_steps"], "train_s": result["train"]["wall_time_s"],
        "wall_clock_s": wall, "steps_per_s": result["train"]["steps_per_s"],
        "velocity_tracking": m["velocity_tracking"], "lin_vel_error": m["lin_vel_error"], "falls": m["falls"],
        "episodes": result["episodes"], "walking": walking, "budget_s": BUDGET_S, "ratio": BUDGET_S / wall,
    }
    print_table([row], [("env_steps", "env steps"), ("wall_clock_s", "wall clock s"), ("steps_per_s", "steps/s"),
                        ("velocity_tracking", "velocity tracking"), ("lin_vel_error", "lin vel err m/s"),
                        ("falls", "falls"), ("walking", "walking"), ("ratio", "ratio (900 s / wall)")])
    print(f"return curve: {out / 'return_curve.png'}")
    write_json(args.json, "quadruped_walk", [row], quick=args.quick, criterion="velocity_tracking >= 0.8 and falls == 0")


if __name__ == "__main__":
    main()
