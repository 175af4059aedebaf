"""benchmarks/sim2real_gap.py --quick: the comparison rows, merging finished runs, resuming an interrupted one."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCH / "sim2real_gap.py"


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, dict]:
    """One quick run, its runs kept in ``work/``; the tests read its JSON or continue it."""
    tmp_path = tmp_path_factory.mktemp("sim2real_gap")
    proc = run(["--quick", "--json", str(tmp_path / "sim2real_gap.json"), "--workdir", str(tmp_path / "work")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout  # the printed table
    data = json.loads((tmp_path / "sim2real_gap.json").read_text())
    assert data["benchmark"] == "sim2real_gap"
    return tmp_path, data


@pytest.mark.slow
def test_sim2real_gap_quick(quick):
    tmp_path, data = quick
    comparisons = {r["comparison"] for r in data["rows"]}
    assert comparisons == {"h2o vs sac_sim", "h2o vs iql_real", "uni_o4 online vs offline"}
    for row in data["rows"]:
        offset = row["return_offset"]
        assert row["baseline_return"] + offset > 0 and row["method_return"] + offset > 0
        assert row["ratio"] == pytest.approx((row["method_return"] + offset) / (row["baseline_return"] + offset))
    assert (tmp_path / "sim2real_gap.png").stat().st_size > 1000

    # Runs of other shifts merge into one table, chart and JSON (the measured figures
    # are made one task and shift at a time); runs of other budgets do not.
    other = json.loads(json.dumps(data))
    for item in other["results"] + other["rows"]:
        item["shift"] = "friction_0.3x"
    other["settings"]["shifts"] = ["friction_0.3x"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    merged = tmp_path / "merged.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--combine", str(tmp_path / "sim2real_gap.json"),
                           str(tmp_path / "other.json"), "--json", str(merged)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = json.loads(merged.read_text())
    assert [r["shift"] for r in both["results"]] == ["gravity_2x", "friction_0.3x"] and len(both["rows"]) == 6
    assert both["settings"]["shifts"] == ["friction_0.3x", "gravity_2x"] and len(both["combined_from"]) == 2
    # A merged file merges again, and keeps naming the runs it came from.
    third = json.loads(json.dumps(other))
    for item in third["results"] + third["rows"]:
        item["shift"] = "gravity_0.5x"
    third["settings"]["shifts"] = ["gravity_0.5x"]
    (tmp_path / "third.json").write_text(json.dumps(third))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--combine", str(merged),
                           str(tmp_path / "third.json"), "--json", str(tmp_path / "all.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    every = json.loads((tmp_path / "all.json").read_text())
    assert len(every["results"]) == 3
    assert [c["file"] for c in every["combined_from"]] == [c["file"] for c in both["combined_from"]] + [
        str(tmp_path / "third.json")]
    other["settings"]["sim_steps"] += 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--combine", str(tmp_path / "sim2real_gap.json"),
                           str(tmp_path / "other.json"), "--json", str(tmp_path / "bad.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "sim_steps" in proc.stderr and not (tmp_path / "bad.json").exists()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--combine", str(tmp_path / "sim2real_gap.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "needs --json" in proc.stderr



@pytest.mark.slow
def test_sim2real_gap_resumes_an_interrupted_run(quick):
    tmp_path, first = quick
    work = tmp_path / "work"
    # An interruption: a run never started, one stopped before its evaluation, a
    # snapshot never copied. The finished SAC run must be kept as it is.
    shutil.rmtree(work / "iql_hopper_gravity_2x_0")
    (work / "uni_o4_hopper_gravity_2x_0" / "eval.json").unlink()
    shutil.rmtree(work / "behaviour_hopper_gravity_2x_snap2")
    kept = (work / "sac_hopper_gravity_2x_0" / "eval.json").stat().st_mtime_ns

    proc = run(["--quick", "--seeds", "2", "--workdir", str(work), "--resume", "--json", str(tmp_path / "bad_resume.json")])
    assert proc.returncode != 0 and "other settings (seeds)" in proc.stderr and not (tmp_path / "bad_resume.json").exists()
    proc = run(["--quick", "--quality", "medium", "--workdir", str(work), "--resume"])
    assert proc.returncode != 0 and "other settings (quality)" in proc.stderr
    proc = run(["--quick", "--workdir", str(work)])
    assert proc.returncode != 0 and "--resume to continue" in proc.stderr
    proc = run(["--quick", "--resume"])
    assert proc.returncode != 0 and "--resume needs --workdir" in proc.stderr

    proc = run(["--quick", "--workdir", str(work), "--resume", "--json", str(tmp_path / "resumed.json")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "sac_hopper_gravity_2x_0" / "eval.json").stat().st_mtime_ns == kept
    assert (work / "iql_hopper_gravity_2x_0" / "eval.json").exists()
    assert (work / "behaviour_hopper_gravity_2x_snap2" / "policy.onnx").exists()
    # Same seeds and data: the re-run and the resumed methods measure what they did.
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    for method, returns in first["results"][0]["returns"].items():
        assert resumed["results"][0]["returns"][method] == pytest.approx(returns), method
