"""`robotrl dataset collect|info|import` through the real CLI on a tiny budget."""
import json

import numpy as np

from robotrl.cli import main
from robotrl.datasets import load_dataset

FAST = ["num_envs=2", "sim.nthread=1", "progress=false"]


def test_collect_then_info(tmp_path, capsys, pendulum_expert):
    out = tmp_path / "data" / "pend.npz"
    assert main(["dataset", "collect", "task=pendulum_swingup", "transitions=600", "real_domain=gravity_2x",
                 "quality=medium", f"policy={pendulum_expert}", f"out={out}", *FAST]) == 0
    line = capsys.readouterr().out
    assert "600 transitions" in line and "gravity_2x" in line and str(out) in line
    ds = load_dataset(out)
    assert len(ds) == 600 and ds.meta["domain"] == "gravity_2x" and ds.meta["source"]["quality"] == "medium"

    assert main(["dataset", "info", f"path={out}"]) == 0
    table = capsys.readouterr().out
    assert "600 transitions" in table and "hinge" in table
    info = json.loads((tmp_path / "data" / "pend_info.json").read_text())
    assert info["transitions"] == 600 and info["domain"] == "gravity_2x"
    assert (tmp_path / "data" / "pend_returns.png").read_bytes()[:4] == b"\x89PNG"


def test_collect_defaults_to_the_artifacts_task_and_a_named_file(tmp_path, monkeypatch, pendulum_expert):
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "collect", "transitions=50", "quality=expert", f"policy={pendulum_expert}", *FAST]) == 0
    ds = load_dataset(tmp_path / "datasets" / "pendulum_swingup_sim_expert.npz")
    assert ds.meta["task"] == "pendulum_swingup"


def test_import_hdf5_then_info_into_another_folder(tmp_path):
    import h5py

    n = 20
    with h5py.File(tmp_path / "d4rl.hdf5", "w") as f:
        f["observations"] = np.random.default_rng(0).normal(size=(n, 3))
        f["actions"] = np.zeros((n, 1))
        f["rewards"] = np.ones(n)
        f["terminals"] = np.arange(n) == 9
        f["timeouts"] = np.arange(n) == n - 1
        f["costs"] = (np.arange(n) % 3 == 0).astype(float)
    out = tmp_path / "imported.npz"
    assert main(["dataset", "import", "format=hdf5", f"source={tmp_path / 'd4rl.hdf5'}", "task=pendulum_swingup",
                 f"out={out}"]) == 0
    ds = load_dataset(out)
    assert ds.meta["task"] == "pendulum_swingup" and len(ds) == n - 1
    assert main(["dataset", "info", f"path={out}", f"out={tmp_path / 'report'}"]) == 0
    assert (tmp_path / "report" / "imported_info.json").is_file() and (tmp_path / "report" / "imported_returns.png").is_file()


def test_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["dataset", "info", f"path={bad}"]) == 1
    err = capsys.readouterr().err
    assert "bad.npz" in err and "corrupt" in err and "Traceback" not in err
    assert main(["dataset", "collect", "transitions=10", *FAST]) == 1
    assert "task=NAME" in capsys.readouterr().err
    assert main(["dataset", "import", "format=csv", "source=x", f"out={tmp_path / 'o.npz'}"]) == 1
    assert "unknown dataset format 'csv'" in capsys.readouterr().err
    assert main(["dataset", "collect", "task=no_such_task"]) == 2
