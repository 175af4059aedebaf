"""``robotrl eval video=true``: an MP4 of the first episodes, linked from eval.md."""
import json

import imageio.v2 as imageio
import numpy as np
import pytest

from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.cli import main
from robotrl.evaluate import VideoSpec, evaluate
from robotrl.export import export_artifact
from robotrl.policies.artifact import ArtifactPolicy
from robotrl.sim import make_env, make_task


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """An untrained cart-pole policy: the video needs a policy file, not a good one."""
    with make_env("cartpole_swingup", 2, seed=0) as env:
        alg = PPO(PPOConfig(), env.obs_sizes, env.num_actions, env.num_envs, seed=0)
        return export_artifact(alg.inference_module(), env.task, env.obs_layout["policy"],
                               tmp_path_factory.mktemp("a") / "artifact")


def test_eval_writes_a_video_linked_from_the_report(artifact, tmp_path):
    args = ["eval", f"policy={artifact}", "task=cartpole_swingup", "+task.config.episode_length_s=0.4",
            "episodes=3", "video=true", "video_episodes=2", "video_width=96", "video_height=64",
            f"out={tmp_path}", "progress=false"]
    assert main(args) == 0
    video = tmp_path / "eval_video.mp4"
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["video"] == str(video)
    reader = imageio.get_reader(video)
    frames = [frame for frame in reader]
    # The reset frame and one per control step (20 steps of 0.02 s), two episodes side by side.
    assert len(frames) == 21
    assert frames[0].shape == (64, 2 * 96, 3)
    assert reader.get_meta_data()["fps"] == pytest.approx(50.0)
    assert np.mean([f.std() for f in frames]) > 5  # pictures, not blank frames
    assert "(eval_video.mp4)" in (tmp_path / "eval.md").read_text()


def test_a_bad_video_camera_fails_before_any_episode(artifact, tmp_path):
    spec = VideoSpec(tmp_path / "v.mp4", camera="no_such_camera")
    with pytest.raises(ValueError, match=r"no camera 'no_such_camera'.*side, track"):
        evaluate(ArtifactPolicy(artifact), make_task("cartpole_swingup"), 2, progress=False, video=spec)
    assert not (tmp_path / "v.mp4").exists()
