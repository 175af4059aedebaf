"""``robotrl <verb> key=value ...``: Hydra-composed configs, one verb per job.

Verbs: ``train``, ``eval``, ``export``. ``robotrl <verb> --cfg`` prints the
composed config without running anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from robotrl.sim import EXTERNAL_SIMS

VERBS = ("train", "eval", "export", "dataset", "shield", "bench", "record", "deploy", "vlm")
DATASET_VERBS = ("collect", "info", "import", "import-bag")
USAGE = """usage: robotrl <verb> [key=value ...]

verbs:
  train   task=NAME algo=ppo|ppo_lag|sac|iql|h2o|uni_o4|fisor|bc_all|bc_safe|cpq [sim=mujoco steps=N seed=S num_envs=N out=DIR
          dataset=PATH real_domain=NAME resume=true reward=state|vlm vlm.weights=DIR vlm.goal=[...] ...]
  eval    policy=ARTIFACT_DIR [task=NAME episodes=N seed=S randomize=false real_domain=NAME out=DIR video=true]
  export  run=RUN_DIR [out=DIR]
  dataset collect task=NAME quality=random|medium|medium-replay|expert [policy=ARTIFACT ...] out=FILE
  dataset info path=FILE
  dataset import format=minari|hdf5 source=... task=NAME out=FILE
  dataset import-bag bag=FILE.mcap task=NAME config=MAPPING.yaml out=FILE.npz
  vlm finetune task=NAME out=DIR [base_model=robotrl-tiny base_weights=PATH frames=N epochs=N seed=S]
          train a small CLIP on the task's renders, for reward=vlm vlm.weights=DIR
  bench   safety [preset=quick|full tasks=[...] seeds=N out=DIR resume=true]   the safety benchmark suite
  shield  policy=ARTIFACT_DIR [dataset=PATH threshold=0.3 out=DIR]   fit a safety shield into a copy of the artifact
  deploy  policy=ARTIFACT_DIR [config=launch/config/deploy.yaml sim_robot=true autostart=true duration=S]
  record  topics=[/joint_states,/imu,...] out=FILE.mcap [duration=S domain_id=N]

Add --cfg to print the composed config and exit.
"""


def external_task_overrides(overrides: list[str]) -> list[str]:
    """``task=HalfCheetah-v5`` names no task file: with an external backend it
    becomes the ``external`` task file carrying that env name."""
    from importlib import resources

    sim = next((o.split("=", 1)[1] for o in overrides if o.startswith("sim=")), None)
    if sim not in EXTERNAL_SIMS:
        return overrides
    known = {p.name.removesuffix(".yaml") for p in resources.files("robotrl.conf").joinpath("task").iterdir()}
    out = []
    for o in overrides:
        if o.startswith("task=") and o.split("=", 1)[1] not in known:
            out += ["task=external", f"task.name={o.split('=', 1)[1]}"]
        else:
            out.append(o)
    return out


def compose(verb: str, overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    overrides = external_task_overrides(list(overrides))

    with initialize_config_module(config_module="robotrl.conf", version_base="1.3"):
        cfg = hydra_compose(config_name=verb, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


# Which runner trains which algorithm ("module:class", imported on use).
RUNNERS = {
    "ppo": "robotrl.runner:OnPolicyRunner",
    "ppo_lag": "robotrl.runner:OnPolicyRunner",
    "sac": "robotrl.offpolicy_runner:OffPolicyRunner",
    "iql": "robotrl.offpolicy_runner:OffPolicyRunner",
    "h2o": "robotrl.offpolicy_runner:OffPolicyRunner",
    "fisor": "robotrl.offpolicy_runner:OffPolicyRunner",
    "bc_all": "robotrl.offpolicy_runner:OffPolicyRunner",
    "bc_safe": "robotrl.offpolicy_runner:OffPolicyRunner",
    "cpq": "robotrl.offpolicy_runner:OffPolicyRunner",
    "uni_o4": "robotrl.uni_o4_runner:UniO4Runner",
}


def runner_class(algo: str):
    import importlib

    if algo not in RUNNERS:
        raise KeyError(f"unknown algorithm {algo!r}; available: {', '.join(RUNNERS)}")
    module, cls = RUNNERS[algo].split(":")
    return getattr(importlib.import_module(module), cls)


def train(cfg: dict) -> dict:
    from robotrl import distributed

    try:
        from robotrl.runner import ON_POLICY

        if cfg.get("reward", "state") != "state" and cfg["algo"]["name"] not in ON_POLICY:
            raise ValueError(f"reward={cfg['reward']} trains with the on-policy algorithms (ppo, ppo_lag), "
                             f"not {cfg['algo']['name']}")
        runner = runner_class(cfg["algo"]["name"])(cfg)
        if distributed.is_main() and distributed.world_size() > 1:
            print(f"data-parallel over {distributed.world_size()} processes, {runner.env.num_envs} envs each")
        try:
            runner.learn(progress=cfg["progress"])
            result = runner.finish(progress=cfg["progress"])
        finally:
            runner.close()
        if distributed.is_main():
            print(f"run directory: {runner.out}")
        return result
    finally:
        distributed.shutdown()


def evaluate_cmd(cfg: dict) -> dict:
    from robotrl.evaluate import VideoSpec, evaluate, format_eval, write_eval
    from robotrl.policies.shield import load_shielded_policy
    from robotrl.report import write_eval_report
    from robotrl.sim import make_task

    # An artifact with a shield section runs inside its shield, as on the robot.
    policy = load_shielded_policy(cfg["policy"], seed=int(cfg["seed"]))
    task_cfg = cfg.get("task") or {}
    name = task_cfg.get("name") or policy.meta["task"]
    sim, sim_kwargs = cfg["sim"]["name"], {k: v for k, v in cfg["sim"].items() if k not in ("name", "torch_threads")}
    trained_sim = policy.meta.get("training", {}).get("sim") or {}
    if sim not in EXTERNAL_SIMS and trained_sim.get("name") in EXTERNAL_SIMS:
        # A policy for another library's env is evaluated on the backend it was trained on.
        sim = trained_sim["name"]
        sim_kwargs = {k: v for k, v in trained_sim.items() if k not in ("name", "torch_threads")}
    from robotrl.sim.domains import domain_task_config

    if cfg.get("real_domain") and sim in EXTERNAL_SIMS:
        raise ValueError(f"real_domain={cfg['real_domain']} shifts robotrl tasks only, not {sim} envs")
    task = name if sim in EXTERNAL_SIMS else make_task(name, domain_task_config(task_cfg.get("config"), cfg.get("real_domain")))
    if name != policy.meta["task"]:
        print(f"note: evaluating a {policy.meta['task']} policy on task {name}")
    out = Path(cfg["out"]) if cfg.get("out") else Path(cfg["policy"]).resolve().parent
    video = None
    if cfg.get("video"):
        video = VideoSpec(out / "eval_video.mp4", int(cfg["video_episodes"]), int(cfg["video_width"]),
                          int(cfg["video_height"]), cfg.get("video_camera"))
    result = evaluate(
        policy, task, int(cfg["episodes"]), seed=int(cfg["seed"]), sim=sim,
        randomize=bool(cfg["randomize"]), progress=cfg["progress"], env_kwargs=sim_kwargs, video=video,
    )
    path = write_eval(result, out)
    report = write_eval_report(result, out, policy=str(cfg["policy"]))
    print(format_eval(result))
    print(f"wrote {path} and {report}" + (f" and {result['video']}" if video else ""))
    return result


def export_cmd(cfg: dict) -> Path:
    from robotrl.run_dir import CHECKPOINT
    from robotrl.checkpoint import CheckpointError
    import yaml

    run = Path(cfg["run"])
    if not (run / "config.yaml").is_file():
        raise CheckpointError(f"{run} is not a run directory (no config.yaml)")
    run_cfg = yaml.safe_load((run / "config.yaml").read_text())
    run_cfg.update(out=str(run), resume=True, num_envs=1)
    runner = runner_class(run_cfg["algo"]["name"])(run_cfg)
    try:
        folder = runner.export(cfg.get("out"))
    finally:
        runner.close()
    print(f"exported {run / CHECKPOINT} -> {folder}")
    return folder


def interruptible() -> None:
    """Ctrl-C (SIGINT) stops a run cleanly, keeping its last checkpoint or a readable
    bag, even when the process inherited SIGINT ignored: a shell script's background
    jobs (``robotrl train ... &``) and pytest-xdist workers' children are started so,
    and Python then leaves it ignored and the run cannot be interrupted."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from robotrl.checkpoint import CheckpointError
    from robotrl.policies.artifact import ArtifactError

    argv = list(sys.argv[1:] if argv is None else argv)
    interruptible()
    if not argv or argv[0] == "help" or {"-h", "--help"} & set(argv):
        print(USAGE)  # also after a verb, where Hydra would take --help for a malformed override
        return 0
    verb, overrides = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"robotrl: unknown verb {verb!r}; available verbs: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    config_name = verb
    if verb == "bench":
        if not overrides or overrides[0] != "safety":
            print("robotrl bench: available suites: safety", file=sys.stderr)
            return 2
        overrides, config_name = overrides[1:], "bench_safety"
    if verb == "dataset":
        sub = overrides[0] if overrides else ""
        if sub not in DATASET_VERBS:
            print(f"robotrl dataset: unknown action {sub!r}; available: {', '.join(DATASET_VERBS)}", file=sys.stderr)
            return 2
        overrides, config_name = overrides[1:], f"dataset_{sub.replace('-', '_')}"
    if verb == "vlm":
        if not overrides or overrides[0] != "finetune":
            print("robotrl vlm: available actions: finetune", file=sys.stderr)
            return 2
        overrides, config_name = overrides[1:], "vlm_finetune"
    show_cfg = "--cfg" in overrides
    overrides = [o for o in overrides if o != "--cfg"]
    try:
        cfg = compose(config_name, overrides)
        if show_cfg:
            print(OmegaConf.to_yaml(cfg))
            return 0
        if verb == "dataset":
            from robotrl.datasets import cli as dataset_cli

            getattr(dataset_cli, f"{sub.replace('-', '_')}_cmd")(cfg)
        elif verb == "deploy":
            from robotrl.real.deploy import deploy_cmd

            return deploy_cmd(cfg)
        elif verb == "record":
            from robotrl.real.recorder import record_cmd

            record_cmd(cfg)
        elif verb == "bench":
            from robotrl.safety.bench import bench_safety_cmd

            bench_safety_cmd(cfg)
        elif verb == "vlm":
            from robotrl.vlm.finetune import finetune_cmd

            finetune_cmd(cfg)
        elif verb == "shield":
            from robotrl.safety.fit_shield import fit_shield_cmd

            fit_shield_cmd(cfg)
        else:
            {"train": train, "eval": evaluate_cmd, "export": export_cmd}[verb](cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"robotrl {verb}: {exc}", file=sys.stderr)
        if "Could not find 'task/" in str(exc):
            print("(a Gymnasium env id or Brax env name needs sim=gymnasium or sim=brax)", file=sys.stderr)
        return 2
    except (CheckpointError, ArtifactError, FileExistsError, FileNotFoundError, ImportError, KeyError,
            ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"robotrl {verb}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"robotrl {verb}: interrupted (the last finished iteration is checkpointed)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
