"""Evaluate a policy on a task: returns, costs, lengths and the task's own metrics."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robotrl.policies.base import Policy
from robotrl.sim import make_env
from robotrl.sim.task import Task


def evaluate(
    policy: Policy,
    task: Task | str,
    num_episodes: int = 16,
    seed: int = 1000,
    sim: str = "mujoco",
    randomize: bool = False,
    progress: bool = True,
    env_kwargs: dict | None = None,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes, one per env in parallel, with the policy's
    deterministic actions. Metrics aggregate per episode as the task declares
    ("mean" ignores NaN steps, "last" takes the final step) and then over episodes.
    ``task`` is a robotrl task, or an env name for the gymnasium/brax backends."""
    kwargs = dict(env_kwargs or {})
    # Evaluation envs are few: one physics thread is plenty (mujoco backend).
    if sim == "mujoco":
        kwargs["nthread"] = 1
    else:
        kwargs.pop("nthread", None)
    env = make_env(task, num_episodes, sim=sim, seed=seed, randomize=randomize, **kwargs)
    try:
        return _run(env, policy, task, num_episodes, progress)
    finally:
        env.close()


def _run(env, policy, task, n, progress) -> dict[str, Any]:
    obs = env.reset()
    policy.reset()
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
