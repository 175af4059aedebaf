"""``robotrl dataset collect|info|import``: each takes the Hydra-composed config of
``robotrl/conf/dataset_<verb>.yaml`` (dispatched from ``robotrl.cli``)."""
from __future__ import annotations

from pathlib import Path

from robotrl.datasets.format import load_dataset, save_dataset


def _sim(cfg: dict) -> tuple[str, dict]:
    sim = dict(cfg.get("sim") or {"name": "mujoco"})
    if sim.get("torch_threads"):
        import torch

        torch.set_num_threads(int(sim["torch_threads"]))
    name = sim.pop("name")
    sim.pop("torch_threads", None)
    return name, {k: v for k, v in sim.items() if v is not None}


def collect_cmd(cfg: dict) -> Path:
    from robotrl.datasets.collect import collect, describe, domain_record, expand_policy_paths
    from robotrl.policies.artifact import ArtifactPolicy

    policies = [ArtifactPolicy(p) for p in expand_policy_paths(cfg.get("policy"))]
    task_cfg = cfg.get("task") or {}
    name = task_cfg.get("name") or (policies[0].meta["task"] if policies else None)
    if not name:
        raise ValueError("which task? give task=NAME (or a policy artifact, whose task is the default)")
    sim, sim_kwargs = _sim(cfg)
    randomize = cfg.get("randomize")
    ds = collect(
        name, int(cfg["transitions"]), policies=policies, quality=cfg.get("quality"),
        noise_std=cfg.get("noise_std"), random_fraction=float(cfg.get("random_fraction") or 0.0),
        sim=sim, env_kwargs=sim_kwargs, task_config=task_cfg.get("config"), real_domain=cfg.get("real_domain"),
        num_envs=int(cfg["num_envs"]), seed=int(cfg["seed"]),
        randomize=bool(task_cfg.get("randomize") if randomize is None else randomize), progress=bool(cfg["progress"]),
    )
    out = cfg.get("out")
    if not out:
        domain = ds.meta["domain"] if ds.meta["domain"] != "custom" else domain_record(cfg.get("real_domain"))[0]
        out = Path("datasets") / f"{name.replace('/', '_')}_{domain}_{ds.meta['source']['quality']}.npz"
    path = save_dataset(ds, out)
    print(describe(ds, path))
    return path


def info_cmd(cfg: dict) -> dict:
    from robotrl.datasets.info import dataset_info, format_info, write_info

    path = Path(cfg["path"])
    ds = load_dataset(path)
    info = dataset_info(ds, bins=int(cfg.get("bins") or 20))
    print(format_info(info, path))
    json_path, png_path = write_info(ds, info, path, cfg.get("out"))
    print(f"wrote {json_path} and {png_path}")
    return info


def import_cmd(cfg: dict) -> Path:
    from robotrl.datasets.collect import describe
    from robotrl.datasets.importers import IMPORTERS

    fmt = cfg["format"]
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown dataset format {fmt!r}; available: {', '.join(IMPORTERS)}")
    task_cfg = cfg.get("task") or {}
    ds = IMPORTERS[fmt](
        cfg["source"], task=task_cfg.get("name"), task_config=task_cfg.get("config"),
        env_id=cfg.get("env_id"), domain=cfg.get("domain"),
    )
    path = save_dataset(ds, cfg["out"])
    print(describe(ds, path))
    return path


def import_bag_cmd(cfg: dict) -> Path:
    from robotrl.datasets.bag_cli import import_bag_cmd as run

    return run(cfg)
