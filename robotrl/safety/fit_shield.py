"""``robotrl shield``: fit the safety critic of an artifact's policy, write the
shielded artifact, and measure what the shield changes."""
from __future__ import annotations

import json
from pathlib import Path

from robotrl.datasets import collect, load_dataset
from robotrl.evaluate import evaluate
from robotrl.policies.artifact import ArtifactPolicy
from robotrl.policies.shield import Shield, load_shielded_policy
from robotrl.safety.critic import CandidateExplorer, SafetyCriticConfig, export_shield, fit_safety_critic
from robotrl.sim import make_env, make_task


def fit_shield_cmd(cfg: dict) -> dict:
    artifact = Path(cfg["policy"])
    policy = ArtifactPolicy(artifact)
    name = (cfg.get("task") or {}).get("name") or policy.meta["task"]
    task = make_task(name, (cfg.get("task") or {}).get("config") or {})
    with make_env(task, 1) as env:
        if [tuple(t) for t in env.obs_layout["policy"]] != policy.obs_layout:
            raise ValueError(f"artifact {artifact} reads observations {policy.obs_layout}, task {name} gives "
                             f"{env.obs_layout['policy']}")
    shield_kwargs = {"num_candidates": int(cfg["candidates"]), "noise_std": float(cfg["candidate_std"]),
                     "action_clip": float(policy.meta["action"]["clip"]),
                     "wide_fraction": float(cfg["wide_fraction"])}
    if cfg.get("dataset"):
        data = load_dataset(cfg["dataset"], task=task)
        source = {"dataset": str(Path(cfg["dataset"]).resolve())}
    else:
        # The rollouts show the shield's candidate actions, so the critic has seen
        # what it will be asked to judge.
        behaviour = CandidateExplorer(policy, shield_kwargs, float(cfg["explore"]), seed=int(cfg["seed"]))
        data = collect(task, int(cfg["transitions"]), policies=[behaviour], noise_std=float(cfg["noise_std"]),
                       random_fraction=float(cfg["random_fraction"]), num_envs=int(cfg["num_envs"]),
                       seed=int(cfg["seed"]), progress=cfg["progress"])
        source = {"rollouts": len(data), "noise_std": float(cfg["noise_std"]),
                  "random_fraction": float(cfg["random_fraction"]), "explore": float(cfg["explore"])}
    critic_cfg = SafetyCriticConfig.from_dict(cfg.get("critic") or {})
    # The "safest" backup chooses among the shield's own candidates.
    backup = Shield(policy, None, 0.0, seed=int(cfg["seed"]),
                    **{**shield_kwargs, "num_candidates": critic_cfg.backup_samples + 1})
    critic = fit_safety_critic(data, policy, critic_cfg, seed=int(cfg["seed"]), progress=cfg["progress"],
                               candidates=backup.candidates)
    out = Path(cfg["out"]) if cfg.get("out") else artifact.with_name(artifact.name + "_shielded")
    folder = export_shield(critic, artifact, float(cfg["threshold"]), int(cfg["candidates"]),
                           float(cfg["candidate_std"]), out=out, wide_fraction=float(cfg["wide_fraction"]),
                           fit_info={**source, "gamma_risk": critic_cfg.gamma_risk, "steps": critic_cfg.steps})
    episodes, seed = int(cfg["eval_episodes"]), int(cfg["seed"]) + 10_000
    plain = evaluate(policy, task, episodes, seed=seed, progress=cfg["progress"])
    shielded = evaluate(load_shielded_policy(folder, seed=int(cfg["seed"])), task, episodes, seed=seed,
                        progress=cfg["progress"])
    summary = {
        "artifact": str(folder),
        "task": name,
        "unshielded": plain,
        "shielded": shielded,
        # The two figures the safety targets speak of.
        "violation_reduction": 1.0 - shielded["violations_mean"] / max(plain["violations_mean"], 1e-9),
        "return_loss": 1.0 - shielded["return_mean"] / plain["return_mean"] if plain["return_mean"] else None,
    }
    (folder / "shield.json").write_text(json.dumps(summary, indent=2))
    print(format_shield(summary))
    return summary


def format_shield(s: dict) -> str:
    p, q = s["unshielded"], s["shielded"]
    lines = [
        f"shielded artifact: {s['artifact']} (task {s['task']}, {p['episodes']} episodes each)",
        "| policy | return | cost | violations/episode | interventions/episode |",
        "|---|---|---|---|---|",
        f"| unshielded | {p['return_mean']:.1f} | {p['cost_mean']:.1f} | {p['violations_mean']:.1f} | - |",
        f"| shielded | {q['return_mean']:.1f} | {q['cost_mean']:.1f} | {q['violations_mean']:.1f} | "
        f"{q.get('interventions_mean', 0):.1f} |",
        f"violations {100 * s['violation_reduction']:.0f}% fewer"
        + (f", return {100 * s['return_loss']:.0f}% lower" if s["return_loss"] is not None else ""),
    ]
    return "\n".join(lines)
