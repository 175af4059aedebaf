"""Learning tests: PPO reaches a return threshold within a budget (slow)."""
import json

import pytest

from robotrl.cli import main


@pytest.mark.slow
def test_ppo_solves_cartpole_swingup(tmp_path):
    # Budget: 3 M env steps with the tuned defaults (about a minute). Random actions
    # score ~20 and a policy that only spins the pole ~110; balancing it upright for
    # most of the episode scores > 250.
    out = tmp_path / "run"
    assert main(["train", "task=cartpole_swingup", "steps=3000000", "seed=0", f"out={out}", "progress=false"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["return_mean"] >= 250, result
    assert result["metrics"]["upright"] >= 0.4, result
