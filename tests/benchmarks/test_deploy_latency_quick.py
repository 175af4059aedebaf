"""benchmarks/deploy_latency.py --quick: rows, keys, ratios; the watchdog bound holds."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "deploy_latency.py"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_deploy_latency_quick(tmp_path):
    pytest.importorskip("cyclonedds", reason="cyclonedds is not installed (pip install robotrl[ros])")
    out = tmp_path / "deploy_latency.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout
    data = json.loads(out.read_text())
    assert data["benchmark"] == "deploy_latency" and data["quick"] is True
    rows = data["rows"]
    latency = {r["rate_hz"]: r for r in rows if r["metric"] == "obs_to_command_latency"}
    jitter = {r["rate_hz"]: r for r in rows if r["metric"] == "period_jitter"}
    assert set(latency) == set(jitter) == {50.0, 200.0, 500.0}
    for r in latency.values():
        assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"] <= r["latency_max_ms"]
        assert r["ratio"] == pytest.approx(2.0 / r["latency_p99_ms"])
        assert r["ticks"] > 0
    for r in jitter.values():
        assert 0 <= r["jitter_p50_ms"] <= r["jitter_p99_ms"]
        assert r["ratio"] == pytest.approx(1.0 / max(r["jitter_p99_ms"], 1e-6))
    watchdog = [r for r in rows if r["metric"].startswith("watchdog_")]
    assert {r["metric"] for r in watchdog} == {"watchdog_estop", "watchdog_nan", "watchdog_timeout"}
    for r in watchdog:
        # The bound of issue 6 is one control period + 5 ms. tests/real/test_watchdog.py
        # asserts it per event; here, on a shared machine, the typical reaction must meet
        # it and the worst of the few repeats is recorded (ratio) rather than asserted.
        assert r["target_ms"] == pytest.approx(1e3 / r["rate_hz"] + 5.0)
        assert r["reaction_p50_ms"] <= r["target_ms"], r
        assert r["ratio"] == pytest.approx(r["target_ms"] / max(r["reaction_max_ms"], 1e-3))
