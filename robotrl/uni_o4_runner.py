"""The Uni-O4 runner: offline pre-training and improvement on a dataset, then
online PPO fine-tuning from the same actor and critic; export, evaluate, report.

Phases (each with its own progress bar; a checkpoint records which one it is in):

1. ``pretrain``: ensemble BC and IQL Q/V, ``algo.offline_steps`` gradient steps;
2. ``dynamics``: the dynamics ensemble for OPE (early-stopped on held-out loss);
3. ``improve``: ``algo.improve_steps`` steps of OPE-gated multi-step improvement,
   then selection of the offline policy (by OPE; by real episodes only with
   ``algo.online_selection=true``, which the eval.json and report say);
4. ``online``: PPO for ``steps`` env steps (``steps=0``: offline only), in the
   target domain (``real_domain``) by default -- the paper's offline-to-online
   setting, fine-tuning on the system the data came from -- or in the simulator
   with ``algo.online_domain=sim``.

The offline policy is evaluated in the target domain before fine-tuning and the
final one after it, so eval.json holds both (``result["offline"]`` and the top-level
figures). The run directory is the PPO runner's: config.yaml, checkpoints/latest.pt,
tb/, artifact/ (the final policy), artifact_offline/ (the offline policy), eval.json,
report.md. Online PPO's critic reads the ``policy`` observation group, because the
offline V it starts from was learned on what the dataset has (the policy group).
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.algos.uni_o4 import MeanAction, TorchPolicy, UniO4, UniO4Config, load_into_actor_critic
from robotrl.checkpoint import CheckpointError, save_checkpoint
from robotrl.evaluate import evaluate, format_eval, write_eval
from robotrl.export import export_artifact
from robotrl.policies.artifact import ArtifactPolicy
from robotrl.report import write_report
from robotrl.run_dir import CHECKPOINT, open_run, seed_everything
from robotrl.sim import EXTERNAL_SIMS, make_env, make_task
from robotrl.sim.domains import domain_task_config, resolve_domain

NEEDS_DATASET = "algo=uni_o4 needs dataset=PATH (make one with robotrl dataset collect ...)"
PHASES = ("pretrain", "dynamics", "improve", "online", "done")
OFFLINE_CHECKPOINT_EVERY = 2000  # offline gradient steps between checkpoints
# Online-phase settings that are not PPOConfig fields.
ONLINE_ONLY = ("actor_learning_rate", "critic_learning_rate")


def _bar(total, initial, desc, progress):
    return tqdm(total=total, initial=min(initial, total), desc=desc, disable=not progress, dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 30.0)


class UniO4Runner:
    def __init__(self, cfg: dict[str, Any], dataset=None):
        """``dataset``: an in-memory :class:`~robotrl.datasets.Dataset` instead of
        the file at ``cfg["dataset"]`` (for tests and notebooks)."""
        self.cfg = cfg
        self.out = Path(cfg["out"])
        if dataset is None and not cfg.get("dataset"):
            raise ValueError(NEEDS_DATASET)
        if cfg["sim"]["name"] in EXTERNAL_SIMS:
            raise ValueError(f"algo=uni_o4 trains robotrl tasks (sim=mujoco or mjx), not {cfg['sim']['name']} envs")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("algo=uni_o4 runs in one process (no torchrun data parallelism)")
        self.algo_cfg = UniO4Config.from_dict(cfg["algo"])
        self.resume_state = open_run(cfg)  # before anything is written
        self.device = torch.device(cfg["device"])
        self.seed = int(cfg["seed"])
        seed_everything(self.seed)
        if cfg["sim"].get("torch_threads"):
            torch.set_num_threads(int(cfg["sim"]["torch_threads"]))
        self.task_name = cfg["task"]["name"]
        task_config = cfg["task"].get("config") or {}
        self.real_domain = cfg.get("real_domain")
        resolve_domain(self.real_domain)  # a bad domain name fails here, before any work
        self.real_task = make_task(self.task_name, domain_task_config(task_config, self.real_domain))
        self.online_task = self.real_task if self.algo_cfg.online_domain == "real" else make_task(self.task_name, task_config)
        self.sim_kwargs = {k: v for k, v in cfg["sim"].items() if k not in ("name", "torch_threads")}
        self.env = make_env(
            self.online_task, int(cfg["num_envs"]), sim=cfg["sim"]["name"], seed=self.seed, device=self.device,
            randomize=cfg["task"].get("randomize"), **self.sim_kwargs,
        )
        try:
            self._setup(dataset)
        except BaseException:
            self.env.close()
            raise

    def _setup(self, dataset) -> None:
        cfg, acfg, env = self.cfg, self.algo_cfg, self.env
        from robotrl.datasets.format import validate

        if dataset is None:
            from robotrl.datasets import load_dataset

            self.dataset_source = str(cfg["dataset"])
            dataset = load_dataset(cfg["dataset"], task=env)
        else:
            self.dataset_source = "<in memory>"
            validate(dataset, source="dataset", task=env)
        if dataset.meta.get("task") != self.task_name:
            raise ValueError(
                f"dataset {self.dataset_source} is from task {dataset.meta.get('task')!r}, not {self.task_name!r}"
            )
        if len(dataset) < 2:
            raise ValueError(f"dataset {self.dataset_source} has {len(dataset)} transitions; Uni-O4 needs more")
        self.dataset = dataset
        obs_dim, num_actions = env.obs_sizes["policy"], env.num_actions
        self.offline = UniO4(acfg, obs_dim, num_actions, self.device, self.seed,
                             action_clip=float(self.real_task.config["action_clip"]))
        self.offline.set_dataset(dataset)

        online = dict(acfg.online)
        self.actor_lr = online.pop("actor_learning_rate", None)
        self.critic_lr = online.pop("critic_learning_rate", None)
        online.update(gamma=acfg.gamma, actor_hidden=acfg.actor_hidden, critic_hidden=acfg.critic_hidden,
                      activation=acfg.activation, normalize_obs=True)
        ppo_cfg = PPOConfig.from_dict(online)
        if ppo_cfg.normalize_reward:
            raise ValueError("algo.online.normalize_reward must stay false: the offline critic is in reward units")
        # Critic on the policy group: the offline V it starts from reads that group.
        self.alg = PPO(ppo_cfg, {"policy": obs_dim}, num_actions, env.num_envs, self.device, self.seed)
        if ppo_cfg.schedule == "fixed":
            # The reference fine-tunes the actor much more gently than the critic.
            m = self.alg.model
            self.alg.optimizer = torch.optim.Adam([
                {"params": [*m.actor.parameters(), m.log_std]},
                {"params": list(m.critic.parameters())},
            ], lr=ppo_cfg.learning_rate)
            self._set_online_learning_rates()
        self.steps_per_iter = env.num_envs * ppo_cfg.num_steps_per_env
        steps = int(cfg["steps"])
        self.num_iterations = math.ceil(steps / self.steps_per_iter) if steps > 0 else 0

        self.phase = "pretrain"
        self.offline_step = 0
        self.iteration = 0
        self.env_steps = 0
        self.wall_time = 0.0
        self.offline_wall_time = 0.0
        self.history: dict[str, list[float]] = {"env_steps": [], "return": [], "length": [], "wall_time": []}
        self.ope_history: list[list[float]] = []
        self.dynamics_info: dict = {}
        self.selection: dict = {}
        self.offline_eval: dict | None = None
        self.bc_eval: dict | None = None
        if self.resume_state is not None:
            self._load(self.resume_state)

    def _set_online_learning_rates(self) -> None:
        """Actor and critic learning rates from the config (also after a resume: the
        config wins over the optimizer state), with a fixed schedule."""
        if self.alg.cfg.schedule != "fixed":
            return
        base = self.alg.cfg.learning_rate
        actor, critic = self.alg.optimizer.param_groups
        actor["lr"] = float(self.actor_lr if self.actor_lr is not None else base)
        critic["lr"] = float(self.critic_lr if self.critic_lr is not None else base)

    # -------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        return {
            "algo": {"offline": self.offline.state_dict(), "online": self.alg.state_dict()},
            "phase": self.phase,
            "offline_step": self.offline_step,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_time": self.wall_time,
            "offline_wall_time": self.offline_wall_time,
            "history": self.history,
            "ope_history": self.ope_history,
            "dynamics_info": self.dynamics_info,
            "selection": self.selection,
            "offline_eval": self.offline_eval,
            "bc_eval": self.bc_eval,
            "dataset": {"source": self.dataset_source, "rows": len(self.dataset)},
            "config": self.cfg,
        }

    def _load(self, s: dict) -> None:
        if s.get("dataset", {}).get("rows") not in (None, len(self.dataset)):
            raise CheckpointError(
                f"checkpoint {self.out / CHECKPOINT} was trained on a dataset of {s['dataset']['rows']} rows, "
                f"not {len(self.dataset)} ({self.dataset_source})"
            )
        try:
            self.offline.load_state_dict(s["algo"]["offline"])
            self.alg.load_state_dict(s["algo"]["online"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {self.out / CHECKPOINT} does not fit this uni_o4 config: {exc}") from exc
        self.phase = s["phase"]
        self.offline_step = int(s["offline_step"])
        self.iteration = int(s["iteration"])
        self.env_steps = int(s["env_steps"])
        self.wall_time = float(s["wall_time"])
        self.offline_wall_time = float(s["offline_wall_time"])
        self.history = {k: list(v) for k, v in s["history"].items()}
        self.ope_history = [list(x) for x in s["ope_history"]]
        self.dynamics_info = dict(s["dynamics_info"])
        self.selection = dict(s["selection"])
        self.offline_eval = s["offline_eval"]
        self.bc_eval = s.get("bc_eval")
        if self.phase in ("online", "done"):
            self._freeze_online_normalization()
            # A finished run resumed with a larger ``steps`` fine-tunes further.
            if self.phase == "done" and self.iteration < self.num_iterations:
                self.phase = "online"
        self._set_online_learning_rates()

    def _checkpoint(self) -> None:
        save_checkpoint(self.out / CHECKPOINT, self._state())

    # ------------------------------------------------------------------- learn
    def learn(self, progress: bool = True) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        writer = SummaryWriter(str(self.out / "tb"))
        started = (self.phase, self.offline_step, self.iteration)
        try:
            if self.phase == "pretrain":
                self._pretrain(writer, progress)
            if self.phase == "dynamics":
                self._fit_dynamics(writer, progress)
            if self.phase == "improve":
                self._improve(writer, progress)
            if self.phase == "online":
                self._online(writer, progress)
        except BaseException:
            # Nothing lost on a crash or Ctrl-C: the last finished step is kept.
            if (self.phase, self.offline_step, self.iteration) != started:
                self._checkpoint()
            raise
        finally:
            writer.close()

    def _pretrain(self, writer, progress) -> None:
        total = self.algo_cfg.offline_steps
        bar = _bar(total, self.offline_step, "uni_o4 pretrain (BC ensemble, Q/V)", progress)
        try:
            t0 = time.perf_counter()
            while self.offline_step < total:
                losses = self.offline.pretrain_step()
                self.offline_step += 1
                bar.update(1)
                if self.offline_step % 100 == 0 or self.offline_step == total:
                    self.offline_wall_time += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    for k, v in losses.items():
                        writer.add_scalar(f"pretrain/{k}", v, self.offline_step)
                    bar.set_postfix(bc=f"{losses['bc_nll']:.2f}", q=f"{losses['q']:.3f}", refresh=False)
                if self.offline_step % OFFLINE_CHECKPOINT_EVERY == 0:
                    self._checkpoint()
            self.offline_wall_time += time.perf_counter() - t0
        finally:
            bar.close()
        self.phase, self.offline_step = "dynamics", 0
        self._checkpoint()

    def _fit_dynamics(self, writer, progress) -> None:
        dcfg = self.offline.dynamics.cfg
        bar = _bar(dcfg.max_steps, 0, "uni_o4 dynamics ensemble", progress)
        t0 = time.perf_counter()

        def report(step, info):
            bar.update(step - bar.n)
            bar.set_postfix(holdout_mse=f"{info['holdout_mse']:.4f}", refresh=False)
            writer.add_scalar("dynamics/holdout_mse", info["holdout_mse"], step)

        try:
            self.dynamics_info = self.offline.fit_dynamics(progress=report)
        finally:
            bar.close()
        self.offline_wall_time += time.perf_counter() - t0
        self.phase = "improve"
        self.offline.start_improvement()
        self.ope_history = [self.offline.best_scores.tolist()]
        if self.algo_cfg.evaluate_bc:
            # Baseline for the report: behaviour cloning alone (the BC member OPE ranks best).
            bc = self.offline.behavior[self.offline.select_by_ope()]
            self.bc_eval = self._evaluate(self._torch_policy(bc), progress)
        self._checkpoint()

    def _improve(self, writer, progress) -> None:
        acfg = self.algo_cfg
        total = acfg.improve_steps
        bar = _bar(total, self.offline_step, "uni_o4 improve (OPE-gated)", progress)
        try:
            t0 = time.perf_counter()
            while self.offline_step < total:
                losses = self.offline.improve_step(self.offline_step, total)
                self.offline_step += 1
                bar.update(1)
                if self.offline_step % acfg.ope_interval == 0 or self.offline_step == total:
                    scores, improved = self.offline.ope_gate()
                    self.ope_history.append(scores.tolist())
                    for i, s in enumerate(scores):
                        writer.add_scalar(f"ope/member_{i}", s, self.offline_step)
                    writer.add_scalar("improve/loss", losses["improve"], self.offline_step)
                    writer.add_scalar("improve/clip", losses["clip"], self.offline_step)
                    writer.add_scalar("ope/accepted", int(improved.sum()), self.offline_step)
                    bar.set_postfix(best_ope=f"{self.offline.best_scores.max():.2f}", refresh=False)
                if self.offline_step % OFFLINE_CHECKPOINT_EVERY == 0:
                    self.offline_wall_time += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._checkpoint()
            self.offline_wall_time += time.perf_counter() - t0
        finally:
            bar.close()
        self._select(progress)
        self.phase = "online"
        self._checkpoint()

    def _select(self, progress) -> None:
        """Pick the offline policy, load it (and V) into PPO, evaluate it."""
        acfg, off = self.algo_cfg, self.offline
        selection = {
            "method": "online" if acfg.online_selection else "ope",
            "ope_scores": off.best_scores.tolist(),
            "accepted_replacements": off.accepted.tolist(),
        }
        if acfg.online_selection:
            # Explicitly requested: rank the members by real episodes in the target domain.
            returns = []
            for member in off.behavior:
                r = evaluate(self._torch_policy(member), self.real_task, int(acfg.online_selection_episodes), seed=self.seed + 20_000,
                             sim=self.cfg["sim"]["name"], progress=False, env_kwargs=self.sim_kwargs)
                returns.append(r["return_mean"])
            selection["online_returns"] = returns
            selection["online_env_steps"] = int(acfg.online_selection_episodes * self.real_task_episode_steps() * len(returns))
            best = int(np.argmax(returns))
        else:
            best = off.select_by_ope()
        selection["member"] = best
        self.selection = selection
        load_into_actor_critic(self.alg.model, off.behavior[best], off.v if acfg.critic_from_offline else None)
        self.alg.model.critic_norm.load_state_dict(off.v.obs_norm.state_dict())
        self._freeze_online_normalization()
        folder = self.export(self.out / "artifact_offline")
        self.offline_eval = self._evaluate(ArtifactPolicy(folder), progress)
        self.offline_eval["artifact"] = "artifact_offline"

    def _torch_policy(self, actor) -> TorchPolicy:
        return TorchPolicy(MeanAction(actor), self.env.obs_layout["policy"], self.env.action_names)

    def real_task_episode_steps(self) -> int:
        cfg = self.real_task.config
        return int(round(float(cfg["episode_length_s"]) / float(cfg["control_dt"])))

    def _freeze_online_normalization(self) -> None:
        # The offline networks were trained on the dataset's observation statistics;
        # keep them fixed online (as the reference does) unless asked otherwise.
        if self.algo_cfg.freeze_obs_norm:
            self.alg.model.actor_norm.until = 0
            self.alg.model.critic_norm.until = 0

    def _online(self, writer, progress) -> None:
        alg = self.alg
        total = self.num_iterations * self.steps_per_iter
        bar = _bar(total, self.env_steps, f"uni_o4 online ({self.algo_cfg.online_domain})", progress)
        recent_returns: list[float] = []
        recent_lengths: list[float] = []

        def groups(o):
            # The critic reads the policy group (see the module docstring).
            return {"policy": o["policy"], "critic": o["policy"]}

        try:
            if self.iteration < self.num_iterations:
                self.env.randomize_episode_start()
            obs = groups(self.env.get_observations())
            while self.iteration < self.num_iterations:
                t0 = time.perf_counter()
                for _ in range(alg.cfg.num_steps_per_env):
                    actions = alg.act(obs)
                    raw, rewards, dones, extras = self.env.step(actions)
                    obs = groups(raw)
                    alg.process_step(rewards, dones, extras["time_outs"])
                    if "episode_returns" in extras:
                        recent_returns.extend(extras["episode_returns"].tolist())
                        recent_lengths.extend(extras["episode_lengths"].tolist())
                alg.compute_returns(obs)
                losses = alg.update()
                dt = time.perf_counter() - t0
                self.iteration += 1
                self.env_steps += self.steps_per_iter
                self.wall_time += dt
                recent_returns, recent_lengths = recent_returns[-200:], recent_lengths[-200:]
                mean_return = float(np.mean(recent_returns)) if recent_returns else float("nan")
                mean_length = float(np.mean(recent_lengths)) if recent_lengths else float("nan")
                for k, v in (("env_steps", self.env_steps), ("return", mean_return), ("length", mean_length),
                             ("wall_time", self.wall_time)):
                    self.history[k].append(v)
                for k, v in losses.items():
                    writer.add_scalar(f"online/{k}", v, self.env_steps)
                writer.add_scalar("train/mean_return", mean_return, self.env_steps)
                writer.add_scalar("perf/steps_per_s", self.steps_per_iter / dt, self.env_steps)
                bar.update(self.steps_per_iter)
                bar.set_postfix(ret=f"{mean_return:.1f}", refresh=False)
                if self.iteration % int(self.cfg["checkpoint_interval"]) == 0:
                    self._checkpoint()
        finally:
            bar.close()
        self.phase = "done"
        self._checkpoint()

    # ----------------------------------------------------- export / eval / report
    def export(self, folder: str | Path | None = None) -> Path:
        return export_artifact(
            self.alg.inference_module(), self.real_task, self.env.obs_layout["policy"],
            folder or self.out / "artifact", self.cfg, sim=self.cfg["sim"]["name"], name=self.task_name,
        )

    def _evaluate(self, policy, progress) -> dict:
        """Evaluation in the target domain (``real_domain``; the simulator when null)."""
        result = evaluate(
            policy, self.real_task, int(self.cfg["eval_episodes"]), seed=self.seed + 10_000,
            sim=self.cfg["sim"]["name"], progress=progress, env_kwargs=self.sim_kwargs,
        )
        result["domain"] = resolve_domain(self.real_domain).as_dict() or "sim"
        return result

    def finish(self, progress: bool = True) -> dict:
        folder = self.export()
        if self.iteration == 0 and self.offline_eval is not None:
            # No online updates: the final policy is the offline one, already measured.
            result = {k: v for k, v in self.offline_eval.items() if k != "artifact"}
        else:
            result = self._evaluate(ArtifactPolicy(folder), progress)
        result["offline"] = self.offline_eval
        if self.bc_eval is not None:
            result["bc"] = self.bc_eval
        result["offline_selection"] = self.selection
        result["train"] = {
            "env_steps": self.env_steps,
            "iterations": self.iteration,
            "wall_time_s": self.wall_time,
            "steps_per_s": self.env_steps / max(self.wall_time, 1e-9),
            "offline_steps": self.algo_cfg.offline_steps,
            "improve_steps": self.algo_cfg.improve_steps,
            "offline_wall_time_s": self.offline_wall_time,
            "dynamics": self.dynamics_info,
            "online_domain": self.algo_cfg.online_domain,
            "real_domain": self.real_domain,
            "dataset": self.dataset_source,
            "dataset_rows": len(self.dataset),
            "dataset_domain": self.dataset.meta.get("domain"),
        }
        write_eval(result, self.out)
        path = write_report(self.out, self.cfg, self.history, result)
        with open(path, "a") as f:
            f.write(self._report_section(result))
        print(format_eval(result))
        return result

    def _report_section(self, result: dict) -> str:
        off, sel, train = result.get("offline") or {}, result["offline_selection"], result["train"]
        how = ("OPE only (mean Q along dynamics-model rollouts)" if sel.get("method") == "ope" else
               f"ONLINE evaluation ({sel.get('online_env_steps', 0)} env steps in the target domain; "
               "algo.online_selection=true)")
        lines = [
            "## Uni-O4: offline vs offline + online",
            "",
            f"- dataset: {train['dataset']} ({train['dataset_rows']:,} transitions)",
            f"- offline: {train['offline_steps']:,} pre-training steps, {train['improve_steps']:,} improvement steps, "
            f"{train['offline_wall_time_s']:.1f} s",
            f"- offline policy: member {sel.get('member')} selected by {how}; "
            f"OPE scores {', '.join(f'{s:.2f}' for s in sel.get('ope_scores', []))}",
            f"- online fine-tuning: {train['env_steps']:,} env steps in the {train['online_domain']} domain",
            f"- evaluation domain: {result.get('domain', 'sim')}",
            "",
            "| policy | return | std | episode length |",
            "|---|---|---|---|",
        ]
        bc = result.get("bc")
        if bc:
            lines.append(f"| behaviour cloning (best BC member by OPE) | {bc['return_mean']:.2f} | {bc['return_std']:.2f} | {bc['length_mean']:.1f} |")
        if off:
            lines.append(f"| offline (artifact_offline/) | {off['return_mean']:.2f} | {off['return_std']:.2f} | {off['length_mean']:.1f} |")
        lines.append(f"| final (artifact/) | {result['return_mean']:.2f} | {result['return_std']:.2f} | {result['length_mean']:.1f} |")
        lines.append("")
        return "\n".join(lines)

    def close(self) -> None:
        self.env.close()
