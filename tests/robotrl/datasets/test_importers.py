"""Importers: D4RL/DSRL-style HDF5 and Minari datasets, written here in their own formats."""
import h5py
import numpy as np
import pytest

from robotrl.datasets import DatasetError, load_dataset, save_dataset
from robotrl.datasets.importers import import_hdf5, import_minari


def write_d4rl(path, n=12, obs_dim=3, act_dim=1, next_obs=True, costs=False, terminals=(4,), timeouts=(8,)):
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.isin(np.arange(n), terminals),
        "timeouts": np.isin(np.arange(n), timeouts),
    }
    if next_obs:
        data["next_observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
    if costs:
        data["costs"] = rng.uniform(0, 1, n).astype(np.float32)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)
    return data


def test_d4rl_with_next_observations_and_dsrl_costs_round_trips(tmp_path):
    src = write_d4rl(tmp_path / "hopper-medium-v2.hdf5", costs=True)
    ds = import_hdf5(tmp_path / "hopper-medium-v2.hdf5")
    np.testing.assert_array_equal(ds.obs["policy"], src["observations"])
    np.testing.assert_array_equal(ds.next_obs["policy"], src["next_observations"])
    np.testing.assert_array_equal(ds.cost, src["costs"])
    np.testing.assert_array_equal(ds.episode_ends, [4, 8, 11])  # the file's cut-off last episode ends truncated
    assert ds.terminated[4] and ds.truncated[8] and ds.truncated[11]
    assert ds.meta["task"] is None and ds.meta["env_id"] == "hopper-medium-v2" and ds.meta["domain"] == "unknown"
    assert ds.meta["obs_layout"] == {"policy": [["observations", 3]]} and ds.meta["action_names"] == ["a0"]
    back = load_dataset(save_dataset(ds, tmp_path / "out.npz"))
    np.testing.assert_array_equal(back.action, src["actions"])
    assert back.meta["source"]["kind"] == "hdf5" and back.meta["source"]["has_costs"]


def test_d4rl_without_next_observations_derives_them_within_episodes(tmp_path):
    src = write_d4rl(tmp_path / "d.hdf5", next_obs=False)
    ds = import_hdf5(tmp_path / "d.hdf5")
    obs = src["observations"]
    # Rows 8 (time-out) and 11 (end of file) have no next observation: dropped, the rows before end truncated.
    kept = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
    np.testing.assert_array_equal(ds.obs["policy"], obs[kept])
    np.testing.assert_array_equal(ds.next_obs["policy"][:4], obs[1:5])
    np.testing.assert_array_equal(ds.next_obs["policy"][4], obs[4])  # terminal: a placeholder, never bootstrapped
    np.testing.assert_array_equal(ds.next_obs["policy"][5:8], obs[6:9])
    np.testing.assert_array_equal(ds.episode_ends, [4, 7, 9])
    assert ds.terminated[4] and ds.truncated[[7, 9]].all() and not ds.truncated[:7].any()
    assert ds.meta["source"]["dropped_rows"] == 2 and ds.meta["source"]["derived_next_obs"]


def test_hdf5_fitting_a_task_takes_its_layout_and_a_misfit_is_refused(tmp_path):
    write_d4rl(tmp_path / "p.hdf5")
    ds = import_hdf5(tmp_path / "p.hdf5", task="pendulum_swingup", domain="gravity_2x")
    assert ds.meta["task"] == "pendulum_swingup" and ds.meta["obs_layout"] == {"policy": [["pendulum", 3]]}
    assert ds.meta["action_names"] == ["hinge"] and ds.meta["domain"] == "gravity_2x" and ds.meta["control_dt"] == 0.02
    with pytest.raises(DatasetError, match=r"p.hdf5.*3 wide with 1 actions.*hopper has 11 policy observations and 3"):
        import_hdf5(tmp_path / "p.hdf5", task="hopper")


def test_bad_hdf5_files(tmp_path):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=np.zeros((3, 2)))
        f.create_dataset("actions", data=np.zeros((3, 1)))
    with pytest.raises(DatasetError, match=r"bad.hdf5.*'rewards'.*missing"):
        import_hdf5(path)
    data = write_d4rl(path)
    with h5py.File(path, "a") as f:
        del f["rewards"]
        f.create_dataset("rewards", data=np.zeros(5))
    with pytest.raises(DatasetError, match=r"'rewards'.*5 rows.*12"):
        import_hdf5(path)
    data["rewards"][[2, 7]] = np.nan
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)
    with pytest.raises(DatasetError, match=r"'reward'.*non-finite.*\[2, 7\]"):
        import_hdf5(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        import_hdf5(path)
    with pytest.raises(DatasetError, match="does not exist"):
        import_hdf5(tmp_path / "none.hdf5")


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """A two-episode Minari dataset of Pendulum-v1, recorded by Minari's own DataCollector."""
    import warnings

    import gymnasium as gym
    from minari import DataCollector

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = DataCollector(gym.make("Pendulum-v1", max_episode_steps=30))
    env.action_space.seed(0)
    for ep in range(2):
        env.reset(seed=ep)
        for _ in range(30):
            if any(env.step(env.action_space.sample())[2:4]):
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari asks for author, description ...
        md = env.create_dataset(dataset_id="pendulum/random-v0", algorithm_name="random")
    env.close()
    return tmp_path / "minari", md


def test_minari_by_id_and_by_path(minari_root, tmp_path):
    root, md = minari_root
    ds = import_minari("pendulum/random-v0")
    assert len(ds) == 60 and len(ds.episode_ends) == 2 and ds.truncated[[29, 59]].all()
    episodes = list(md.iterate_episodes())
    np.testing.assert_allclose(ds.obs["policy"][:30], episodes[0].observations[:30])
    np.testing.assert_allclose(ds.next_obs["policy"][:30], episodes[0].observations[1:])
    np.testing.assert_allclose(ds.action[30:], episodes[1].actions)
    np.testing.assert_allclose(ds.reward[30:], episodes[1].rewards)
    assert ds.meta["env_id"] == "Pendulum-v1" and ds.meta["action_clip"] == 2.0
    assert ds.meta["source"]["dataset_id"] == "pendulum/random-v0"
    by_path = import_minari(root / "pendulum" / "random-v0")
    np.testing.assert_array_equal(by_path.obs["policy"], ds.obs["policy"])
    back = load_dataset(save_dataset(ds, tmp_path / "m.npz"))
    np.testing.assert_array_equal(back.action, ds.action)


def test_minari_against_a_task(minari_root):
    ds = import_minari("pendulum/random-v0", task="pendulum_swingup")
    assert ds.meta["task"] == "pendulum_swingup" and ds.meta["env_id"] is None
    assert ds.meta["source"]["env_id"] == "Pendulum-v1"
    with pytest.raises(DatasetError, match=r"3 wide with 1 actions.*hopper"):
        import_minari("pendulum/random-v0", task="hopper")
    with pytest.raises(DatasetError, match=r"pendulum/expert-v0.*local Minari root.*does not download"):
        import_minari("pendulum/expert-v0")


def test_minari_costs_come_from_step_infos(tmp_path, monkeypatch):
    """DSRL-style safety data in Minari: a per-step ``cost`` info (the reset's info is skipped)."""
    import warnings

    import gymnasium as gym
    from minari import DataCollector

    class Cost(gym.Wrapper):
        def reset(self, **kw):
            obs, info = self.env.reset(**kw)
            return obs, {**info, "cost": np.float64(-1.0)}

        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            return obs, r, term, trunc, {**info, "cost": np.float64(abs(action[0]))}

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = DataCollector(Cost(gym.make("Pendulum-v1", max_episode_steps=4)), record_infos=True)
    env.reset(seed=0)
    for k in range(4):
        env.step(np.array([0.5 * k], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset(dataset_id="pendulum/cost-v0", algorithm_name="scripted")
    env.close()
    ds = import_minari("pendulum/cost-v0")
    np.testing.assert_allclose(ds.cost, [0.0, 0.5, 1.0, 1.5])
