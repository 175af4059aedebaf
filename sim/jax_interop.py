"""JAX and torch side by side: device names, the env mesh, DLPack hand-off.

A device is named the torch way ("cpu", "cuda", "cuda:1"; "gpu" is accepted as
"cuda"). A name without an index selects every local JAX device of that platform,
so the env axis can be sharded over them; with an index, only that device.
"""
from __future__ import annotations

import warnings

import jax
import numpy as np
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}


def jax_devices(device: str | torch.device) -> list[jax.Device]:
    """The local JAX devices ``device`` names; ValueError if it names none."""
    name = str(device).strip().lower()
    kind, _, index = name.partition(":")
    platform = _PLATFORMS.get(kind)
    try:
        found = jax.local_devices(backend=platform) if platform else []
    except RuntimeError:  # JAX has no backend for that platform at all
        found = []
    if index and not index.isdigit():
        found = []
    elif index:
        found = found[int(index) : int(index) + 1]
    if not found:
        raise ValueError(
            f"device {str(device)!r} does not exist for JAX; jax.devices() = {jax.devices()} "
            "(device names: cpu, cpu:N, cuda, cuda:N, gpu)"
        )
    return found


def torch_device(device: jax.Device) -> torch.device:
    """The torch device that shares memory with a JAX device."""
    if device.platform == "cpu":
        return torch.device("cpu")
    # ROCm builds of torch also call their GPUs "cuda".
    return torch.device("cuda", getattr(device, "local_hardware_id", None) or device.id)


def env_mesh(devices: list[jax.Device], num_envs: int) -> Mesh:
    """A 1-D mesh over the devices that share the env axis evenly (all of them
    when ``num_envs`` divides, else the first alone)."""
    if num_envs % len(devices):
        warnings.warn(
            f"num_envs={num_envs} does not split evenly over {len(devices)} devices; "
            f"running on {devices[0]} alone (use a multiple of {len(devices)} to use them all)",
            stacklevel=3,
        )
        devices = devices[:1]
    return Mesh(np.asarray(devices), ("envs",))


def env_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (env) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec("envs"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def to_torch(x: jax.Array) -> torch.Tensor:
    """A torch view of ``x`` (its copy on the mesh's first device), no copy made."""
    return torch.from_dlpack(x.addressable_data(0))


def from_torch(t: torch.Tensor) -> jax.Array:
    """A JAX view of a contiguous torch tensor, no copy made."""
    return jax.dlpack.from_dlpack(t.contiguous())
