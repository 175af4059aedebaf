"""Every benchmark script runs in --quick mode and writes comparison rows with a ratio."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def run_quick(name: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout  # the printed table
    data = json.loads(out.read_text())
    assert data["benchmark"] == name and data["rows"]
    return data


@pytest.mark.slow
def test_sim_throughput_quick(tmp_path):
    data = run_quick("sim_throughput", tmp_path)
    for row in data["rows"]:
        assert row["raw_rollout_sps"] > 0 and row["robotrl_vecenv_sps"] > 0
        assert row["ratio"] == pytest.approx(row["robotrl_vecenv_sps"] / row["raw_rollout_sps"])
        assert row["device"] == "cpu"


@pytest.mark.slow
def test_train_vs_sb3_quick(tmp_path):
    data = run_quick("train_vs_sb3", tmp_path)
    row = data["rows"][0]
    assert row["robotrl_reached"], row
    assert row["sb3_time_s"] > 0 and row["robotrl_time_s"] > 0
    # --quick runs one seed: the summary's medians are that seed's figures.
    (summary,) = data["summary"]
    assert summary["seeds"] == [row["seed"]] == [0]
    assert summary["ratio"] == pytest.approx(row["ratio"])


def test_train_vs_sb3_summary_takes_medians_over_seeds():
    sys.path.insert(0, str(BENCH))
    try:
        from train_vs_sb3 import summarize
    finally:
        sys.path.remove(str(BENCH))

    def row(seed, ours, theirs, ours_reached=True, theirs_reached=True):
        return {"seed": seed, "robotrl_time_s": ours, "sb3_time_s": theirs,
                "robotrl_reached": ours_reached, "sb3_reached": theirs_reached}

    s = summarize("t", 1.0, [row(0, 10.0, 40.0), row(1, 60.0, 50.0), row(2, 20.0, 45.0)])
    assert (s["robotrl_time_s"], s["sb3_time_s"], s["seeds"]) == (20.0, 45.0, [0, 1, 2])
    assert s["ratio"] == pytest.approx(2.25) and not s["ratio_is_lower_bound"]
    # SB3 at its limit on most seeds: the ratio is only a lower bound.
    s = summarize("t", 1.0, [row(0, 10.0, 300.0, theirs_reached=False), row(1, 20.0, 300.0, theirs_reached=False),
                             row(2, 30.0, 45.0)])
    assert s["ratio"] == pytest.approx(15.0) and s["ratio_is_lower_bound"]
    # robotrl at its limit on most seeds: no time to the threshold, no ratio.
    s = summarize("t", 1.0, [row(0, 300.0, 40.0, ours_reached=False), row(1, 300.0, 40.0, ours_reached=False),
                             row(2, 30.0, 45.0)])
    assert s["ratio"] != s["ratio"]  # NaN


@pytest.mark.slow
def test_quadruped_walk_quick(tmp_path):
    data = run_quick("quadruped_walk", tmp_path)
    row = data["rows"][0]
    assert row["env_steps"] >= 1_000_000
    assert 0.0 <= row["velocity_tracking"] <= 1.0


@pytest.mark.slow
def test_backends_quick(tmp_path):
    data = run_quick("backends", tmp_path)
    rows = data["rows"]
    assert {r["task"] for r in rows} == {"hopper"}
    mujoco = [r for r in rows if r["backend"] == "mujoco"]
    assert mujoco and all(r["status"] == "ok" and r["ratio"] == pytest.approx(1.0) for r in mujoco)
    for row in rows:
        # A backend may be missing its library ("n/a: ..."), never fail to run.
        assert row["status"] == "ok" or row["status"].startswith("n/a"), row
        if row["status"] == "ok":
            assert row["steps_per_s"] > 0 and row["setup_s"] > 0 and row["device"]
            assert row["ratio"] == pytest.approx(row["steps_per_s"] / row["mujoco_steps_per_s"])


@pytest.mark.slow
def test_train_vs_peers_quick(tmp_path):
    data = run_quick("train_vs_peers", tmp_path)
    rows = {r["trainer_id"]: r for r in data["rows"]}
    assert set(rows) == {"robotrl_mujoco", "robotrl_mjx", "rsl_rl", "sb3", "brax_ppo"}
    base = rows["robotrl_mujoco"]
    assert base["status"] == "ok" and base["reached"], base
    for row in rows.values():
        assert row["status"] == "ok" or row["status"].startswith("skipped"), row
        if row["status"] == "ok":
            assert row["total_s"] > 0 and row["robotrl_time_s"] == base["total_s"]
            assert row["ratio"] == pytest.approx(row["total_s"] / base["total_s"])
            assert row["ratio_is_lower_bound"] == (not row["reached"])
