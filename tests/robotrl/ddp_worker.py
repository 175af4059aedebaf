"""Run by ``torchrun`` in test_distributed.py: a tiny data-parallel PPO run whose
every rank saves its final parameters for the test to compare."""
import sys
from pathlib import Path

import torch

from robotrl import distributed
from robotrl.cli import compose
from robotrl.runner import OnPolicyRunner

out = Path(sys.argv[1])
cfg = compose("train", ["task=pendulum_swingup", f"out={out}", "num_envs=16", "steps=1536",
                        "algo.num_steps_per_env=16", "sim.nthread=1", "sim.torch_threads=1", "progress=false"])
runner = OnPolicyRunner(cfg)
initial = {k: v.clone() for k, v in runner.alg.model.actor.state_dict().items()}
runner.learn(progress=False)
params = {k: v.clone() for k, v in runner.alg.model.state_dict().items()}
torch.save({"params": params, "initial_actor": initial, "num_envs": runner.env.num_envs, "env_steps": runner.env_steps},
           out.parent / f"rank{distributed.rank()}.pt")
runner.close()
distributed.shutdown()
