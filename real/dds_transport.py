"""The ``dds`` transport: Cyclone DDS (PyPI ``cyclonedds``) speaking the ROS 2 wire format.

What a ROS 2 node (rmw_cyclonedds or Fast DDS) expects, see shared ROS2_WIRE.md:

- topic ``/joint_states`` is the DDS topic ``rt/joint_states``;
- type ``sensor_msgs/msg/JointState`` is the DDS type ``sensor_msgs::msg::dds_::JointState_``;
- data are XCDR1 (plain CDR, little endian on x86/ARM): the IDL structs are *final*
  and keyless, and the data-representation QoS is pinned to XCDR1 as rmw_cyclonedds
  does; the bytes equal what ``mcap_ros2`` encodes (tested), so they can also go into
  an MCAP bag unchanged (cyclonedds' writer then pads the payload with zeros to a
  multiple of 4 bytes on the wire, as rmw_cyclonedds does; CDR readers ignore them);
- QoS: reliability, durability, history/depth from :class:`~robotrl.real.transport.QoS`.

The IDL classes are built from each message's ``.msg`` definition
(:mod:`robotrl.real.messages`), so names, order and types cannot drift from the
dataclasses. Not done (not needed for data to flow): the ``RIHS01`` type hash in
USER_DATA (Jazzy+; rmw_cyclonedds tolerates its absence, rmw_zenoh does not) and the
``ros_discovery_info`` graph topic (so ``ros2 node list`` does not show us, while
``ros2 topic list/echo`` do).

Discovery: Cyclone's configuration comes from ``CYCLONEDDS_URI`` unless ``config`` is
given. On one machine without multicast on loopback use :func:`loopback_config`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Type

import numpy as np
from cyclonedds.core import (DDSException, GuardCondition, InstanceState, Policy, Qos, ReadCondition,
                             SampleState, ViewState, WaitSet)
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct, make_idl_struct
from cyclonedds.idl import types as idl_types
from cyclonedds.idl.annotations import extensibility
from cyclonedds.pub import DataWriter, Publisher as DdsPublisher
from cyclonedds.sub import DataReader, Subscriber as DdsSubscriber
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from . import transport as _t
from .messages import FLOAT_TYPES, MESSAGE_TYPES, Message, Time, validate
from .transport import QoS, ROS_DEFAULT

__all__ = ["DdsTransport", "idl_type", "to_idl", "from_idl", "to_cdr", "from_cdr", "loopback_config",
           "dds_qos"]

log = logging.getLogger(__name__)

_IDL_PRIMITIVES: Dict[str, Any] = {
    "bool": bool, "string": str, "float32": idl_types.float32, "float64": idl_types.float64,
    "int8": idl_types.int8, "uint8": idl_types.uint8, "byte": idl_types.uint8,
    "int16": idl_types.int16, "uint16": idl_types.uint16, "int32": idl_types.int32,
    "uint32": idl_types.uint32, "int64": idl_types.int64, "uint64": idl_types.uint64,
}
_IDL_CLASSES: Dict[Type[Message], Type[IdlStruct]] = {}
_IDL_LOCK = threading.Lock()


def idl_type(msg_type: Type[Message]) -> Type[IdlStruct]:
    """The final, keyless cyclonedds IDL struct for a message class, named as ROS 2 names it."""
    with _IDL_LOCK:
        return _idl_type(msg_type)


def _idl_type(msg_type: Type[Message]) -> Type[IdlStruct]:
    cls = _IDL_CLASSES.get(msg_type)
    if cls is not None:
        return cls
    fields: Dict[str, Any] = {}
    for spec in msg_type.FIELDS:
        element = (_IDL_PRIMITIVES[spec.base_type] if spec.is_primitive
                   else _idl_type(MESSAGE_TYPES[spec.base_type]))
        if spec.is_sequence:
            element = idl_types.sequence[element]
        elif spec.is_fixed_array:
            element = idl_types.array[element, spec.array]
        fields[spec.name] = element
    # cyclonedds spells "pkg::msg::dds_::Type_" with dots in Python.
    name = msg_type.DDS_TYPE.rsplit("::", 1)[1]
    cls = make_idl_struct(name, msg_type.DDS_TYPE.replace("::", "."), fields)
    cls = extensibility("final")(cls)  # final => XCDR1, what ROS 2 and other vendors read
    _IDL_CLASSES[msg_type] = cls
    return cls


def to_idl(msg: Message) -> IdlStruct:
    """Our dataclass -> its IDL struct (no validation: call ``validate`` first)."""
    cls = type(msg)
    values = []
    for spec in cls.FIELDS:
        value = getattr(msg, spec.name)
        if spec.is_primitive:
            if spec.array is not None:
                value = value.tolist() if isinstance(value, np.ndarray) else list(value)
            elif spec.base_type in FLOAT_TYPES:
                value = float(value)
            elif spec.base_type == "bool":
                value = bool(value)
            elif spec.base_type != "string":
                value = int(value)
        elif spec.array is not None:
            value = [to_idl(item) for item in value]
        else:
            value = to_idl(value)
        values.append(value)
    return _idl_type(cls)(*values)


def from_idl(sample: Any, msg_type: Type[Message]) -> Message:
    """An IDL struct (as cyclonedds decodes it) -> our dataclass."""
    values = []
    for spec in msg_type.FIELDS:
        value = getattr(sample, spec.name)
        if spec.is_primitive:
            if spec.array is not None:
                value = (np.array(value, dtype=np.float64) if spec.base_type in FLOAT_TYPES
                         else list(value))
        else:
            sub = MESSAGE_TYPES[spec.base_type]
            value = ([from_idl(item, sub) for item in value] if spec.array is not None
                     else from_idl(value, sub))
        values.append(value)
    return msg_type(*values)


def to_cdr(msg: Message) -> bytes:
    """The serialized message (4-byte encapsulation header + XCDR1 body), as ROS 2 bags
    store it; the publisher sends these bytes plus zero padding to a multiple of 4."""
    validate(msg)
    return to_idl(msg).serialize(use_version_2=False)


def from_cdr(data: bytes, msg_type: Any) -> Message:
    """Decode a ROS 2 CDR payload (e.g. from an MCAP bag) into our dataclass."""
    cls = _t.resolve_msg_type(msg_type)
    return from_idl(idl_type(cls).deserialize(data), cls)


def dds_qos(qos: QoS, writer: bool = False) -> Qos:
    """Cyclone QoS for a ROS QoS profile, as rmw_cyclonedds sets it."""
    policies = [
        Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100))
        if qos.reliability == "reliable" else Policy.Reliability.BestEffort,
        Policy.Durability.Volatile if qos.durability == "volatile" else Policy.Durability.TransientLocal,
        Policy.History.KeepLast(depth=qos.depth) if qos.history == "keep_last" else Policy.History.KeepAll,
        Policy.DataRepresentation(use_cdrv0_representation=True),  # XCDR1 only, like rmw_cyclonedds
    ]
    if writer:  # rmw_cyclonedds: no dispose when a publisher goes away
        policies.append(Policy.WriterDataLifecycle(autodispose=False))
    return Qos(*policies)


def loopback_config(max_participants: int = 32) -> str:
    """Cyclone XML that keeps all traffic on 127.0.0.1 and finds peers there by unicast.

    Loopback has no multicast, so the default configuration may never discover a
    second process on the same machine. Pass this as ``config=`` or put it (or a
    file:// URI to it) into ``CYCLONEDDS_URI``. ``max_participants`` bounds the
    participant indices probed per domain on this host.
    """
    return (
        "<CycloneDDS><Domain Id=\"any\">"
        "<General><Interfaces><NetworkInterface address=\"127.0.0.1\"/></Interfaces>"
        "<AllowMulticast>false</AllowMulticast></General>"
        "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
        f"<MaxAutoParticipantIndex>{int(max_participants)}</MaxAutoParticipantIndex>"
        "<Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery>"
        "</Domain></CycloneDDS>"
    )


def _delete(entity: Any) -> None:
    # cyclonedds deletes an entity (and its children) in __del__, idempotently; call it now
    # rather than whenever the garbage collector runs, so that no callback fires after close().
    try:
        entity.__del__()
    except Exception:  # noqa: BLE001 - the entity may already be gone with its parent
        log.debug("deleting %r failed", entity, exc_info=True)


class _DdsPublisher(_t.Publisher):
    def __init__(self, transport: "DdsTransport", topic: str, msg_type: Type[Message], qos: QoS):
        self.topic, self.msg_type, self.qos = topic, msg_type, qos
        self._writer = DataWriter(transport._publisher, transport._topic(topic, msg_type),
                                  qos=dds_qos(qos, writer=True))
        self._closed = False

    def publish(self, msg: Message) -> None:
        if self._closed:
            raise RuntimeError(f"publisher on {self.topic} is closed")
        if type(msg) is not self.msg_type:
            raise TypeError(f"publisher on {self.topic} sends {self.msg_type.ROS_TYPE}, "
                            f"got {type(msg).__name__}")
        validate(msg)
        self._writer.write(to_idl(msg))

    def matched_count(self) -> int:
        return 0 if self._closed else len(self._writer.get_matched_subscriptions())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _delete(self._writer)


class _DdsSubscription(_t.Subscription):
    """One thread per subscription waits on a DDS WaitSet and runs the callback.

    No Cyclone listener calls into Python: cyclonedds-python holds the GIL inside
    ``write`` and ``take``, so a listener that Cyclone runs on one of its own threads
    (holding the reader's locks, waiting for the GIL) deadlocks against a Python
    thread that holds the GIL and waits for those locks. A WaitSet wait releases the
    GIL and calls nothing back, so Cyclone's threads never need Python."""

    _BATCH = 64
    _POLL_NS = 100_000_000  # a bounded wait: close() is seen within 0.1 s even if the guard is missed

    def __init__(self, transport: "DdsTransport", topic: str, msg_type: Type[Message],
                 callback: _t.Callback, qos: QoS):
        self.topic, self.msg_type, self.qos = topic, msg_type, qos
        self._callback = callback
        self._closed = False
        self._reader = DataReader(transport._subscriber, transport._topic(topic, msg_type), qos=dds_qos(qos))
        self._waitset = WaitSet(transport._participant)
        self._data = ReadCondition(self._reader, SampleState.Any | ViewState.Any | InstanceState.Any)
        self._guard = GuardCondition(transport._participant)
        self._waitset.attach(self._data)
        self._waitset.attach(self._guard)
        self._thread = threading.Thread(target=self._run, name=f"dds-sub {topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                self._waitset.wait(self._POLL_NS)
            except DDSException:
                if self._closed:
                    return
                raise
            if not self._closed:
                self._drain()

    def _drain(self) -> None:
        while not self._closed:
            samples = self._reader.take(N=self._BATCH)
            for sample in samples:
                if getattr(sample, "sample_info", None) is None or not sample.sample_info.valid_data:
                    continue  # instance-state notifications (writer gone), not data
                try:
                    msg = from_idl(sample, self.msg_type)
                except Exception:  # noqa: BLE001
                    log.exception("cannot decode a %s on %s", self.msg_type.ROS_TYPE, self.topic)
                    continue
                _t._run_callback(self._callback, msg, self.topic)
            if len(samples) < self._BATCH:
                return

    def matched_count(self) -> int:
        return 0 if self._closed else len(self._reader.get_matched_publications())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._guard.set(True)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.warning("subscription %s: callback still running at close", self.topic)
        for entity in (self._guard, self._data, self._waitset, self._reader):
            _delete(entity)


class DdsTransport(_t.Transport):
    """One DDS participant on ``domain_id`` (default ``ROS_DOMAIN_ID``, else 0).

    ``config``: Cyclone XML (or a ``file://`` URI) for this domain; ``None`` uses
    Cyclone's defaults / ``CYCLONEDDS_URI``. Cyclone applies a domain's configuration
    once per process: a second transport on the same domain id shares the first one's.
    """

    kind = "dds"

    def __init__(self, domain_id: Optional[int] = None, *, config: Optional[str] = None):
        self.domain_id = _t.resolve_domain_id(domain_id)
        _acquire_domain(self.domain_id, config)
        try:
            self._participant = DomainParticipant(self.domain_id)
            self._publisher = DdsPublisher(self._participant)
            self._subscriber = DdsSubscriber(self._participant)
        except Exception:
            _release_domain(self.domain_id)
            raise
        self._topics: Dict[str, tuple] = {}
        self._endpoints: List[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _topic(self, topic: str, msg_type: Type[Message]) -> Topic:
        name = _t.dds_topic_name(topic)
        with self._lock:
            known = self._topics.get(name)
            if known is not None:
                if known[1] is not msg_type:
                    raise ValueError(f"topic {topic} already has type {known[1].ROS_TYPE} in this transport, "
                                     f"not {msg_type.ROS_TYPE}")
                return known[0]
            dds_topic = Topic(self._participant, name, idl_type(msg_type))
            self._topics[name] = (dds_topic, msg_type)
            return dds_topic

    def create_publisher(self, topic: str, msg_type: _t.MsgType, qos: QoS = ROS_DEFAULT) -> _t.Publisher:
        self._check_open()
        fqn, cls = _t.resolve_topic_name(topic), _t.resolve_msg_type(msg_type)
        _t.check_qos(qos)
        pub = _DdsPublisher(self, fqn, cls, qos)
        self._endpoints.append(pub)
        return pub

    def create_subscription(self, topic: str, msg_type: _t.MsgType, callback: _t.Callback,
                            qos: QoS = ROS_DEFAULT) -> _t.Subscription:
        self._check_open()
        fqn, cls = _t.resolve_topic_name(topic), _t.resolve_msg_type(msg_type)
        _t.check_qos(qos)
        if not callable(callback):
            raise TypeError(f"callback for {fqn} must be callable, got {type(callback).__name__}")
        sub = _DdsSubscription(self, fqn, cls, callback, qos)
        self._endpoints.append(sub)
        return sub

    def now(self) -> Time:
        return super().now()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for endpoint in self._endpoints:
            endpoint.close()
        self._endpoints.clear()
        self._topics.clear()
        _delete(self._participant)  # deletes the publisher, subscriber and topics with it
        _release_domain(self.domain_id)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")


# Domains created here with an explicit configuration, by id: [Domain, config, users].
# Deleting a domain deletes every participant in it, so it is deleted only when the
# last DdsTransport of this process on that domain id closes.
_DOMAINS: Dict[int, list] = {}


def _acquire_domain(domain_id: int, config: Optional[str]) -> None:
    with _IDL_LOCK:
        known = _DOMAINS.get(domain_id)
        if known is not None:
            if config is not None and known[1] != config:
                log.warning("DDS domain %d already runs with another configuration in this process; "
                            "Cyclone cannot reconfigure it, keeping the first", domain_id)
            known[2] += 1
            return
        if config is None:
            return
        try:
            domain = Domain(domain_id, config)
        except DDSException as exc:
            log.warning("DDS domain %d already exists in this process (%s); its configuration stays",
                        domain_id, exc)
            return
        _DOMAINS[domain_id] = [domain, config, 1]


def _release_domain(domain_id: int) -> None:
    with _IDL_LOCK:
        known = _DOMAINS.get(domain_id)
        if known is None:
            return
        known[2] -= 1
        if known[2] <= 0:
            del _DOMAINS[domain_id]
            _delete(known[0])
