"""The simulated robot alone: ``ros2 launch robotrl sim_robot.launch.py policy:=/path/to/artifact``.

A MuJoCo-backed driver of the artifact's task (or ``task:=NAME``) that publishes
``/joint_states`` and ``/imu`` and applies ``/joint_commands``; run the policy node
against it with ``deploy.launch.py`` (or on another machine), for hardware-in-the-loop
tests. ``real_domain:=gravity_2x`` simulates a target domain with shifted dynamics.
"""
import os
import sys

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory("robotrl"), "config", "deploy.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("policy", default_value="",
                              description="policy artifact folder: the task to simulate"),
        DeclareLaunchArgument("task", default_value="", description="task name (default: the artifact's)"),
        DeclareLaunchArgument("config", default_value=default_config,
                              description="parameter file in ros__parameters form (robot config)"),
        DeclareLaunchArgument("real_domain", default_value="",
                              description="target domain of robotrl.sim.domains (empty: the simulator)"),
        DeclareLaunchArgument("step_mode", default_value="realtime", description="realtime | command"),
        Node(
            executable=sys.executable,
            arguments=["-m", "robotrl.real.sim_robot_node"],
            name="sim_robot",
            output="screen",
            parameters=[LaunchConfiguration("config"), {
                "policy": ParameterValue(LaunchConfiguration("policy"), value_type=str),
                "task": ParameterValue(LaunchConfiguration("task"), value_type=str),
                "real_domain": ParameterValue(LaunchConfiguration("real_domain"), value_type=str),
                "step_mode": ParameterValue(LaunchConfiguration("step_mode"), value_type=str),
            }],
        ),
    ])
