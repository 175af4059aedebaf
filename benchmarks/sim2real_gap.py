"""Sim-to-real gap: what each source of experience is worth in the target domain.

For each task and target-domain shift (the "real robot"), a behaviour policy is
trained *in the target domain* with PPO; its snapshots along the way make a
limited "real" dataset (medium-replay or medium quality). Then, at the same step
budgets and over several seeds, every method is evaluated in the target domain:

* ``sac_sim``: SAC trained in the (unshifted) simulator only;
* ``iql_real``: IQL on the real dataset only;
* ``h2o``: H2O on the real dataset plus the simulator;
* ``uni_o4_offline`` / ``uni_o4_online``: Uni-O4 on the real dataset, then
  fine-tuned online in the target domain (one run gives both).

Each comparison row in the JSON holds H2O's and a single-source baseline's
target-domain returns and their ``ratio``; returns are shifted to be positive
first where needed (by ``1 - min`` over all methods of that task and shift) and
the row says so (``shift``).

    python benchmarks/sim2real_gap.py --json out.json [--quick] [--seeds 3] [--quality medium]
    python benchmarks/sim2real_gap.py --combine a.json b.json --json all.json   # merge finished runs
    python benchmarks/sim2real_gap.py --workdir runs/ --resume [same options]   # continue an interrupted run
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import parser, print_table, write_json

# Budgets (env or gradient steps). The full preset is sized for hours on a
# workstation; --quick is a smoke test of the whole pipeline.
FULL = dict(tasks=("halfcheetah", "hopper"), shifts=("gravity_2x", "friction_0.3x"), quality="medium-replay",
            seeds=3, behaviour_steps=1_000_000, snapshots=5, transitions=100_000, sim_steps=100_000,
            offline_steps=100_000, online_steps=200_000, eval_episodes=10)
QUICK = dict(tasks=("hopper",), shifts=("gravity_2x",), quality="medium-replay", seeds=1,
             behaviour_steps=16_384, snapshots=2, transitions=4_000, sim_steps=1_000,
             offline_steps=300, online_steps=4_096, eval_episodes=2,
             uni_o4_overrides=("algo.dynamics.max_steps=300", "algo.ope_batch=64", "algo.ope_horizon=20"))
METHODS = ("sac_sim", "iql_real", "h2o", "uni_o4_offline", "uni_o4_online")


def train(args: list[str]) -> None:
    from robotrl.cli import main

    code = main(["train", "progress=false", "sim.nthread=1", *args])
    if code != 0:
        raise RuntimeError(f"robotrl train {' '.join(args)} failed with exit code {code}")


def train_run(run: Path, args: list[str]) -> None:
    """One run of a method; after an interruption (--resume) a finished run is
    reused and a run with a checkpoint continues from it."""
    from robotrl.run_dir import continue_args

    more = continue_args(run)
    if more is not None:
        train([*args, *more, f"out={run}"])


def behaviour_snapshots(task: str, shift: str, p: dict, work: Path) -> list[Path]:
    """PPO trained in the target domain; an artifact after each stage (for medium-replay)."""
    from robotrl.run_dir import CHECKPOINT
    from robotrl.sim.domains import resolve_domain

    run = work / f"behaviour_{task}_{shift}"
    shifted = ",".join(f"{k}:{v}" for k, v in resolve_domain(shift).as_dict().items())
    snapshots = []
    for i in range(1, p["snapshots"] + 1):
        steps = p["behaviour_steps"] * i // p["snapshots"]
        snap = work / f"{run.name}_snap{i}"
        snapshots.append(snap)
        if snap.exists():  # made before an interruption (--resume)
            continue
        # Each stage continues the same PPO run to more steps.
        resume = (run / CHECKPOINT).exists()
        train([f"task={task}", "algo=ppo", f"steps={steps}", f"out={run}", "eval_episodes=2",
               f"+task.config.dynamics_shift={{{shifted}}}", *(["resume=true"] if resume else [])])
        partial = snap.with_name(snap.name + ".partial")  # a snapshot appears whole or not at all
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(run / "artifact", partial)
        partial.rename(snap)
    return snapshots


def run_methods(task: str, shift: str, dataset: Path, seed: int, p: dict, work: Path) -> dict[str, float]:
    common = [f"task={task}", f"seed={seed}", f"real_domain={shift}", f"eval_episodes={p['eval_episodes']}"]
    out = {}

    def ret(run: Path, key: str | None = None) -> float:
        result = json.loads((run / "eval.json").read_text())
        return float((result[key] if key else result)["return_mean"])

    run = work / f"sac_{task}_{shift}_{seed}"
    train_run(run, [*common, "algo=sac", f"steps={p['sim_steps']}", "num_envs=4",
           f"algo.warmup_steps={min(5000, p['sim_steps'] // 4)}"])
    out["sac_sim"] = ret(run)
    run = work / f"iql_{task}_{shift}_{seed}"
    train_run(run, [*common, "algo=iql", f"steps={p['offline_steps']}", f"dataset={dataset}", "algo.eval_interval=0"])
    out["iql_real"] = ret(run)
    run = work / f"h2o_{task}_{shift}_{seed}"
    train_run(run, [*common, "algo=h2o", f"steps={p['sim_steps']}", "num_envs=4", f"dataset={dataset}",
           "algo.eval_interval=0"])
    out["h2o"] = ret(run)
    run = work / f"uni_o4_{task}_{shift}_{seed}"
    train_run(run, [*common, "algo=uni_o4", f"steps={p['online_steps']}", "num_envs=16", f"dataset={dataset}",
           f"algo.offline_steps={p['offline_steps']}", f"algo.improve_steps={max(100, p['offline_steps'] // 10)}",
           *p.get("uni_o4_overrides", ())])
    out["uni_o4_offline"] = ret(run, "offline")
    out["uni_o4_online"] = ret(run)
    return out


def comparison_rows(task: str, shift: str, per_method: dict[str, list[float]]) -> list[dict]:
    means = {m: float(np.mean(v)) for m, v in per_method.items()}
    low = min(min(v) for v in per_method.values())
    offset = 1.0 - low if low <= 0 else 0.0  # H2O over baseline needs positive returns
    rows = []
    for baseline in ("sac_sim", "iql_real"):
        rows.append({
            "task": task, "shift": shift, "comparison": f"h2o vs {baseline}",
            "method_return": means["h2o"], "baseline_return": means[baseline],
            "return_offset": offset,
            "ratio": (means["h2o"] + offset) / (means[baseline] + offset),
        })
    rows.append({
        "task": task, "shift": shift, "comparison": "uni_o4 online vs offline",
        "method_return": means["uni_o4_online"], "baseline_return": means["uni_o4_offline"], "return_offset": offset,
        "ratio": (means["uni_o4_online"] + offset) / (means["uni_o4_offline"] + offset),
    })
    return rows


def bar_chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        means = [np.mean(res["returns"][m]) for m in METHODS]
        stds = [np.std(res["returns"][m]) for m in METHODS]
        ax.bar(range(len(METHODS)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(METHODS)), [m.replace("_", "\n") for m in METHODS], fontsize=8)
        ax.set_title(f"{res['task']} / {res['shift']}")
        ax.set_ylabel("target-domain return")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, help="seeds per method (full preset: 3)")
    ap.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--tasks", nargs="+", help="a subset of the preset's tasks")
    ap.add_argument("--shifts", nargs="+", help="a subset of the preset's target-domain shifts")
    ap.add_argument("--quality", choices=("medium-replay", "medium"),
                    help="the real dataset: every behaviour snapshot (medium-replay, the preset's) or the last "
                         "one with noise (medium)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=N",
                    help=f"override a budget of the preset, e.g. sim_steps=30000 ({', '.join(k for k, v in FULL.items() if isinstance(v, int))})")
    ap.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                    help="run nothing: merge the JSON of finished runs (same budgets, other tasks or shifts) "
                         "into one table, chart and --json")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run in --workdir with the same settings: finished runs, "
                         "snapshots and the dataset are kept, unfinished runs continue from their checkpoints")
    args = ap.parse_args()
    if args.combine:
        if not args.json:
            ap.error("--combine needs --json OUT: where the merged JSON and chart go")
        return combine(args)
    p = dict(QUICK if args.quick else FULL)
    if args.seeds:
        p["seeds"] = args.seeds
    if args.quality:
        p["quality"] = args.quality
    for name in ("tasks", "shifts"):
        if getattr(args, name):
            p[name] = tuple(getattr(args, name))
    for item in args.set:
        key, _, value = item.partition("=")
        if not isinstance(FULL.get(key), int) or not value.isdigit():
            ap.error(f"--set {item}: expected KEY=N with KEY one of the integer budgets of the preset")
        p[key] = int(value)
    if args.resume and not args.workdir:
        ap.error("--resume needs --workdir: the folder of the interrupted run")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sim2real_gap_"))
    settings = work / "settings.json"
    wanted = json.loads(json.dumps(p))  # tuples as lists, as read back
    if args.resume:
        if not settings.exists():
            ap.error(f"--resume: {settings} is missing, so {work} is not the folder of a run of this benchmark")
        saved = json.loads(settings.read_text())
        if saved != wanted:
            diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            ap.error(f"--resume: {work} was run with other settings ({', '.join(diff)}); "
                     "give the same options as the interrupted run")
    elif work.exists() and any(work.iterdir()):
        ap.error(f"--workdir {work} is not empty (runs of an earlier benchmark?); "
                 "choose an empty or new folder, or --resume to continue that run")
    work.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(wanted, indent=1))
    from robotrl.datasets import collect, load_dataset, save_dataset

    preset = "quick" if args.quick else "full"
    if args.set or args.tasks or args.shifts or args.seeds or args.quality:
        preset += " (modified: see settings)"
    results, rows = [], []
    t_start = time.perf_counter()
    for task in p["tasks"]:
        for shift in p["shifts"]:
            snaps = behaviour_snapshots(task, shift, p, work)
            policies = snaps if p["quality"] == "medium-replay" else snaps[-1:]
            dataset = work / f"real_{task}_{shift}.npz"
            if dataset.exists():  # collected before an interruption (--resume)
                data = load_dataset(dataset)
            else:
                data = collect(task, p["transitions"], policies=[str(s) for s in policies], quality=p["quality"],
                               real_domain=shift, num_envs=16, seed=0, progress=False)
                dataset = save_dataset(data, dataset)
            per_method: dict[str, list[float]] = {m: [] for m in METHODS}
            for seed in range(p["seeds"]):
                for m, r in run_methods(task, shift, dataset, seed, p, work).items():
                    per_method[m].append(r)
            results.append({"task": task, "shift": shift, "dataset_return": float(np.mean(data.episode_returns)),
                            "returns": per_method})
            rows += comparison_rows(task, shift, per_method)
            # An hour-long run keeps what it has measured if a later task fails.
            write_json(args.json, "sim2real_gap", rows, preset=preset, settings=p, complete=False, results=results,
                       wall_time_s=time.perf_counter() - t_start)
    finish(args, results, rows, p, preset, time.perf_counter() - t_start, work)
    if args.workdir is None and args.json:
        shutil.rmtree(work)  # a temporary folder of runs nobody asked to keep (a failed run keeps it)


def finish(args, results: list[dict], rows: list[dict], p: dict, preset: str, wall_time_s: float, work: Path,
           **extra) -> None:
    table = [{"task": r["task"], "shift": r["shift"], "method": m,
              "return": f"{np.mean(r['returns'][m]):.1f} ± {np.std(r['returns'][m]):.1f}"}
             for r in results for m in METHODS]
    print(f"real dataset quality: {p['quality']}, {p['transitions']} transitions")
    print_table(table, [("task", "task"), ("shift", "shift"), ("method", "method"), ("return", "target return")])
    print()
    print_table(rows, [("task", "task"), ("shift", "shift"), ("comparison", "comparison"),
                       ("method_return", "robotrl"), ("baseline_return", "baseline"), ("ratio", "ratio")])
    png = (args.json.with_suffix(".png") if args.json else work / "sim2real_gap.png")
    bar_chart(results, png)
    print(f"bar chart: {png}")
    write_json(args.json, "sim2real_gap", rows, preset=preset, settings=p, complete=True,
               wall_time_s=wall_time_s, results=results,
               note="ratio = (robotrl method + return_offset) / (baseline + return_offset); the offset makes "
                    "returns positive where any is <= 0", **extra)


def combine(args) -> None:
    """One table, chart and JSON from runs of the same budgets on different tasks or
    shifts (hours each, so they are often run one task and shift at a time)."""
    runs = [json.loads(Path(f).read_text()) for f in args.combine]
    budgets = [{k: v for k, v in r["settings"].items() if k not in ("tasks", "shifts")} for r in runs]
    for f, b in zip(args.combine[1:], budgets[1:]):
        if b != budgets[0]:
            diff = sorted(k for k in set(b) | set(budgets[0]) if b.get(k) != budgets[0].get(k))
            raise SystemExit(f"{f} was run with other settings than {args.combine[0]} ({', '.join(diff)}): "
                             "its returns are not comparable")
    for f, r in zip(args.combine, runs):
        if r.get("complete") is False:  # files written before the key existed were written only at the end
            raise SystemExit(f"{f} is from a run that did not finish (complete=false)")
    results = [res for r in runs for res in r["results"]]
    seen = [(res["task"], res["shift"]) for res in results]
    if len(set(seen)) != len(seen):
        raise SystemExit(f"the files measure a task and shift twice: {seen}")
    p = {**budgets[0], "tasks": sorted({t for t, _ in seen}), "shifts": sorted({s for _, s in seen})}
    rows = [row for r in runs for row in r["rows"]]
    # A merged file brings its own sources: combined_from always names the runs.
    sources = [src for f, r in zip(args.combine, runs)
               for src in r.get("combined_from") or [{"file": str(f), "date": r["machine"]["date"],
                                                      "tasks": r["settings"]["tasks"],
                                                      "shifts": r["settings"]["shifts"],
                                                      "wall_time_s": r["wall_time_s"]}]]
    finish(args, results, rows, p, runs[0]["preset"], sum(r["wall_time_s"] for r in runs), args.json.parent,
           combined_from=sources)

if __name__ == "__main__":
    main()
