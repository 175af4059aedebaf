"""``robotrl bench safety``: tasks x algorithms x seeds, one report.

For every task the suite first makes an offline dataset in the manner of DSRL:
PPO-Lagrangian behaviour policies trained at several cost limits, snapshots kept
along the way, rolled out with a little noise, so the data spreads over cost and
return. Then, per seed, it trains and evaluates (deterministic episodes):

* online: ``ppo`` (unconstrained reference) and ``ppo_lag`` (limit = kappa);
* offline on the dataset: ``fisor``, ``bc_all``, ``bc_safe``, ``cpq``;
* ``ppo+shield``: the unconstrained PPO policy inside a shield fitted on its rollouts.

Scores are DSRL's: normalized return (R - R_min) / (R_max - R_min) with R_min,
R_max the dataset's lowest and highest episode returns, and normalized cost
C / kappa; "safe" means normalized cost <= 1. The report (``report.md``,
``results.json``, ``return_vs_cost.png``) adds violations per episode and shield
interventions.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

ONLINE = ("ppo", "ppo_lag")
OFFLINE = ("fisor", "bc_all", "bc_safe", "cpq")
SHIELDED = "ppo+shield"
ALGOS = (*ONLINE, *OFFLINE, SHIELDED)


def _train(args: list[str]) -> None:
    from robotrl.cli import main

    code = main(["train", "progress=false", *args])
    if code != 0:
        raise RuntimeError(f"robotrl train {' '.join(args)} failed (exit code {code})")


def _train_run(run: Path, args: list[str]) -> None:
    """A run of the suite; with ``resume=true`` a finished one is kept and an
    interrupted one continues from its checkpoint."""
    from robotrl.run_dir import continue_args

    more = continue_args(run)
    if more is not None:
        _train([*args, *more, f"out={run}"])


def _eval_result(run: Path) -> dict:
    return json.loads((run / "eval.json").read_text())


def behaviour_dataset(task: str, spec: dict, preset: dict, work: Path, task_args: list[str]):
    """DSRL-style data: PPO-Lag at each behaviour cost limit, snapshots along the way."""
    from robotrl.datasets import collect, load_dataset, save_dataset
    from robotrl.sim import make_task

    from robotrl.run_dir import CHECKPOINT

    path = work / f"dataset_{task}.npz"
    if path.exists():  # made before an interruption (the file is written atomically)
        return load_dataset(path), path
    snapshots = []
    for limit in preset["behaviour_limits"]:
        run = work / f"behaviour_{task}_limit{limit}"
        for i in range(1, preset["snapshots"] + 1):
            steps = preset["behaviour_steps"] * i // preset["snapshots"]
            snap = work / f"{run.name}_snap{i}"
            snapshots.append(str(snap))
            if snap.exists():
                continue
            # Each snapshot continues the same run to more steps.
            _train([f"task={task}", "algo=ppo_lag", f"algo.cost_limit={limit}", f"steps={steps}", f"out={run}",
                    "eval_episodes=1", *task_args, *(["resume=true"] if (run / CHECKPOINT).exists() else [])])
            partial = snap.with_name(snap.name + ".partial")  # a snapshot appears whole or not at all
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(run / "artifact", partial)
            partial.rename(snap)
    task_obj = make_task(task, spec.get("config") or {})
    data = collect(task_obj, preset["transitions"], policies=snapshots, noise_std=preset["behaviour_noise"],
                   num_envs=16, seed=0, progress=False)
    return data, save_dataset(data, path)


def run_task(task: str, spec: dict, preset: dict, seeds: int, work: Path, log,
             algos: tuple[str, ...] = ALGOS) -> dict:
    kappa = float(spec["kappa"])
    task_args = [f"+task.config.{k}={v}" for k, v in (spec.get("config") or {}).items()]
    log(f"[{task}] behaviour data")
    data, dataset = behaviour_dataset(task, spec, preset, work, task_args)
    returns = data.episode_returns
    r_min, r_max = float(returns.min()), float(returns.max())
    per_algo: dict[str, list[dict]] = {}
    for seed in range(seeds):
        common = [f"task={task}", f"seed={seed}", f"eval_episodes={preset['eval_episodes']}", *task_args]
        for algo in (a for a in ONLINE if a in algos):
            log(f"[{task}] seed {seed}: {algo}")
            run = work / f"{algo}_{task}_s{seed}"
            extra = [f"algo.cost_limit={kappa}"] if algo == "ppo_lag" else []
            _train_run(run, [*common, f"algo={algo}", f"steps={preset['online_steps']}", *extra])
            per_algo.setdefault(algo, []).append(_eval_result(run))
        for algo in (a for a in OFFLINE if a in algos):
            log(f"[{task}] seed {seed}: {algo}")
            run = work / f"{algo}_{task}_s{seed}"
            overrides = [f"algo.{k}={v}" for k, v in preset.get("offline_overrides", {}).get(algo, {}).items()]
            _train_run(run, [*common, f"algo={algo}", f"steps={preset['offline_steps']}", f"dataset={dataset}",
                             f"algo.cost_limit={kappa}", "algo.eval_interval=0", *overrides])
            per_algo.setdefault(algo, []).append(_eval_result(run))
        if SHIELDED not in algos:
            continue
        log(f"[{task}] seed {seed}: shield")
        try:
            per_algo.setdefault(SHIELDED, []).append(shield_result(work / f"ppo_{task}_s{seed}", task, spec, preset, seed))
        except ValueError as exc:  # e.g. the rollouts never violated: nothing to learn a critic from
            log(f"[{task}] seed {seed}: no shield: {exc}")
            per_algo.setdefault(SHIELDED, [])
    per_algo = {k: v for k, v in per_algo.items() if v}
    rows = []
    for algo, results in per_algo.items():
        ret = np.array([r["return_mean"] for r in results])
        cost = np.array([r["cost_mean"] for r in results])
        norm_ret = (ret - r_min) / max(r_max - r_min, 1e-9)
        norm_cost = cost / kappa
        rows.append({
            "task": task, "algo": algo, "seeds": len(results), "kappa": kappa,
            "return": float(ret.mean()), "return_std": float(ret.std()),
            "cost": float(cost.mean()), "cost_std": float(cost.std()),
            "normalized_return": float(norm_ret.mean()), "normalized_return_std": float(norm_ret.std()),
            "normalized_cost": float(norm_cost.mean()), "normalized_cost_std": float(norm_cost.std()),
            "safe": bool(norm_cost.mean() <= 1.0),
            "violations": float(np.mean([r["violations_mean"] for r in results])),
            "interventions": float(np.mean([r.get("interventions_mean", 0.0) for r in results])),
        })
    return {"task": task, "kappa": kappa, "dataset": str(dataset), "dataset_return_range": [r_min, r_max],
            "dataset_cost_mean": float(data.episode_costs.mean()), "rows": rows}


def shield_result(ppo_run: Path, task: str, spec: dict, preset: dict, seed: int) -> dict:
    from robotrl.cli import compose
    from robotrl.safety.fit_shield import fit_shield_cmd

    out = ppo_run / "artifact_shielded"
    if (out / "shield.json").exists():  # fitted and evaluated before an interruption
        return json.loads((out / "shield.json").read_text())["shielded"]
    shutil.rmtree(out, ignore_errors=True)  # stopped before its evaluation: fit again
    overrides = [f"policy={ppo_run / 'artifact'}", f"task={task}", f"out={out}", f"seed={seed}", "progress=false",
                 f"eval_episodes={preset['eval_episodes']}", f"transitions={preset['shield_transitions']}",
                 f"critic.steps={preset['shield_steps']}", f"threshold={preset.get('shield_threshold', 'auto')}",
                 *[f"+task.config.{k}={v}" for k, v in (spec.get("config") or {}).items()]]
    summary = fit_shield_cmd(compose("shield", overrides))
    return summary["shielded"]


def scatter(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=100)
    markers = dict(zip((*ONLINE, *OFFLINE, SHIELDED), "os^vDPX"))
    for res in results:
        for row in res["rows"]:
            ax.errorbar(row["normalized_cost"], row["normalized_return"], xerr=row["normalized_cost_std"],
                        yerr=row["normalized_return_std"], fmt=markers.get(row["algo"], "o"), capsize=2,
                        label=f"{row['algo']} ({res['task']})")
    ax.axvline(1.0, color="tab:red", linestyle="--", linewidth=1)
    ax.set_xlabel("normalized cost (cost / kappa; <= 1 is safe)")
    ax.set_ylabel("normalized return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(results: list[dict], out: Path, preset_name: str, wall: float, preset: dict, seeds: int) -> Path:
    # The budgets as run (a preset's values can be overridden on the command line).
    budgets = ", ".join(f"{k}={v}" for k, v in preset.items() if k != "tasks")
    lines = [f"# Safety benchmark ({preset_name} preset, seeds: {seeds}, {wall / 60:.1f} min)", "",
             f"Budgets: {budgets}.", "",
             "DSRL-style scores: normalized return against the dataset's return range, normalized cost = "
             "episode cost / kappa; safe = normalized cost <= 1. Mean ± std over seeds.", "",
             "![return vs cost](return_vs_cost.png)", ""]
    for res in results:
        lines += [f"## {res['task']} (kappa {res['kappa']:g}; dataset returns {res['dataset_return_range'][0]:.1f}"
                  f"..{res['dataset_return_range'][1]:.1f}, mean episode cost {res['dataset_cost_mean']:.1f})", "",
                  "| algo | normalized return | normalized cost | safe | return | cost | violations/ep | interventions/ep |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(
                f"| {r['algo']} | {r['normalized_return']:.2f} ± {r['normalized_return_std']:.2f} | "
                f"{r['normalized_cost']:.2f} ± {r['normalized_cost_std']:.2f} | {'yes' if r['safe'] else 'no'} | "
                f"{r['return']:.1f} | {r['cost']:.1f} | {r['violations']:.1f} | {r['interventions']:.1f} |")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def check_resume(out: Path, settings: dict, resume: bool) -> None:
    """An interrupted suite continues (``resume=true``) only with the settings it
    was started with; without ``resume=true`` it never mixes with an earlier one."""
    path = out / "settings.json"
    wanted = json.loads(json.dumps(settings))  # as read back
    if resume:
        if not path.exists():
            raise FileNotFoundError(f"resume=true: {path} is missing, so {out} holds no run of this suite to continue")
        saved = json.loads(path.read_text())
        if saved != wanted:
            diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise ValueError(f"resume=true: {out} was started with other settings ({', '.join(diff)}); "
                             "give the same preset, tasks, seeds and overrides")
    elif (out / "runs").exists() and any((out / "runs").iterdir()):
        raise FileExistsError(f"{out} holds runs of an earlier suite; resume=true continues it, or choose another out=")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1))


def bench_safety_cmd(cfg: dict) -> list[dict]:
    preset_name = cfg["preset"]
    if preset_name not in cfg["presets"]:
        raise KeyError(f"unknown preset {preset_name!r}; available: {', '.join(cfg['presets'])}")
    preset = cfg["presets"][preset_name]
    tasks = cfg.get("tasks") or preset["tasks"]
    unknown = [t for t in tasks if t not in cfg["task_specs"]]
    if unknown:
        raise KeyError(f"no safety-benchmark settings for tasks {unknown}; known: {', '.join(cfg['task_specs'])}")
    algos = tuple(cfg.get("algos") or ALGOS)
    if set(algos) - set(ALGOS):
        raise KeyError(f"unknown algos {sorted(set(algos) - set(ALGOS))}; the suite runs: {', '.join(ALGOS)}")
    if SHIELDED in algos and "ppo" not in algos:
        raise ValueError(f"{SHIELDED} shields the ppo policy of the same seed: add ppo to algos")
    out = Path(cfg["out"])
    work = out / "runs"
    seeds = int(cfg.get("seeds") or preset["seeds"])
    settings = {"preset": preset_name, "settings": preset, "tasks": list(tasks), "seeds": seeds,
                "task_specs": {t: cfg["task_specs"][t] for t in tasks}}
    if cfg.get("algos"):  # absent when all run, as in suites started before the key existed
        settings["algos"] = list(algos)
    check_resume(out, settings, bool(cfg.get("resume")))
    t0 = time.perf_counter()
    results = []

    def log(msg: str) -> None:  # hours of runs: say when each began
        print(f"[{(time.perf_counter() - t0) / 60:6.1f} min] {msg}", flush=True)

    for task in tasks:
        results.append(run_task(task, cfg["task_specs"][task], preset, seeds, work / task, log, algos))
        # Written after every task; a crash mid-task keeps its finished runs for resume=true.
        (out / "results.json").write_text(json.dumps({"preset": preset_name, "results": results}, indent=2))
    scatter(results, out / "return_vs_cost.png")
    report = write_report(results, out, preset_name, time.perf_counter() - t0, preset, seeds)
    print(report.read_text())
    return results
