"""The on-policy runner: collect, update, log, checkpoint; then export, evaluate, report.

A run directory holds::

    config.yaml          resolved config of the run
    checkpoints/         latest.pt (every checkpoint_interval iterations and at the end)
    tb/                  TensorBoard scalars
    artifact/            policy.onnx + policy.yaml
    eval.json, report.md, return_curve.png
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from robotrl import distributed
from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.algos.ppo_lag import PPOLag, PPOLagConfig
from robotrl.checkpoint import save_checkpoint
from robotrl.evaluate import evaluate, format_eval, write_eval
from robotrl.export import export_artifact
from robotrl.policies.artifact import ArtifactPolicy
from robotrl.report import write_report
from robotrl.run_dir import CHECKPOINT, open_run, seed_everything
from robotrl.sim import EXTERNAL_SIMS, make_env, make_task

# The on-policy algorithms this runner trains: name -> (algorithm, its config).
ON_POLICY = {"ppo": (PPO, PPOConfig), "ppo_lag": (PPOLag, PPOLagConfig)}


class OnPolicyRunner:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.out = Path(cfg["out"])
        # Read (and validate) the checkpoint before touching anything in the run
        # directory, so a bad checkpoint leaves the run exactly as it was.
        self.resume_state = open_run(cfg)
        # Under torchrun each rank steps num_envs / world_size envs with its own seed.
        self.device = distributed.init_from_env(cfg["device"])
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        if int(cfg["num_envs"]) % self.world_size:
            raise ValueError(f"num_envs={cfg['num_envs']} does not split evenly over {self.world_size} processes")
        local_envs = int(cfg["num_envs"]) // self.world_size
        seed_everything(int(cfg["seed"]) + self.rank)
        if cfg["sim"].get("torch_threads"):
            torch.set_num_threads(int(cfg["sim"]["torch_threads"]))
        self.task_name = cfg["task"]["name"]
        # External backends (gymnasium, brax) take another library's env name and
        # have no robotrl Task; their envs describe themselves.
        self.external = cfg["sim"]["name"] in EXTERNAL_SIMS
        self.task = None if self.external else make_task(self.task_name, cfg["task"].get("config") or {})
        self.sim_kwargs = {k: v for k, v in cfg["sim"].items() if k not in ("name", "torch_threads")}
        self.env = make_env(
            self.task_name if self.external else self.task,
            local_envs,
            sim=cfg["sim"]["name"],
            seed=int(cfg["seed"]) + self.rank,
            device=self.device,
            task_config=cfg["task"].get("config") or None,
            randomize=cfg["task"].get("randomize"),
            **self.sim_kwargs,
        )
        if cfg.get("reward", "state") == "vlm":
            if self.external:
                raise ValueError("reward=vlm renders robotrl tasks; the gymnasium and brax backends have none")
            from robotrl.vlm.reward_env import make_vlm_env

            self.env = make_vlm_env(self.env, self.task, cfg["vlm"], int(cfg["seed"]) + self.rank, self.device)
        elif cfg.get("reward", "state") != "state":
            raise ValueError(f"reward must be 'state' or 'vlm', got {cfg['reward']!r}")
        if cfg["algo"]["name"] not in ON_POLICY:
            raise KeyError(f"the on-policy runner trains {', '.join(ON_POLICY)}, not {cfg['algo']['name']!r}")
        algo_cls, cfg_cls = ON_POLICY[cfg["algo"]["name"]]
        algo_cfg = cfg_cls.from_dict(cfg["algo"])
        self.alg = algo_cls(algo_cfg, self.env.obs_sizes, self.env.num_actions, self.env.num_envs, self.device, int(cfg["seed"]))
        self.alg.defer_rewards = self.env.deferred_rewards
        if hasattr(self.alg, "episode_steps"):  # ppo_lag's cost_estimate=rate
            self.alg.episode_steps = getattr(self.env, "max_episode_length", None)
        self.steps_per_iter = self.world_size * self.env.num_envs * algo_cfg.num_steps_per_env
        self.num_iterations = max(1, math.ceil(int(cfg["steps"]) / self.steps_per_iter))
        self.iteration = 0
        self.env_steps = 0
        self.wall_time = 0.0
        self.history: dict[str, list[float]] = {"env_steps": [], "return": [], "length": [], "wall_time": []}
        if isinstance(self.alg, PPOLag):
            self.history["cost"] = []
        if self.resume_state is not None:
            s = self.resume_state
            self.alg.load_state_dict(s["algo"])
            self.iteration = int(s["iteration"])
            self.env_steps = int(s["env_steps"])
            self.wall_time = float(s.get("wall_time", 0.0))
            self.history = {k: list(v) for k, v in s["history"].items()}
            self.env.load_state_dict(s.get("env", {}))

    # -------------------------------------------------------------------- train
    def _checkpoint(self) -> None:
        if not distributed.is_main():
            return
        save_checkpoint(
            self.out / CHECKPOINT,
            {
                "algo": self.alg.state_dict(),
                "iteration": self.iteration,
                "env_steps": self.env_steps,
                "wall_time": self.wall_time,
                "history": self.history,
                "config": self.cfg,
                "env": self.env.state_dict(),
            },
        )

    def learn(self, progress: bool = True) -> None:
        from torch.utils.tensorboard import SummaryWriter

        main = distributed.is_main()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        writer = SummaryWriter(str(self.out / "tb")) if main else None
        interval = int(self.cfg["checkpoint_interval"])
        recent_returns: list[float] = []
        recent_lengths: list[float] = []
        self.env.randomize_episode_start()
        obs = self.env.get_observations()
        bar = tqdm(
            total=self.num_iterations * self.steps_per_iter,
            initial=min(self.env_steps, self.num_iterations * self.steps_per_iter),
            unit="step",
            unit_scale=True,
            desc=self.task_name,
            disable=not (progress and main),
            dynamic_ncols=True,
            # In a log file (no terminal) a redraw per iteration would flood it.
            mininterval=0.1 if sys.stderr.isatty() else 30.0,
        )
        try:
            while self.iteration < self.num_iterations:
                t0 = time.perf_counter()
                ep_infos = []
                for _ in range(self.alg.cfg.num_steps_per_env):
                    actions = self.alg.act(obs)
                    obs, rewards, dones, extras = self.env.step(actions)
                    self.alg.process_step(rewards, dones, extras["time_outs"], extras["cost"])
                    if "episode_returns" in extras:
                        recent_returns.extend(extras["episode_returns"].tolist())
                        recent_lengths.extend(extras["episode_lengths"].tolist())
                        ep_infos.append(extras["episode"])
                late = self.env.end_rollout()
                if late is not None:
                    self.alg.rewrite_rewards(late)
                collect_time = time.perf_counter() - t0
                self.alg.compute_returns(obs)
                losses = self.alg.update()
                iter_time = time.perf_counter() - t0
                self.iteration += 1
                self.env_steps += self.steps_per_iter
                self.wall_time += iter_time
                recent_returns = recent_returns[-200:]
                recent_lengths = recent_lengths[-200:]
                mean_return = float(np.mean(recent_returns)) if recent_returns else float("nan")
                mean_length = float(np.mean(recent_lengths)) if recent_lengths else float("nan")
                self.history["env_steps"].append(self.env_steps)
                self.history["return"].append(mean_return)
                self.history["length"].append(mean_length)
                self.history["wall_time"].append(self.wall_time)
                if "cost" in self.history:
                    self.history["cost"].append(losses["episode_cost"])
                if writer is not None:
                    self._log(writer, losses, ep_infos, mean_return, mean_length, collect_time, iter_time)
                bar.update(self.steps_per_iter)
                bar.set_postfix(sps=f"{self.steps_per_iter / iter_time:,.0f}", ret=f"{mean_return:.1f}", refresh=False)
                if self.iteration % interval == 0 or self.iteration == self.num_iterations:
                    self._checkpoint()
        except BaseException:
            # Nothing lost on a crash or Ctrl-C: the last finished iteration is kept.
            if self.iteration > 0:
                self._checkpoint()
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()

    def _log(self, writer, losses, ep_infos, mean_return, mean_length, collect_time, iter_time) -> None:
        step = self.env_steps
        for k, v in losses.items():
            writer.add_scalar(f"loss/{k}", v, step)
        writer.add_scalar("train/mean_return", mean_return, step)
        writer.add_scalar("train/mean_episode_length", mean_length, step)
        writer.add_scalar("perf/steps_per_s", self.steps_per_iter / iter_time, step)
        writer.add_scalar("perf/collect_fraction", collect_time / iter_time, step)
        for k, v in self.env.stats().items():
            writer.add_scalar(f"vlm/{k}", v, step)
        keys = {k for info in ep_infos for k in info}
        for k in sorted(keys):
            vals = [info[k] for info in ep_infos if k in info]
            writer.add_scalar(f"episode/{k}", float(np.mean(vals)), step)

    # ---------------------------------------------------- export / eval / report
    def export(self, folder: str | Path | None = None) -> Path:
        return export_artifact(
            self.alg.inference_module(), self.task or self.env, self.env.obs_layout["policy"],
            folder or self.out / "artifact", self.cfg, sim=self.cfg["sim"]["name"], name=self.task_name,
        )

    def finish(self, progress: bool = True) -> dict:
        if not distributed.is_main():
            return {}
        folder = self.export()
        policy = ArtifactPolicy(folder)
        result = evaluate(
            policy, self.task or self.task_name, int(self.cfg["eval_episodes"]), seed=int(self.cfg["seed"]) + 10_000,
            sim=self.cfg["sim"]["name"], progress=progress, env_kwargs=self.sim_kwargs,
        )
        result["train"] = {
            "env_steps": self.env_steps,
            "iterations": self.iteration,
            "wall_time_s": self.wall_time,
            "steps_per_s": self.env_steps / max(self.wall_time, 1e-9),
        }
        write_eval(result, self.out)
        write_report(self.out, self.cfg, self.history, result)
        print(format_eval(result))
        return result

    def close(self) -> None:
        self.env.close()
