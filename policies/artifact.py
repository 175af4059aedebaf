"""The policy artifact: ``policy.onnx`` + ``policy.yaml``, the one contract between
training and the robot.

``policy.onnx`` maps ``obs`` (batch, obs_dim; raw, unnormalized) to ``action``
(batch, num_actions; the deterministic action before clipping) with observation
normalization baked in. ``policy.yaml`` says what the numbers mean: the
observation terms by name and width in order, the actuated joints in action
order, action scale and default pose, PD gains, control rate, limits, the
training config and the source revision.

Loading needs numpy, PyYAML and onnxruntime only (no torch, no MuJoCo), so a
robot computer can run an artifact.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from robotrl.policies.base import policy_obs

FORMAT_VERSION = 1
ONNX_FILE = "policy.onnx"
YAML_FILE = "policy.yaml"


class ArtifactError(ValueError):
    """An artifact folder that is missing, incomplete or inconsistent."""


def write_yaml_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)


def export_onnx(module, obs_dim: int, path: Path) -> None:
    """Export a torch module ``obs -> action`` to ONNX with a dynamic batch axis."""
    import logging
    import warnings

    import torch

    # The exporter announces every optional op library it does not find; say nothing.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    module = module.eval()
    example = torch.zeros(1, obs_dim)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            input_names=["obs"],
            output_names=["action"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            dynamo=True,
            verbose=False,
        )
    program.save(str(tmp))
    os.replace(tmp, path)


class ArtifactPolicy:
    """Runs an artifact with onnxruntime; implements the Policy interface."""

    def __init__(self, folder: str | os.PathLike, providers: Sequence[str] | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.meta = load_meta(self.folder)
        opts = ort.SessionOptions()
        # The robot's control loop runs one small batch at a time; extra threads cost
        # more in wake-ups than they save.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.folder / ONNX_FILE), opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{self.folder / ONNX_FILE}: cannot load ONNX model: {exc}") from exc
        self.obs_layout = [(t["name"], int(t["size"])) for t in self.meta["observation"]["terms"]]
        self.obs_dim = int(self.meta["observation"]["size"])
        self.action_names = list(self.meta["action"]["joint_names"])
        self.num_actions = len(self.action_names)
        inputs = self.session.get_inputs()
        if inputs[0].shape[-1] != self.obs_dim:
            raise ArtifactError(
                f"{self.folder}: policy.onnx takes {inputs[0].shape[-1]} observations "
                f"but policy.yaml describes {self.obs_dim}"
            )

    def reset(self, env_ids=None) -> None:
        """The exported MLP is stateless."""

    def act(self, obs: Any) -> np.ndarray:
        obs = policy_obs(obs)
        if hasattr(obs, "detach"):
            obs = obs.detach().cpu().numpy()
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"observation must have shape (batch, {self.obs_dim}), got {tuple(np.shape(obs))}")
        if not np.isfinite(x).all():
            rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise ValueError(f"non-finite observation in rows {rows[:20].tolist()}")
        return self.session.run(["action"], {"obs": x})[0]


_REQUIRED = {
    "format_version": int,
    "task": str,
    "control": dict,
    "observation": dict,
    "action": dict,
}


def load_meta(folder: str | os.PathLike) -> dict:
    """Read and validate ``policy.yaml``; errors name the field and the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: artifact folder does not exist")
    for name in (ONNX_FILE, YAML_FILE):
        if not (folder / name).is_file():
            raise ArtifactError(f"{folder}: missing {name}")
    try:
        meta = yaml.safe_load((folder / YAML_FILE).read_text())
    except yaml.YAMLError as exc:
        raise ArtifactError(f"{folder / YAML_FILE}: not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{folder / YAML_FILE}: expected a mapping at top level")
    for key, kind in _REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise ArtifactError(f"{folder / YAML_FILE}: field '{key}' missing or not a {kind.__name__}")
    if meta["format_version"] > FORMAT_VERSION:
        raise ArtifactError(f"{folder / YAML_FILE}: format_version {meta['format_version']} is newer than {FORMAT_VERSION}")
    terms = meta["observation"].get("terms")
    if not isinstance(terms, list) or not terms:
        raise ArtifactError(f"{folder / YAML_FILE}: field 'observation.terms' must be a non-empty list")
    if sum(int(t["size"]) for t in terms) != int(meta["observation"].get("size", -1)):
        raise ArtifactError(f"{folder / YAML_FILE}: field 'observation.size' does not equal the sum of the term sizes")
    action = meta["action"]
    n = len(action.get("joint_names", []))
    for key in ("scale", "default_pose"):
        if len(np.atleast_1d(action.get(key, []))) != n:
            raise ArtifactError(f"{folder / YAML_FILE}: field 'action.{key}' must have one entry per joint ({n})")
    if float(meta["control"].get("rate_hz", 0)) <= 0:
        raise ArtifactError(f"{folder / YAML_FILE}: field 'control.rate_hz' must be positive")
    return meta
