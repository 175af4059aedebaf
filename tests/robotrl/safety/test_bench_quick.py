"""robotrl bench safety preset=quick: the whole suite end to end on a tiny budget,
and continued after an interruption."""
import json
import shutil

import pytest

from robotrl.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_safety")
    assert main(["bench", "safety", "preset=quick", f"out={out}"]) == 0
    return out


@pytest.mark.slow
def test_safety_bench_quick_writes_the_report(quick):
    results = json.loads((quick / "results.json").read_text())["results"]
    rows = {r["algo"]: r for r in results[0]["rows"]}
    assert {"ppo", "ppo_lag", "fisor", "bc_all", "bc_safe", "cpq"} <= set(rows)
    for r in rows.values():
        assert r["normalized_cost"] == pytest.approx(r["cost"] / r["kappa"])
        assert r["safe"] == (r["normalized_cost"] <= 1.0)
    report = (quick / "report.md").read_text()
    assert "normalized return" in report and (quick / "return_vs_cost.png").stat().st_size > 1000
    assert "seeds: 1" in report and "behaviour_steps=8192" in report  # the budgets as run


@pytest.mark.slow
def test_safety_bench_resumes_an_interrupted_suite(quick, capsys):
    first = {r["algo"]: r for r in json.loads((quick / "results.json").read_text())["results"][0]["rows"]}
    runs = quick / "runs" / "point_goal_hazards"
    # An interruption: one run never started, one stopped before its evaluation, the
    # shield fitted but not evaluated. The dataset and the finished runs stay as they are.
    shutil.rmtree(runs / "cpq_point_goal_hazards_s0")
    (runs / "bc_all_point_goal_hazards_s0" / "eval.json").unlink()
    (runs / "ppo_point_goal_hazards_s0" / "artifact_shielded" / "shield.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (runs / "dataset_point_goal_hazards.npz",
                                               runs / "ppo_lag_point_goal_hazards_s0" / "eval.json",
                                               runs / "fisor_point_goal_hazards_s0" / "eval.json")}

    assert main(["bench", "safety", "preset=quick", f"out={quick}"]) != 0
    assert "resume=true continues it" in capsys.readouterr().err
    assert main(["bench", "safety", "preset=quick", "seeds=2", f"out={quick}", "resume=true"]) != 0
    assert "other settings (seeds)" in capsys.readouterr().err
    assert main(["bench", "safety", "preset=quick", f"out={quick / 'elsewhere'}", "resume=true"]) != 0
    assert "holds no run of this suite" in capsys.readouterr().err

    assert main(["bench", "safety", "preset=quick", f"out={quick}", "resume=true"]) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (runs / "cpq_point_goal_hazards_s0" / "eval.json").exists()
    assert (runs / "ppo_point_goal_hazards_s0" / "artifact_shielded" / "shield.json").exists()
    again = {r["algo"]: r for r in json.loads((quick / "results.json").read_text())["results"][0]["rows"]}
    assert set(again) == set(first)
    # Kept and continued runs report what they did the first time.
    for algo in ("ppo", "ppo_lag", "fisor", "bc_all"):
        assert (again[algo]["return"], again[algo]["cost"]) == pytest.approx((first[algo]["return"], first[algo]["cost"]))


def test_safety_bench_refuses_unknown_or_incomplete_algos(tmp_path, capsys):
    assert main(["bench", "safety", "preset=quick", "algos=[ppo,sac]", f"out={tmp_path}"]) != 0
    err = capsys.readouterr().err
    assert "unknown algos ['sac']" in err and "ppo_lag" in err
    assert main(["bench", "safety", "preset=quick", "algos=[ppo_lag,ppo+shield]", f"out={tmp_path}"]) != 0
    assert "add ppo to algos" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_safety_bench_runs_only_the_algos_asked_for(quick):
    from robotrl.cli import compose
    from robotrl.safety.bench import run_task

    cfg = compose("bench_safety", ["preset=quick"])
    # The quick suite's runs are all finished, so this reads them instead of training.
    res = run_task("point_goal_hazards", cfg["task_specs"]["point_goal_hazards"], cfg["presets"]["quick"], 1,
                   quick / "runs" / "point_goal_hazards", print, algos=("ppo", "bc_safe"))
    assert {r["algo"] for r in res["rows"]} == {"ppo", "bc_safe"}
