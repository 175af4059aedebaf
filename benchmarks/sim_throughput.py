"""Env steps/s of the mujoco VecEnv against raw ``mujoco.rollout`` on the same
model, batch and frame skip.

The raw baseline is the physics alone: one threaded ``Rollout.rollout`` call per
control step over all envs, the state carried from call to call, constant
controls, no observations, rewards or resets. The VecEnv does all of that plus
the task's observations, rewards, terminations, resets and the torch hand-off.
ratio = VecEnv steps/s / raw steps/s (target >= 0.8).

    python benchmarks/sim_throughput.py --json results/sim_throughput.json [--quick]
"""
from __future__ import annotations

import os
import sys
import time

import mujoco
import numpy as np
import torch
from mujoco import rollout as mj_rollout

sys.path.insert(0, os.path.dirname(__file__))
from _common import parser, print_table, write_json  # noqa: E402

from robotrl.sim import make_env, make_task  # noqa: E402


def raw_rollout_sps(task, batch: int, steps: int, nthread: int) -> float:
    m = task.model
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    d = mujoco.MjData(m)
    if m.nkey:
        mujoco.mj_resetDataKeyframe(m, d, 0)
    state0 = np.zeros(mujoco.mj_stateSize(m, spec))
    mujoco.mj_getState(m, d, state0, spec)
    fs = task.frame_skip
    state = np.tile(state0, (batch, 1))
    ctrl = np.tile(d.ctrl if m.nkey == 0 else m.key_ctrl[0], (batch, fs, 1)).astype(np.float64)
    out_state = np.zeros((batch, fs, state.shape[1]))
    out_sens = np.zeros((batch, fs, m.nsensordata))
    models = [m] * batch
    datas = [mujoco.MjData(m) for _ in range(nthread)]
    with mj_rollout.Rollout(nthread=nthread) as pool:

        def one():
            pool.rollout(models, datas, state, ctrl, control_spec=mujoco.mjtState.mjSTATE_CTRL.value,
                         skip_checks=True, nstep=fs, state=out_state, sensordata=out_sens)
            state[:] = out_state[:, -1]

        for _ in range(3):
            one()
        t = time.perf_counter()
        for _ in range(steps):
            one()
        return batch * steps / (time.perf_counter() - t)


def vecenv_sps(task, batch: int, steps: int, nthread: int) -> float:
    with make_env(task, batch, seed=0, nthread=nthread) as env:
        zero = torch.zeros(batch, env.num_actions)
        for _ in range(3):
            env.step(zero)
        t = time.perf_counter()
        for _ in range(steps):
            env.step(zero)
        return batch * steps / (time.perf_counter() - t)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    nthread = os.cpu_count() or 1
    batches = [64, 256] if args.quick else [64, 256, 1024]
    rows = []
    for name in ("hopper", "quadruped_walk"):
        task = make_task(name)
        for batch in batches:
            # About the same physics work per measurement for every batch size.
            steps = max(10, (20_000 if args.quick else 100_000) // batch)
            # Alternate the two, best of 3, so drift in machine load hits both alike.
            raw, env = [], []
            for _ in range(1 if args.quick else 3):
                raw.append(raw_rollout_sps(task, batch, steps, nthread))
                env.append(vecenv_sps(task, batch, steps, nthread))
            r, e = max(raw), max(env)
            rows.append({"task": name, "batch": batch, "frame_skip": task.frame_skip, "threads": nthread,
                         "device": "cpu", "raw_rollout_sps": r, "robotrl_vecenv_sps": e, "ratio": e / r})
    print_table(rows, [("task", "task"), ("batch", "batch"), ("frame_skip", "frame skip"), ("threads", "threads"),
                       ("raw_rollout_sps", "raw rollout steps/s"), ("robotrl_vecenv_sps", "VecEnv steps/s"),
                       ("ratio", "ratio (VecEnv/raw)")])
    write_json(args.json, "sim_throughput", rows, target_ratio=0.8, quick=args.quick)


if __name__ == "__main__":
    main()
