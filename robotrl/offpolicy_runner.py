"""The off-policy and offline runner: sac, iql, h2o, and the offline safe algorithms
(fisor, bc_all, bc_safe, cpq).

* ``sac``: online in the simulator (the task as configured), ``num_envs`` envs,
  ``steps`` env steps; uniform random actions for the first ``warmup_steps``, then
  ``updates_per_step`` gradient steps per env step.
* ``iql``: offline from ``dataset=PATH``; ``steps`` gradient steps.
* ``h2o``: ``dataset=PATH`` (real data from the target domain) plus online
  simulator interaction, ``steps`` env steps.

Training runs in chunks (``algo.chunk_steps`` env steps, or gradient steps for
iql): each chunk is one logged iteration, checkpointed every
``checkpoint_interval`` chunks and whenever training stops (end, crash, Ctrl-C).
The checkpoint holds the networks, optimizers, the online replay buffer and the
counters, so ``resume=true`` continues where the run stopped.

Evaluation runs in the target domain ``real_domain`` (the simulator when null):
every ``algo.eval_interval`` steps with the torch actor, and at the end with the
exported artifact. The run directory is the PPO runner's (see
:mod:`robotrl.run_dir`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.algos.h2o import H2O, H2OConfig
from robotrl.algos.iql import IQL, IQLConfig
from robotrl.algos.sac import SAC, SACConfig, TorchPolicy
from robotrl.checkpoint import save_checkpoint
from robotrl.evaluate import evaluate
from robotrl.replay import ReplayBuffer
from robotrl.run_dir import CHECKPOINT, finish_run, open_run, progress_bar, seed_everything, write_config
from robotrl.sim import EXTERNAL_SIMS, make_env, make_task
from robotrl.sim.domains import domain_task_config

CONFIGS = {"sac": SACConfig, "iql": IQLConfig, "h2o": H2OConfig}
# Offline safe RL (robotrl.algos.offline_safe) builds its own configs.
OFFLINE_SAFE = ("fisor", "bc_all", "bc_safe", "cpq")
OFFLINE = ("iql", *OFFLINE_SAFE)
NEEDS_DATASET = ("iql", "h2o", *OFFLINE_SAFE)


class OfflineSafeAlgo:
    """An offline safe algorithm (flat ``policy``-group batches, its own ``act``)
    behind the interface this runner drives."""

    def __init__(self, algo, obs_layout, action_names):
        self.algo, self.cfg = algo, algo.cfg
        self.obs_layout, self.action_names = list(obs_layout), list(action_names)

    def update(self, batch: dict) -> dict[str, float]:
        flat = {k: v for k, v in batch.items() if k not in ("obs", "next_obs", "truncated")}
        flat.update(obs=batch["obs"]["policy"], next_obs=batch["next_obs"]["policy"], terminated=batch["terminated"].float())
        return self.algo.update(flat)

    def reset(self, env_ids=None) -> None:
        pass

    def act(self, obs):
        return self.algo.act(obs)

    def state_dict(self) -> dict:
        return self.algo.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.algo.load_state_dict(state)

    def inference_module(self):
        return self.algo.inference_module()


class OffPolicyRunner:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.out = Path(cfg["out"])
        self.algo_name = cfg["algo"]["name"]
        if self.algo_name not in (*CONFIGS, *OFFLINE_SAFE):
            raise KeyError(f"OffPolicyRunner trains {', '.join((*CONFIGS, *OFFLINE_SAFE))}, not {self.algo_name!r}")
        if self.algo_name in OFFLINE_SAFE:
            from robotrl.algos.offline_safe import ALGOS

            self.algo_cfg = ALGOS[self.algo_name]()[1]({k: v for k, v in cfg["algo"].items() if k != "name"})
        else:
            self.algo_cfg = CONFIGS[self.algo_name].from_dict(cfg["algo"])
        self.task_name = cfg["task"]["name"]
        self.offline = self.algo_name in OFFLINE
        self.external = cfg["sim"]["name"] in EXTERNAL_SIMS
        if self.algo_name in NEEDS_DATASET and not cfg.get("dataset"):
            raise ValueError(
                f"algo={self.algo_name} needs dataset=PATH (make one with robotrl dataset collect "
                f"task={self.task_name} quality=medium out=FILE)"
            )
        if self.external and (cfg.get("dataset") or cfg.get("real_domain")):
            raise ValueError(f"datasets and real_domain need a robotrl task, not a {cfg['sim']['name']} env")
        self.resume_state = open_run(cfg)  # before anything is written

        self.device = torch.device(cfg["device"])
        seed = int(cfg["seed"])
        seed_everything(seed)
        if cfg["sim"].get("torch_threads"):
            torch.set_num_threads(int(cfg["sim"]["torch_threads"]))
        self.sim_kwargs = {k: v for k, v in cfg["sim"].items() if k not in ("name", "torch_threads")}
        task_cfg = cfg["task"].get("config") or {}
        self.task = None if self.external else make_task(self.task_name, task_cfg)
        # Offline training steps no env; one env still describes observations and actions.
        self.env = make_env(
            self.task_name if self.external else self.task,
            1 if self.offline else int(cfg["num_envs"]),
            sim=cfg["sim"]["name"], seed=seed, device=self.device,
            task_config=task_cfg or None, randomize=cfg["task"].get("randomize"), **self.sim_kwargs,
        )
        # The target ("real") domain, where the policy is evaluated.
        self.eval_task = self.task_name if self.external else make_task(
            self.task_name, domain_task_config(cfg["task"].get("config"), cfg.get("real_domain"))
        )
        self.action_bound = 1.0 if self.external else float(self.task.config["action_clip"])

        self.dataset = self._load_dataset() if cfg.get("dataset") else None
        groups = set(self.env.obs_sizes) & (set(self.dataset.obs) if self.dataset is not None else set(self.env.obs_sizes))
        critic_group = "critic" if "critic" in groups else "policy"
        self.groups = sorted({"policy", critic_group})
        obs_sizes = {g: self.env.obs_sizes[g] for g in self.groups}
        a, n_act = self.algo_cfg, self.env.num_actions
        if self.algo_name in OFFLINE_SAFE:
            from robotrl.algos.offline_safe import make_offline_safe

            algo = make_offline_safe(self.algo_name, {k: v for k, v in cfg["algo"].items() if k != "name"},
                                     obs_sizes["policy"], n_act, self.action_bound, self.device, seed)
            # bc_safe keeps the episodes within the cost limit; all check the data has costs.
            self.dataset = algo.training_data(self.dataset)
            if self.resume_state is None:
                algo.fit_normalization(self.dataset)
            self.alg = OfflineSafeAlgo(algo, self.env.obs_layout["policy"], self.env.action_names)
        self.real = ReplayBuffer.from_dataset(self.dataset, self.groups, self.device) if self.dataset is not None else None

        if self.algo_name in OFFLINE_SAFE:
            pass
        elif self.algo_name == "sac":
            self.alg = SAC(a, obs_sizes, n_act, self.device, self.action_bound, critic_group)
        elif self.algo_name == "h2o":
            self.alg = H2O(a, obs_sizes, n_act, self.device, self.action_bound, critic_group)
        else:
            self.alg = IQL(a, obs_sizes, n_act, int(cfg["steps"]), self.device, self.action_bound, critic_group)
        if self.offline:
            self.replay = None
        else:
            capacity = a.buffer_size if self.algo_name == "sac" else int(a.buffer_ratio * len(self.dataset))
            self.replay = ReplayBuffer(max(capacity, a.batch_size), obs_sizes, n_act, self.device)
        self.generator = torch.Generator().manual_seed(seed)

        self.iteration = 0
        self.env_steps = 0
        self.grad_steps = 0
        self.update_debt = 0.0  # fractional gradient steps owed (updates_per_step * env steps)
        self.wall_time = 0.0
        self.history: dict[str, list[float]] = {
            "env_steps": [], "gradient_steps": [], "return": [], "length": [], "wall_time": [],
            "eval_steps": [], "eval_return": [],
        }
        if self.resume_state is not None:
            self._restore(self.resume_state)
        elif self.algo_name == "iql":
            self.alg.prepare(self.dataset)
        elif self.algo_name == "h2o":
            self.alg.prepare(self.real)

    # ------------------------------------------------------------------ setup
    def _load_dataset(self):
        from robotrl.datasets import load_dataset
        from robotrl.datasets.format import validate

        path = Path(self.cfg["dataset"])
        ds = load_dataset(path)  # validates the file's fields
        source_task = ds.meta.get("task")
        if source_task not in (None, self.task_name):
            raise ValueError(f"dataset {path} is from task {source_task!r}, not {self.task_name!r}")
        validate(ds, str(path), task=self.env)  # observation widths and action count of this task
        layout = ds.meta.get("obs_layout", {}).get("policy")
        if layout is not None and [(n, int(w)) for n, w in layout] != [(n, int(w)) for n, w in self.env.obs_layout["policy"]]:
            raise ValueError(
                f"dataset {path} observation layout {layout} differs from task {self.task_name}'s "
                f"{self.env.obs_layout['policy']}"
            )
        if len(ds) < self.algo_cfg.batch_size:
            raise ValueError(f"dataset {path} holds {len(ds)} transitions, fewer than one batch ({self.algo_cfg.batch_size})")
        return ds

    def _restore(self, s: dict) -> None:
        self.alg.load_state_dict(s["algo"])
        if self.replay is not None and s.get("replay") is not None:
            self.replay.load_state_dict(s["replay"])
        self.iteration = int(s["iteration"])
        self.env_steps = int(s["env_steps"])
        self.grad_steps = int(s["gradient_steps"])
        self.update_debt = float(s["update_debt"])
        self.wall_time = float(s["wall_time"])
        self.history = {k: list(v) for k, v in s["history"].items()}
        self.generator.set_state(s["generator"])
        torch.set_rng_state(s["torch_rng"])

    def _checkpoint(self) -> None:
        save_checkpoint(self.out / CHECKPOINT, {
            "algo": self.alg.state_dict(),
            "replay": self.replay.state_dict() if self.replay is not None else None,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "gradient_steps": self.grad_steps,
            "update_debt": self.update_debt,
            "wall_time": self.wall_time,
            "history": self.history,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": self.cfg,
        })

    # ------------------------------------------------------------------ train
    @property
    def _progress_count(self) -> int:
        return self.grad_steps if self.offline else self.env_steps

    def learn(self, progress: bool = True) -> None:
        from torch.utils.tensorboard import SummaryWriter

        write_config(self.out, self.cfg)
        writer = SummaryWriter(str(self.out / "tb"))
        total = int(self.cfg["steps"])
        unit = "update" if self.offline else "step"
        bar = progress_bar(total, self._progress_count, f"{self.task_name} {self.algo_name}", progress, unit)
        interval = int(self.cfg["checkpoint_interval"])
        self._recent_returns: list[float] = []
        self._recent_lengths: list[float] = []
        if not self.offline:
            self.env.randomize_episode_start()
            self._obs = self.env.get_observations()
        try:
            while self._progress_count < total:
                t0 = time.perf_counter()
                start = self._progress_count
                losses = self._offline_chunk(total) if self.offline else self._online_chunk(total)
                dt = time.perf_counter() - t0
                self.wall_time += dt
                self.iteration += 1
                done = self._progress_count - start
                self._log(writer, losses, done / max(dt, 1e-9))
                eval_every = int(self.algo_cfg.eval_interval)
                if eval_every > 0 and (self._progress_count // eval_every > start // eval_every):
                    self._periodic_eval(writer)
                bar.update(done)
                ret = self.history["eval_return" if self.offline else "return"]
                bar.set_postfix(ret=f"{ret[-1]:.1f}" if ret else "-", refresh=False)
                if self.iteration % interval == 0 or self._progress_count >= total:
                    self._checkpoint()
        except BaseException:
            # Nothing lost on a crash or Ctrl-C: the state as it stands is kept.
            if self.iteration > 0:
                self._checkpoint()
            raise
        finally:
            bar.close()
            writer.close()

    def _online_chunk(self, total: int) -> dict[str, float]:
        cfg, env, n = self.algo_cfg, self.env, self.env.num_envs
        end = min(total, self.env_steps + int(cfg.chunk_steps))
        sums: dict[str, float] = {}
        updates = 0
        while self.env_steps < end:
            obs = self._obs
            warming_up = self.env_steps < cfg.warmup_steps
            if warming_up:
                action = (torch.rand(n, env.num_actions, generator=self.generator) * 2 - 1).to(self.device) * self.action_bound
            else:
                action = self.alg.act(obs["policy"])
            next_obs, reward, dones, extras = env.step(action)
            self.replay.add_env_step(obs, action.clamp(-self.action_bound, self.action_bound), reward, next_obs, dones, extras)
            self.alg.update_normalization(obs)
            self.env_steps += n
            self._obs = next_obs
            if "episode_returns" in extras:
                self._recent_returns = (self._recent_returns + np.asarray(extras["episode_returns"]).tolist())[-100:]
                self._recent_lengths = (self._recent_lengths + np.asarray(extras["episode_lengths"]).tolist())[-100:]
            if warming_up:
                continue
            self.update_debt += n * cfg.updates_per_step
            while self.update_debt >= 1.0:
                for k, v in self._update().items():
                    sums[k] = sums.get(k, 0.0) + v
                updates += 1
                self.grad_steps += 1
                self.update_debt -= 1.0
        self._record(
            float(np.mean(self._recent_returns)) if self._recent_returns else float("nan"),
            float(np.mean(self._recent_lengths)) if self._recent_lengths else float("nan"),
        )
        return {k: v / updates for k, v in sums.items()}

    def _update(self) -> dict[str, float]:
        bs, g = self.algo_cfg.batch_size, self.generator
        if self.algo_name == "sac":
            return self.alg.update(self.replay.sample(bs, g))
        n_real = int(round(bs * self.algo_cfg.real_fraction))
        return self.alg.update(
            self.real.sample(n_real, g), self.replay.sample(bs - n_real, g),
            # The classifiers get a full batch of each, as in the reference.
            self.real.sample(bs, g), self.replay.sample(bs, g),
        )

    def _offline_chunk(self, total: int) -> dict[str, float]:
        end = min(total, self.grad_steps + int(self.algo_cfg.chunk_steps))
        sums: dict[str, float] = {}
        updates = 0
        while self.grad_steps < end:
            for k, v in self.alg.update(self.real.sample(self.algo_cfg.batch_size, self.generator)).items():
                sums[k] = sums.get(k, 0.0) + v
            updates += 1
            self.grad_steps += 1
        return {k: v / max(updates, 1) for k, v in sums.items()}

    def _record(self, mean_return: float, mean_length: float) -> None:
        h = self.history
        h["env_steps"].append(self.env_steps)
        h["gradient_steps"].append(self.grad_steps)
        h["return"].append(mean_return)
        h["length"].append(mean_length)
        h["wall_time"].append(self.wall_time)

    def _periodic_eval(self, writer) -> None:
        """Deterministic episodes of the current torch actor in the target domain."""
        policy = self.alg if isinstance(self.alg, OfflineSafeAlgo) else TorchPolicy(
            self.alg.actor, self.env.obs_layout["policy"], self.env.action_names)
        result = evaluate(
            policy, self.eval_task, int(self.cfg["eval_episodes"]), seed=int(self.cfg["seed"]) + 20_000,
            sim=self.cfg["sim"]["name"], progress=False, env_kwargs=self.sim_kwargs,
        )
        self.history["eval_steps"].append(self._progress_count)
        self.history["eval_return"].append(result["return_mean"])
        writer.add_scalar("eval/return_target_domain", result["return_mean"], self._progress_count)
        if self.offline:  # the only returns an offline run has
            self._record(result["return_mean"], result["length_mean"])

    def _log(self, writer, losses: dict, rate: float) -> None:
        step = self._progress_count
        for k, v in losses.items():
            writer.add_scalar(f"loss/{k}", v, step)
        if not self.offline and self.history["return"]:
            writer.add_scalar("train/mean_return", self.history["return"][-1], step)
            writer.add_scalar("train/mean_episode_length", self.history["length"][-1], step)
        writer.add_scalar("perf/updates_per_s" if self.offline else "perf/steps_per_s", rate, step)
        writer.add_scalar("train/gradient_steps", self.grad_steps, step)

    # ---------------------------------------------------- export / eval / report
    def export(self, folder: str | Path | None = None) -> Path:
        """The artifact of the current actor (what ``robotrl export run=...`` needs)."""
        from robotrl.export import export_artifact

        return export_artifact(
            self.alg.inference_module(), self.task or self.env, self.env.obs_layout["policy"],
            folder or self.out / "artifact", self.cfg, sim=self.cfg["sim"]["name"], name=self.task_name,
        )

    def finish(self, progress: bool = True) -> dict:
        if self.offline:
            # Offline runs have no training episodes: their curve is the target-domain
            # evaluations, over gradient steps (the report's "env steps" axis).
            self.history["env_steps"] = list(self.history["gradient_steps"])
        domain = self.cfg.get("real_domain") or "sim"
        notes = [
            f"- algorithm: {self.algo_name}; gradient steps: {self.grad_steps:,}; env steps: {self.env_steps:,}",
            f"- evaluated in domain: {domain}",
        ]
        if self.dataset is not None:
            notes.append(f"- dataset: {self.cfg['dataset']} ({len(self.dataset):,} transitions, "
                         f"domain {self.dataset.meta.get('domain', 'unknown')})")
        if self.offline:
            notes.append("- the return curve shows target-domain evaluations over gradient steps")
        return finish_run(
            self.out, self.cfg, self.alg.inference_module(), self.task or self.env, self.env.obs_layout["policy"],
            self.eval_task, self.history,
            {
                "env_steps": self.env_steps,
                "gradient_steps": self.grad_steps,
                "iterations": self.iteration,
                "wall_time_s": self.wall_time,
                "steps_per_s": (self.grad_steps if self.offline else self.env_steps) / max(self.wall_time, 1e-9),
                "domain": domain,
            },
            self.sim_kwargs, progress, notes,
        )

    def close(self) -> None:
        self.env.close()
