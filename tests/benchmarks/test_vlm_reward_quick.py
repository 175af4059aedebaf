"""benchmarks/vlm_reward.py --quick: the table's rows, keys and ratios."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vlm_reward.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vlm_reward_quick(tmp_path):
    pytest.importorskip("open_clip", reason="open_clip is not installed (pip install robotrl[vlm])")
    out = tmp_path / "vlm_reward.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distilled keeps" in proc.stdout
    data = json.loads(out.read_text())
    assert data["benchmark"] == "vlm_reward" and data["quick"] is True
    frames = [r for r in data["rows"] if r["metric"] == "frames_per_s"]
    assert {(r["stage"], r["batch"]) for r in frames} == {
        (s, b) for s in ("render", "encode", "render+encode") for b in (1, 16, 64)}
    for r in frames:
        assert r["frames_per_s"] > 0
        first = next(f for f in frames if f["stage"] == r["stage"] and f["batch"] == 1)
        assert r["ratio"] == pytest.approx(r["frames_per_s"] / first["frames_per_s"])
    train = {r["mode"]: r for r in data["rows"] if r["metric"] == "train_steps_per_s"}
    assert set(train) == {"no VLM (task reward)", "sync", "async", "distilled"}
    ref = train["no VLM (task reward)"]["steps_per_s"]
    for r in train.values():
        assert r["steps"] > 0 and r["ratio"] == pytest.approx(r["steps_per_s"] / ref)
    assert data["distilled_target_met"] == (train["distilled"]["ratio"] >= 0.5)
