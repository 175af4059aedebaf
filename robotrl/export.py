"""Export a trained policy as an artifact folder (policy.onnx + policy.yaml)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import mujoco
import numpy as np

from robotrl.policies.artifact import FORMAT_VERSION, ONNX_FILE, YAML_FILE, export_onnx, write_yaml_atomic
from robotrl.sim.task import Task


def source_revision() -> str:
    """The git commit of the robotrl source tree, with '+dirty' if it has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _floats(x) -> list[float]:
    return [float(v) for v in np.atleast_1d(x)]


def artifact_meta(task: Task, obs_layout: list[tuple[str, int]], train_config: dict | None = None) -> dict:
    """Everything a robot needs to know to feed the policy and apply its actions."""
    m = task.model
    n = task.num_actions
    joints = [int(m.actuator_trnid[i, 0]) for i in range(n)]
    gain, bias = m.actuator_gainprm[:n], m.actuator_biasprm[:n]
    is_position = (bias[:, 1] != 0) & np.isclose(gain[:, 0], -bias[:, 1])
    scale = np.broadcast_to(np.asarray(task.config["action_scale"], dtype=float), (n,))
    return {
        "format_version": FORMAT_VERSION,
        "task": task.name,
        "control": {
            "rate_hz": 1.0 / float(task.config["control_dt"]),
            "sim_dt": float(task.config["sim_dt"]),
        },
        "observation": {
            "group": "policy",
            "size": int(sum(w for _, w in obs_layout)),
            "terms": [{"name": name, "size": int(w)} for name, w in obs_layout],
            "noise": {k: float(v) for k, v in task.config["obs_noise"].items()},
        },
        "action": {
            "joint_names": task.action_names,
            # position: target = default_pose + scale * action; motor: ctrl = scale * action
            "type": getattr(task, "action_type", "motor"),
            "scale": _floats(scale),
            "default_pose": _floats(getattr(task, "default_pose", np.zeros(n))),
            "clip": float(task.config["action_clip"]),
        },
        "pd_gains": {
            "kp": _floats(np.where(is_position, gain[:, 0], 0.0)),
            "kd": _floats(np.where(is_position, -bias[:, 2], 0.0)),
        },
        "limits": {
            "joint_position": [_floats(m.jnt_range[j]) if m.jnt_limited[j] else [-np.inf, np.inf] for j in joints],
            "ctrl": [_floats(m.actuator_ctrlrange[i]) if m.actuator_ctrllimited[i] else [-np.inf, np.inf] for i in range(n)],
            "effort": [_floats(m.actuator_forcerange[i]) if m.actuator_forcelimited[i] else [-np.inf, np.inf] for i in range(n)],
        },
        "mujoco_version": mujoco.__version__,
        "source_revision": source_revision(),
        "training": train_config or {},
    }


def env_artifact_meta(name: str, env, obs_layout: list[tuple[str, int]], sim: str, train_config: dict | None = None) -> dict:
    """The artifact description of a policy for another library's env (gymnasium,
    brax backends): no robot model, so no PD gains or joint limits; the action is
    the normalized [-1, 1] action the backend rescales to the env's bounds."""
    n = env.num_actions
    unbounded = [[-np.inf, np.inf]] * n
    return {
        "format_version": FORMAT_VERSION,
        "task": name,
        "sim": sim,
        "control": {"rate_hz": 1.0 / float(env.step_dt), "sim_dt": float(env.step_dt)},
        "observation": {
            "group": "policy",
            "size": int(sum(w for _, w in obs_layout)),
            "terms": [{"name": term, "size": int(w)} for term, w in obs_layout],
            "noise": {},
        },
        "action": {
            "joint_names": list(env.action_names),
            "type": "normalized",
            "scale": [1.0] * n,
            "default_pose": [0.0] * n,
            "clip": 1.0,
        },
        "pd_gains": {"kp": [0.0] * n, "kd": [0.0] * n},
        "limits": {"joint_position": unbounded, "ctrl": unbounded, "effort": unbounded},
        "mujoco_version": mujoco.__version__,
        "source_revision": source_revision(),
        "training": train_config or {},
    }


def export_artifact(
    module, task, obs_layout, folder: str | Path, train_config: dict | None = None, sim: str = "mujoco", name: str | None = None
) -> Path:
    """Write policy.onnx + policy.yaml. ``task`` is a robotrl :class:`Task`, or for
    the external backends the VecEnv itself."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(task, Task):
        meta = artifact_meta(task, obs_layout, train_config)
        meta["sim"] = sim
    else:
        meta = env_artifact_meta(name, task, obs_layout, sim, train_config)
    export_onnx(module, meta["observation"]["size"], folder / ONNX_FILE)
    write_yaml_atomic(folder / YAML_FILE, meta)
    return folder
