"""Launch files, their parameter YAML, and `robotrl deploy` reading the same YAML."""
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robotrl.real import messages as m
from robotrl.real.deploy import load_params_file, parse_ros_args, validate_params_file
from robotrl.real.policy_node import PolicyNodeParams
from robotrl.real.sim_robot_node import SimRobotParams
from robotrl.real.transport import ROS_DEFAULT

from test_sim_robot import Listener, node_env, write_config
from test_watchdog import untrained_reach  # noqa: F401  (module fixture)

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
NODE_PARAMS = {"policy_node": PolicyNodeParams, "sim_robot": SimRobotParams}


@pytest.mark.parametrize("name", ["deploy.launch.py", "sim_robot.launch.py"])
def test_launch_files_describe_nodes(name, tmp_path, monkeypatch):
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 is not on PyPI)")
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    # An ament prefix holding this package, as `colcon build` installs it.
    (tmp_path / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (tmp_path / "share/ament_index/resource_index/packages/robotrl").touch()
    (tmp_path / "share/robotrl/config").mkdir(parents=True)
    (tmp_path / "share/robotrl/config/deploy.yaml").write_text((LAUNCH / "config/deploy.yaml").read_text())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    args = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert {"policy", "config"} <= args
    assert any(isinstance(e, Node) for e in description.entities)


@pytest.mark.parametrize("path", sorted((LAUNCH / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_config_yaml_is_ros_parameters(path):
    sections = validate_params_file(path)
    assert sections, path
    for node, params in sections.items():
        assert node in NODE_PARAMS, f"{path.name}: unknown node section {node}"
        NODE_PARAMS[node].from_params(params)  # every name known, every type right


def test_config_yaml_matches_node_defaults():
    """The shipped YAML documents the defaults: it must not silently differ from them."""
    for node, cls in NODE_PARAMS.items():
        params = load_params_file(LAUNCH / "config/deploy.yaml", node)
        built, default = cls.from_params(params), cls()
        for name in params:
            assert getattr(built, name) == getattr(default, name), f"{node}.{name}"


def test_bad_params_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policy_node": {"soft_start_s": 1.0}}))
    with pytest.raises(ValueError, match="exactly one key 'ros__parameters'"):
        validate_params_file(bad)


def test_ros_args_parsing(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"transport": "dds", "autostart": False}},
                                 "/policy_node": {"ros__parameters": {"soft_start_s": 1.5}}}))
    name, files, overrides = parse_ros_args(["--ros-args", "-r", "__node:=policy_node", "--params-file", str(f),
                                             "-p", "autostart:=true", "-p", "policy:=/a/b"])
    assert name == "policy_node" and files == [str(f)]
    assert overrides == {"autostart": True, "policy": "/a/b"}
    assert load_params_file(f, "policy_node") == {"transport": "dds", "autostart": False, "soft_start_s": 1.5}


def test_setup_py_leaves_the_pip_build_alone():
    """pyproject.toml is the build; setup.py only adds ament data files under ROS 2."""
    out = subprocess.run([sys.executable, "setup.py", "--name", "--version"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["robotrl", "0.1.0"]
    for f in ["package.xml", "resource/robotrl", "launch/deploy.launch.py", "launch/sim_robot.launch.py"]:
        assert (REPO / f).is_file(), f


@pytest.mark.slow
def test_robotrl_deploy_reads_the_yaml_and_damps_on_ctrl_c(untrained_reach, domain_id, tmp_path, make_dds):  # noqa: F811
    """`robotrl deploy` starts both nodes from the YAML (a custom command topic proves it
    is read by both), runs the policy, and on Ctrl-C the policy node damps before exiting."""
    config = write_config(tmp_path / "deploy.yaml",
                          {"joint_command_topic": "/custom/commands", "soft_start_s": 0.3},
                          {"joint_command_topic": "/custom/commands", "step_mode": "realtime"})
    listener = Listener(make_dds(domain_id))
    listener.listen("/custom/commands", m.JointState, ROS_DEFAULT)
    listener.listen("/joint_states", m.JointState)
    proc = subprocess.Popen([sys.executable, "-m", "robotrl.cli", "deploy", f"policy={untrained_reach}",
                             f"config={config}", "sim_robot=true", "autostart=true"],
                            env=node_env(domain_id), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listener.wait("/custom/commands", lambda c: c.header.frame_id == "soft_start", timeout=60)
        listener.wait("/custom/commands", lambda c: c.header.frame_id == "policy", timeout=10)
        # the robot applies the commands: its joints follow the soft start and the policy
        assert listener.get("/joint_states")
        t_int = time.monotonic()
        proc.send_signal(signal.SIGINT)
        listener.wait("/custom/commands", lambda c: c.header.frame_id == "damp", timeout=5, after=t_int)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "policy -> damp (shutdown)" in out
    assert "policy_node exited with 0" in out and "sim_robot exited with 0" in out
