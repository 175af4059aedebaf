"""Data-parallel training under ``torchrun``: one process per device.

Each rank steps its own share of the envs; gradients are averaged over ranks
before every optimizer step, and running statistics (observation and return
normalization, the KL that drives the learning rate) are merged, so every rank
applies the same update and the parameters stay identical without ever being
re-sent. Only rank 0 writes logs, checkpoints, the artifact and the report.

The process group comes from torchrun's variables (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), or, in a submitit job of several
tasks (the Hydra submitit launcher with ``tasks_per_node`` or ``nodes`` > 1, on
SLURM or local), from submitit's description of that job. Without either
(``WORLD_SIZE`` unset or 1) every helper here is a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str) -> str:
    """Join the process group torchrun describes in the environment.

    Returns the device this rank trains on: with ``device=cuda`` each rank takes
    the GPU of its ``LOCAL_RANK``; CPU ranks use ``gloo``, GPU ranks ``nccl``.
    """
    if "WORLD_SIZE" not in os.environ:
        _export_submitit_tasks()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    on_gpu = str(device).startswith("cuda")
    if on_gpu:
        if not torch.cuda.is_available():
            raise ValueError(f"device={device} was asked for, but torch sees no CUDA device")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        # SLURM may bind one GPU to each task (--gpus-per-task): then it is device 0.
        if torch.cuda.device_count() == 1:
            local = 0
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return device


def _export_submitit_tasks() -> None:
    """In one of several tasks of a submitit job, set torchrun's variables.

    submitit starts one process per task (``srun`` on SLURM); its
    ``TorchDistributedEnvironment`` maps the job's ``SLURM_*`` (or local)
    variables to ``MASTER_ADDR`` (the job's first node), ``MASTER_PORT`` (from the
    job id unless set), ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. All GPUs of
    the node stay visible, so ``LOCAL_RANK`` picks the GPU as under torchrun.
    Leftovers of an outer job (``RANK`` without ``WORLD_SIZE``) are overwritten.
    """
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return
    try:
        import submitit
    except ImportError:
        return
    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_scalar(value: float, device) -> float:
    """The mean of a per-rank number over all ranks."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def broadcast_module_(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not active():
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def average_gradients_(parameters) -> None:
    """Average gradients over ranks in one flat all-reduce."""
    if not active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n
