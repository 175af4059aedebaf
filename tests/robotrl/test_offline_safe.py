"""Offline safe RL baselines (bc_all, bc_safe, cpq), the shared interface and the
bad-input errors of every safe offline algorithm."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robotrl.algos.offline_safe import (ALGOS, BCConfig, CPQConfig, cpq_actor_loss, cpq_reward_backup,
                                        make_offline_safe, reward_normalizer, safe_episode_mask, train_offline,
                                        vae_kl)
from robotrl.datasets.dataset import Dataset

CONF = Path(__file__).resolve().parents[2] / "robotrl" / "conf" / "algo"
TINY = {
    "bc_all": {"hidden": [16, 16]},
    "bc_safe": {"hidden": [16, 16]},
    "cpq": {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "vae_hidden": 16, "batch_size": 32},
    "fisor": {"critic_hidden": [16, 16], "actor_width": 16, "actor_blocks": 1, "time_dim": 8, "cond_hidden": [8, 8],
              "batch_size": 32, "critic_batch_size": 32, "num_samples": 4},
}


def toy_dataset(episode_costs=(0.0, 3.0, 12.0), length=10, obs_dim=3, num_actions=2, seed=0) -> Dataset:
    """Episodes of ``length`` rows whose costs sum to ``episode_costs`` (cost on the
    first rows of each episode)."""
    rng = np.random.default_rng(seed)
    n = length * len(episode_costs)
    cost = np.zeros(n, np.float32)
    for i, c in enumerate(episode_costs):
        cost[i * length: i * length + int(c)] = 1.0
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    trunc = np.zeros(n, bool)
    trunc[length - 1::length] = True
    return Dataset(obs={"policy": obs}, action=rng.uniform(-1, 1, (n, num_actions)).astype(np.float32),
                   reward=rng.normal(size=n).astype(np.float32), cost=cost,
                   next_obs={"policy": np.roll(obs, -1, 0)}, terminated=np.zeros(n, bool), truncated=trunc,
                   meta={"task": "toy"})


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", ["fisor", "bc_safe", "cpq"])
def test_dataset_without_costs_is_refused(name):
    ds = toy_dataset(episode_costs=(0.0, 0.0))
    algo = make_offline_safe(name, TINY[name], 3, 2)
    with pytest.raises(ValueError, match=rf"algo={name} needs a dataset with costs.*all zero"):
        algo.training_data(ds)
    with pytest.raises(ValueError, match=rf"algo={name} needs a dataset with costs"):
        algo.fit_normalization(ds)
    with pytest.raises(ValueError, match=rf"algo={name} needs a dataset with costs"):
        train_offline(algo, ds, 1, progress=False)


def test_bc_all_needs_no_costs():
    ds = toy_dataset(episode_costs=(0.0, 0.0))
    algo = make_offline_safe("bc_all", TINY["bc_all"], 3, 2)
    train_offline(algo, ds, 2, batch_size=8, progress=False)


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_negative_cost_limit_is_refused(name):
    with pytest.raises(ValueError, match=rf"algo={name}: cost_limit must be .*>= 0.*-1"):
        make_offline_safe(name, {"cost_limit": -1.0}, 3, 2)


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_unknown_setting_is_refused(name):
    with pytest.raises(KeyError, match="unknown .* settings \\['not_a_setting'\\]"):
        make_offline_safe(name, {"not_a_setting": 1}, 3, 2)


def test_wrong_dataset_shape_is_refused():
    algo = make_offline_safe("bc_all", TINY["bc_all"], 5, 2)
    with pytest.raises(ValueError, match="built for 5 observations"):
        algo.training_data(toy_dataset())


def test_unknown_algo():
    with pytest.raises(KeyError, match="unknown offline safe algorithm 'bcq'"):
        make_offline_safe("bcq", {}, 3, 2)


# ------------------------------------------------------------- configs
@pytest.mark.parametrize("name", sorted(ALGOS))
def test_yaml_matches_config_defaults(name):
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg.pop("name") == name
    cls, parse = ALGOS[name]()
    assert parse(cfg) == parse({})


# ----------------------------------------------------------------- bc_safe
def test_bc_safe_keeps_whole_episodes_under_the_limit():
    ds = toy_dataset(episode_costs=(0.0, 5.0, 12.0, 2.0))
    mask = safe_episode_mask(ds, 5.0)
    np.testing.assert_array_equal(mask, np.repeat([True, True, False, True], 10))
    algo = make_offline_safe("bc_safe", {**TINY["bc_safe"], "cost_limit": 5.0}, 3, 2)
    data = algo.training_data(ds)
    assert len(data) == 30 and data.episode_costs.tolist() == [0.0, 5.0, 2.0]
    with pytest.raises(ValueError, match="no episode of the dataset has cost <= cost_limit=1"):
        make_offline_safe("bc_safe", {"cost_limit": 1.0}, 3, 2).training_data(toy_dataset((2.0, 3.0)))


def test_bc_all_clones_a_linear_policy():
    rng = np.random.default_rng(0)
    ds = toy_dataset(episode_costs=(1.0,) * 20, obs_dim=2, num_actions=1)
    ds.action[:] = np.tanh(ds.obs["policy"] @ np.array([[0.8], [-0.5]], np.float32))
    algo = make_offline_safe("bc_all", {"hidden": [32, 32], "actor_lr": 3e-3}, 2, 1)
    train_offline(algo, ds, 400, batch_size=64, progress=False)
    x = rng.normal(size=(50, 2)).astype(np.float32).clip(-1.5, 1.5)
    pred = algo.act(x).numpy()
    np.testing.assert_allclose(pred, np.tanh(x @ np.array([[0.8], [-0.5]])), atol=0.1)


# --------------------------------------------------------------- cpq losses
def test_cpq_reward_backup_masks_unsafe_futures():
    target = cpq_reward_backup(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([10.0, 10.0, 10.0]),
                               torch.tensor([2.0, 6.0, 2.0]), torch.tensor([0.0, 0.0, 1.0]), 0.9, q_thres=5.0)
    # safe future: 1 + 0.9 * 10; unsafe future (Q_c 6 > 5): reward only; terminal: reward only
    torch.testing.assert_close(target, torch.tensor([10.0, 1.0, 1.0]))


def test_cpq_actor_loss_counts_only_safe_actions():
    loss = cpq_actor_loss(torch.tensor([4.0, 8.0]), torch.tensor([1.0, 9.0]), q_thres=5.0)
    assert loss.item() == pytest.approx(-2.0)  # -(4 + 0) / 2


def test_vae_kl_hand_values():
    kl = vae_kl(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, math.exp(0.5)]]))
    # dim 1: 0; dim 2: -0.5 (1 + 1 - 1 - e) = 0.5 (e - 1); mean over the 2 dims
    assert kl.item() == pytest.approx(0.25 * (math.e - 1), rel=1e-6)


def test_cpq_threshold_from_cost_limit():
    algo = make_offline_safe("cpq", {**TINY["cpq"], "cost_limit": 10.0, "episode_len": 300}, 3, 2)
    assert algo.q_thres == pytest.approx(10 * (1 - 0.99**300) / 0.01 / 300)
    assert algo.qc_thres == pytest.approx(1.5 * algo.q_thres)
    algo = make_offline_safe("cpq", TINY["cpq"], 3, 2)
    algo.fit_normalization(toy_dataset(length=10))
    assert algo.episode_len == 10


def test_reward_normalizer():
    ds = toy_dataset(episode_costs=(1.0, 1.0), length=10)
    ds.reward[:] = 0.0
    ds.reward[0], ds.reward[10] = 1.0, 5.0
    assert reward_normalizer(ds) == pytest.approx(10 / 4.0)


# ---------------------------------------------------------- the interface
@pytest.mark.parametrize("name", sorted(ALGOS))
def test_interface_round_trip(name, tmp_path):
    torch.set_num_threads(1)
    ds = toy_dataset(episode_costs=(0.0, 3.0, 4.0))
    algo = make_offline_safe(name, TINY[name], 3, 2, action_bound=0.5, seed=1)
    history = train_offline(algo, ds, 3, progress=False, log_every=1)
    assert len(history) == 3 and all(np.isfinite(v) for v in history[-1].values())
    obs = torch.as_tensor(ds.obs["policy"][:5])
    action = algo.act(obs)
    assert action.shape == (5, 2) and action.abs().max() <= 0.5 + 1e-6
    module = algo.inference_module()
    assert module(obs).shape == (5, 2)
    clone = make_offline_safe(name, TINY[name], 3, 2, action_bound=0.5, seed=2)
    path = tmp_path / "ckpt.pt"
    torch.save(algo.state_dict(), path)
    clone.load_state_dict(torch.load(path, weights_only=False))
    if name != "fisor":  # deterministic policies act identically after a reload
        torch.testing.assert_close(clone.act(obs), action)
    assert clone.num_updates == 3
