"""Artifact export: ONNX equals torch, metadata complete, bad folders rejected."""
import numpy as np
import pytest
import torch
import yaml

from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.export import export_artifact
from robotrl.policies.artifact import ArtifactError, ArtifactPolicy, load_meta
from robotrl.sim import make_env


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with make_env("quadruped_walk", 64, seed=0) as env:
        alg = PPO(PPOConfig(), env.obs_sizes, env.num_actions, env.num_envs, seed=0)
        # Non-trivial normalization statistics and weights.
        obs = env.reset()
        for _ in range(5):
            obs, *_ = env.step(alg.act(obs))
        # Weights that give actions of a trained policy's size (up to a few units),
        # so the comparison is not between near-zero outputs.
        for p in alg.model.actor.parameters():
            p.data.add_(torch.randn_like(p) * 0.05)
        folder = export_artifact(alg.inference_module(), env.task, env.obs_layout["policy"], tmp_path_factory.mktemp("a") / "artifact", {"seed": 0})
        batch = torch.cat([obs["policy"], obs["policy"] * 1.5 + 0.1])
        yield folder, alg, batch, env.task


def test_onnx_equals_torch(exported):
    folder, alg, batch, _ = exported
    with torch.no_grad():
        expected = alg.model.action_mean(batch).numpy()
    got = ArtifactPolicy(folder).act(batch.numpy())
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_metadata_describes_the_robot(exported):
    folder, _, batch, task = exported
    meta = load_meta(folder)
    assert meta["task"] == "quadruped_walk"
    assert meta["control"]["rate_hz"] == pytest.approx(50.0)
    assert [t["name"] for t in meta["observation"]["terms"]][:3] == ["ang_vel", "gravity", "command"]
    assert meta["observation"]["size"] == batch.shape[1]
    assert meta["action"]["joint_names"] == task.action_names and len(task.action_names) == 12
    assert meta["action"]["type"] == "position"
    np.testing.assert_allclose(meta["action"]["default_pose"], task.default_pose)
    assert all(k > 0 for k in meta["pd_gains"]["kp"]) and all(k > 0 for k in meta["pd_gains"]["kd"])
    assert len(meta["limits"]["joint_position"]) == 12
    assert meta["source_revision"]
    assert meta["training"] == {"seed": 0}


def test_artifact_rejects_bad_observations(exported):
    folder, *_ = exported
    policy = ArtifactPolicy(folder)
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros((2, 7), np.float32))
    bad = np.zeros((3, policy.obs_dim), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        policy.act(bad)


def test_broken_artifacts_get_clear_errors(exported, tmp_path):
    folder, *_ = exported
    with pytest.raises(ArtifactError, match="does not exist"):
        load_meta(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "policy.onnx").write_bytes((folder / "policy.onnx").read_bytes())
    with pytest.raises(ArtifactError, match="missing policy.yaml"):
        load_meta(broken)
    meta = yaml.safe_load((folder / "policy.yaml").read_text())
    meta["observation"]["size"] += 1
    (broken / "policy.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ArtifactError, match="observation.size"):
        load_meta(broken)
    meta["observation"]["size"] -= 1
    meta["action"]["scale"] = [0.25]
    (broken / "policy.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ArtifactError, match="action.scale"):
        load_meta(broken)
    (broken / "policy.yaml").write_text((folder / "policy.yaml").read_text())
    (broken / "policy.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="cannot load ONNX"):
        ArtifactPolicy(broken)


def test_artifact_loads_without_torch_or_mujoco(exported):
    """A robot computer runs the artifact with numpy + onnxruntime + yaml only."""
    import subprocess
    import sys

    folder, _, batch, _ = exported
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'mujoco', 'jax'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
from robotrl.policies.artifact import ArtifactPolicy
p = ArtifactPolicy({str(folder)!r})
print(p.act(np.zeros((1, p.obs_dim), np.float32)).shape)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 12)"
