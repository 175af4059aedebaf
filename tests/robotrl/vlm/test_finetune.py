"""Captions from state, and `robotrl vlm finetune` end to end: a small CLIP trained on
cartpole renders must classify held-out frames and give a reward that follows the pole."""
import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from robotrl.cli import main
from robotrl.vlm.captions import caption, caption_spec
from robotrl.vlm.finetune import FinetuneConfig, finetune, spearman


def test_cartpole_captions_follow_the_pole_angle():
    qpos = np.array([[0.0, 0.1], [1.0, -0.8], [0.0, 1.6], [0.0, 2.3], [-1.0, -3.1], [0.0, 2 * math.pi - 0.05]])
    assert caption("cartpole_swingup", qpos) == [
        "a pole standing upright", "a pole tilted up", "a horizontal pole", "a pole tilted down",
        "a pole hanging down", "a pole standing upright"]
    spec = caption_spec("cartpole_swingup")
    phrased = caption("cartpole_swingup", qpos[:1], rng=np.random.default_rng(0))[0]
    assert phrased in spec.classes[0]
    targets = spec.targets(qpos)
    np.testing.assert_allclose(targets.sum(1), 1.0)
    np.testing.assert_array_equal(targets.argmax(1), spec.label(qpos))


def test_unknown_task_lists_the_captioned_ones():
    with pytest.raises(KeyError, match="cartpole_swingup, pendulum_swingup, quadruped_walk"):
        caption_spec("reach")


def test_spearman_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties take their mean rank: ranks (1.5, 1.5, 3.5, 3.5) against (1, 2, 3, 4).
    assert spearman([0, 0, 1, 1], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1.5, 1.5, 3.5, 3.5], [1, 2, 3, 4])[0, 1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vlm") / "cartpole"
    summary = finetune(FinetuneConfig(task="cartpole_swingup", out=str(out), frames=1000, epochs=10,
                                      check_states=256, progress=False))
    return out, summary


def test_finetune_learns_captions_and_an_informative_reward(trained):
    out, s = trained
    # Seeds 0-4 at this size: accuracy 0.86-0.95 (chance ~0.28), Spearman >= 0.997.
    assert s["holdout_accuracy"] > s["chance"] + 0.4, s
    rho = s["reward_check"]["spearman"]
    assert rho["goal_baseline_alpha0.5"] > 0.95, rho
    assert rho["contrast"] > 0.95, rho
    assert json.loads((out / "summary.json").read_text())["holdout_accuracy"] == s["holdout_accuracy"]
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_the_folder_loads_back_as_a_reward(trained):
    from robotrl.sim import make_task
    from robotrl.sim.render import BatchRenderer, render_config
    from robotrl.vlm.encoders import ClipEncoder
    from robotrl.vlm.rewards import VlmReward

    out, _ = trained
    reward = VlmReward({"kind": "goal_baseline", "goal": ["a pole standing upright"],
                        "baseline": ["a pole hanging down"], "alpha": 0.5, "weights": str(out)})
    task = make_task("cartpole_swingup")
    renderer = BatchRenderer(task.model, render_config(task))
    angles = np.linspace(0.0, math.pi, 7)  # upright -> hanging
    r = reward(renderer.render(np.stack([np.zeros(7), angles], axis=1)))
    renderer.close()
    assert r[0] > r[3] > r[-1], r
    with pytest.raises(ValueError, match="holds a fine-tuned 'robotrl-tiny' model, not 'ViT-B-32'"):
        ClipEncoder("ViT-B-32", out)


def test_cli_is_deterministic_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["vlm", "finetune", "task=cartpole_swingup", "frames=64", "epochs=1", "check_states=16", "progress=false"]
    assert main(args + [f"out={tmp_path / 'a'}"]) == 0
    assert main(args + [f"out={tmp_path / 'b'}"]) == 0
    a, b = load_file(str(tmp_path / "a" / "open_clip_model.safetensors")), \
        load_file(str(tmp_path / "b" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert main(args + [f"out={tmp_path / 'a'}"]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(args + [f"out={tmp_path / 'a'}", "overwrite=true", "seed=1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert main(["vlm", "finetune", "task=reach", f"out={tmp_path / 'c'}"]) == 1
    assert "tasks with captions" in capsys.readouterr().err
    assert main(["vlm", "finetune", "task=cartpole_swingup"]) == 1
    assert "give task=NAME and out=DIR" in capsys.readouterr().err


def test_torch_threads_fixes_the_weights_whatever_the_callers_thread_count(tmp_path, capsys):
    import torch

    args = ["vlm", "finetune", "task=cartpole_swingup", "frames=64", "epochs=1", "check_states=16", "progress=false",
            "torch_threads=1"]
    before = torch.get_num_threads()
    weights = []
    try:
        for n, callers in enumerate((1, 2)):
            torch.set_num_threads(callers)
            assert main(args + [f"out={tmp_path / str(n)}"]) == 0
            assert torch.get_num_threads() == callers  # given back
            weights.append(load_file(str(tmp_path / str(n) / "open_clip_model.safetensors")))
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert json.loads((tmp_path / "0" / "summary.json").read_text())["training"]["torch_threads"] == 1
    assert main(args[:-1] + ["torch_threads=0", f"out={tmp_path / 'bad'}"]) == 1
    assert "torch_threads must be >= 1" in capsys.readouterr().err
