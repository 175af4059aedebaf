"""Wall-clock time to a return threshold: robotrl PPO vs Stable-Baselines3 PPO.

Both learn on the same task dynamics (robotrl's MuJoCo task; SB3 reads it through
robotrl's SB3 VecEnv adapter, so it gets the same batched simulator, not a
slower one) on the same machine in the same run, one after the other. Both stop
when the mean return of their last 100 finished training episodes reaches the
threshold, or at the time limit. SB3 uses settings in the manner of rl-zoo's
MuJoCo PPO (16 envs, 256-step rollouts, minibatch 256, 10 epochs, lr 3e-4,
VecNormalize on observations). ratio = SB3 time / robotrl time (> 1: robotrl
faster); when SB3 does not reach the threshold within the limit the ratio is a
lower bound and says so.

Time to a threshold varies more between seeds than between the libraries (robotrl's
swing-up: 14.8, 29.5 and 60.1 s on seeds 0, 1, 2, on one core), so each task runs ``--seeds``
seeds (3; 1 with ``--quick``), one row per seed, and the JSON's ``summary`` holds per
task the median times and their ratio, the figure to quote.

    python benchmarks/train_vs_sb3.py --json results/train_vs_sb3.json [--quick] [--seeds 3]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import deque

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import parser, print_table, write_json  # noqa: E402

from robotrl.cli import compose  # noqa: E402
from robotrl.runner import OnPolicyRunner  # noqa: E402

# task: (threshold, time limit s per library, quick threshold, quick limit s)
TASKS = {
    "cartpole_swingup": (300.0, 300.0, 100.0, 120.0),
    "hopper": (1000.0, 300.0, 300.0, 120.0),
}
WINDOW = 100


def robotrl_time(task: str, threshold: float, limit: float, seed: int, overrides: tuple[str, ...] = ()) -> dict:
    """``overrides``: more ``robotrl train`` overrides (e.g. ``sim=mjx``). ``setup_s``
    (config, env and learner construction, JIT compilation on mjx) is not in ``time_s``."""
    with tempfile.TemporaryDirectory() as out:
        t_setup = time.perf_counter()
        cfg = compose("train", [f"task={task}", f"seed={seed}", f"out={out}", "steps=1000000000", *overrides])
        runner = OnPolicyRunner(cfg)
        setup_s = time.perf_counter() - t_setup
        alg, env = runner.alg, runner.env
        returns: deque = deque(maxlen=WINDOW)
        env.randomize_episode_start()
        obs = env.get_observations()
        t0 = time.perf_counter()
        steps = 0
        reached = False
        while time.perf_counter() - t0 < limit:
            for _ in range(alg.cfg.num_steps_per_env):
                obs, rew, done, extras = env.step(alg.act(obs))
                alg.process_step(rew, done, extras["time_outs"])
                if "episode_returns" in extras:
                    # The first episode of each env is cut short by the randomized
                    # start (lower return): this only delays robotrl's mark.
                    returns.extend(extras["episode_returns"].tolist())
            alg.compute_returns(obs)
            alg.update()
            steps += env.num_envs * alg.cfg.num_steps_per_env
            if len(returns) == WINDOW and np.mean(returns) >= threshold:
                reached = True
                break
        elapsed = time.perf_counter() - t0
        runner.close()
    return {"time_s": elapsed, "setup_s": setup_s, "steps": steps, "reached": reached,
            "final_return": float(np.mean(returns)) if returns else float("nan")}


def sb3_time(task: str, threshold: float, limit: float, seed: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecNormalize

    from robotrl.sim import make_env
    from robotrl.sim.adapters.sb3 import SB3VecEnvAdapter

    t_setup = time.perf_counter()
    venv = VecNormalize(SB3VecEnvAdapter(make_env(task, 16, seed=seed)), norm_obs=True, norm_reward=True, gamma=0.99)

    class Stop(BaseCallback):
        """Stops SB3 at the threshold (checked after each rollout) or the time limit."""

        def __init__(self):
            super().__init__()
            self.t0 = time.perf_counter()
            self.reached = False

        def _on_step(self) -> bool:
            return not self.reached and time.perf_counter() - self.t0 < limit

        def _on_rollout_end(self) -> None:
            buf = self.model.ep_info_buffer
            if len(buf) == WINDOW and np.mean([e["r"] for e in buf]) >= threshold:
                self.reached = True

    model = PPO("MlpPolicy", venv, n_steps=256, batch_size=256, n_epochs=10, learning_rate=3e-4, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, seed=seed, device="cpu", verbose=0,
                stats_window_size=WINDOW)
    # SB3's default logger makes an empty SB3-<date> folder in /tmp on every learn().
    model.set_logger(Logger(folder=None, output_formats=[]))
    cb = Stop()
    t0 = time.perf_counter()
    setup_s = t0 - t_setup
    model.learn(total_timesteps=10**10, callback=cb)
    elapsed = time.perf_counter() - t0
    buf = model.ep_info_buffer
    venv.close()
    return {"time_s": elapsed, "setup_s": setup_s, "steps": int(model.num_timesteps), "reached": cb.reached,
            "final_return": float(np.mean([e["r"] for e in buf])) if buf else float("nan")}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="*", default=None)
    p.add_argument("--seed", type=int, default=0, help="the first seed")
    p.add_argument("--seeds", type=int, default=None, help="seeds per task (default 3; 1 with --quick)")
    args = p.parse_args()
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if seeds < 1:
        p.error("--seeds must be >= 1")
    torch.set_num_threads(os.cpu_count() or 1)
    names = args.tasks or (["cartpole_swingup"] if args.quick else list(TASKS))
    rows, summary = [], []
    for name in names:
        threshold, limit, q_threshold, q_limit = TASKS[name]
        if args.quick:
            threshold, limit = q_threshold, q_limit
        task_rows = []
        for seed in range(args.seed, args.seed + seeds):
            ours = robotrl_time(name, threshold, limit, seed)
            theirs = sb3_time(name, threshold, limit, seed)
            ratio = theirs["time_s"] / ours["time_s"]
            task_rows.append({
                "task": name, "seed": seed, "threshold": threshold, "limit_s": limit,
                "robotrl_time_s": ours["time_s"], "robotrl_steps": ours["steps"], "robotrl_reached": ours["reached"],
                "robotrl_final_return": ours["final_return"],
                "sb3_time_s": theirs["time_s"], "sb3_steps": theirs["steps"], "sb3_reached": theirs["reached"],
                "sb3_final_return": theirs["final_return"],
                "ratio": ratio if ours["reached"] else float("nan"),
                "ratio_is_lower_bound": ours["reached"] and not theirs["reached"],
            })
        rows += task_rows
        summary.append(summarize(name, threshold, task_rows))
    print_table(rows, [("task", "task"), ("seed", "seed"), ("threshold", "threshold"),
                       ("robotrl_time_s", "robotrl s"), ("robotrl_steps", "robotrl steps"),
                       ("robotrl_reached", "reached"), ("sb3_time_s", "SB3 s"), ("sb3_steps", "SB3 steps"),
                       ("sb3_reached", "reached"), ("ratio", "ratio (SB3/robotrl)"),
                       ("ratio_is_lower_bound", "lower bound")])
    if seeds > 1:
        print("medians over seeds:")
        print_table(summary, [("task", "task"), ("seeds", "seeds"), ("robotrl_time_s", "robotrl s"),
                              ("sb3_time_s", "SB3 s"), ("ratio", "ratio (SB3/robotrl)"),
                              ("ratio_is_lower_bound", "lower bound")])
    write_json(args.json, "train_vs_sb3", rows, target_ratio=5.0, quick=args.quick, window=WINDOW, summary=summary)


def summarize(task: str, threshold: float, rows: list[dict]) -> dict:
    """Median times over seeds and their ratio. A run that did not reach the threshold
    counts at its time limit: robotrl's median is then not a time to the threshold
    (ratio NaN), SB3's makes the ratio a lower bound."""
    ours = float(np.median([r["robotrl_time_s"] for r in rows]))
    theirs = float(np.median([r["sb3_time_s"] for r in rows]))
    ours_reached = sum(r["robotrl_reached"] for r in rows) * 2 > len(rows)
    theirs_reached = sum(r["sb3_reached"] for r in rows) * 2 > len(rows)
    return {"task": task, "threshold": threshold, "seeds": [r["seed"] for r in rows],
            "robotrl_time_s": ours, "sb3_time_s": theirs,
            "ratio": theirs / ours if ours_reached else float("nan"),
            "ratio_is_lower_bound": ours_reached and not theirs_reached}


if __name__ == "__main__":
    main()
