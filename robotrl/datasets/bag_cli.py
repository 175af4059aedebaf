"""``robotrl dataset import-bag``: the Hydra config ``robotrl/conf/dataset_import_bag.yaml``
-> :func:`robotrl.datasets.bag_import.import_bag` -> a saved dataset."""
from __future__ import annotations

from pathlib import Path


def import_bag_cmd(cfg: dict) -> Path:
    from robotrl.datasets.bag_import import import_bag
    from robotrl.datasets.collect import describe
    from robotrl.datasets.format import save_dataset

    task_cfg = cfg.get("task") or {}
    name = task_cfg.get("name") if isinstance(task_cfg, dict) else task_cfg
    if not name:
        raise ValueError("which task? give task=NAME (pendulum_swingup, cartpole_swingup, reach, quadruped_walk)")
    ds = import_bag(cfg["bag"], name, cfg["config"], task_config=task_cfg.get("config") if isinstance(task_cfg, dict) else None,
                    domain=cfg.get("domain"))
    path = save_dataset(ds, cfg["out"])
    print(describe(ds, path))
    src = ds.meta["source"]
    print(f"from {src['reference_messages']} reference messages: {len(ds.episode_ends)} episodes, "
          f"{src['gaps']} gaps, {src['resets']} resets, {src['dropped']['stale_rows']} stale rows dropped; "
          f"reward {'computed' if ds.meta['reward_computed'] else 'NOT computed (stored as 0)'}")
    return path
