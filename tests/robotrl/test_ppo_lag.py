"""PPO-Lagrangian: the multiplier rules, the mixed advantage, the cost channel, the CLI."""
import json

import pytest
import torch

from robotrl.algos.ppo_lag import GradientLagrangian, PIDLagrangian, PPOLag, PPOLagConfig, lagrangian_advantages
from robotrl.cli import main


def test_lagrangian_advantage_by_hand():
    adv_r, adv_c = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    torch.testing.assert_close(lagrangian_advantages(adv_r, adv_c, 0.0), adv_r)
    # lambda = 1: (1 - 3) / 2 = -1 and (-2 - 0.5) / 2 = -1.25
    torch.testing.assert_close(lagrangian_advantages(adv_r, adv_c, 1.0), torch.tensor([-1.0, -1.25]))


def test_gradient_multiplier_rises_over_the_limit_and_stays_nonnegative():
    lag = GradientLagrangian(PPOLagConfig(cost_limit=25.0, lambda_init=0.0, lambda_lr=0.1))
    values = [lag.update(60.0) for _ in range(10)]
    assert values == sorted(values) and values[-1] > 0.5  # Adam: ~lr per step while violating
    for _ in range(50):
        lag.update(0.0)
    assert lag.value == 0.0  # far under the limit it falls to zero, never below


def test_pid_multiplier_integrates_violations_and_damps():
    cfg = PPOLagConfig(cost_limit=10.0, lagrangian="pid", pid_kp=0.1, pid_ki=0.01, pid_kd=0.01, lambda_init=0.0)
    pid = PIDLagrangian(cfg)
    first = pid.update(30.0)
    # I = 0.01 * 20 = 0.2; P = 0.1 * (0.05 * 20) = 0.1; D = 0.01 * (0.05 * 30 - 0) = 0.015
    assert first == pytest.approx(0.2 + 0.1 + 0.015)
    for _ in range(20):
        pid.update(30.0)
    high = pid.value
    for _ in range(200):
        pid.update(0.0)
    assert high > first and pid.value == 0.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="cost_limit must be >= 0"):
        PPOLagConfig(cost_limit=-1.0)
    with pytest.raises(ValueError, match="lagrangian must be"):
        PPOLagConfig(lagrangian="newton")
    with pytest.raises(KeyError, match="unknown PPO settings"):
        PPOLagConfig.from_dict({"cost_limt": 3})


def test_cost_channel_reaches_the_update():
    cfg = PPOLagConfig(num_steps_per_env=8, num_learning_epochs=1, num_minibatches=1, cost_limit=1.0, lambda_init=0.5)
    alg = PPOLag(cfg, {"policy": 3, "critic": 4}, 2, num_envs=4)
    with pytest.raises(ValueError, match="needs the env's costs"):
        alg.act({"policy": torch.zeros(4, 3), "critic": torch.zeros(4, 4)})
        alg.process_step(torch.zeros(4), torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    alg.storage.clear()
    obs = {"policy": torch.randn(4, 3), "critic": torch.randn(4, 4)}
    for t in range(8):
        alg.act(obs)
        done = torch.tensor([t == 7] * 4)
        alg.process_step(torch.ones(4), done, torch.zeros(4, dtype=torch.bool), costs=torch.ones(4))
    alg.compute_returns(obs)
    assert alg.storage.cost_returns.abs().sum() > 0
    out = alg.update()
    assert out["episode_cost"] == 8.0  # every env paid 1 per step for 8 steps
    assert out["lambda"] > 0.5 and "cost_value" in out  # over the limit: the multiplier grew


def test_the_multiplier_follows_the_mean_action_envs_and_ppo_learns_from_the_others():
    cfg = PPOLagConfig(num_steps_per_env=8, num_learning_epochs=1, num_minibatches=1, cost_limit=4.0, lambda_init=0.5,
                       mean_action_fraction=0.25)
    alg = PPOLag(cfg, {"policy": 3, "critic": 4}, 2, num_envs=8)
    assert alg.k == 2 and alg.storage.num_envs == 6
    obs = {"policy": torch.randn(8, 3), "critic": torch.randn(8, 4)}
    # The mean-action envs pay 1 per step, the sampling ones nothing.
    costs = torch.tensor([1.0, 1.0, 0, 0, 0, 0, 0, 0])
    for t in range(8):
        actions = alg.act(obs)
        torch.testing.assert_close(actions[:2], alg.model.distribution(obs["policy"][:2]).mean)
        assert not torch.allclose(actions[2:], alg.model.distribution(obs["policy"][2:]).mean)
        alg.process_step(torch.ones(8), torch.tensor([t == 7] * 8), torch.zeros(8, dtype=torch.bool), costs=costs)
    # Only the learners' rows reached PPO's storage: their actions were sampled.
    torch.testing.assert_close(alg.storage.obs["policy"][0], obs["policy"][2:])
    alg.compute_returns(obs)
    assert alg.storage.costs.abs().sum() == 0
    out = alg.update()
    assert out["episode_cost"] == 8.0 and out["sampled_episode_cost"] == 0.0
    assert out["lambda"] > 0.5  # 8 > 4: the mean action's cost moved it, though the samples cost nothing


def test_rate_estimate_reads_the_rollouts_cost_per_step_times_the_step_limit():
    cfg = PPOLagConfig(num_steps_per_env=8, num_learning_epochs=1, num_minibatches=1, cost_limit=40.0, lambda_init=0.5,
                       mean_action_fraction=0.25, cost_estimate="rate")
    alg = PPOLag(cfg, {"policy": 3, "critic": 4}, 2, num_envs=8)
    obs = {"policy": torch.randn(8, 3), "critic": torch.randn(8, 4)}
    # No episode ends in the rollout; the mean-action envs spend 1 on half their steps.
    for t in range(8):
        alg.act(obs)
        costs = torch.tensor([float(t % 2), float(t % 2), 1, 1, 1, 1, 1, 1])
        alg.process_step(torch.ones(8), torch.zeros(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool), costs=costs)
    alg.compute_returns(obs)
    with pytest.raises(ValueError, match="needs the episode step limit"):
        alg.update()
    alg.episode_steps = 100
    out = alg.update()
    assert out["episode_cost"] == 50.0  # 0.5 per step x 100 steps, against a limit of 40
    assert out["lambda"] > 0.5
    with pytest.raises(ValueError, match="cost_estimate must be"):
        PPOLagConfig(cost_estimate="window")


def test_mean_action_share_must_leave_envs_to_learn_from():
    with pytest.raises(ValueError, match="mean_action_fraction must lie in"):
        PPOLagConfig(mean_action_fraction=1.0)
    with pytest.raises(ValueError, match="leaves none to learn from"):
        PPOLag(PPOLagConfig(mean_action_fraction=0.9), {"policy": 3}, 2, num_envs=2)
    assert PPOLagConfig(mean_action_fraction=0.01).mean_action_envs(16) == 1  # at least one env when > 0


def test_cli_trains_ppo_lag_and_reports_cost(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "task=hopper_velocity", "algo=ppo_lag", "steps=3000", "num_envs=16", f"out={out}",
                 "eval_episodes=2", "progress=false", "algo.num_steps_per_env=16", "sim.nthread=1"])
    assert code == 0
    result = json.loads((out / "eval.json").read_text())
    assert "cost_mean" in result and (out / "artifact" / "policy.onnx").is_file()
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert "lagrangian" in state["algo"] and "cost" in state["history"]
    # Resume continues from the same multiplier state.
    assert main(["train", "task=hopper_velocity", "algo=ppo_lag", "steps=6000", "num_envs=16", f"out={out}",
                 "resume=true", "eval_episodes=1", "progress=false", "algo.num_steps_per_env=16", "sim.nthread=1"]) == 0


@pytest.mark.slow
def test_ppo_lag_keeps_the_cost_under_a_limit_that_ppo_exceeds(tmp_path):
    """hopper_velocity with a 0.3 m/s limit and 25 violating steps allowed per episode.
    Measured (400k steps, seed 0): PPO hops at ~2 m/s for 481 violating steps per
    episode; PPO-Lag learns to stand and balance with cost 0 (return ~1010)."""
    costs = {}
    for algo in ("ppo", "ppo_lag"):
        out = tmp_path / algo
        assert main(["train", "task=hopper_velocity", f"algo={algo}", "steps=400000", f"out={out}", "eval_episodes=8",
                     "progress=false", "+task.config.velocity_limit=0.3", "algo.cost_limit=25" if algo == "ppo_lag" else
                     "seed=0"]) == 0
        costs[algo] = json.loads((out / "eval.json").read_text())["cost_mean"]
    assert costs["ppo"] > 100.0, costs
    assert costs["ppo_lag"] <= 25.0, costs
