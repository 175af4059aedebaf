"""``robotrl record``: write ROS 2 topics into a ROS 2 bag (MCAP), without rosbag2.

The bag is what ``ros2 bag record -s mcap`` writes, so ``ros2 bag info/play``,
Foxglove and the ``mcap`` / ``mcap-ros2-support`` readers open it:

- profile ``ros2``; one schema per message type, encoding ``ros2msg``, the
  definition text of :func:`robotrl.real.messages.schema_text` (dependencies after
  lines of 80 ``=``); one channel per topic, message encoding ``cdr``;
- each channel carries the ``offered_qos_profiles`` metadata rosbag2 needs to
  replay with the publishers' QoS: the YAML list rosbag2 writes, one profile per
  publisher discovered on the topic, with the integer policy values of the
  pre-Jazzy format (``history: 1``, ``reliability: 1`` ...). A ``rosbag2``
  metadata record without ``serialized_metadata`` tells rosbag2 (Humble and
  later) to read them as that older format version;
- each message: the raw CDR bytes (``to_cdr``, unpadded), log time = the time the
  recorder received it, publish time = the message's header stamp (the receive
  time for messages without a header, e.g. ``Float64MultiArray``).

Types and QoS: a topic given as ``/name:pkg/msg/Type`` (or in ``types``) is
subscribed at once; otherwise, on the ``dds`` transport, the recorder waits up to
``discovery_timeout`` seconds for a publisher of it and takes the type and offered
QoS from DDS discovery (as ``ros2 bag record`` does). The reader QoS adapts to the
offers like rosbag2's: reliable only when every discovered publisher is reliable,
otherwise best effort (which matches any publisher).

Crash safety: messages are written in MCAP chunks (``chunk_size``); the file is
flushed every ``flush_interval`` seconds. Ctrl-C (SIGINT) or SIGTERM stops
recording and closes the bag properly (last chunk, summary, footer). After a hard
crash (SIGKILL, power loss) every chunk flushed before it is still readable by a
streaming MCAP reader (``robotrl.datasets.bag_import.read_bag`` falls back to one);
only the chunk being filled is lost.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from .messages import Message, message_type, schema_text
from .transport import QoS, ROS_DEFAULT, Transport, make_transport, resolve_topic_name

__all__ = ["BagWriter", "Recorder", "offered_qos_yaml", "parse_topics", "record", "record_cmd", "DEFAULT_TYPES"]

log = logging.getLogger(__name__)

# Topic names whose type is conventional enough to need no discovery.
DEFAULT_TYPES: Dict[str, str] = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/imu": "sensor_msgs/msg/Imu",
    "/cmd_vel": "geometry_msgs/msg/Twist",
}

# rmw's RMW_DURATION_INFINITE as rosbag2 writes it ({sec, nsec} of INT64_MAX ns).
_INFINITE = {"sec": 9223372036, "nsec": 854775807}
# rmw enum values (rmw/types.h), as rosbag2 metadata version <= 8 stores them.
_HISTORY = {"keep_last": 1, "keep_all": 2}
_RELIABILITY = {"reliable": 1, "best_effort": 2}
_DURABILITY = {"transient_local": 1, "volatile": 2}
_LIVELINESS_AUTOMATIC = 1


def offered_qos_yaml(profiles: Sequence[QoS]) -> str:
    """The ``offered_qos_profiles`` channel metadata: the YAML sequence rosbag2's
    ``serialize_rclcpp_qos_vector`` writes (one mapping per publisher; deadline,
    lifespan and liveliness lease at rmw's "infinite"), integer enums."""

    def duration(key: str) -> List[str]:
        return [f"  {key}:", f"    sec: {_INFINITE['sec']}", f"    nsec: {_INFINITE['nsec']}"]

    lines: List[str] = []
    for qos in profiles:
        lines += [
            f"- history: {_HISTORY[qos.history]}",
            f"  depth: {qos.depth if qos.history == 'keep_last' else 0}",
            f"  reliability: {_RELIABILITY[qos.reliability]}",
            f"  durability: {_DURABILITY[qos.durability]}",
            *duration("deadline"),
            *duration("lifespan"),
            f"  liveliness: {_LIVELINESS_AUTOMATIC}",
            *duration("liveliness_lease_duration"),
            "  avoid_ros_namespace_conventions: false",
        ]
    return "\n".join(lines) + ("\n" if lines else "")


class BagWriter:
    """A thread-safe ROS 2 MCAP bag writer (callbacks of several topics write at once)."""

    def __init__(self, path: str | os.PathLike, chunk_size: int = 256 * 1024, compression: str = "zstd"):
        from mcap.writer import CompressionType, Writer

        kinds = {"none": CompressionType.NONE, "lz4": CompressionType.LZ4, "zstd": CompressionType.ZSTD}
        if compression not in kinds:
            raise ValueError(f"compression must be one of {', '.join(kinds)}, not {compression!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file, chunk_size=int(chunk_size), compression=kinds[compression])
        self._writer.start(profile="ros2", library="robotrl record")
        # No serialized_metadata: rosbag2 then reads the QoS profiles as format version 8 (integers).
        self._writer.add_metadata("rosbag2", {"ROS_DISTRO": os.environ.get("ROS_DISTRO", "")})
        self._lock = threading.Lock()
        self._schemas: Dict[str, int] = {}
        self._channels: Dict[str, int] = {}
        self._closed = False
        self.counts: Dict[str, int] = {}

    def add_topic(self, topic: str, msg_type, offered_qos: Sequence[QoS] = (ROS_DEFAULT,)) -> int:
        cls = message_type(msg_type)
        with self._lock:
            if topic in self._channels:
                raise ValueError(f"topic {topic} is already in the bag")
            schema_id = self._schemas.get(cls.ROS_TYPE)
            if schema_id is None:
                schema_id = self._writer.register_schema(cls.ROS_TYPE, "ros2msg", schema_text(cls).encode())
                self._schemas[cls.ROS_TYPE] = schema_id
            channel = self._writer.register_channel(
                topic, "cdr", schema_id, metadata={"offered_qos_profiles": offered_qos_yaml(offered_qos)})
            self._channels[topic] = channel
            self.counts[topic] = 0
            return channel

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int) -> None:
        with self._lock:
            if self._closed:
                return  # a callback racing close(): recording has ended
            self._writer.add_message(self._channels[topic], log_time=int(log_time_ns), data=data,
                                     publish_time=int(publish_time_ns), sequence=self.counts[topic])
            self.counts[topic] += 1

    def flush(self) -> None:
        """Push finished chunks to the OS (a crash then loses at most the open chunk)."""
        with self._lock:
            if not self._closed:
                self._file.flush()

    def close(self) -> None:
        """Write the last chunk, the summary and the footer. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._writer.finish()
            finally:
                self._file.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stamp_ns(msg: Message) -> Optional[int]:
    """The header stamp in ns, or None for a message without a header."""
    header = getattr(msg, "header", None)
    return None if header is None else header.stamp.to_nanoseconds()


# ----------------------------------------------------------------- discovery


@dataclass
class TopicInfo:
    topic: str
    msg_type: Type[Message]
    offered: List[QoS]  # one per discovered publisher (empty: none discovered)


def _qos_from_dds(qos) -> QoS:
    reliability = "reliable"
    durability = "volatile"
    history, depth = "keep_last", 1
    for p in qos:
        name = type(p).__name__
        if name.startswith("Reliability"):
            reliability = "best_effort" if "BestEffort" in name else "reliable"
        elif name.startswith("Durability"):
            durability = "transient_local" if "TransientLocal" in name else "volatile"
        elif name.startswith("History"):
            if "KeepAll" in name:
                history = "keep_all"
            else:
                depth = int(getattr(p, "depth", 1))
    return QoS(reliability, durability, history, max(depth, 1))


def discover(transport: Transport, topics: Sequence[str], timeout: float) -> Dict[str, Tuple[str, List[QoS]]]:
    """``{topic: (ros type, [offered QoS per publisher])}`` for those of ``topics`` that
    have a publisher within ``timeout`` s (dds transport only: rclpy has its own graph)."""
    if getattr(transport, "kind", None) != "dds":
        return {}
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication

    from .messages import MESSAGE_TYPES
    from .transport import dds_topic_name

    wanted = {dds_topic_name(t): t for t in topics}
    dds_types = {cls.DDS_TYPE: ros for ros, cls in MESSAGE_TYPES.items() if ros.count("/") == 2}
    found: Dict[str, Tuple[str, List[QoS]]] = {}
    seen = set()
    reader = BuiltinDataReader(transport._participant, BuiltinTopicDcpsPublication)  # noqa: SLF001
    try:
        deadline = time.monotonic() + timeout
        while True:
            for sample in reader.take(N=64):
                if getattr(sample, "topic_name", None) not in wanted or sample.key in seen:
                    continue
                seen.add(sample.key)
                ros_type = dds_types.get(sample.type_name.replace(".", "::"))
                topic = wanted[sample.topic_name]
                if ros_type is None:
                    log.warning("%s has type %s, which robotrl.real.messages does not know; not recorded",
                                topic, sample.type_name)
                    continue
                entry = found.setdefault(topic, (ros_type, []))
                entry[1].append(_qos_from_dds(sample.qos))
            # Stop once every topic has a publisher; a short settle below picks up
            # further publishers of the same topics discovered at about the same time.
            if len(found) == len(wanted) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        time.sleep(0.1)
        for sample in reader.take(N=64):
            topic = wanted.get(getattr(sample, "topic_name", None))
            if topic in found and sample.key not in seen:
                seen.add(sample.key)
                found[topic][1].append(_qos_from_dds(sample.qos))
    finally:
        try:
            reader.__del__()
        except Exception:  # noqa: BLE001
            pass
    return found


def parse_topics(topics: Sequence[str], types: Optional[Mapping[str, str]] = None) -> Dict[str, Optional[str]]:
    """``["/a", "/b:pkg/msg/T"]`` -> ``{"/a": type or None, "/b": "pkg/msg/T"}`` (types
    from the ``/name:type`` suffix, then ``types``, then :data:`DEFAULT_TYPES`)."""
    if isinstance(topics, str):
        topics = [t for t in topics.replace(",", " ").split() if t]
    if not topics:
        raise ValueError("no topics to record: give topics=[/joint_states,/imu,...]")
    types = dict(types or {})
    out: Dict[str, Optional[str]] = {}
    for entry in topics:
        name, _, typ = str(entry).partition(":")
        fqn = resolve_topic_name(name.strip())
        typ = typ.strip() or types.get(fqn) or types.get(name.strip()) or DEFAULT_TYPES.get(fqn)
        if typ:
            message_type(typ)  # ValueError naming the known types
        if fqn in out:
            raise ValueError(f"topic {fqn} is listed twice")
        out[fqn] = typ
    return out


# ----------------------------------------------------------------- recorder


class Recorder:
    """Subscribe to topics on a transport and write every message into a bag."""

    def __init__(self, transport: Transport, path: str | os.PathLike, topics: Mapping[str, Optional[str]],
                 discovery_timeout: float = 3.0, chunk_size: int = 256 * 1024, compression: str = "zstd",
                 clock: Callable[[], int] = time.time_ns):
        from .dds_transport import to_cdr  # the bytes a ROS 2 bag stores; needs cyclonedds

        self._to_cdr = to_cdr
        self.transport = transport
        self._clock = clock
        found = discover(transport, list(topics), discovery_timeout) if topics else {}
        infos: List[TopicInfo] = []
        for topic, typ in topics.items():
            offered = found.get(topic, (None, []))[1]
            if typ is None:
                if topic not in found:
                    raise ValueError(
                        f"cannot tell the type of {topic}: no publisher found within {discovery_timeout} s; "
                        f"give it as {topic}:pkg/msg/Type (e.g. {topic}:sensor_msgs/msg/JointState)")
                typ = found[topic][0]
            elif topic in found and message_type(found[topic][0]) is not message_type(typ):
                raise ValueError(f"{topic} was given type {typ} but its publisher sends {found[topic][0]}")
            infos.append(TopicInfo(topic, message_type(typ), offered))
        self.topics = infos
        self.bag = BagWriter(path, chunk_size=chunk_size, compression=compression)
        self._subs = []
        try:
            for info in infos:
                self.bag.add_topic(info.topic, info.msg_type, info.offered or [ROS_DEFAULT])
                self._subs.append(transport.create_subscription(
                    info.topic, info.msg_type, self._callback(info.topic), self._reader_qos(info.offered)))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _reader_qos(offered: Sequence[QoS]) -> QoS:
        # rosbag2's adapt_request_to_offers: reliable only if every publisher is; a deep
        # history so that a burst is not overwritten before the callback takes it.
        reliable = bool(offered) and all(q.reliability == "reliable" for q in offered)
        transient = bool(offered) and all(q.durability == "transient_local" for q in offered)
        return QoS("reliable" if reliable else "best_effort", "transient_local" if transient else "volatile",
                   "keep_last", 1000)

    def _callback(self, topic: str):
        def on_message(msg: Message) -> None:
            received = self._clock()
            stamp = stamp_ns(msg)
            self.bag.write(topic, self._to_cdr(msg), received, received if stamp is None else stamp)

        return on_message

    @property
    def counts(self) -> Dict[str, int]:
        return dict(self.bag.counts)

    def flush(self) -> None:
        self.bag.flush()

    def close(self) -> None:
        """Stop the subscriptions first (no callback after), then finish the bag."""
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        self.bag.close()


def _progress_line(start: float, counts: Mapping[str, int]) -> str:
    parts = "  ".join(f"{t}: {n}" for t, n in counts.items())
    return f"recording {time.monotonic() - start:6.1f} s  {parts}  total {sum(counts.values())}"


def record(path: str | os.PathLike, topics, *, duration: Optional[float] = None, domain_id: Optional[int] = None,
           transport: str = "dds", types: Optional[Mapping[str, str]] = None, discovery_timeout: float = 3.0,
           chunk_size: int = 256 * 1024, compression: str = "zstd", flush_interval: float = 1.0,
           progress: bool = True, config: Optional[str] = None, stop: Optional[threading.Event] = None) -> Dict[str, int]:
    """Record until ``duration`` s have passed, ``stop`` is set, or SIGINT/SIGTERM;
    always closes the bag. Returns the message count per topic."""
    parsed = parse_topics(topics, types)
    kwargs = {"config": config} if (transport == "dds" and config is not None) else {}
    stop = stop or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (e.g. from a launch system) closes the bag as Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tp = make_transport(transport, domain_id, **kwargs)
    recorder = None
    try:
        recorder = Recorder(tp, path, parsed, discovery_timeout=discovery_timeout, chunk_size=chunk_size,
                            compression=compression)
        start = time.monotonic()
        next_flush = start + flush_interval
        tty = progress and sys.stderr.isatty()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if duration is not None and now - start >= duration:
                    break
                stop.wait(0.1 if duration is None else max(0.0, min(0.1, start + duration - now)))
                if time.monotonic() >= next_flush:
                    recorder.flush()
                    next_flush += flush_interval
                    if progress:
                        line = _progress_line(start, recorder.counts)
                        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            pass  # Ctrl-C: stop recording, close the bag below
        counts = recorder.counts
        if progress:
            print(("\r" if tty else "") + _progress_line(start, counts), file=sys.stderr, flush=True)
        return counts
    finally:
        try:
            if recorder is not None:
                recorder.close()
        finally:
            tp.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def record_cmd(cfg: dict) -> Dict[str, int]:
    """``robotrl record`` from the Hydra config ``robotrl/conf/record.yaml``."""
    out = cfg.get("out")
    if not out:
        raise ValueError("where to? give out=FILE.mcap")
    out = Path(out)
    if out.suffix != ".mcap":
        out = out.with_suffix(out.suffix + ".mcap") if out.suffix else out.with_suffix(".mcap")
    if out.exists() and not cfg.get("overwrite"):
        raise FileExistsError(f"{out} exists; give overwrite=true or another out=")
    duration = cfg.get("duration")
    counts = record(
        out, cfg.get("topics") or [], duration=None if duration in (None, 0) else float(duration),
        domain_id=cfg.get("domain_id"), transport=cfg.get("transport") or "dds", types=cfg.get("types"),
        discovery_timeout=float(cfg.get("discovery_timeout", 3.0)), chunk_size=int(cfg.get("chunk_size", 262144)),
        compression=cfg.get("compression") or "zstd", flush_interval=float(cfg.get("flush_interval", 1.0)),
        progress=bool(cfg.get("progress", True)),
    )
    print(f"wrote {out} ({sum(counts.values())} messages)")
    return counts


if __name__ == "__main__":  # python -m robotrl.real.recorder out=... topics=[...]
    from robotrl.cli import main

    sys.exit(main(["record", *sys.argv[1:]]))
