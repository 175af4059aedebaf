"""``robotrl-launch``: Hydra multirun through the submitit launcher, and the
mapping of a submitit/SLURM job's tasks onto torch.distributed.

The launcher tests run real jobs with Hydra's ``submitit_local`` launcher (submitit
starts each job, and each task of a job, as a local process). There is no SLURM
here, so the SLURM test fakes it: the variables SLURM sets for each task of a job.
"""
import json
import os
import socket
import subprocess
import sys

import yaml

TINY = ["task=pendulum_swingup", "steps=512", "num_envs=8", "algo.num_steps_per_env=16", "eval_episodes=2",
        "progress=false", "sim.nthread=1", "sim.torch_threads=1"]
# Variables of an outer torchrun or SLURM job that must not leak into the ones under test.
OUTER = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in OUTER and not k.startswith(("SLURM_", "SUBMITIT_"))}
    return dict(env, OMP_NUM_THREADS="1", **extra)


def launch(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "robotrl.launch", *args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_submitit_local_multirun_gives_each_job_its_own_run_directory(tmp_path):
    launch(["-m", "hydra/launcher=submitit_local", *TINY, "seed=0,1"], cwd=tmp_path)
    # Everything Hydra and submitit write stays in the sweep directory under runs/.
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    for job, seed in ((0, 0), (1, 1)):
        run = sweep / str(job)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["seed"] == seed and cfg["out"] == str(run)
        assert (run / "artifact" / "policy.onnx").is_file() and (run / "eval.json").is_file()
        assert (run / ".hydra" / "overrides.yaml").is_file()
    assert (sweep / ".submitit").is_dir()


def test_submitit_job_of_two_tasks_trains_data_parallel(tmp_path):
    """hydra.launcher.tasks_per_node=2: one job, two processes, one policy."""
    launch(["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", *TINY, "num_envs=16",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    run = tmp_path / "sweep" / "0"
    assert (run / "artifact" / "policy.onnx").is_file()
    (rank0_log,) = (tmp_path / "sweep" / ".submitit").glob("*/*_0_log.out")
    assert "data-parallel over 2 processes, 8 envs each" in rank0_log.read_text()


def test_launch_rewrites_an_external_env_name_like_robotrl_train(tmp_path):
    proc = launch(["task=CartPole-v1", "sim=gymnasium", "--cfg", "job"], cwd=tmp_path)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["task"]["name"] == "CartPole-v1" and cfg["sim"]["name"] == "gymnasium"


RANK_REPORT = """
import json, os, torch
from robotrl import distributed
device = distributed.init_from_env("cpu")
total = distributed.all_reduce_sum_(torch.tensor([distributed.rank() + 1.0]))
print(json.dumps({"device": device, "rank": distributed.rank(), "world_size": distributed.world_size(),
                  "sum": total.item(), **{k: os.environ[k] for k in ("MASTER_ADDR", "LOCAL_RANK")}}))
distributed.shutdown()
"""


def test_tasks_of_a_faked_slurm_job_join_one_process_group():
    """No SLURM here: each process gets the variables srun sets for task i of a
    2-task job started by submitit (SUBMITIT_EXECUTOR=slurm), and no torchrun variables."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for task in (0, 1):
        env = clean_env(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="1",
                        SLURM_NODEID="0", SLURM_JOB_NODELIST="localhost", SLURM_PROCID=str(task),
                        SLURM_LOCALID=str(task), MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_REPORT], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for task, r in enumerate(reports):
        assert r == {"device": "cpu", "rank": task, "world_size": 2, "sum": 3.0, "MASTER_ADDR": "localhost",
                     "LOCAL_RANK": str(task)}


def test_outside_torchrun_and_multi_task_jobs_init_is_a_no_op(monkeypatch):
    import torch.distributed as dist

    from robotrl import distributed

    for key in OUTER:
        monkeypatch.delenv(key, raising=False)
    assert distributed.init_from_env("cpu") == "cpu"
    # A single-task (faked) SLURM job is one process: nothing to join either.
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert distributed.init_from_env("cpu") == "cpu"
    assert "WORLD_SIZE" not in os.environ and not dist.is_initialized()

