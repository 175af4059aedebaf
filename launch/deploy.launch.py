"""Run a policy artifact on a robot: ``ros2 launch robotrl deploy.launch.py policy:=/path/to/artifact``.

Arguments: ``policy`` (the artifact folder, required), ``config`` (the parameter file;
default: this package's ``config/deploy.yaml``), ``sim_robot`` (``true`` also starts
the simulated MuJoCo robot, for hardware-in-the-loop / sim-to-sim runs),
``autostart`` (enable the policy once the observations are healthy).

The nodes are the same programs ``robotrl deploy`` starts where ROS 2 is not
installed (``python -m robotrl.real.policy_node`` / ``robotrl.real.sim_robot_node``),
with the same parameter file; with ROS 2 present they talk through rclpy.
Enable with ``ros2 topic pub --once /policy_node/enable std_msgs/msg/Bool "{data: true}"``,
e-stop with ``/policy_node/estop``.
"""
import os
import sys

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory("robotrl"), "config", "deploy.yaml")
    policy = LaunchConfiguration("policy")
    config = LaunchConfiguration("config")
    python = sys.executable  # the interpreter that has robotrl (no console scripts needed)
    return LaunchDescription([
        DeclareLaunchArgument("policy", description="policy artifact folder (policy.onnx + policy.yaml)"),
        DeclareLaunchArgument("config", default_value=default_config,
                              description="parameter file in ros__parameters form (robot config)"),
        DeclareLaunchArgument("sim_robot", default_value="false",
                              description="also start the simulated MuJoCo robot"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="enable the policy once the observations are healthy"),
        Node(
            executable=python,
            arguments=["-m", "robotrl.real.sim_robot_node"],
            name="sim_robot",
            output="screen",
            parameters=[config, {"policy": ParameterValue(policy, value_type=str)}],
            condition=IfCondition(LaunchConfiguration("sim_robot")),
        ),
        Node(
            executable=python,
            arguments=["-m", "robotrl.real.policy_node"],
            name="policy_node",
            output="screen",
            parameters=[config, {
                "policy": ParameterValue(policy, value_type=str),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            }],
            sigterm_timeout="5",  # the node sends its shutdown action (damp) before exiting
        ),
    ])
