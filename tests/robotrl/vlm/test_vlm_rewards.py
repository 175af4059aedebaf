"""The reward formulas of ALGORITHMS.md ("VLM-derived rewards") on vectors worked by hand."""
import math

import numpy as np
import pytest
import torch

from robotrl.vlm.rewards import (VlmReward, combine, contrasting_goal, cosine, goal_baseline, mean_direction,
                                 safety_cost, to_unit_interval)


def unit(*v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_cosine_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    np.testing.assert_allclose(cosine(x, [1.0, 0.0]), [1.0, 0.0, 0.6])


def test_several_prompts_are_their_renormalized_mean():
    np.testing.assert_allclose(mean_direction(np.array([[1.0, 0.0], [0.0, 1.0]])), [math.sqrt(0.5)] * 2)
    np.testing.assert_allclose(cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])), [math.sqrt(0.5)])


def test_contrasting_goal_by_hand():
    pos, neg = [1.0, 0.0], [0.0, 1.0]
    # z = cos(x, neg) - cos(x, pos): -0.2, 0.2 and 0.1.
    x = np.array([[0.8, 0.6], [0.6, 0.8], unit(0.7, 0.8)])
    z3 = (0.8 - 0.7) / math.hypot(0.7, 0.8)
    np.testing.assert_allclose(contrasting_goal(x, pos, neg, delta=0.4), [1.0, 0.5, 1 - z3 / 0.4])
    # The default delta (0.03) is all but a step: closer to the goal -> 1, else 0.
    np.testing.assert_allclose(contrasting_goal(x, pos, neg), [1.0, 0.0, 0.0])


def test_goal_baseline_by_hand():
    g, b, x = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], np.array([[0.0, 0.0, 1.0]])
    # y = x - g = (-1, 0, 1), d = g - b = (1, -1, 0): y.d = -1, |d|^2 = 2, so the
    # part along d is (-0.5, 0.5, 0) (|.|^2 = 0.5) and |y|^2 = 2.
    np.testing.assert_allclose(goal_baseline(x, g, b, 1.0), [1 - 0.5 * 0.5])
    np.testing.assert_allclose(goal_baseline(x, g, b, 0.0), [1 - 0.5 * 2])
    # alpha 0.5: yP = (-0.75, 0.25, 0.5), |yP|^2 = 0.875.
    np.testing.assert_allclose(goal_baseline(x, g, b, 0.5), [1 - 0.5 * 0.875])


def test_goal_baseline_matches_the_projection_matrix_and_alpha0_is_similarity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g, b = unit(*rng.normal(size=8)), unit(*rng.normal(size=8))
    d = g - b
    for alpha in (0.0, 0.3, 1.0):
        P = alpha * np.outer(d, d) / d.dot(d) + (1 - alpha) * np.eye(8)
        expect = 1 - 0.5 * np.sum(((x - g) @ P) ** 2, axis=1)
        np.testing.assert_allclose(goal_baseline(x, g, b, alpha), expect, atol=1e-12)
    np.testing.assert_allclose(goal_baseline(x, g, b, 0.0), 1 - 0.5 * np.sum((x - g) ** 2, axis=1), atol=1e-12)
    np.testing.assert_allclose(goal_baseline(x, g, b, 0.0), cosine(x, g), atol=1e-12)


def test_numpy_in_numpy_out_torch_in_torch_out():
    x = np.array([[0.6, 0.8]])
    assert isinstance(contrasting_goal(x, [1.0, 0.0], [0.0, 1.0]), np.ndarray)
    out = goal_baseline(torch.tensor(x, dtype=torch.float32), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_safety_cost_and_unit_interval():
    unsafe, safe = [1.0, 0.0], [0.0, 1.0]
    x = np.array([[0.8, 0.6], [0.6, 0.8]])  # nearer the unsafe prompt, then nearer the safe one
    np.testing.assert_allclose(safety_cost(x, unsafe, safe), [1.0, 0.0])
    np.testing.assert_allclose(to_unit_interval(np.array([-1.0, 0.0, 1.0]), "cosine"), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(to_unit_interval(np.array([0.25]), "contrasting"), [0.25])


def test_combine_modes():
    vlm, state = np.array([0.0, 0.5, 1.0]), np.array([2.0, 2.0, 2.0])
    np.testing.assert_allclose(combine(vlm, state, "sum", weight=2.0), [2.0, 3.0, 4.0])
    np.testing.assert_allclose(combine(vlm, state, "product"), [0.0, 1.0, 2.0])
    np.testing.assert_allclose(combine(vlm, state, "product", weight=0.5), [1.0, 1.5, 2.0])
    np.testing.assert_allclose(combine(vlm, state, "gate", threshold=0.5), [0.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="unknown combine mode"):
        combine(vlm, state, "max")


def test_bad_parameters():
    x = np.array([[1.0, 0.0]])
    with pytest.raises(ValueError, match="alpha"):
        goal_baseline(x, [1.0, 0.0], [0.0, 1.0], 1.5)
    with pytest.raises(ValueError, match="delta"):
        contrasting_goal(x, [1.0, 0.0], [0.0, 1.0], 0.0)
    with pytest.raises(ValueError, match="same embedding"):
        goal_baseline(x, [1.0, 0.0], [1.0, 0.0], 0.5)


@pytest.mark.parametrize("config, match", [
    ({"kind": "clip", "goal": ["a"], "negative": ["b"]}, "unknown VLM reward kind"),
    ({"kind": "contrasting", "goal": [], "negative": ["b"]}, "vlm.goal"),
    ({"kind": "contrasting", "goal": ["a"]}, "vlm.negative"),
    ({"kind": "goal_baseline", "goal": ["a"], "baseline": [" "]}, "non-empty"),
    ({"kind": "goal_baseline", "goal": ["a"], "baseline": ["b"], "alpha": 1.5}, "alpha"),
    ({"kind": "contrasting", "goal": ["a"], "negative": ["b"], "delta": 0}, "delta"),
])
def test_vlm_reward_config_errors(config, match):
    with pytest.raises(ValueError, match=match):
        VlmReward({**config, "model": "robotrl-tiny", "weights": "/nonexistent"})


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from safetensors.torch import save_file

    from robotrl.vlm.encoders import build_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _ = build_clip("robotrl-tiny", None)
    path = tmp_path_factory.mktemp("vlm") / "tiny.safetensors"
    save_file(model.state_dict(), str(path))
    return path


@pytest.mark.parametrize("kind", ["contrasting", "goal_baseline", "cosine"])
def test_vlm_reward_scores_frames(tiny_weights, kind):
    reward = VlmReward({"kind": kind, "goal": "a pole standing upright", "negative": ["a pole hanging down"],
                        "baseline": ["a pole"], "alpha": 0.5, "delta": 0.03,
                        "model": "robotrl-tiny", "weights": str(tiny_weights), "device": "cpu"})
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    r = reward(frames)
    assert r.shape == (3,) and r.dtype == np.float32
    x = reward.encoder.encode_images(frames)
    np.testing.assert_allclose(r, reward.score_embeddings(x).numpy(), rtol=1e-6)
    lo, hi = (0.0, 1.0) if kind == "contrasting" else (-1.0, 1.0)
    assert np.all((r >= lo - 1e-6) & (r <= hi + 1e-6))
