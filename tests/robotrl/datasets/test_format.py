"""The on-disk format: round trip, atomic writes, and every bad-file error naming
the file, the field, the rows and the reason."""
import numpy as np
import pytest

from robotrl.datasets import Dataset, DatasetError, load_dataset, save_dataset
from robotrl.sim import make_task


def raw_arrays(path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def rewrite(path, **changes):
    """Write ``path`` again with fields replaced (None removes one), bypassing validation."""
    arrays = raw_arrays(path)
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


@pytest.fixture
def saved(tmp_path, small_dataset):
    ds = small_dataset()
    return ds, save_dataset(ds, tmp_path / "d.npz")


def assert_same(a: Dataset, b: Dataset):
    assert set(a.obs) == set(b.obs) and set(a.next_obs) == set(b.next_obs)
    for g in a.obs:
        np.testing.assert_array_equal(a.obs[g], b.obs[g])
        np.testing.assert_array_equal(a.next_obs[g], b.next_obs[g])
    for name in ("action", "reward", "cost", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == getattr(b, name).dtype


def test_round_trip_is_exact_and_atomic(saved, tmp_path):
    ds, path = saved
    back = load_dataset(path)
    assert_same(ds, back)
    assert back.meta["obs_layout"]["policy"] == [["pos", 2], ["vel", 3]]
    assert back.meta["task"] == "cartpole_swingup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # no temp file left behind
    with np.load(path, allow_pickle=False) as f:
        assert {"format_version", "meta_json", "obs/policy", "next_obs/critic", "action", "terminated"} <= set(f.files)


def test_an_invalid_dataset_is_not_written_over_a_good_file(saved):
    ds, path = saved
    before = path.read_bytes()
    ds.reward[4] = np.nan
    with pytest.raises(DatasetError, match=r"'reward'.*\[4\]"):
        save_dataset(ds, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("field", ["action", "reward", "terminated", "obs/policy", "next_obs/critic", "meta_json"])
def test_missing_field(saved, field):
    _, path = saved
    rewrite(path, **{field.replace("/", "__"): None})
    with pytest.raises(DatasetError, match=rf"{path}.*'{field}'"):
        load_dataset(path)


def test_misshaped_fields(saved):
    ds, path = saved
    rewrite(path, reward=ds.reward[:-1])
    with pytest.raises(DatasetError, match=r"'reward'.*\(9,\).*10 rows"):
        load_dataset(path)
    rewrite(path, reward=ds.reward, obs__policy=ds.obs["policy"][:, 0])
    with pytest.raises(DatasetError, match=r"'obs/policy'.*2-D"):
        load_dataset(path)
    rewrite(path, obs__policy=ds.obs["policy"][:, :4])
    with pytest.raises(DatasetError, match=r"'obs/policy'.*width 4.*obs_layout"):
        load_dataset(path)
    rewrite(path, obs__policy=ds.obs["policy"], next_obs__policy=ds.next_obs["policy"][:7])
    with pytest.raises(DatasetError, match=r"'next_obs/policy'.*7 rows"):
        load_dataset(path)


def test_non_finite_rows_are_named(saved):
    ds, path = saved
    obs = ds.obs["policy"].copy()
    obs[[2, 5, 6], 1] = [np.nan, np.inf, -np.inf]
    rewrite(path, obs__policy=obs)
    with pytest.raises(DatasetError, match=r"'obs/policy'.*non-finite.*3 rows \[2, 5, 6\]"):
        load_dataset(path)


def test_flags_must_be_boolean_and_the_last_row_must_end_an_episode(saved):
    ds, path = saved
    rewrite(path, terminated=ds.terminated.astype(np.int8))
    with pytest.raises(DatasetError, match=r"'terminated'.*boolean.*int8"):
        load_dataset(path)
    flags = ds.terminated.copy()
    flags[-1] = False
    rewrite(path, terminated=flags)
    with pytest.raises(DatasetError, match=r"last row \(9\) ends no episode"):
        load_dataset(path)


def test_inconsistent_with_the_task(saved, small_dataset):
    _, path = saved
    load_dataset(path, task=make_task("cartpole_swingup"))  # cartpole: 5 policy obs, 1 action
    with pytest.raises(DatasetError, match=r"'action'.*1 actions per row but task hopper takes 3"):
        load_dataset(path, task=make_task("hopper"))
    wide = small_dataset(obs_width=7)
    save_dataset(wide, path)
    with pytest.raises(DatasetError, match=r"'obs/policy'.*width 7 but task cartpole_swingup observes 5"):
        load_dataset(path, task=make_task("cartpole_swingup"))


def test_corrupt_missing_and_foreign_files(saved, tmp_path):
    _, path = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as after a crash
    with pytest.raises(DatasetError, match=rf"{path}.*(corrupt|truncated)"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip at all")
    with pytest.raises(DatasetError, match="junk.npz"):
        load_dataset(junk)


def test_pickled_object_arrays_are_refused(saved):
    _, path = saved
    rewrite(path, reward=np.array([{"evil": 1}] * 10, dtype=object))
    with pytest.raises(DatasetError, match=r"'reward'.*pickle"):
        load_dataset(path)


def test_bad_metadata_and_newer_versions(saved):
    _, path = saved
    rewrite(path, meta_json=np.asarray("{not json"))
    with pytest.raises(DatasetError, match=r"'meta_json'.*JSON"):
        load_dataset(path)
    rewrite(path, meta_json=np.asarray('{"task": "x", "obs_layout": {}}'))
    with pytest.raises(DatasetError, match=r"'meta_json'.*action_names"):
        load_dataset(path)
    rewrite(path, meta_json=np.asarray('{"task": "x", "obs_layout": {}, "action_names": ["a"]}'))
    with pytest.raises(DatasetError, match=r"obs_layout has no entry for observation group"):
        load_dataset(path)
    rewrite(path, format_version=np.asarray(99, np.int64))
    with pytest.raises(DatasetError, match=r"'format_version'.*99 is newer"):
        load_dataset(path)


def test_malformed_layout_metadata(saved):
    _, path = saved
    rewrite(path, meta_json=np.asarray('{"task": null, "obs_layout": {"policy": 5}, "action_names": ["a"]}'))
    with pytest.raises(DatasetError, match=r"'meta_json'.*\[name, width\] pairs"):
        load_dataset(path)
