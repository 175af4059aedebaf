"""The background scoring worker and the learner's deferred-reward path."""
import threading
import time

import numpy as np
import pytest
import torch

from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.vlm.distill import DistillConfig, DistilledReward
from robotrl.vlm.worker import ScoringWorker


def stamped(step: int, n: int = 4) -> np.ndarray:
    """Frames whose pixels say which step and env they belong to."""
    frames = np.zeros((n, 8, 8, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = step
    frames[:, 0, 0, 1] = np.arange(n)
    return frames


def slow_score(frames: np.ndarray) -> np.ndarray:
    time.sleep(0.002 * (1 + frames[0, 0, 0, 0] % 3))  # uneven latency
    return frames[:, 0, 0, 0].astype(np.float32) * 100 + frames[:, 0, 0, 1]


def test_results_come_back_under_their_step_in_order():
    with ScoringWorker(slow_score) as w:
        for step in range(20):
            w.submit(step, stamped(step))
        got = w.wait_all(timeout=10)
    assert [k for k, _ in got] == list(range(20))
    for step, scores in got:
        np.testing.assert_array_equal(scores, step * 100 + np.arange(4))


def test_ready_returns_only_finished_results_in_submission_order():
    gate = threading.Event()

    def gated(frames):
        if frames[0, 0, 0, 0] == 1:
            gate.wait(5)
        return frames[:, 0, 0, 0].astype(np.float32)

    with ScoringWorker(gated) as w:
        for step in range(3):
            w.submit(step, stamped(step))
        time.sleep(0.05)
        assert [k for k, _ in w.ready()] == [0]  # 1 blocks, so 2 must wait behind it
        gate.set()
        assert [k for k, _ in w.wait_all(timeout=5)] == [1, 2]
        assert w.pending == 0


def test_scorer_errors_reach_the_caller():
    def broken(frames):
        raise FloatingPointError("encoder produced NaN")

    with ScoringWorker(broken) as w:
        w.submit(0, stamped(0))
        with pytest.raises(RuntimeError, match="encoder produced NaN"):
            w.wait(0, timeout=5)
        with pytest.raises(RuntimeError):
            w.submit(1, stamped(1))


def test_wrong_score_shape_and_reused_keys_are_errors():
    with ScoringWorker(lambda f: np.zeros(len(f) + 1)) as w:
        w.submit("a", stamped(0))
        with pytest.raises(RuntimeError, match="shape"):
            w.wait("a", timeout=5)
    with ScoringWorker(slow_score) as w:
        w.submit(0, stamped(0))
        with pytest.raises(KeyError, match="already submitted"):
            w.submit(0, stamped(0))
        with pytest.raises(KeyError, match="never submitted"):
            w.wait(7)


def _rollout(cfg, rewards, dones, time_outs, defer: bool):
    torch.manual_seed(0)  # the networks' initial weights come from the global RNG
    ppo = PPO(cfg, {"policy": 5, "critic": 7}, 2, 3, seed=0)
    ppo.defer_rewards = defer
    g = torch.Generator().manual_seed(1)
    for t in range(len(rewards)):
        obs = {"policy": torch.randn(3, 5, generator=g), "critic": torch.randn(3, 7, generator=g)}
        ppo.act(obs)
        ppo.process_step(torch.zeros(3) if defer else rewards[t], dones[t], time_outs[t])
    if defer:
        ppo.rewrite_rewards(rewards)
    return ppo.storage.rewards.clone(), ppo.return_norm.std.clone()


def test_deferred_rewards_shape_exactly_like_immediate_ones():
    cfg = PPOConfig.from_dict({"num_steps_per_env": 6, "normalize_reward": True})
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(6, 3, generator=g) * 5
    dones = torch.zeros(6, 3, dtype=torch.bool)
    dones[2, 1] = dones[4, 0] = True
    time_outs = torch.zeros(6, 3, dtype=torch.bool)
    time_outs[4, 0] = True
    now = _rollout(cfg, rewards, dones, time_outs, False)
    later = _rollout(cfg, rewards, dones, time_outs, True)
    torch.testing.assert_close(later[0], now[0])
    torch.testing.assert_close(later[1], now[1])
    with pytest.raises(ValueError, match="shape"):
        PPO(cfg, {"policy": 5, "critic": 7}, 2, 3, seed=0).rewrite_rewards(torch.zeros(2, 3))


def test_distilled_reward_model_learns_a_state_function():
    model = DistilledReward(3, DistillConfig(warmup_frames=100, updates_per_rollout=300), seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(256, 3, generator=g)
        model.add(x, torch.cos(x[:, 0]).numpy())
    assert model.ready
    first = model.fit(10)
    last = model.fit()
    x = torch.randn(512, 3, generator=g)
    err = torch.mean((model.predict(x) - torch.cos(x[:, 0])) ** 2).item()
    assert last < first and err < 0.02, (first, last, err)
    with pytest.raises(KeyError, match="unknown vlm.distill keys"):
        DistillConfig.from_dict({"fractoin": 0.1})
    with pytest.raises(ValueError, match="fraction"):
        DistillConfig.from_dict({"fraction": 0})
