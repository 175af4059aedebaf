"""``robotrl deploy``: the nodes of ``launch/deploy.launch.py`` without ROS 2.

The launch files and this module start the same node programs
(``python -m robotrl.real.policy_node`` and ``python -m robotrl.real.sim_robot_node``)
with the same ROS 2 command line (``--ros-args --params-file CONFIG -p policy:=DIR``),
so one YAML in ``ros__parameters`` form configures both worlds. Each node runs in its
own process. Ctrl-C (SIGINT) is passed to every node: the policy node switches to its
shutdown action (damp by default) and keeps sending it for ``shutdown_publish_s``
before it exits; a node that does not exit within ``stop_timeout`` is killed.

Also here: the small parameter layer the nodes share (reading a ``ros__parameters``
file, ``-p name:=value`` overrides, typed coercion into a node's parameter dataclass).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

__all__ = ["load_params_file", "parse_ros_args", "node_params", "coerce_params", "validate_params_file",
           "node_command", "deploy", "NODES", "setup_logging"]

log = logging.getLogger("robotrl.deploy")

# node name (its section in the YAML) -> module run with python -m
NODES = {"policy_node": "robotrl.real.policy_node", "sim_robot": "robotrl.real.sim_robot_node"}

_SCALARS = (bool, int, float, str)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s",
                        stream=sys.stderr)


# ------------------------------------------------------------------ parameters


def _flatten(prefix: str, values: Mapping, out: Dict[str, Any], where: str) -> None:
    # ROS 2 parameter files may nest mappings; the names join with dots.
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(name + ".", value, out, where)
        elif isinstance(value, _SCALARS) or value is None:
            out[name] = value
        elif isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value):
            kinds = {type(v) for v in value}
            if len(kinds) > 1 and kinds != {int, float}:
                raise ValueError(f"{where}: parameter {name!r}: a list must hold one type, got {sorted(k.__name__ for k in kinds)}")
            out[name] = value
        else:
            raise ValueError(f"{where}: parameter {name!r} has a value ROS 2 cannot hold: {value!r}")


def validate_params_file(path: str | os.PathLike) -> Dict[str, Dict[str, Any]]:
    """Parse a ROS 2 parameter file; every top-level key is a node name (or ``/**``)
    holding ``ros__parameters``. Returns node -> flat parameters; ``ValueError`` says
    what is wrong and where."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read a parameter file: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: a ROS 2 parameter file maps node names to {{ros__parameters: ...}}")
    out: Dict[str, Dict[str, Any]] = {}
    for node, section in data.items():
        if not isinstance(section, dict) or set(section) != {"ros__parameters"}:
            raise ValueError(f"{path}: node {node!r} must hold exactly one key 'ros__parameters', "
                             f"got {sorted(section) if isinstance(section, dict) else type(section).__name__}")
        params = section["ros__parameters"]
        if not isinstance(params, dict):
            raise ValueError(f"{path}: {node}.ros__parameters must be a mapping")
        flat: Dict[str, Any] = {}
        _flatten("", params, flat, f"{path}: {node}")
        out[str(node).lstrip("/")] = flat
    return out


def load_params_file(path: str | os.PathLike, node_name: str) -> Dict[str, Any]:
    """The parameters of ``node_name`` in a ROS 2 parameter file (``/**`` first, then the node's)."""
    sections = validate_params_file(path)
    params: Dict[str, Any] = {}
    for key in ("**", node_name):
        params.update(sections.get(key, {}))
    return params


def parse_ros_args(argv: Sequence[str]) -> Tuple[Optional[str], List[str], Dict[str, Any]]:
    """``--ros-args --params-file F -p name:=value -r __node:=NAME`` -> (node name, files, overrides)."""
    argv = list(argv)
    if "--ros-args" not in argv:
        if argv:
            raise ValueError(f"unexpected arguments {argv}; use --ros-args --params-file FILE -p name:=value")
        return None, [], {}
    args = argv[argv.index("--ros-args") + 1:]
    node_name, files, overrides = None, [], {}
    i = 0
    while i < len(args):
        flag = args[i]
        if flag == "--":
            break
        if flag in ("--params-file", "-p", "--param", "-r", "--remap", "--log-level") and i + 1 >= len(args):
            raise ValueError(f"{flag} needs a value")
        if flag == "--params-file":
            files.append(args[i + 1])
        elif flag in ("-p", "--param"):
            name, sep, value = args[i + 1].partition(":=")
            if not sep:
                raise ValueError(f"-p {args[i + 1]!r}: expected name:=value")
            overrides[name] = yaml.safe_load(value) if value != "" else ""
        elif flag in ("-r", "--remap"):
            src, sep, dst = args[i + 1].partition(":=")
            if src == "__node":
                node_name = dst
        elif flag == "--log-level":
            pass
        else:
            raise ValueError(f"unsupported ROS argument {flag!r}")
        i += 2
    return node_name, files, overrides


def node_params(argv: Sequence[str], default_name: str) -> Dict[str, Any]:
    name, files, overrides = parse_ros_args(argv)
    name = name or default_name
    params: Dict[str, Any] = {}
    for f in files:
        params.update(load_params_file(f, name))
    params.update(overrides)
    params.setdefault("node_name", name)
    return params


def coerce_params(cls, params: Mapping[str, Any], where: str):
    """Build parameter dataclass ``cls`` from ``params``; unknown names and bad types raise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown parameters {unknown}; known: {', '.join(sorted(fields))}")
    values = {}
    for name, value in params.items():
        default = fields[name].default
        kind = type(default)
        if value is None:
            value = default
        elif kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: parameter {name} must be true or false, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: parameter {name} must be a number, got {value!r}")
            value = float(value)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: parameter {name} must be an integer, got {value!r}")
        elif kind is str:
            value = str(value)
        values[name] = value
    return cls(**values)


# ------------------------------------------------------------------ launcher


def node_command(node: str, config: str, overrides: Mapping[str, Any]) -> List[str]:
    cmd = [sys.executable, "-m", NODES[node], "--ros-args", "--params-file", str(config)]
    for name, value in overrides.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def deploy(config: str | os.PathLike, policy: str, sim_robot: bool = False, duration: Optional[float] = None,
           autostart: Optional[bool] = None, transport: Optional[str] = None, stop_timeout: float = 5.0,
           env: Optional[Mapping[str, str]] = None, node_overrides: Optional[Mapping[str, Mapping]] = None) -> int:
    """Start the policy node (and the simulated robot) from ``config``; block until
    Ctrl-C, ``duration`` seconds, or a node exits. Returns the worst exit code."""
    config = Path(config)
    sections = validate_params_file(config)  # fail here, before any process starts
    if "policy_node" not in sections:
        raise ValueError(f"{config}: no 'policy_node' section")
    if sim_robot and "sim_robot" not in sections:
        raise ValueError(f"{config}: sim_robot=true but the file has no 'sim_robot' section")
    from robotrl.policies.artifact import load_meta

    load_meta(policy)  # a bad artifact fails before any process starts
    common: Dict[str, Any] = {"policy": str(Path(policy).resolve())}
    if transport:
        common["transport"] = transport
    nodes = (["sim_robot"] if sim_robot else []) + ["policy_node"]
    procs: Dict[str, subprocess.Popen] = {}
    stopping = {"flag": False}

    def request_stop(*_):
        stopping["flag"] = True

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for node in nodes:
            overrides = dict(common)
            if node == "policy_node" and autostart is not None:
                overrides["autostart"] = bool(autostart)
            overrides.update((node_overrides or {}).get(node, {}))
            cmd = node_command(node, str(config), overrides)
            # Each node in its own process group: a terminal's Ctrl-C reaches us only,
            # and we stop the nodes in order (policy first, so it can send damp).
            procs[node] = subprocess.Popen(cmd, env=dict(env) if env is not None else None, start_new_session=True)
            print(f"robotrl deploy: started {node} (pid {procs[node].pid})", flush=True)
        t_end = None if duration is None else time.monotonic() + float(duration)
        while not stopping["flag"]:
            if t_end is not None and time.monotonic() >= t_end:
                break
            if any(p.poll() is not None for p in procs.values()):
                dead = [n for n, p in procs.items() if p.poll() is not None]
                print(f"robotrl deploy: {', '.join(dead)} exited; stopping the others", file=sys.stderr, flush=True)
                break
            time.sleep(0.05)
    finally:
        codes = _stop_all(procs, stop_timeout)
        for s, handler in old.items():
            signal.signal(s, handler)
    return max((abs(c) for c in codes.values() if c is not None), default=0)


def _stop_all(procs: Dict[str, subprocess.Popen], timeout: float) -> Dict[str, Optional[int]]:
    codes: Dict[str, Optional[int]] = {}
    for node in ("policy_node", "sim_robot"):  # the policy first: it damps while the robot still runs
        p = procs.get(node)
        if p is None:
            continue
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"robotrl deploy: {node} did not stop in {timeout} s; killing it", file=sys.stderr)
                p.kill()
                p.wait()
        codes[node] = p.returncode
        print(f"robotrl deploy: {node} exited with {p.returncode}", flush=True)
    return codes


def deploy_cmd(cfg: Mapping[str, Any]) -> int:
    """The ``robotrl deploy`` verb (``robotrl/conf/deploy.yaml``)."""
    config = cfg.get("config") or default_config_path()
    overrides = {}
    for node in ("policy_node", "sim_robot"):
        extra = cfg.get(f"{node}_params") or {}
        if extra:
            overrides[node] = dict(extra)
    code = deploy(config, cfg["policy"], sim_robot=bool(cfg.get("sim_robot")), duration=cfg.get("duration"),
                  autostart=cfg.get("autostart"), transport=cfg.get("transport"), node_overrides=overrides)
    return code


def default_config_path() -> Path:
    """``launch/config/deploy.yaml`` of this source tree (or of an installed ament share)."""
    here = Path(__file__).resolve().parent.parent / "launch" / "config" / "deploy.yaml"
    if here.is_file():
        return here
    prefix = os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)[0]
    return Path(prefix) / "share" / "robotrl" / "config" / "deploy.yaml"
