"""Evaluate a policy on a task: returns, costs, lengths and the task's own metrics,
and optionally a video of the first episodes."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robotrl.policies.base import Policy
from robotrl.sim import make_env
from robotrl.sim.render import render_config
from robotrl.sim.task import Task, deep_update


@dataclass(frozen=True)
class VideoSpec:
    """A video of the first ``episodes`` evaluation episodes, tiled side by side,
    played at the task's control rate. ``camera`` None is the task's render camera."""

    path: Path  # .mp4; .gif when imageio-ffmpeg is missing
    episodes: int = 4
    width: int = 320  # per episode
    height: int = 240
    camera: str | None = None


def evaluate(
    policy: Policy,
    task: Task | str,
    num_episodes: int = 16,
    seed: int = 1000,
    sim: str = "mujoco",
    randomize: bool = False,
    progress: bool = True,
    env_kwargs: dict | None = None,
    video: VideoSpec | None = None,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes, one per env in parallel, with the policy's
    deterministic actions. Metrics aggregate per episode as the task declares
    ("mean" ignores NaN steps, "last" takes the final step) and then over episodes.
    ``task`` is a robotrl task, or an env name for the gymnasium/brax backends.
    With ``video``, the result's ``video`` is the path of the file written."""
    if video is not None:
        if isinstance(task, str):
            raise ValueError(f"video renders robotrl tasks; the {sim} env {task!r} has no renderer")
        task = _video_task(task, video)
    kwargs = dict(env_kwargs or {})
    # Evaluation envs are few: one physics thread is plenty (mujoco backend).
    if sim == "mujoco":
        kwargs["nthread"] = 1
    else:
        kwargs.pop("nthread", None)
    env = make_env(task, num_episodes, sim=sim, seed=seed, randomize=randomize, **kwargs)
    recorder = None
    try:
        if video is not None:
            recorder = _VideoRecorder(env, video, fps=1.0 / float(task.config["control_dt"]))
        result = _run(env, policy, task, num_episodes, progress, recorder)
        if recorder is not None:
            result["video"] = str(recorder.path)
        return result
    finally:
        if recorder is not None:
            recorder.close()
        env.close()


def _video_task(task: Task, video: VideoSpec) -> Task:
    """The same task with its frames at the video's size (and camera)."""
    render = {"width": int(video.width), "height": int(video.height)}
    if video.camera:
        render["camera"] = video.camera
    out = type(task)(deep_update(task.config, {"render": render}))
    render_config(out)  # a bad camera or size fails before any episode runs
    return out


class _VideoRecorder:
    """Streams a grid of the first episodes' frames to a video file, one frame per
    control step. An episode that ended keeps its last frame, dimmed."""

    def __init__(self, env, video: VideoSpec, fps: float):
        if video.episodes < 1:
            raise ValueError(f"video episodes must be >= 1, got {video.episodes}")
        self.env = env
        self.count = min(int(video.episodes), env.num_envs)
        self.cols = math.ceil(math.sqrt(self.count))
        self.rows = math.ceil(self.count / self.cols)
        self.last: np.ndarray | None = None
        self.writer, self.path = _open_writer(Path(video.path), fps)

    def add(self, live: np.ndarray) -> None:
        """A frame of the states the last step reached; ``live`` marks the recorded
        episodes that were still running in it."""
        live = np.asarray(live[: self.count], dtype=bool)
        if self.last is not None and not live.any():
            return
        frames = self.env.render_frames(np.arange(self.count))
        if self.last is None:
            self.last = frames
        self.last = np.where(live[:, None, None, None], frames, self.last)
        shown = np.where(live[:, None, None, None], self.last, self.last // 2)
        n, h, w, c = shown.shape
        grid = np.zeros((self.rows * self.cols, h, w, c), dtype=np.uint8)
        grid[:n] = shown
        grid = grid.reshape(self.rows, self.cols, h, w, c).transpose(0, 2, 1, 3, 4)
        self.writer.append_data(grid.reshape(self.rows * h, self.cols * w, c))

    def close(self) -> None:
        self.writer.close()


def _open_writer(path: Path, fps: float):
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        path = path.with_suffix(".gif")
        return imageio.get_writer(path, mode="I", duration=1000.0 / fps, loop=0), path
    path = path.with_suffix(".mp4")
    # libx264's yuv420p needs even sizes; macro_block_size=2 scales odd ones by a pixel.
    writer = imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=2, ffmpeg_log_level="error")
    return writer, path


def _run(env, policy, task, n, progress, recorder: _VideoRecorder | None = None) -> dict[str, Any]:
    obs = env.reset()
    policy.reset()
    if recorder is not None:
        recorder.add(np.ones(n, dtype=bool))
    ret, cost, length = np.zeros(n), np.zeros(n), np.zeros(n, dtype=int)
    # Steps with a positive cost, and (for a shielded policy) steps the shield overrode.
    violations, interventions = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    shielded = hasattr(policy, "last_intervened")
    fell = np.zeros(n, dtype=bool)
    running = np.ones(n, dtype=bool)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    last: dict[str, np.ndarray] = {}
    name = task if isinstance(task, str) else task.name
    bar = tqdm(total=env.max_episode_length, desc=f"eval {name}", disable=not progress, leave=False)
    while running.any():
        action = policy.act(obs["policy"])
        obs, reward, done, extras = env.step(torch.as_tensor(np.asarray(action)))
        r, c, d = reward.numpy(), extras["cost"].numpy(), done.numpy()
        ret += np.where(running, r, 0.0)
        cost += np.where(running, c, 0.0)
        violations += running & (c > 0)
        if shielded:
            interventions += running & policy.last_intervened
        length += running
        for name, value in extras["metrics"].items():
            finite = np.isfinite(value) & running
            sums.setdefault(name, np.zeros(n))
            counts.setdefault(name, np.zeros(n))
            sums[name] += np.where(finite, value, 0.0)
            counts[name] += finite
            last[name] = np.where(running, value, last.get(name, value))
        fell |= running & d & extras["terminated"].numpy()
        if recorder is not None:
            recorder.add(running)
        running &= ~d
        bar.update(1)
    bar.close()

    metrics = {}
    for name in sums:
        how = getattr(task, "metric_aggregation", {}).get(name, "mean")
        per_episode = last[name] if how == "last" else sums[name] / np.maximum(counts[name], 1)
        metrics[name] = float(np.mean(per_episode))
    if getattr(task, "termination_is_fall", False):
        metrics["falls"] = int(fell.sum())
    result = {
        "task": task if isinstance(task, str) else task.name,
        "episodes": int(n),
        "return_mean": float(ret.mean()),
        "return_std": float(ret.std()),
        "cost_mean": float(cost.mean()),
        "cost_std": float(cost.std()),
        "length_mean": float(length.mean()),
        "length_std": float(length.std()),
        "violations_mean": float(violations.mean()),
        "metrics": metrics,
    }
    if shielded:
        result["interventions_mean"] = float(interventions.mean())
        result["intervention_rate"] = float(interventions.sum() / max(length.sum(), 1))
    return result


def write_eval(result: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def format_eval(result: dict) -> str:
    lines = [
        f"task {result['task']}: {result['episodes']} episodes",
        f"  return {result['return_mean']:.2f} ± {result['return_std']:.2f}",
        f"  cost   {result['cost_mean']:.2f} ± {result['cost_std']:.2f}",
        f"  length {result['length_mean']:.1f} ± {result['length_std']:.1f}",
    ]
    if "interventions_mean" in result:
        lines.append(f"  shield interventions {result['interventions_mean']:.1f} per episode "
                     f"({100 * result['intervention_rate']:.1f}% of steps)")
    for k, v in result["metrics"].items():
        lines.append(f"  {k} {v:.3f}" if isinstance(v, float) else f"  {k} {v}")
    return "\n".join(lines)
