"""Collection: exact budgets, episode bookkeeping, target domains and quality presets."""
import json

import numpy as np
import pytest

from robotrl.datasets import DatasetError, collect, load_dataset, save_dataset
from robotrl.datasets.collect import expand_policy_paths, quality_sources
from robotrl.policies.artifact import ArtifactPolicy
from robotrl.sim import make_task

FAST = {"env_kwargs": {"nthread": 1}, "progress": False}


def test_collect_save_load_round_trip_and_episode_bookkeeping(tmp_path):
    ds = collect("pendulum_swingup", 1201, num_envs=3, seed=3, **FAST)
    assert len(ds) == 1201 and set(ds.obs) == {"policy", "critic"}
    # Env shares 401, 400, 400 rows: one full 500-step episode is impossible, so all three are cut.
    assert ds.meta["source"]["cut_episodes"] == 3
    np.testing.assert_array_equal(ds.episode_ends, [400, 800, 1200])
    assert ds.truncated[ds.episode_ends].all() and not ds.terminated.any()
    # Within an episode each row's next_obs is the following row's obs.
    inner = np.setdiff1d(np.arange(len(ds) - 1), ds.episode_ends)
    np.testing.assert_array_equal(ds.next_obs["policy"][inner], ds.obs["policy"][inner + 1])

    path = save_dataset(ds, tmp_path / "p.npz")
    back = load_dataset(path, task=make_task("pendulum_swingup"))
    for g in ds.obs:
        np.testing.assert_array_equal(back.obs[g], ds.obs[g])
        np.testing.assert_array_equal(back.next_obs[g], ds.next_obs[g])
    for name in ("action", "reward", "cost", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.meta == json.loads(json.dumps(ds.meta))
    for key in ("task", "sim", "domain", "obs_layout", "action_names", "action_clip", "control_dt", "source",
                "robotrl_revision", "created"):
        assert key in back.meta, key
    assert back.meta["obs_layout"]["policy"] == [["pendulum", 3]] and back.meta["control_dt"] == 0.02


def test_finished_episodes_end_at_their_true_last_observation():
    # 2 envs x 600 rows on 500-step episodes: each env finishes one episode by time-out.
    ds = collect("pendulum_swingup", 1200, num_envs=2, **FAST)
    ends = ds.episode_ends
    np.testing.assert_array_equal(ends, [499, 599, 1099, 1199])
    timed_out = [499, 1099]
    assert ds.truncated[timed_out].all() and ds.meta["source"]["cut_episodes"] == 2
    # The last observation of an episode is not the reset observation of the next.
    assert not np.allclose(ds.next_obs["policy"][timed_out], ds.obs["policy"][[500, 1100]])
    # Starting hanging down (cos ~ -1), the next episode's first obs is near the bottom again.
    assert (ds.obs["policy"][[500, 1100], 0] < -0.99).all()


def test_a_target_domain_is_recorded_and_changes_the_dynamics():
    sim = collect("pendulum_swingup", 200, num_envs=2, seed=1, **FAST)
    real = collect("pendulum_swingup", 200, num_envs=2, seed=1, real_domain="gravity_2x", **FAST)
    assert sim.meta["domain"] == "sim" and sim.meta["dynamics_shift"] == {}
    assert real.meta["domain"] == "gravity_2x" and real.meta["dynamics_shift"] == {"gravity": 2.0}
    np.testing.assert_array_equal(sim.action, real.action)  # same seed, same random actions
    assert not np.allclose(sim.next_obs["policy"], real.next_obs["policy"])
    custom = collect("pendulum_swingup", 10, num_envs=1, real_domain={"mass": 1.3}, **FAST)
    assert custom.meta["domain"] == "custom" and custom.meta["dynamics_shift"] == {"mass": 1.3}
    named = collect("pendulum_swingup", 10, num_envs=1, real_domain={"gravity": 2.0}, **FAST)
    assert named.meta["domain"] == "gravity_2x"


def test_quality_presets_behave_as_named(pendulum_expert):
    policy = ArtifactPolicy(pendulum_expert)
    kw = dict(num_envs=2, seed=0, **FAST)
    random = collect("pendulum_swingup", 2000, quality="random", **kw)
    expert = collect("pendulum_swingup", 2000, policies=[policy], quality="expert", **kw)
    medium = collect("pendulum_swingup", 2000, policies=[policy], quality="medium", **kw)
    # Whole episodes (2 x 500 steps per env), none cut.
    for ds in (random, expert, medium):
        assert len(ds.episode_returns) == 4 and ds.meta["source"]["cut_episodes"] == 0
    assert random.episode_returns.max() < 20 < 150 < expert.episode_returns.min()
    # Expert actions are exactly the artifact's; medium's differ by ~N(0, 0.1).
    np.testing.assert_allclose(expert.action, np.clip(policy.act(expert.obs["policy"]), -1, 1), atol=1e-6)
    diff = medium.action - policy.act(medium.obs["policy"])
    inside = np.abs(medium.action) < 0.99
    assert 0.08 < diff[inside].std() < 0.12
    assert medium.meta["source"]["quality"] == "medium" and medium.meta["source"]["mixture"][0]["noise_std"] == 0.1
    assert expert.meta["source"]["policies"] == [str(pendulum_expert.resolve())]
    # Random actions cover the action range; the expert's bang-bang-like ones do not fill it.
    assert np.abs(random.action).max() <= 1.0 and random.action.std() > 0.5


def test_medium_replay_mixes_artifacts_noise_and_random(pendulum_run_artifacts):
    pattern = str(pendulum_run_artifacts[0].parent / "it*")
    assert expand_policy_paths(pattern) == [str(p) for p in pendulum_run_artifacts]
    ds = collect("pendulum_swingup", 3000, policies=expand_policy_paths(pattern), quality="medium-replay",
                 num_envs=6, seed=0, **FAST)
    mixture = ds.meta["source"]["mixture"]
    assert mixture[0]["policy"] is None and mixture[0]["weight"] == pytest.approx(0.2)
    assert sorted({(m["policy"], m["noise_std"]) for m in mixture[1:]}) == [
        (p, s) for p in (0, 1) for s in (0.0, 0.1, 0.3)]
    assert np.isclose(sum(m["weight"] for m in mixture), 1.0)
    assert len(ds.meta["source"]["policies"]) == 2
    # Different episodes follow different sources: returns spread widely.
    assert ds.episode_returns.max() - ds.episode_returns.min() > 50


def test_bad_requests_are_refused_with_reasons(pendulum_expert):
    with pytest.raises(ValueError, match="needs a policy artifact"):
        collect("pendulum_swingup", 10, quality="expert", **FAST)
    with pytest.raises(ValueError, match="takes no policy"):
        collect("pendulum_swingup", 10, policies=[pendulum_expert], quality="random", **FAST)
    with pytest.raises(ValueError, match="unknown quality 'great'"):
        quality_sources("great", 1)
    with pytest.raises(ValueError, match=r"takes 3 observations.*task hopper has 11"):
        collect("hopper", 10, policies=[pendulum_expert], quality="expert", **FAST)
    with pytest.raises(KeyError, match="unknown target domain"):
        collect("pendulum_swingup", 10, real_domain="moon", **FAST)
    with pytest.raises(ValueError, match="matches no artifact"):
        expand_policy_paths("/nonexistent/it*")
    assert issubclass(DatasetError, ValueError)
