"""The real CLI on a tiny budget: train -> export -> eval, resume, and bad input."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from robotrl.cli import main

TINY = ["task=cartpole_swingup", "steps=2048", "num_envs=32", "algo.num_steps_per_env=16", "eval_episodes=4",
        "checkpoint_interval=1", "progress=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "cp"
    assert main(["train", *TINY, f"out={out}"]) == 0
    return out


def test_train_writes_a_complete_run_directory(run_dir):
    for name in ("config.yaml", "checkpoints/latest.pt", "eval.json", "report.md", "return_curve.png",
                 "artifact/policy.onnx", "artifact/policy.yaml"):
        assert (run_dir / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["steps"] == 2048 and cfg["num_envs"] == 32 and cfg["task"]["name"] == "cartpole_swingup"
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 4 and result["length_mean"] == 500
    assert "upright" in result["metrics"]
    assert "return_curve.png" in (run_dir / "report.md").read_text()


def test_export_then_eval(run_dir, tmp_path, capsys):
    art = tmp_path / "exported"
    assert main(["export", f"run={run_dir}", f"out={art}"]) == 0
    assert (art / "policy.onnx").is_file()
    assert main(["eval", f"policy={art}", "episodes=3", f"out={tmp_path}", "progress=false"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["task"] == "cartpole_swingup" and result["episodes"] == 3
    for key in ("return_mean", "return_std", "cost_mean", "cost_std", "length_mean", "length_std", "metrics"):
        assert key in result
    assert "return" in capsys.readouterr().out


def test_resume_continues_from_the_checkpoint(run_dir):
    import torch

    before = torch.load(run_dir / "checkpoints/latest.pt", weights_only=True)
    assert main(["train", *TINY, "steps=4096", f"out={run_dir}", "resume=true"]) == 0
    after = torch.load(run_dir / "checkpoints/latest.pt", weights_only=True)
    assert after["iteration"] == 2 * before["iteration"]
    assert after["env_steps"] == 4096


def test_a_second_run_into_the_same_directory_is_refused(run_dir, capsys):
    assert main(["train", *TINY, f"out={run_dir}"]) == 1
    assert "resume=true" in capsys.readouterr().err


def test_corrupt_checkpoint_on_resume_overwrites_nothing(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    ckpt = run / "checkpoints/latest.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated, as after a disk-full crash
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", *TINY, f"out={run}", "resume=true"]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot


def test_unknown_names_list_the_available_ones(capsys):
    assert main(["train", "task=no_such_task"]) == 2
    err = capsys.readouterr().err
    assert "no_such_task" in err and "quadruped_walk" in err and "cartpole_swingup" in err
    assert main(["train", "algo=no_such_algo"]) == 2
    assert "ppo" in capsys.readouterr().err
    assert main(["fly"]) == 2
    assert "train" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["bench", "safety", "-h"], ["shield", "task=x", "--help"]])
def test_help_anywhere_prints_the_usage(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: robotrl") and "bench   safety" in out


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "robotrl")
    out = subprocess.run([exe, "train", "task=hopper", "--cfg"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "name: hopper" in out.stdout


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_keeps_the_last_iteration(tmp_path, inherited):
    """Nothing lost on an interrupt: SIGINT mid-run leaves a loadable checkpoint, also
    when the run inherited SIGINT ignored (a script's background job)."""
    import signal
    import time

    import torch

    out = tmp_path / "interrupted"
    exe = os.path.join(os.path.dirname(sys.executable), "robotrl")
    disposition = signal.SIG_IGN if inherited == "ignored" else signal.SIG_DFL
    proc = subprocess.Popen([exe, "train", "task=cartpole_swingup", "steps=100000000", "num_envs=32",
                             "algo.num_steps_per_env=16", "checkpoint_interval=1000", "progress=false", f"out={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    try:
        deadline = time.time() + 120
        while not (out / "tb").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # some iterations, none checkpointed by the interval
        assert not (out / "checkpoints/latest.pt").exists()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    state = torch.load(out / "checkpoints/latest.pt", weights_only=True)
    assert state["iteration"] >= 1 and state["env_steps"] == state["iteration"] * 32 * 16


def test_gymnasium_env_id_trains_exports_and_evaluates(tmp_path, capsys):
    """`sim=gymnasium task=<env id>`: another library's env through the same verbs."""
    pytest.importorskip("gymnasium")
    out = tmp_path / "pend"
    args = ["train", "sim=gymnasium", "task=Pendulum-v1", "steps=1024", "num_envs=8", "algo.num_steps_per_env=16",
            "eval_episodes=2", "progress=false", f"out={out}"]
    assert main(args) == 0
    meta = yaml.safe_load((out / "artifact" / "policy.yaml").read_text())
    assert meta["task"] == "Pendulum-v1" and meta["sim"] == "gymnasium"
    assert meta["action"]["type"] == "normalized" and meta["observation"]["size"] == 3
    assert json.loads((out / "eval.json").read_text())["length_mean"] == 200
    # eval picks the artifact's own backend without being told.
    assert main(["eval", f"policy={out / 'artifact'}", "episodes=2", "progress=false", f"out={tmp_path / 'ev'}"]) == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["task"] == "Pendulum-v1"
    # Without an external backend an env id is not a task, and the error says what to do.
    capsys.readouterr()
    assert main(["train", "task=Pendulum-v1"]) == 2
    assert "sim=gymnasium" in capsys.readouterr().err
