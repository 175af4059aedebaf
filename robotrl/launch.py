"""``robotrl-launch``: ``robotrl train`` as a ``@hydra.main`` app, so Hydra's
multirun (``-m``) and launcher plugins can run it, e.g. on SLURM through the
submitit launcher (the ``cluster`` extra)::

    robotrl-launch task=hopper                          # one run, like `robotrl train`
    robotrl-launch -m task=hopper seed=0,1,2            # a sweep, one job per seed
    robotrl-launch -m hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node=8 ...

The config is ``conf/launch.yaml``: ``train.yaml`` plus where Hydra puts its own
files. A single run goes to ``out`` as with ``robotrl train`` (Hydra's ``.hydra/``
and log inside it); in a sweep, a job without an explicit ``out=`` runs in its
own numbered folder of the sweep directory, so jobs never share a run directory.
A job of several SLURM tasks trains one policy data-parallel over them
(``robotrl.distributed``).
"""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from robotrl.cli import external_task_overrides, train


def _sets_out(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") == "out"


@hydra.main(config_path="conf", config_name="launch", version_base="1.3")
def launch(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    if hydra_cfg.mode == RunMode.MULTIRUN and not any(_sets_out(o) for o in hydra_cfg.overrides.task):
        # Jobs of a sweep may share task, algo and seed (a learning-rate sweep, say),
        # so the default out= of `robotrl train` would collide.
        run_cfg["out"] = hydra_cfg.runtime.output_dir
    return train(run_cfg)


def main() -> None:
    # task=ENV with sim=gymnasium or sim=brax names another library's env; the same
    # rewrite as `robotrl train` (to task=external task.name=ENV) before Hydra parses.
    sys.argv[1:] = external_task_overrides(sys.argv[1:])
    launch()


if __name__ == "__main__":
    main()
