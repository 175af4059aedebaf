"""The transport interface the deployment node talks through (contract 5).

The node logic never imports rclpy: it creates publishers and subscriptions on a
:class:`Transport`, which is either ``rclpy`` (a computer with ROS 2 installed) or
``dds`` (Cyclone DDS from PyPI speaking the ROS 2 wire format), see
:func:`make_transport`.

Subscriptions deliver by callback, called in a transport thread as soon as a sample
has arrived and been decoded. A callback is the lower-latency choice: the sample is
decoded off the control loop's critical path, and an event-driven node wakes
without any polling delay (a polled ``take()`` adds up to one polling period and
decodes inside the control tick). It is also rclpy's native model (executor
callbacks). Keep callbacks short (store the latest message, set an event): they
run in the transport's receive thread, and a slow callback delays every other
subscription. Exceptions raised by a callback are logged, never propagated into
the transport thread. Do not close a subscription or the transport from inside
its own callback.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Optional, Type, Union

from .messages import Message, Time, message_type

__all__ = [
    "QoS", "ROS_DEFAULT", "SENSOR_DATA", "Publisher", "Subscription", "Transport",
    "make_transport", "resolve_domain_id", "resolve_topic_name", "dds_topic_name",
    "rclpy_available",
]

log = logging.getLogger(__name__)

MsgType = Union[str, Type[Message]]
Callback = Callable[[Message], None]


@dataclass(frozen=True)
class QoS:
    """The QoS policies a ROS 2 topic endpoint sets (deadline, lifespan, liveliness: defaults)."""

    reliability: str = "reliable"  # "reliable" | "best_effort"
    durability: str = "volatile"  # "volatile" | "transient_local"
    history: str = "keep_last"  # "keep_last" | "keep_all"
    depth: int = 10  # used with keep_last

    def __post_init__(self) -> None:
        if self.reliability not in ("reliable", "best_effort"):
            raise ValueError(f"QoS reliability must be 'reliable' or 'best_effort', not {self.reliability!r}")
        if self.durability not in ("volatile", "transient_local"):
            raise ValueError(f"QoS durability must be 'volatile' or 'transient_local', not {self.durability!r}")
        if self.history not in ("keep_last", "keep_all"):
            raise ValueError(f"QoS history must be 'keep_last' or 'keep_all', not {self.history!r}")
        if self.history == "keep_last" and (not isinstance(self.depth, int) or self.depth < 1):
            raise ValueError(f"QoS keep_last depth must be a positive int, not {self.depth!r}")


ROS_DEFAULT = QoS("reliable", "volatile", "keep_last", 10)
"""rclpy's default for publishers and subscriptions (``qos_profile_default``, depth 10)."""
SENSOR_DATA = QoS("best_effort", "volatile", "keep_last", 5)
"""rclpy's ``qos_profile_sensor_data``: a reliable reader does not match a publisher with this."""


class Publisher(abc.ABC):
    topic: str  # the ROS name, fully qualified ("/joint_states")
    msg_type: Type[Message]
    qos: QoS

    @abc.abstractmethod
    def publish(self, msg: Message) -> None:
        """Send one message; ``TypeError``/``ValueError`` naming the field if it is malformed."""

    @abc.abstractmethod
    def matched_count(self) -> int:
        """Subscriptions currently matched (discovered, QoS compatible)."""

    def wait_for_subscribers(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` subscriptions matched. Volatile topics drop samples
        published before discovery completes: wait before a short burst."""
        return _wait_until(lambda: self.matched_count() >= count, timeout)

    @abc.abstractmethod
    def close(self) -> None:
        ...


class Subscription(abc.ABC):
    topic: str
    msg_type: Type[Message]
    qos: QoS

    @abc.abstractmethod
    def matched_count(self) -> int:
        """Publishers currently matched (discovered, QoS compatible)."""

    def wait_for_publishers(self, count: int = 1, timeout: float = 5.0) -> bool:
        return _wait_until(lambda: self.matched_count() >= count, timeout)

    @abc.abstractmethod
    def close(self) -> None:
        ...


class Transport(abc.ABC):
    """Publishers and subscriptions on one ROS 2 domain (one DDS participant / one rclpy node)."""

    kind: str  # "dds" | "rclpy"
    domain_id: int

    @abc.abstractmethod
    def create_publisher(self, topic: str, msg_type: MsgType, qos: QoS = ROS_DEFAULT) -> Publisher:
        ...

    @abc.abstractmethod
    def create_subscription(self, topic: str, msg_type: MsgType, callback: Callback,
                            qos: QoS = ROS_DEFAULT) -> Subscription:
        """``callback(msg)`` runs in a transport thread for every received message, in order."""

    def now(self) -> Time:
        """ROS time (the system clock unless a node uses simulated time)."""
        return Time.from_nanoseconds(time.time_ns())

    @abc.abstractmethod
    def close(self) -> None:
        """Stop delivering callbacks and leave the domain. Idempotent."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- names

_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def resolve_topic_name(topic: str) -> str:
    """The fully qualified ROS 2 name of ``topic`` (relative names resolve against ``/``).

    Follows rcl's topic name rules; ``ValueError`` says which one is broken. Private
    (``~``) names and substitutions (``{node}``) need a node and are not supported.
    """
    if not isinstance(topic, str):
        raise ValueError(f"topic name must be a str, not {type(topic).__name__}")
    if topic == "":
        raise ValueError("invalid ROS 2 topic name '': must not be empty")
    bad = re.search(r"[^A-Za-z0-9_/~{}]", topic)
    if bad:
        raise ValueError(f"invalid ROS 2 topic name {topic!r}: character {bad.group()!r} is not allowed "
                         "(only alphanumerics, '_' and '/')")
    if "~" in topic or "{" in topic or "}" in topic:
        raise ValueError(f"invalid ROS 2 topic name {topic!r}: private names (~) and substitutions ({{}}) "
                         "are not supported by the transport")
    if topic.endswith("/"):
        raise ValueError(f"invalid ROS 2 topic name {topic!r}: must not end with '/'")
    if "//" in topic:
        raise ValueError(f"invalid ROS 2 topic name {topic!r}: must not contain '//'")
    fqn = topic if topic.startswith("/") else "/" + topic
    for token in fqn[1:].split("/"):
        if not _TOKEN.match(token):
            raise ValueError(f"invalid ROS 2 topic name {topic!r}: token {token!r} must not start with a digit")
    return fqn


def dds_topic_name(topic: str) -> str:
    """``/joint_states`` -> ``rt/joint_states`` (the DDS topic ROS 2 uses)."""
    return "rt" + resolve_topic_name(topic)


def resolve_domain_id(domain_id: Optional[int] = None) -> int:
    """``domain_id``, else ``ROS_DOMAIN_ID``, else 0; DDS allows 0..232."""
    if domain_id is None:
        env = os.environ.get("ROS_DOMAIN_ID", "").strip()
        if not env:
            return 0
        try:
            domain_id = int(env)
        except ValueError:
            raise ValueError(f"ROS_DOMAIN_ID={env!r} is not an integer") from None
    if isinstance(domain_id, bool) or not isinstance(domain_id, int) or not 0 <= domain_id <= 232:
        raise ValueError(f"ROS domain id must be an int in 0..232, not {domain_id!r}")
    return domain_id


def resolve_msg_type(msg_type: MsgType) -> Type[Message]:
    return message_type(msg_type)


def check_qos(qos: object) -> None:
    if not isinstance(qos, QoS):
        raise TypeError(f"qos must be a robotrl.real.transport.QoS (e.g. ROS_DEFAULT, SENSOR_DATA), "
                        f"got {type(qos).__name__}")


# --------------------------------------------------------------------------- factory


def rclpy_available() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def make_transport(kind: str = "auto", domain_id: Optional[int] = None, **kwargs) -> Transport:
    """A transport: ``"rclpy"``, ``"dds"``, or ``"auto"`` (rclpy where it imports, else dds).

    ``kwargs`` go to the implementation (``node_name`` for rclpy, ``config`` for dds).
    """
    if kind == "auto":
        kind = "rclpy" if rclpy_available() else "dds"
    if kind == "rclpy":
        from .rclpy_transport import RclpyTransport

        return RclpyTransport(domain_id, **kwargs)
    if kind == "dds":
        from .dds_transport import DdsTransport

        return DdsTransport(domain_id, **kwargs)
    raise ValueError(f"unknown transport {kind!r}: use 'auto', 'dds' or 'rclpy'")


def _wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)


def _run_callback(callback: Callback, msg: Message, topic: str) -> None:
    """Call a user callback; log, never raise, into the transport's thread."""
    try:
        callback(msg)
    except Exception:  # noqa: BLE001 - the transport thread must survive user errors
        log.exception("subscription callback for %s raised", topic)
