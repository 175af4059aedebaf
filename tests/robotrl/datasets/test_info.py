"""Dataset statistics: the table, the JSON and the return histogram."""
import json

import numpy as np

from robotrl.datasets import collect, save_dataset
from robotrl.datasets.info import action_coverage, dataset_info, format_info, write_info




def test_info_of_a_collected_dataset(tmp_path):
    ds = collect("pendulum_swingup", 1200, num_envs=2, env_kwargs={"nthread": 1}, progress=False)
    path = save_dataset(ds, tmp_path / "rand.npz")
    info = dataset_info(ds)
    assert info["transitions"] == 1200 and info["episodes"] == 4 and info["cut_episodes"] == 2
    assert info["length"]["max"] == 500 and info["length"]["min"] == 100
    assert np.isclose(info["return"]["mean"], ds.episode_returns.mean())
    (action,) = info["action"]
    assert action["name"] == "hinge" and action["coverage"] == 1.0  # uniform random actions fill every bin
    assert [t["name"] for t in info["obs"]["policy"]] == ["pendulum"] and len(info["obs"]["policy"][0]["min"]) == 3
    table = format_info(info, path)
    assert "return" in table and "hinge" in table and "coverage" in table

    json_path, png_path = write_info(ds, info, path, tmp_path / "report")
    assert json_path == tmp_path / "report" / "rand_info.json" and png_path.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json_path.read_text())["episodes"] == 4


def test_costs_get_their_own_panel_and_coverage_sees_narrow_actions(tmp_path, small_dataset):
    ds = small_dataset()
    ds.cost[:] = np.arange(len(ds))
    info = dataset_info(ds, bins=10)
    assert info["cost"]["nonzero_rows"] == 9 and info["cost"]["max"] == sum(range(4, 10))
    _, png = write_info(ds, info, tmp_path / "c.npz")
    assert png == tmp_path / "c_returns.png" and png.is_file()
    narrow = np.full((100, 2), 0.05)
    narrow[:, 1] = np.linspace(-1, 1, 100)
    np.testing.assert_allclose(action_coverage(narrow, -np.ones(2), np.ones(2), 10), [0.1, 1.0])
