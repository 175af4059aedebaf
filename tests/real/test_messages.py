import numpy as np
import pytest

from message_samples import sample_messages
from robotrl.real import messages as m


def test_names():
    assert m.JointState.ROS_TYPE == "sensor_msgs/msg/JointState"
    assert m.JointState.DDS_TYPE == "sensor_msgs::msg::dds_::JointState_"
    assert m.Time.DDS_TYPE == "builtin_interfaces::msg::dds_::Time_"
    assert m.Float64MultiArray.short_type() == "std_msgs/Float64MultiArray"
    assert m.message_type("sensor_msgs/JointState") is m.JointState
    assert m.message_type("std_msgs/msg/Bool") is m.Bool


@pytest.mark.parametrize("name", list(sample_messages()))
def test_every_sample_validates_and_has_a_parseable_schema(name):
    mcap_dynamic = pytest.importorskip("mcap_ros2._dynamic")
    msg = sample_messages()[name]
    m.validate(msg)
    # mcap_ros2 parses the schema text a bag writer would store
    decoders = mcap_dynamic.generate_dynamic(type(msg).ROS_TYPE, m.schema_text(type(msg)))
    assert type(msg).ROS_TYPE in decoders


def test_schema_text_lists_dependencies_once():
    text = m.schema_text("sensor_msgs/msg/Imu")
    assert text.startswith("std_msgs/Header header\n")
    for dep in ("std_msgs/Header", "builtin_interfaces/Time", "geometry_msgs/Quaternion", "geometry_msgs/Vector3"):
        assert text.count(f"MSG: {dep}\n") == 1
    assert ("=" * 80 + "\nMSG: std_msgs/Header\n") in text


def test_numpy_conversions():
    js = m.JointState(name=["a", "b", "c"], position=[1, 2, 3])
    assert js.position.dtype == np.float64 and js.velocity.shape == (0,)
    np.testing.assert_array_equal(js.select(["c", "a"]), [3.0, 1.0])
    with pytest.raises(KeyError, match="missing.*'z'"):
        js.select(["a", "z"])
    imu = m.Imu(orientation_covariance=np.eye(3))
    assert imu.orientation_covariance.shape == (9,) and imu.orientation_covariance[4] == 1.0
    np.testing.assert_array_equal(m.Quaternion.from_numpy([0, 0, 0, 1]).to_numpy(), [0, 0, 0, 1])
    arr = np.arange(6.0).reshape(2, 3)
    fma = m.Float64MultiArray.from_numpy(arr, labels=["rows", "cols"])
    assert [(d.label, d.size, d.stride) for d in fma.layout.dim] == [("rows", 2, 6), ("cols", 3, 3)]
    np.testing.assert_array_equal(fma.to_numpy(), arr)
    t = m.Time.from_seconds(12.5)
    assert (t.sec, t.nanosec) == (12, 500_000_000) and t.to_nanoseconds() == 12_500_000_000


def test_equality_compares_arrays():
    a, b = sample_messages()["Imu"], sample_messages()["Imu"]
    assert a == b
    b.angular_velocity_covariance[3] += 1
    assert a != b


@pytest.mark.parametrize("make, match", [
    (lambda: m.JointState(position=["x", "y"]), r"JointState.position: expected a sequence of floats"),
    (lambda: m.JointState(position=[[1.0, 2.0], [3.0]]), r"JointState.position"),
    (lambda: m.Imu(orientation_covariance=[1.0, 2.0]), r"Imu.orientation_covariance: expected exactly 9"),
    (lambda: m.Float64MultiArray(data="123"), r"Float64MultiArray.data"),
])
def test_bad_arrays_fail_at_construction(make, match):
    with pytest.raises(TypeError, match=match):
        make()


BAD_FIELDS = [  # (sample, mutation, error, message)
    ("JointState", lambda s: setattr(s, "name", ["a", 3]), TypeError, r"JointState.name\[1\]: expected str"),
    ("JointState", lambda s: setattr(s, "name", "abc"), TypeError, r"JointState.name: expected a list"),
    ("JointState", lambda s: setattr(s.header.stamp, "sec", 1.5), TypeError, r"JointState.header.stamp.sec"),
    ("JointState", lambda s: setattr(s.header.stamp, "nanosec", -1), ValueError,
     r"JointState.header.stamp.nanosec: -1 is out of range for uint32"),
    ("JointState", lambda s: setattr(s, "header", "now"), TypeError, r"JointState.header: expected Header"),
    ("JointState", lambda s: setattr(s, "position", ["a"]), TypeError, r"JointState.position"),
    ("Bool", lambda s: setattr(s, "data", 1), TypeError, r"Bool.data: expected bool"),
    ("Twist", lambda s: setattr(s.linear, "x", "fast"), TypeError, r"Twist.linear.x: expected float"),
    ("MultiArrayLayout", lambda s: setattr(s, "dim", [m.Vector3()]), TypeError,
     r"MultiArrayLayout.dim\[0\]: expected MultiArrayDimension"),
]


@pytest.mark.parametrize("sample, mutate, error, match", BAD_FIELDS)
def test_validate_names_the_bad_field(sample, mutate, error, match):
    msg = sample_messages()[sample]
    mutate(msg)
    with pytest.raises(error, match=match):
        m.validate(msg)


def test_validate_converts_a_list_assigned_later():
    js = sample_messages()["JointState"]
    js.velocity = [1, 2, 3]
    m.validate(js)
    assert js.velocity.dtype == np.float64


def test_unknown_message_type():
    with pytest.raises(ValueError, match="unknown message type 'sensor_msgs/msg/LaserScan'.*known: "):
        m.message_type("sensor_msgs/msg/LaserScan")
    with pytest.raises(ValueError, match="unknown message type"):
        m.message_type(dict)


def test_is_finite():
    js = sample_messages()["JointState"]
    assert m.is_finite(js)
    js.position[1] = np.nan
    assert not m.is_finite(js)
    imu = sample_messages()["Imu"]
    imu.orientation.w = float("inf")
    assert not m.is_finite(imu)
