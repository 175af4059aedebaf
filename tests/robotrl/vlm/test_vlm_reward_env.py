"""reward=vlm's env wrapper on real rendered cartpole frames.

The scorer here is a plain pixel statistic of the real frames (how high the
pole's warm colour sits in the image), not a CLIP model: these tests are about
which frame each reward comes from; test_vlm_training.py runs CLIP.
"""
import numpy as np
import pytest
import torch

from robotrl.sim import make_env, make_task
from robotrl.vlm.reward_env import VlmRewardEnv, make_vlm_env


def pole_height(frames: np.ndarray) -> np.ndarray:
    """Mean height (0 bottom .. 1 top) of the warm-coloured pixels: pole and cart."""
    f = frames.astype(np.float32)
    warm = (f[..., 0] - f[..., 2]) > 60
    rows = 1.0 - np.arange(frames.shape[1], dtype=np.float32)[None, :, None] / frames.shape[1]
    return ((warm * rows).sum(axis=(1, 2)) / np.maximum(warm.sum(axis=(1, 2)), 1)).astype(np.float32)


def env(seed=0, n=6):
    return make_env(make_task("cartpole_swingup"), n, seed=seed, nthread=1)


def actions(steps, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, generator=g) * 2 - 1 for _ in range(steps)]


def run(wrapped: VlmRewardEnv, acts):
    rewards, dones = [], []
    wrapped.reset()
    for a in acts:
        _, r, d, _ = wrapped.step(a)
        rewards.append(r.clone())
        dones.append(d.clone())
    late = wrapped.end_rollout()
    wrapped.close()
    return torch.stack(rewards), late, torch.stack(dones)


def test_sync_rewards_score_the_frame_each_step_reached():
    acts = actions(30, 6)
    sync, _, _ = run(VlmRewardEnv(env(), pole_height, {"mode": "sync"}), acts)
    plain = env()
    plain.reset()
    expected = []
    for a in acts:
        plain.step(a)
        expected.append(torch.as_tensor(pole_height(plain.render_frames())))
    plain.close()
    torch.testing.assert_close(sync, torch.stack(expected))
    assert sync.std() > 0  # the frames, and so the scores, changed


def test_async_rewards_arrive_after_the_rollout_aligned_with_their_steps():
    acts = actions(40, 6)
    sync, _, _ = run(VlmRewardEnv(env(), pole_height, {"mode": "sync"}), acts)
    placeholders, late, _ = run(VlmRewardEnv(env(), pole_height, {"mode": "async"}), acts)
    assert torch.count_nonzero(placeholders) == 0
    torch.testing.assert_close(late, sync)


def test_interval_holds_the_last_score_in_both_modes():
    acts = actions(12, 4)
    sync, _, _ = run(VlmRewardEnv(env(n=4), pole_height, {"mode": "sync", "interval": 4}), acts)
    _, late, _ = run(VlmRewardEnv(env(n=4), pole_height, {"mode": "async", "interval": 4}), acts)
    for t in range(12):
        torch.testing.assert_close(sync[t], sync[t - t % 4])
    torch.testing.assert_close(late, sync)


def test_terminal_steps_score_the_terminal_frame_not_the_reset_one():
    task = make_task("cartpole_swingup", {"episode_length_s": 0.1})
    e = make_env(task, 3, seed=0, nthread=1)
    steps = e.max_episode_length
    wrapped = VlmRewardEnv(e, pole_height, {"mode": "sync"})
    wrapped.reset()
    for t in range(steps):
        _, r, d, _ = wrapped.step(torch.ones(3, 1))
    assert d.all()  # the last step ended every episode
    # Pushing right from rest moves the pole: the terminal frame differs from a reset one.
    reset_frames = e.render_frames()  # nothing stepped since: still the terminal state
    torch.testing.assert_close(r, torch.as_tensor(pole_height(reset_frames)))
    wrapped.close()


def pump(obs, g):
    """Swing the pole up by pumping energy (push along the pole's motion), with
    noise: states from hanging to upright, as a learning policy visits them."""
    pole = obs["policy"][:, 2:5]
    push = torch.sign(pole[:, 2] * pole[:, 0])[:, None]
    return (push + 0.5 * torch.randn(push.shape, generator=g)).clamp(-1, 1)


def test_distilled_rewards_follow_the_scorer_after_warmup():
    cfg = {"mode": "distilled", "distill": {"fraction": 0.25, "warmup_frames": 256, "updates_per_rollout": 300}}
    wrapped = VlmRewardEnv(env(n=16), pole_height, cfg)
    obs = wrapped.reset()
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        for _ in range(32):
            obs, *_ = wrapped.step(pump(obs, g))
        wrapped.end_rollout()
    stats = wrapped.stats()
    assert wrapped.distill.ready and stats["frames_scored"] == stats["distill_pairs"] > 256
    # Most steps were not rendered: the scored share is near the configured fraction.
    assert stats["frames_scored"] < 256 + 0.4 * 16 * 8 * 32
    pred, truth = [], []
    for _ in range(30):
        obs, r, d, _ = wrapped.step(pump(obs, g))
        pred.append(r[~d])
        truth.append(torch.as_tensor(pole_height(wrapped.render_frames()))[~d])
    pred, truth = torch.cat(pred), torch.cat(truth)
    assert truth.std() > 0.05  # the states really differ
    corr = torch.corrcoef(torch.stack([pred, truth]))[0, 1]
    assert corr > 0.9, corr
    wrapped.close()


def test_vlm_score_as_cost_leaves_the_reward_alone():
    wrapped = VlmRewardEnv(env(n=4), pole_height, {"mode": "sync", "as_cost": True})
    plain = env(n=4)
    wrapped.reset(), plain.reset()
    a = torch.zeros(4, 1)
    _, r, _, extras = wrapped.step(a)
    _, r0, _, _ = plain.step(a)
    torch.testing.assert_close(r, r0)
    torch.testing.assert_close(extras["cost"], torch.as_tensor(pole_height(plain.render_frames())))
    wrapped.close(), plain.close()


def test_bad_configs_are_clear_errors():
    e = env(n=2)
    with pytest.raises(ValueError, match="vlm.mode"):
        VlmRewardEnv(e, pole_height, {"mode": "eventually"})
    with pytest.raises(ValueError, match="vlm.combine"):
        VlmRewardEnv(e, pole_height, {"combine": "max"})
    with pytest.raises(ValueError, match="as_cost"):
        VlmRewardEnv(e, pole_height, {"mode": "async", "as_cost": True})
    with pytest.raises(ValueError, match="vlm.weights"):
        make_vlm_env(e, make_task("cartpole_swingup"), {"weights": None, "goal": ["x"], "negative": ["y"]})
    e.close()
