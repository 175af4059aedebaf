"""The ``rclpy`` transport: the same interface on a computer with ROS 2 installed.

rclpy and the ROS message packages are imported lazily (this module imports on any
machine; :class:`RclpyTransport` needs ROS 2). Our dataclasses are mapped field by
field to the generated rclpy classes by their ``.msg`` definitions: float sequences
become ``array.array('d')`` (what rclpy stores for ``float64[]``), fixed float arrays
numpy arrays (what it stores for ``float64[9]``), nested messages recursively.

One rclpy node per transport, on its own rclpy context (so it does not touch a
global ``rclpy.init()`` of the host program), spun by a single-threaded executor in
one daemon thread: subscription callbacks run there, as the interface promises.
"""

from __future__ import annotations

import array
import importlib
import logging
import threading
from typing import Any, Callable, Dict, Optional, Type

import numpy as np

from . import transport as _t
from .messages import FLOAT_TYPES, MESSAGE_TYPES, Message, Time, validate
from .transport import QoS, ROS_DEFAULT

__all__ = ["RclpyTransport", "ros_class", "to_ros", "from_ros", "rclpy_qos"]

log = logging.getLogger(__name__)

_ROS_CLASSES: Dict[Type[Message], Any] = {}


def ros_class(msg_type: Type[Message]) -> Any:
    """The generated rclpy class of a message (``sensor_msgs.msg.JointState``)."""
    cls = _ROS_CLASSES.get(msg_type)
    if cls is None:
        pkg, _, name = msg_type.ROS_TYPE.split("/")
        try:
            cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"ROS message {msg_type.ROS_TYPE} is not available: source your ROS 2 "
                              f"installation ({exc})") from exc
        _ROS_CLASSES[msg_type] = cls
    return cls


def to_ros(msg: Message, resolve: Callable[[Type[Message]], Any] = ros_class) -> Any:
    """Our dataclass -> an rclpy message (no validation: call ``validate`` first)."""
    out = resolve(type(msg))()
    for spec in type(msg).FIELDS:
        value = getattr(msg, spec.name)
        if spec.is_primitive:
            if spec.array is not None:
                if spec.base_type == "float64" and spec.is_sequence:
                    value = array.array("d", np.ascontiguousarray(value, dtype=np.float64).tobytes())
                elif spec.base_type in FLOAT_TYPES:
                    value = np.array(value, dtype=np.float64 if spec.base_type == "float64" else np.float32)
                else:
                    value = list(value)
            elif spec.base_type in FLOAT_TYPES:
                value = float(value)
            elif spec.base_type == "bool":
                value = bool(value)
            elif spec.base_type != "string":
                value = int(value)
        elif spec.array is not None:
            value = [to_ros(item, resolve) for item in value]
        else:
            value = to_ros(value, resolve)
        setattr(out, spec.name, value)
    return out


def from_ros(ros_msg: Any, msg_type: Type[Message]) -> Message:
    """An rclpy message -> our dataclass (float arrays as float64 ndarrays)."""
    values = []
    for spec in msg_type.FIELDS:
        value = getattr(ros_msg, spec.name)
        if spec.is_primitive:
            if spec.array is not None:
                value = (np.array(value, dtype=np.float64) if spec.base_type in FLOAT_TYPES
                         else list(value))
        else:
            sub = MESSAGE_TYPES[spec.base_type]
            value = ([from_ros(item, sub) for item in value] if spec.array is not None
                     else from_ros(value, sub))
        values.append(value)
    return msg_type(*values)


def rclpy_qos(qos: QoS) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST if qos.history == "keep_last" else HistoryPolicy.KEEP_ALL,
        depth=qos.depth,
        reliability=(ReliabilityPolicy.RELIABLE if qos.reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=(DurabilityPolicy.VOLATILE if qos.durability == "volatile"
                    else DurabilityPolicy.TRANSIENT_LOCAL),
    )


class _RclpyPublisher(_t.Publisher):
    def __init__(self, node: Any, topic: str, msg_type: Type[Message], qos: QoS):
        self.topic, self.msg_type, self.qos = topic, msg_type, qos
        self._node = node
        self._pub = node.create_publisher(ros_class(msg_type), topic, rclpy_qos(qos))
        self._closed = False

    def publish(self, msg: Message) -> None:
        if self._closed:
            raise RuntimeError(f"publisher on {self.topic} is closed")
        if type(msg) is not self.msg_type:
            raise TypeError(f"publisher on {self.topic} sends {self.msg_type.ROS_TYPE}, "
                            f"got {type(msg).__name__}")
        validate(msg)
        self._pub.publish(to_ros(msg))

    def matched_count(self) -> int:
        return 0 if self._closed else self._pub.get_subscription_count()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._node.destroy_publisher(self._pub)


class _RclpySubscription(_t.Subscription):
    def __init__(self, node: Any, topic: str, msg_type: Type[Message], callback: _t.Callback, qos: QoS):
        self.topic, self.msg_type, self.qos = topic, msg_type, qos
        self._node = node
        self._callback = callback
        self._closed = False
        self._sub = node.create_subscription(ros_class(msg_type), topic, self._on_message, rclpy_qos(qos))

    def _on_message(self, ros_msg: Any) -> None:
        if self._closed:
            return
        try:
            msg = from_ros(ros_msg, self.msg_type)
        except Exception:  # noqa: BLE001
            log.exception("cannot convert a %s on %s", self.msg_type.ROS_TYPE, self.topic)
            return
        _t._run_callback(self._callback, msg, self.topic)

    def matched_count(self) -> int:
        # rclpy has no per-subscription matched count on every distribution: publishers
        # on the topic (QoS compatibility not checked).
        return 0 if self._closed else self._node.count_publishers(self.topic)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._node.destroy_subscription(self._sub)


class RclpyTransport(_t.Transport):
    """An rclpy node (``node_name``, ``namespace``) on its own context and domain."""

    kind = "rclpy"

    def __init__(self, domain_id: Optional[int] = None, *, node_name: str = "robotrl",
                 namespace: Optional[str] = None):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.domain_id = _t.resolve_domain_id(domain_id)
        self._rclpy = rclpy
        self._context = Context()
        rclpy.init(context=self._context, domain_id=self.domain_id)
        self._node = rclpy.create_node(node_name, namespace=namespace, context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._endpoints: list = []
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=f"rclpy-{node_name}", daemon=True)
        self._thread.start()

    @property
    def node(self) -> Any:
        """The rclpy node (parameters, logging) for code that may use rclpy directly."""
        return self._node

    def _spin(self) -> None:
        while not self._stop.is_set() and self._context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - e.g. shutdown racing with spin_once
                if not self._stop.is_set():
                    log.exception("rclpy executor failed")
                return

    def create_publisher(self, topic: str, msg_type: _t.MsgType, qos: QoS = ROS_DEFAULT) -> _t.Publisher:
        self._check_open()
        fqn, cls = _t.resolve_topic_name(topic), _t.resolve_msg_type(msg_type)
        _t.check_qos(qos)
        pub = _RclpyPublisher(self._node, fqn, cls, qos)
        self._endpoints.append(pub)
        return pub

    def create_subscription(self, topic: str, msg_type: _t.MsgType, callback: _t.Callback,
                            qos: QoS = ROS_DEFAULT) -> _t.Subscription:
        self._check_open()
        fqn, cls = _t.resolve_topic_name(topic), _t.resolve_msg_type(msg_type)
        _t.check_qos(qos)
        if not callable(callback):
            raise TypeError(f"callback for {fqn} must be callable, got {type(callback).__name__}")
        sub = _RclpySubscription(self._node, fqn, cls, callback, qos)
        self._endpoints.append(sub)
        return sub

    def now(self) -> Time:
        stamp = self._node.get_clock().now().to_msg()  # honours use_sim_time
        return Time(stamp.sec, stamp.nanosec)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for endpoint in self._endpoints:
            endpoint._closed = True  # no callback from here on
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._executor.shutdown()
        self._node.destroy_node()
        self._context.try_shutdown()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")
