import pytest

from robotrl.real import transport as t


@pytest.mark.parametrize("name, fqn", [("joint_states", "/joint_states"), ("/joint_states", "/joint_states"),
                                       ("robot1/cmd", "/robot1/cmd"), ("/_a/b_2", "/_a/b_2")])
def test_topic_names(name, fqn):
    assert t.resolve_topic_name(name) == fqn
    assert t.dds_topic_name(name) == "rt" + fqn


@pytest.mark.parametrize("name, reason", [
    ("", "must not be empty"), ("a b", "character ' '"), ("/a/", "must not end with '/'"),
    ("/a//b", "must not contain '//'"), ("/9a", "must not start with a digit"),
    ("/a/1", "must not start with a digit"), ("~/x", "private names"), ("{ns}/x", "substitutions"),
    ("/a.b", "character '.'"),
])
def test_invalid_topic_names_say_why(name, reason):
    with pytest.raises(ValueError, match="invalid ROS 2 topic name") as info:
        t.resolve_topic_name(name)
    assert reason in str(info.value)


def test_domain_id(monkeypatch):
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    assert t.resolve_domain_id() == 0
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert t.resolve_domain_id() == 42
    assert t.resolve_domain_id(7) == 7
    monkeypatch.setenv("ROS_DOMAIN_ID", "robot")
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID='robot' is not an integer"):
        t.resolve_domain_id()
    with pytest.raises(ValueError, match="0..232"):
        t.resolve_domain_id(300)


def test_qos_presets_as_in_rclpy():
    assert t.ROS_DEFAULT == t.QoS("reliable", "volatile", "keep_last", 10)
    assert t.SENSOR_DATA == t.QoS("best_effort", "volatile", "keep_last", 5)
    with pytest.raises(ValueError, match="depth"):
        t.QoS(depth=0)


def test_make_transport_auto_picks_dds_without_rclpy(monkeypatch, domain_id):
    pytest.importorskip("cyclonedds")
    if t.rclpy_available():
        pytest.skip("rclpy is installed: auto picks rclpy")
    from robotrl.real.dds_transport import DdsTransport

    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    with t.make_transport("auto") as transport:
        assert isinstance(transport, DdsTransport) and transport.kind == "dds"
        assert transport.domain_id == domain_id
        now = transport.now()
        assert now.sec > 1_600_000_000 and 0 <= now.nanosec < 1_000_000_000
    with pytest.raises(ValueError, match="unknown transport 'zenoh'"):
        t.make_transport("zenoh")
