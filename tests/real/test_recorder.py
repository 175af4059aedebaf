"""``robotrl record``: real DDS traffic on loopback (random domain) into a ROS 2 bag that
the ``mcap`` reader and ``mcap_ros2``'s decoder read back; Ctrl-C and a hard kill
leave a readable bag.

The recorder runs as the real CLI in a subprocess; this process publishes.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("mcap_ros2")
dds = pytest.importorskip("robotrl.real.dds_transport", reason="cyclonedds is not installed")

from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402

from robotrl.real import messages as m  # noqa: E402
from robotrl.real.recorder import offered_qos_yaml, parse_topics  # noqa: E402
from robotrl.real.transport import ROS_DEFAULT, SENSOR_DATA  # noqa: E402

JOINTS = ["j1", "j2", "j3"]


def start_recorder(domain_id, *args):
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), CYCLONEDDS_URI=dds.loopback_config(), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "robotrl.cli", "record", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=30):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"recorder did not exit: {err}")
    return proc.returncode, out, err


def joint_state(i):
    stamp = m.Time(1_700_000_000 + i, 1000 * i)
    return m.JointState(m.Header(stamp, "base"), JOINTS, [0.1 * i, -0.2, 0.3], [1.0, 2.0 * i, 3.0], [])


def imu(i):
    return m.Imu(m.Header(m.Time(1_700_000_100, i), "imu"), m.Quaternion(0.0, 0.0, 0.1 * i, 1.0),
                 angular_velocity=m.Vector3(0.01 * i, 0.0, -1.0), linear_acceleration=m.Vector3(0.0, 0.0, 9.81))


def command(i):
    return m.Float64MultiArray.from_numpy(np.array([0.5 * i, -0.5, 1.5]), ["joints"])


@pytest.fixture
def publishers(make_dds, domain_id):
    tp = make_dds(domain_id)
    return {"/joint_states": tp.create_publisher("/joint_states", m.JointState),  # ROS default QoS
            "/imu": tp.create_publisher("/imu", m.Imu, SENSOR_DATA),
            "/joint_command": tp.create_publisher("/joint_command", m.Float64MultiArray)}


def wait_matched(pubs, timeout=30.0):
    for topic, pub in pubs.items():
        assert pub.wait_for_subscribers(1, timeout), f"the recorder never subscribed to {topic}"
    time.sleep(0.5)  # the reader side finishes matching the (best-effort) writers too


def test_record_writes_a_ros2_bag_read_back_by_mcap_and_mcap_ros2(publishers, domain_id, tmp_path):
    out = tmp_path / "run.mcap"
    # /joint_command's type is discovered from its publisher; the others have default types.
    proc = start_recorder(domain_id, "topics=[/joint_states,/imu,/joint_command]", f"out={out}", "duration=6",
                          "discovery_timeout=10")
    wait_matched(publishers)
    sent = {"/joint_states": [], "/imu": [], "/joint_command": []}
    for i in range(15):
        for topic, make in (("/joint_states", joint_state), ("/imu", imu), ("/joint_command", command)):
            msg = make(i)
            publishers[topic].publish(msg)
            sent[topic].append(msg)
        time.sleep(0.01)
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "recording" in err and "total 45" in err  # the progress line's counts

    with open(out, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        summary = reader.get_summary()
        assert header.profile == "ros2"
        schemas = {s.name: s for s in summary.schemas.values()}
        assert set(schemas) == {"sensor_msgs/msg/JointState", "sensor_msgs/msg/Imu", "std_msgs/msg/Float64MultiArray"}
        assert all(s.encoding == "ros2msg" for s in schemas.values())
        assert schemas["sensor_msgs/msg/Imu"].data.decode() == m.schema_text("sensor_msgs/msg/Imu")
        channels = {c.topic: c for c in summary.channels.values()}
        assert all(c.message_encoding == "cdr" for c in channels.values())
        qos = {t: yaml.safe_load(c.metadata["offered_qos_profiles"]) for t, c in channels.items()}
        assert qos["/imu"][0]["reliability"] == 2 and qos["/imu"][0]["depth"] == 5  # best effort, keep last 5
        assert qos["/joint_states"][0]["reliability"] == 1 and qos["/joint_states"][0]["depth"] == 10
        assert qos["/joint_command"][0]["durability"] == 2  # volatile
        assert set(qos["/imu"][0]) >= {"history", "deadline", "lifespan", "liveliness", "liveliness_lease_duration",
                                       "avoid_ros_namespace_conventions"}
        got = {t: [] for t in sent}
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            got[channel.topic].append((message, decoded))

    for topic in sent:
        assert len(got[topic]) == len(sent[topic]), topic
        for msg, (record, decoded) in zip(sent[topic], got[topic]):
            assert record.data == dds.to_cdr(msg)  # the raw, unpadded CDR bytes
            assert dds.from_cdr(record.data, type(msg)) == msg
            if topic == "/joint_command":
                assert record.publish_time == record.log_time  # no header: receive time
                np.testing.assert_array_equal(decoded.data, msg.data)
                assert decoded.layout.dim[0].label == "joints"
            else:
                assert record.publish_time == msg.header.stamp.to_nanoseconds()
                assert decoded.header.frame_id == msg.header.frame_id
            if topic == "/joint_states":
                assert list(decoded.name) == JOINTS
                np.testing.assert_array_equal(decoded.position, msg.position)
                np.testing.assert_array_equal(decoded.velocity, msg.velocity)
            if topic == "/imu":
                assert decoded.orientation.z == msg.orientation.z
                assert decoded.angular_velocity.x == msg.angular_velocity.x


def publish_until(stop, pubs, sent):
    i = 0
    while not stop.is_set():
        msg = joint_state(i)
        pubs["/joint_states"].publish(msg)
        sent.append(msg)
        i += 1
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_interrupted_recording_leaves_a_readable_bag(publishers, domain_id, tmp_path, sig):
    from robotrl.datasets.bag_import import read_bag

    out = tmp_path / "cut.mcap"
    # Small chunks and frequent flushes: a hard kill loses at most the open chunk.
    proc = start_recorder(domain_id, "topics=[/joint_states]", f"out={out}", "chunk_size=1024",
                          "flush_interval=0.2", "progress=false")
    pubs = {"/joint_states": publishers["/joint_states"]}
    wait_matched(pubs)
    stop, sent = threading.Event(), []
    thread = threading.Thread(target=publish_until, args=(stop, pubs, sent))
    thread.start()
    time.sleep(1.5)
    proc.send_signal(sig)
    rc, _, err = finish(proc)
    stop.set()
    thread.join()
    topics, complete = read_bag(out)
    records = topics["/joint_states"].records
    if sig == signal.SIGINT:
        assert rc == 0, err
        assert complete
        with open(out, "rb") as f:
            summary = make_reader(f).get_summary()
        assert summary.statistics.message_count == len(records) > 50
    else:
        assert not complete and len(records) > 20  # every flushed chunk survives
    # What was recorded is a contiguous run of what was sent, byte for byte.
    first = next(i for i, msg in enumerate(sent) if dds.to_cdr(msg) == records[0][2])
    assert [r[2] for r in records] == [dds.to_cdr(msg) for msg in sent[first:first + len(records)]]


def test_offered_qos_yaml_is_rosbag2s_format():
    text = offered_qos_yaml([ROS_DEFAULT, SENSOR_DATA])
    profiles = yaml.safe_load(text)
    assert profiles[0] == {
        "history": 1, "depth": 10, "reliability": 1, "durability": 2,
        "deadline": {"sec": 9223372036, "nsec": 854775807}, "lifespan": {"sec": 9223372036, "nsec": 854775807},
        "liveliness": 1, "liveliness_lease_duration": {"sec": 9223372036, "nsec": 854775807},
        "avoid_ros_namespace_conventions": False,
    }
    assert profiles[1]["reliability"] == 2 and profiles[1]["depth"] == 5


def test_topic_arguments_and_unknown_types():
    assert parse_topics(["/joint_states", "cmd:std_msgs/msg/Float64MultiArray", "/x"]) == {
        "/joint_states": "sensor_msgs/msg/JointState", "/cmd": "std_msgs/msg/Float64MultiArray", "/x": None}
    with pytest.raises(ValueError, match="unknown message type 'std_msgs/msg/Nope'"):
        parse_topics(["/a:std_msgs/msg/Nope"])
    with pytest.raises(ValueError, match="no topics to record"):
        parse_topics([])


def test_topic_without_publisher_or_type_is_refused(make_dds, domain_id, tmp_path):
    from robotrl.real.recorder import Recorder

    with pytest.raises(ValueError, match=r"cannot tell the type of /nobody.*give it as /nobody:pkg/msg/Type"):
        Recorder(make_dds(domain_id), tmp_path / "x.mcap", {"/nobody": None}, discovery_timeout=0.3)
    assert not (tmp_path / "x.mcap").exists()
