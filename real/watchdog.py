"""The deployment watchdog: is every observation stream alive, fresh, ordered and sane?

Two kinds of check, both ending in a *reason* string that the policy node logs and
acts on (hold or damp, see :mod:`robotrl.real.state_machine`):

- per message, in the subscription callback (:meth:`Watchdog.accept` and the
  ``check_*`` functions): header stamps going backwards (out of order), wrong sizes
  (a JointState whose arrays do not match its names, an array of the wrong length),
  non-finite values, joints missing from a JointState. The message is dropped and
  the fault reaches the control thread at once (it is woken, it does not wait for
  its next tick);
- per control tick (:meth:`Watchdog.check`): a stream with no message for longer
  than its ``timeout_s`` (receive time, the node's monotonic clock), or whose newest
  header stamp is older than ``max_age_s`` (stamp against the node's wall clock:
  needs clocks synchronized between robot and node computer, e.g. by PTP/chrony;
  ``max_age_s = 0`` turns the stale check off for a robot without synced clocks).

Nothing here knows ROS or the transport; times are passed in so tests can drive it.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["Stream", "Watchdog", "check_joint_state", "check_array", "check_finite"]


@dataclass
class Stream:
    """One watched input topic."""

    name: str
    timeout_s: float  # no message for this long: fault (0: no timeout)
    max_age_s: float  # newest header stamp older than this: fault (0: no stale check)
    required: bool = True  # False: watched only once it has sent something
    last_rx: Optional[float] = None  # monotonic seconds of the last accepted message
    last_stamp_ns: Optional[int] = None  # header stamp of the last accepted message
    count: int = 0
    rejected: int = 0


class Watchdog:
    def __init__(self) -> None:
        self.streams: Dict[str, Stream] = {}
        self._lock = threading.Lock()
        self._event: Optional[str] = None  # a per-message fault not yet acted on
        self.faults: List[str] = []  # every reason raised, oldest first (bounded)

    def add_stream(self, name: str, timeout_s: float, max_age_s: float = 0.0, required: bool = True) -> Stream:
        stream = Stream(name, float(timeout_s), float(max_age_s), required)
        self.streams[name] = stream
        return stream

    # ---------------------------------------------------------- per message
    def accept(self, name: str, stamp_ns: Optional[int], now_mono: float) -> Optional[str]:
        """Record a message of stream ``name``; a reason if its stamp goes backwards
        (the message must then be dropped). ``stamp_ns`` None: the message has no header."""
        stream = self.streams[name]
        with self._lock:
            if stamp_ns is not None and stream.last_stamp_ns is not None and stamp_ns < stream.last_stamp_ns:
                stream.rejected += 1
                return (f"out-of-order stamp on {name}: {stamp_ns * 1e-9:.6f} s is "
                        f"{(stream.last_stamp_ns - stamp_ns) * 1e-6:.3f} ms before the previous message")
            stream.last_rx = now_mono
            if stamp_ns is not None:
                stream.last_stamp_ns = stamp_ns
            stream.count += 1
        return None

    def reject(self, name: str) -> None:
        with self._lock:
            self.streams[name].rejected += 1

    def trip(self, reason: str) -> None:
        """A per-message fault (or an e-stop): the control thread acts on it at once."""
        with self._lock:
            self._event = reason
            self._remember(reason)

    def take_event(self) -> Optional[str]:
        with self._lock:
            reason, self._event = self._event, None
            return reason

    # ---------------------------------------------------------- per tick
    def check(self, now_mono: float, now_wall_ns: int) -> Optional[str]:
        """The first reason a watched stream is not healthy now, or None."""
        for s in self.streams.values():
            if s.last_rx is None:
                if s.required:
                    return f"no message on {s.name} yet"
                continue
            silent = now_mono - s.last_rx
            if s.timeout_s > 0 and silent > s.timeout_s:
                return f"no message on {s.name} for {silent * 1e3:.1f} ms (timeout {s.timeout_s * 1e3:.0f} ms)"
            if s.max_age_s > 0 and s.last_stamp_ns is not None:
                age = (now_wall_ns - s.last_stamp_ns) * 1e-9
                if age > s.max_age_s:
                    return (f"stale observation on {s.name}: header stamp is {age * 1e3:.1f} ms old "
                            f"(limit {s.max_age_s * 1e3:.0f} ms)")
        return None

    def next_deadline(self) -> Optional[float]:
        """The monotonic time at which the earliest timeout expires (to wake exactly then)."""
        deadlines = [s.last_rx + s.timeout_s for s in self.streams.values()
                     if s.last_rx is not None and s.timeout_s > 0]
        return min(deadlines) if deadlines else None

    def remember(self, reason: str) -> None:
        with self._lock:
            self._remember(reason)

    def _remember(self, reason: str) -> None:
        self.faults.append(reason)
        del self.faults[:-100]


# ------------------------------------------------------------- content checks


def check_finite(name: str, **arrays: np.ndarray) -> Optional[str]:
    for field_name, values in arrays.items():
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            bad = np.flatnonzero(~np.isfinite(values))[:8].tolist()
            return f"non-finite {field_name} on {name} at indices {bad}"
    return None


def check_array(name: str, values: np.ndarray, size: int) -> Optional[str]:
    if len(values) != size:
        return f"wrong message size on {name}: {len(values)} values, expected {size}"
    return check_finite(name, data=values)


def check_joint_state(name: str, msg, joints: Sequence[str], need_velocity: bool = True):
    """Validate a ``sensor_msgs/JointState`` against the artifact's ``joints``.

    Returns ``(reason, missing, position, velocity)``: ``reason`` None when the message
    is usable, ``missing`` the artifact joints absent from it (then ``reason`` names
    them), and the positions/velocities in the order of ``joints``.
    """
    n = len(msg.name)
    if len(msg.position) != n:
        return (f"wrong message size on {name}: {n} joint names but {len(msg.position)} positions",
                [], None, None)
    if need_velocity and len(msg.velocity) != n:
        return (f"wrong message size on {name}: {n} joint names but {len(msg.velocity)} velocities",
                [], None, None)
    index = {joint: i for i, joint in enumerate(msg.name)}
    missing = [j for j in joints if j not in index]
    if missing:
        return f"joints missing from {name}: {', '.join(missing)}", missing, None, None
    order = [index[j] for j in joints]
    position = np.asarray(msg.position, dtype=np.float64)[order]
    velocity = (np.asarray(msg.velocity, dtype=np.float64)[order] if len(msg.velocity) == n
                else np.zeros(len(joints)))
    reason = check_finite(name, position=position, velocity=velocity)
    return reason, [], position, velocity


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def is_finite_number(x: float) -> bool:
    return math.isfinite(float(x))
