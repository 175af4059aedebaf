"""The dds transport against the ROS 2 wire format, with real DDS traffic on loopback."""

import statistics
import threading
import time

import numpy as np
import pytest

from message_samples import ROUND_TRIP_TYPES, sample_messages
from robotrl.real import messages as m
from robotrl.real.transport import ROS_DEFAULT, SENSOR_DATA, QoS

dds = pytest.importorskip("robotrl.real.dds_transport")
mcap_dynamic = pytest.importorskip("mcap_ros2._dynamic")

pytestmark = pytest.mark.timeout(120)

PRESETS = {"default": ROS_DEFAULT, "sensor": SENSOR_DATA}


def to_plain(msg):
    """A message as the nested dicts/lists mcap_ros2's encoder takes."""
    out = {}
    for spec in type(msg).FIELDS:
        value = getattr(msg, spec.name)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, m.Message):
            value = to_plain(value)
        elif isinstance(value, list) and value and isinstance(value[0], m.Message):
            value = [to_plain(v) for v in value]
        out[spec.name] = value
    return out


def mcap_cdr(msg) -> bytes:
    """The reference: mcap-ros2-support's encoder with the ROS 2 .msg definitions."""
    ros_type = type(msg).ROS_TYPE
    return mcap_dynamic.serialize_dynamic(ros_type, m.schema_text(type(msg)))[ros_type](to_plain(msg))


# --------------------------------------------------------------------------- wire format


@pytest.mark.parametrize("name", list(sample_messages()))
def test_cdr_equals_mcap_ros2(name):
    msg = sample_messages()[name]
    reference = mcap_cdr(msg)
    ours = dds.to_cdr(msg)
    assert ours[:4] == b"\x00\x01\x00\x00"  # CDR_LE encapsulation = XCDR1 little endian
    assert ours == reference
    assert dds.from_cdr(reference, type(msg)) == msg  # and we read what ROS 2 writes


@pytest.mark.parametrize("name", list(sample_messages()))
def test_bytes_handed_to_cyclone_equal_mcap_ros2(name, monkeypatch, make_dds, domain_id):
    """Spy on the C call that gets the serialized sample: those bytes go on the wire.

    cyclonedds' DataWriter pads the payload with zeros to a multiple of 4 bytes
    (RTPS payloads are 4-aligned; rmw_cyclonedds pads its own payloads the same way)
    without setting the padding bits of the encapsulation options; CDR readers,
    mcap_ros2's included, ignore the trailing zeros."""
    import cyclonedds.pub

    written = []
    original = cyclonedds.pub.ddspy_write

    def spy(ref, data, *args):
        written.append(bytes(data))
        return original(ref, data, *args)

    monkeypatch.setattr(cyclonedds.pub, "ddspy_write", spy)
    msg = sample_messages()[name]
    transport = make_dds(domain_id)
    transport.create_publisher(f"/wire/{name}", type(msg)).publish(msg)
    reference = mcap_cdr(msg)
    assert len(written) == 1
    assert written[0] == reference + b"\0" * (-len(reference) % 4)
    ros_type = type(msg).ROS_TYPE
    decoded = mcap_dynamic.generate_dynamic(ros_type, m.schema_text(type(msg)))[ros_type](written[0])
    assert dds.from_cdr(reference, type(msg)) == dds.from_cdr(written[0], type(msg)) == msg
    assert decoded.__slots__ == [spec.name for spec in type(msg).FIELDS]


def test_dds_names_and_qos():
    from cyclonedds.core import Policy

    assert dds.idl_type(m.JointState).__idl_typename__ == "sensor_msgs.msg.dds_.JointState_"
    assert dds.idl_type(m.Header).__idl_typename__ == "std_msgs.msg.dds_.Header_"
    default, sensor = dds.dds_qos(ROS_DEFAULT), dds.dds_qos(SENSOR_DATA)
    assert isinstance(default[Policy.Reliability], Policy.Reliability.Reliable)
    assert default[Policy.History] == Policy.History.KeepLast(10)
    assert default[Policy.Durability] == Policy.Durability.Volatile
    assert sensor[Policy.Reliability] == Policy.Reliability.BestEffort
    assert sensor[Policy.History] == Policy.History.KeepLast(5)


def test_topic_is_announced_with_ros2_names(make_dds, domain_id):
    """What discovery tells the other side: rt/<topic>, pkg::msg::dds_::Type_, XCDR1, the QoS.

    (Reading the DCPSPublication builtin topic directly crashes cyclonedds-python
    11.0.1 in take(); the matched-endpoint data carry the same discovery record.)"""
    from cyclonedds.core import Policy

    a, b = make_dds(domain_id), make_dds(domain_id)
    pub = a.create_publisher("/robot/joint_states", m.JointState, SENSOR_DATA)
    sub = b.create_subscription("robot/joint_states", m.JointState, lambda msg: None, SENSOR_DATA)
    assert sub.wait_for_publishers(1, timeout=5) and pub.wait_for_subscribers(1, timeout=5)
    seen = sub._reader.get_matched_publication_data(sub._reader.get_matched_publications()[0])
    assert seen.topic_name == "rt/robot/joint_states"
    assert seen.type_name == "sensor_msgs::msg::dds_::JointState_"
    assert seen.qos[Policy.DataRepresentation] == Policy.DataRepresentation(use_cdrv0_representation=True)
    assert seen.qos[Policy.Reliability] == Policy.Reliability.BestEffort
    assert seen.qos[Policy.History] == Policy.History.KeepLast(5)
    assert seen.qos[Policy.WriterDataLifecycle] == Policy.WriterDataLifecycle(autodispose=False)


# --------------------------------------------------------------------------- between processes


class Inbox:
    def __init__(self):
        self.messages = []
        self.event = threading.Event()

    def __call__(self, msg):
        self.messages.append(msg)
        self.event.set()


@pytest.mark.parametrize("qos_name", list(PRESETS))
@pytest.mark.parametrize("type_name", ROUND_TRIP_TYPES)
def test_round_trip_through_another_process(type_name, qos_name, peer, make_dds):
    """Publish to the peer process, which echoes on another topic; until the echo
    arrives (volatile topics lose what is sent before discovery completes)."""
    qos = PRESETS[qos_name]
    msg = sample_messages()[type_name]
    transport = make_dds(peer.domain_id)
    inbox = Inbox()
    sub = transport.create_subscription(f"/echo_out/{type_name}_{qos_name}", type(msg), inbox, qos)
    pub = transport.create_publisher(f"echo_in/{type_name}_{qos_name}", type(msg), qos)
    assert pub.wait_for_subscribers(1, timeout=10), "the peer's subscription was not discovered"
    assert sub.wait_for_publishers(1, timeout=10), "the peer's publisher was not discovered"
    deadline = time.monotonic() + 10
    while not inbox.event.wait(0.05) and time.monotonic() < deadline:
        pub.publish(msg)
    assert inbox.messages, "no echo within 10 s"
    got = inbox.messages[0]
    assert type(got) is type(msg) and got == msg
    if type_name == "JointState":
        assert got.position.dtype == np.float64 and got.name == msg.name


def test_reliable_subscription_does_not_match_best_effort_publisher(peer, make_dds):
    """As in ROS 2: the peer's /ticker is best effort; a reliable reader gets nothing,
    a best-effort reader gets the ticks. And a best-effort reader accepts a reliable writer."""
    transport = make_dds(peer.domain_id)
    reliable, best_effort = Inbox(), Inbox()
    sub_reliable = transport.create_subscription("/ticker", m.Bool, reliable, ROS_DEFAULT)
    sub_best_effort = transport.create_subscription("/ticker", m.Bool, best_effort, SENSOR_DATA)
    assert best_effort.event.wait(10), "best-effort subscription got no ticks"
    assert sub_best_effort.matched_count() == 1
    time.sleep(0.3)  # ~30 more ticks
    assert reliable.messages == [] and sub_reliable.matched_count() == 0

    # reliable writer (the peer's echo of the default preset) -> best-effort reader: matches
    inbox = Inbox()
    sub = transport.create_subscription("/echo_out/Bool_default", m.Bool, inbox, SENSOR_DATA)
    pub = transport.create_publisher("/echo_in/Bool_default", m.Bool, ROS_DEFAULT)
    deadline = time.monotonic() + 10
    while not inbox.event.wait(0.05) and time.monotonic() < deadline:
        pub.publish(m.Bool(True))
    assert inbox.messages and inbox.messages[0].data is True
    assert sub.matched_count() == 1


def test_joint_state_latency_smoke(peer, make_dds):
    """Not a timed assertion: prints one-way loopback latency of a JointState through
    another process (echo round trip / 2, and header stamp -> receive on one clock)."""
    transport = make_dds(peer.domain_id)
    received = []
    event = threading.Event()

    def on_echo(msg):
        received.append((time.perf_counter_ns(), time.time_ns(), msg))
        event.set()

    transport.create_subscription("/echo_out/JointState_sensor", m.JointState, on_echo, SENSOR_DATA)
    pub = transport.create_publisher("/echo_in/JointState_sensor", m.JointState, SENSOR_DATA)
    names = [f"joint_{i}" for i in range(12)]

    def ping(i):
        msg = m.JointState(m.Header(transport.now(), "base"), names,
                           np.full(12, float(i)), np.zeros(12), np.zeros(12))
        event.clear()
        sent = time.perf_counter_ns()
        pub.publish(msg)
        return sent, event.wait(1.0)

    # warm up until discovery completed both ways
    deadline = time.monotonic() + 10
    while not ping(-1)[1] and time.monotonic() < deadline:
        pass
    assert received, "no echo"
    rtt_us, stamp_us = [], []
    for i in range(200):
        received.clear()
        sent, ok = ping(i)
        if ok and received:
            recv_perf, recv_wall, msg = received[0]
            rtt_us.append((recv_perf - sent) / 1e3)
            stamp_us.append((recv_wall - msg.header.stamp.to_nanoseconds()) / 1e3 / 2)
        time.sleep(0.002)
    assert len(rtt_us) > 150
    q = statistics.quantiles(rtt_us, n=100)
    print(f"\nJointState (12 joints) loopback via echo process, {len(rtt_us)} samples: "
          f"one-way ~ RTT/2 p50 {q[49] / 2:.0f} us, p99 {q[98] / 2:.0f} us; "
          f"stamp->echo received / 2 p50 {statistics.median(stamp_us):.0f} us")


# --------------------------------------------------------------------------- in-process and bad input


def test_in_process_pub_sub_and_close(make_dds, domain_id):
    a, b = make_dds(domain_id), make_dds(domain_id)
    inbox = Inbox()
    sub = b.create_subscription("cmd_vel", m.Twist, inbox)
    pub = a.create_publisher("/cmd_vel", "geometry_msgs/msg/Twist")
    assert pub.wait_for_subscribers(1, timeout=5)
    msg = sample_messages()["Twist"]
    pub.publish(msg)
    assert inbox.event.wait(5) and inbox.messages == [msg]
    sub.close()
    pub.publish(msg)
    time.sleep(0.1)
    assert len(inbox.messages) == 1  # no callback after close
    a.close()
    with pytest.raises(RuntimeError, match="closed"):
        a.create_publisher("/x", m.Bool)
    a.close()  # idempotent


def test_callback_exception_is_logged_not_fatal(make_dds, domain_id, caplog):
    transport = make_dds(domain_id)
    inbox = Inbox()

    def bad(msg):
        inbox(msg)
        raise RuntimeError("boom")

    transport.create_subscription("/flag", m.Bool, bad)
    pub = transport.create_publisher("/flag", m.Bool)
    assert pub.wait_for_subscribers(1, timeout=5)
    pub.publish(m.Bool(True))
    pub.publish(m.Bool(False))
    deadline = time.monotonic() + 5
    while len(inbox.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [x.data for x in inbox.messages] == [True, False]
    assert "subscription callback for /flag raised" in caplog.text


@pytest.mark.parametrize("topic", ["", "/", "joint states", "/joint_states/", "//a", "/2fast", "/a/9b",
                                   "~/private", "/{node}/x", "/a-b", "/ä"])
def test_invalid_topic_name(topic, make_dds, domain_id):
    transport = make_dds(domain_id)
    with pytest.raises(ValueError, match="invalid ROS 2 topic name"):
        transport.create_publisher(topic, m.Bool)
    with pytest.raises(ValueError, match="invalid ROS 2 topic name"):
        transport.create_subscription(topic, m.Bool, lambda msg: None)


def test_unknown_message_type(make_dds, domain_id):
    transport = make_dds(domain_id)
    with pytest.raises(ValueError, match="unknown message type 'sensor_msgs/msg/LaserScan'"):
        transport.create_publisher("/scan", "sensor_msgs/msg/LaserScan")
    with pytest.raises(ValueError, match="unknown message type"):
        transport.create_subscription("/scan", dict, lambda msg: None)


def test_wrong_field_types_on_publish(make_dds, domain_id):
    transport = make_dds(domain_id)
    pub = transport.create_publisher("/joint_states", m.JointState)
    msg = sample_messages()["JointState"]
    msg.name = ["hip", 7, "ankle"]
    with pytest.raises(TypeError, match=r"JointState.name\[1\]: expected str"):
        pub.publish(msg)
    msg = sample_messages()["JointState"]
    msg.position = ["a", "b"]
    with pytest.raises(TypeError, match=r"JointState.position"):
        pub.publish(msg)
    msg = sample_messages()["JointState"]
    msg.header.stamp.sec = 2**31
    with pytest.raises(ValueError, match=r"out of range for int32"):
        pub.publish(msg)
    with pytest.raises(TypeError, match="sends sensor_msgs/msg/JointState, got Bool"):
        pub.publish(m.Bool(True))
    with pytest.raises(ValueError, match="already has type sensor_msgs/msg/JointState"):
        transport.create_subscription("/joint_states", m.Bool, lambda msg: None)
    with pytest.raises(TypeError, match="qos must be"):
        transport.create_publisher("/other", m.Bool, qos="reliable")
    with pytest.raises(ValueError, match="reliability"):
        QoS(reliability="sometimes")
