"""robotrl train algo=fisor|bc_all|bc_safe|cpq dataset=...: the same run directory as PPO."""
import json

import pytest

from robotrl.cli import main
from goal_seeker import GoalSeeker
from robotrl.datasets import collect, save_dataset
from robotrl.sim import make_env


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # A hazard-blind goal seeker with noise, on short episodes: some steps in hazards.
    with make_env("point_goal_hazards", 1) as env:
        seeker = GoalSeeker(env)
    data = collect("point_goal_hazards", 3000, policies=[seeker], noise_std=0.3, num_envs=8, seed=0, progress=False,
                   task_config={"episode_length_s": 4.0})
    assert (data.cost > 0).any()
    return save_dataset(data, tmp_path_factory.mktemp("data") / "hazards.npz")


@pytest.mark.parametrize("algo, extra", [
    ("fisor", ["algo.batch_size=128", "algo.critic_batch_size=64"]),
    ("bc_all", []),
    ("bc_safe", ["algo.cost_limit=1000"]),
    ("cpq", ["algo.batch_size=64"]),
])
def test_cli_trains_offline_safe_algorithms(dataset, tmp_path, algo, extra):
    out = tmp_path / algo
    args = ["train", "task=point_goal_hazards", f"algo={algo}", "steps=20", f"dataset={dataset}", f"out={out}",
            "eval_episodes=2", "progress=false", "+task.config.episode_length_s=4.0",
            "algo.eval_interval=0", *extra]
    assert main(args) == 0
    result = json.loads((out / "eval.json").read_text())
    assert {"return_mean", "cost_mean", "violations_mean"} <= set(result)
    assert (out / "artifact" / "policy.onnx").is_file() and (out / "report.md").is_file()


def test_safety_algorithm_refuses_a_dataset_without_costs(tmp_path):
    data = collect("pendulum_swingup", 600, num_envs=4, seed=0, progress=False)
    path = save_dataset(data, tmp_path / "no_cost.npz")
    assert main(["train", "task=pendulum_swingup", "algo=fisor", "steps=5", f"dataset={path}",
                 f"out={tmp_path / 'run'}", "progress=false", "algo.batch_size=64"]) == 1
