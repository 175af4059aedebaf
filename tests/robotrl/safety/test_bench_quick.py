"""robotrl bench safety preset=quick: the whole suite end to end on a tiny budget."""
import json

import pytest

from robotrl.cli import main


@pytest.mark.slow
def test_safety_bench_quick_writes_the_report(tmp_path):
    assert main(["bench", "safety", "preset=quick", f"out={tmp_path}"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    rows = {r["algo"]: r for r in results[0]["rows"]}
    assert {"ppo", "ppo_lag", "fisor", "bc_all", "bc_safe", "cpq"} <= set(rows)
    for r in rows.values():
        assert r["normalized_cost"] == pytest.approx(r["cost"] / r["kappa"])
        assert r["safe"] == (r["normalized_cost"] <= 1.0)
    report = (tmp_path / "report.md").read_text()
    assert "normalized return" in report and (tmp_path / "return_vs_cost.png").stat().st_size > 1000
