"""The real CLI on tiny budgets for sac, iql and h2o: run directory, resume, bad input."""
import json
import shutil

import numpy as np
import pytest
import torch

from robotrl.cli import main
from robotrl.datasets import save_dataset

COMMON = ["task=pendulum_swingup", "eval_episodes=2", "checkpoint_interval=1", "progress=false",
          "sim.nthread=1", "sim.torch_threads=1", "algo.hidden=[32,32]", "algo.chunk_steps=100", "+task.config.episode_length_s=1.0"]
SAC_TINY = ["algo=sac", "steps=400", "num_envs=2", "algo.warmup_steps=100", "algo.batch_size=32", *COMMON]
RUN_FILES = ("config.yaml", "checkpoints/latest.pt", "eval.json", "report.md", "return_curve.png",
             "artifact/policy.onnx", "artifact/policy.yaml")


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    from pendulum_data import scripted_dataset

    ds = scripted_dataset("gravity_2x", g=2.0, num_envs=4, steps=100, seed=0)
    return save_dataset(ds, tmp_path_factory.mktemp("data") / "pendulum_gravity_2x.npz")


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "sac"
    assert main(["train", *SAC_TINY, f"out={out}"]) == 0
    return out


def assert_complete(run):
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())


def test_sac_writes_a_complete_run_directory(sac_run):
    assert_complete(sac_run)
    result = json.loads((sac_run / "eval.json").read_text())
    assert result["episodes"] == 2 and result["length_mean"] == 50
    assert result["train"]["env_steps"] == 400
    # 300 env steps after warm-up at one update per env step.
    assert result["train"]["gradient_steps"] == 300
    ckpt = torch.load(sac_run / "checkpoints/latest.pt", weights_only=True)
    assert ckpt["iteration"] == 4 and len(ckpt["replay"]["reward"]) == 400


def test_exported_onnx_matches_the_torch_actor(sac_run):
    from robotrl.algos.sac import SAC, SACConfig
    from robotrl.policies.artifact import ArtifactPolicy

    ckpt = torch.load(sac_run / "checkpoints/latest.pt", weights_only=True)
    sac = SAC(SACConfig(hidden=(32, 32)), {"policy": 3, "critic": 3}, 1)
    sac.load_state_dict(ckpt["algo"])
    obs = torch.randn(64, 3) * torch.tensor([1.0, 1.0, 5.0])
    onnx_action = ArtifactPolicy(sac_run / "artifact").act(obs.numpy())
    np.testing.assert_allclose(onnx_action, sac.act(obs, deterministic=True).numpy(), atol=1e-5)


def test_sac_resume_continues(sac_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(sac_run, run)
    assert main(["train", *SAC_TINY, "steps=600", f"out={run}", "resume=true"]) == 0
    after = torch.load(run / "checkpoints/latest.pt", weights_only=True)
    assert after["env_steps"] == 600 and after["iteration"] == 6 and after["gradient_steps"] == 500
    assert len(after["replay"]["reward"]) == 600


def test_second_run_into_the_same_directory_is_refused(sac_run, capsys):
    assert main(["train", *SAC_TINY, f"out={sac_run}"]) == 1
    assert "resume=true" in capsys.readouterr().err


def test_corrupt_checkpoint_on_resume_overwrites_nothing(sac_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(sac_run, run)
    ckpt = run / "checkpoints/latest.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", *SAC_TINY, f"out={run}", "resume=true"]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot


def test_iql_trains_offline_from_a_dataset_file(dataset_file, tmp_path):
    out = tmp_path / "iql"
    args = ["train", "algo=iql", "steps=200", f"dataset={dataset_file}", "real_domain=gravity_2x",
            "algo.eval_interval=100", "algo.batch_size=32", *COMMON, f"out={out}"]
    assert main(args) == 0
    assert_complete(out)
    result = json.loads((out / "eval.json").read_text())
    assert result["train"]["gradient_steps"] == 200 and result["train"]["env_steps"] == 0
    assert result["train"]["domain"] == "gravity_2x"
    ckpt = torch.load(out / "checkpoints/latest.pt", weights_only=True)
    assert ckpt["history"]["eval_steps"] == [100, 200]
    assert "gradient steps" in (out / "report.md").read_text()


def test_h2o_trains_from_a_dataset_and_the_simulator(dataset_file, tmp_path):
    out = tmp_path / "h2o"
    args = ["train", "algo=h2o", "steps=300", "num_envs=2", f"dataset={dataset_file}", "real_domain=gravity_2x",
            "algo.eval_interval=0", "algo.batch_size=32", "algo.discriminator_hidden=[32,32]", "algo.gap_samples=3",
            *COMMON, f"out={out}"]
    assert main(args) == 0
    assert_complete(out)
    result = json.loads((out / "eval.json").read_text())
    assert result["train"]["env_steps"] == 300 and result["train"]["gradient_steps"] == 300
    assert result["train"]["domain"] == "gravity_2x"
    ckpt = torch.load(out / "checkpoints/latest.pt", weights_only=True)
    assert ckpt["replay"]["capacity"] == 10 * 400  # buffer_ratio x dataset size


@pytest.mark.parametrize("algo", ["iql", "h2o"])
def test_missing_dataset_is_a_clear_error(algo, tmp_path, capsys):
    assert main(["train", f"algo={algo}", *COMMON, f"out={tmp_path / 'x'}"]) == 1
    err = capsys.readouterr().err
    assert f"algo={algo} needs dataset=PATH" in err and "robotrl dataset collect" in err
    assert not (tmp_path / "x").exists()


def test_dataset_of_another_task_is_refused(dataset_file, tmp_path, capsys):
    args = ["train", "algo=iql", "task=cartpole_swingup", f"dataset={dataset_file}", "progress=false",
            "sim.nthread=1", f"out={tmp_path / 'x'}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "pendulum_swingup" in err and str(dataset_file) in err


def test_unknown_algo_setting_is_refused(tmp_path, capsys):
    assert main(["train", *SAC_TINY, "+algo.no_such_key=1", f"out={tmp_path / 'x'}"]) == 1
    assert "no_such_key" in capsys.readouterr().err
