"""Data-parallel PPO under torchrun with the gloo backend: two CPU processes."""
import os
import subprocess
import sys
from pathlib import Path

import torch


def test_two_process_torchrun_ranks_end_with_identical_parameters(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
         str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # Each rank stepped half of the 16 envs; the step count is the global one.
    assert [r["num_envs"] for r in ranks] == [8, 8]
    assert ranks[0]["env_steps"] == ranks[1]["env_steps"] == 6 * 16 * 16
    p0, p1 = ranks[0]["params"], ranks[1]["params"]
    assert p0.keys() == p1.keys()
    for key in p0:
        assert torch.equal(p0[key], p1[key]), f"{key} differs between ranks"
    # Training moved the parameters (a run that never updated would also agree).
    initial = ranks[0]["initial_actor"]
    assert any(not torch.equal(initial[k], p0[f"actor.{k}"]) for k in initial)
    # Only rank 0 writes the run directory.
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()
