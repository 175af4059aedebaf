"""The rclpy transport. Needs ROS 2 (not on PyPI): those tests skip here; the field
mapping is tested against stand-ins for the generated rclpy classes."""

import array
import threading
import time

import numpy as np
import pytest

from message_samples import ROUND_TRIP_TYPES, sample_messages
from robotrl.real import messages as m
from robotrl.real import rclpy_transport as rt
from robotrl.real.transport import ROS_DEFAULT, SENSOR_DATA, rclpy_available

needs_rclpy = pytest.mark.skipif(not rclpy_available(), reason="rclpy is not installed (ROS 2 is not on PyPI)")


def fake_ros_class(msg_type):
    """A stand-in for a generated rclpy class: empty object, fields set by attribute."""
    return type(msg_type.__name__, (), {})


@pytest.mark.parametrize("name", list(sample_messages()))
def test_field_mapping_round_trip(name):
    msg = sample_messages()[name]
    ros_msg = rt.to_ros(msg, resolve=fake_ros_class)
    assert rt.from_ros(ros_msg, type(msg)) == msg
    if name == "JointState":
        assert isinstance(ros_msg.position, array.array) and ros_msg.position.typecode == "d"
        assert ros_msg.header.stamp.nanosec == msg.header.stamp.nanosec
    if name == "Imu":
        assert isinstance(ros_msg.orientation_covariance, np.ndarray)


@needs_rclpy
def test_rclpy_names_and_qos():
    from rclpy.qos import qos_profile_sensor_data, qos_profile_system_default  # noqa: F401
    from rclpy.qos import ReliabilityPolicy

    assert rt.ros_class(m.JointState).__module__.startswith("sensor_msgs.msg")
    assert rt.rclpy_qos(SENSOR_DATA).reliability == ReliabilityPolicy.BEST_EFFORT
    assert rt.rclpy_qos(ROS_DEFAULT).depth == 10


@needs_rclpy
@pytest.mark.parametrize("type_name", ROUND_TRIP_TYPES)
def test_rclpy_round_trip_with_dds_transport(type_name, domain_id):
    """rclpy publishes, the dds transport receives (and the reverse): the wire format agrees."""
    from robotrl.real.dds_transport import DdsTransport

    msg = sample_messages()[type_name]
    with rt.RclpyTransport(domain_id) as ros, DdsTransport(domain_id) as dds:
        for sender, receiver in ((ros, dds), (dds, ros)):
            got, event = [], threading.Event()
            topic = f"/rt_{type_name}_{sender.kind}"
            receiver.create_subscription(topic, type(msg), lambda x: (got.append(x), event.set()))
            pub = sender.create_publisher(topic, type(msg))
            deadline = time.monotonic() + 10
            while not event.wait(0.05) and time.monotonic() < deadline:
                pub.publish(msg)
            assert got and got[0] == msg


@needs_rclpy
def test_rclpy_bad_input(domain_id):
    with rt.RclpyTransport(domain_id) as ros:
        with pytest.raises(ValueError, match="invalid ROS 2 topic name"):
            ros.create_publisher("/2bad", m.Bool)
        with pytest.raises(ValueError, match="unknown message type"):
            ros.create_publisher("/scan", "sensor_msgs/msg/LaserScan")
        pub = ros.create_publisher("/flag", m.Bool)
        with pytest.raises(TypeError, match="Bool.data: expected bool"):
            pub.publish(m.Bool(data=1))
