"""The ROS 2 messages deployment needs, as plain dataclasses (no ROS import).

Each message class carries its ROS type name (``ROS_TYPE``, e.g.
``sensor_msgs/msg/JointState``), its DDS type name (``DDS_TYPE``, e.g.
``sensor_msgs::msg::dds_::JointState_``) and its ROS 2 ``.msg`` definition text
(``MSG_DEFINITION``, the standard definition from ROS 2 common_interfaces with
the comments stripped). The definition text is the single source of truth for the
wire layout: the dds transport builds its IDL types from it, the rclpy transport
maps fields by it, and a bag writer can use :func:`schema_text` as the MCAP
``ros2msg`` schema. Importing this module checks that each dataclass declares
exactly the fields of its definition, in order.

Float sequences (``float64[]``) and fixed arrays (``float64[9]``) are numpy
``float64`` arrays: a list or tuple given to a constructor is converted, and a value
that cannot be converted raises ``TypeError`` naming the field. :func:`validate`
checks a whole message (the transports call it on every publish, so fields
assigned after construction are checked too).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Tuple, Type, Union

import numpy as np

__all__ = [
    "Message", "FieldSpec", "MESSAGE_TYPES", "message_type", "validate", "schema_text",
    "Time", "Header", "Quaternion", "Vector3", "JointState", "Imu", "Twist",
    "MultiArrayDimension", "MultiArrayLayout", "Float64MultiArray", "Bool",
]

# ROS 2 primitive types this module supports (those the messages below use plus
# the common integer widths), with their inclusive value ranges for integers.
INT_RANGES: Dict[str, Tuple[int, int]] = {
    "int8": (-2**7, 2**7 - 1), "uint8": (0, 2**8 - 1), "byte": (0, 2**8 - 1),
    "int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
    "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1),
}
FLOAT_TYPES = ("float32", "float64")
PRIMITIVE_TYPES = tuple(INT_RANGES) + FLOAT_TYPES + ("bool", "string")


class FieldSpec(NamedTuple):
    """One line of a ``.msg`` definition: ``float64[9] orientation_covariance``."""

    name: str
    base_type: str  # a primitive ("float64") or a message ("std_msgs/Header")
    array: Optional[int]  # None: a single value; -1: an unbounded sequence; n: fixed length n

    @property
    def is_primitive(self) -> bool:
        return self.base_type in PRIMITIVE_TYPES

    @property
    def is_sequence(self) -> bool:
        return self.array == -1

    @property
    def is_fixed_array(self) -> bool:
        return self.array is not None and self.array >= 0


_FIELD_LINE = re.compile(r"^([A-Za-z][\w/]*)(\[(\d*)\])?\s+([a-z][a-z0-9_]*)(\s+.*)?$")


def _parse_definition(package: str, text: str) -> Tuple[FieldSpec, ...]:
    """Parse the field lines of a ``.msg`` text (no constants, no bounded strings)."""
    fields = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _FIELD_LINE.match(line)
        if m is None or "=" in line:
            raise ValueError(f"cannot parse .msg line {raw!r}")
        base, bracket, size, name = m.group(1), m.group(2), m.group(3), m.group(4)
        if base not in PRIMITIVE_TYPES:
            if "/" not in base:  # a type of the same package, as .msg files allow
                base = f"{package}/{base}"
            elif base.count("/") == 2:  # pkg/msg/Type -> pkg/Type
                pkg, _, typ = base.split("/")
                base = f"{pkg}/{typ}"
        array = None if bracket is None else (-1 if size == "" else int(size))
        fields.append(FieldSpec(name, base, array))
    return tuple(fields)


class Message:
    """Base of all message dataclasses; set up by :func:`_ros_message`."""

    ROS_TYPE: ClassVar[str]  # "sensor_msgs/msg/JointState"
    DDS_TYPE: ClassVar[str]  # "sensor_msgs::msg::dds_::JointState_"
    MSG_DEFINITION: ClassVar[str]  # the .msg text (comments stripped)
    FIELDS: ClassVar[Tuple[FieldSpec, ...]]

    @classmethod
    def short_type(cls) -> str:
        """``sensor_msgs/JointState``: the name used in ``MSG:`` lines and in .msg files."""
        pkg, _, name = cls.ROS_TYPE.split("/")
        return f"{pkg}/{name}"

    def __post_init__(self) -> None:
        # Convert float arrays given as lists/tuples to float64 ndarrays.
        for spec in self.FIELDS:
            if spec.array is not None and spec.base_type in FLOAT_TYPES:
                value = getattr(self, spec.name)
                setattr(self, spec.name, _as_float_array(value, spec, type(self).__name__))

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for spec in self.FIELDS:
            a, b = getattr(self, spec.name), getattr(other, spec.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not np.array_equal(np.asarray(a), np.asarray(b)):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # mutable


MESSAGE_TYPES: Dict[str, Type[Message]] = {}
"""Every known message class by ROS type name, both ``pkg/msg/Type`` and ``pkg/Type``."""


def _ros_message(ros_type: str, definition: str):
    """Class decorator: attach names and the parsed definition, check the fields."""

    def wrap(cls):
        pkg, sub, name = ros_type.split("/")
        assert sub == "msg", ros_type
        cls = dataclass(eq=False)(cls)
        cls.ROS_TYPE = ros_type
        cls.DDS_TYPE = f"{pkg}::msg::dds_::{name}_"
        cls.MSG_DEFINITION = definition.strip() + "\n"
        cls.FIELDS = _parse_definition(pkg, definition)
        declared = [f.name for f in dataclasses.fields(cls)]
        expected = [f.name for f in cls.FIELDS]
        if declared != expected:
            raise TypeError(f"{cls.__name__} declares fields {declared}, its .msg has {expected}")
        MESSAGE_TYPES[ros_type] = cls
        MESSAGE_TYPES[f"{pkg}/{name}"] = cls
        return cls

    return wrap


def _as_float_array(value: Any, spec: FieldSpec, owner: str) -> np.ndarray:
    where = f"{owner}.{spec.name}"
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{where}: expected a sequence of floats, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged nested lists and the like
        raise TypeError(f"{where}: expected a sequence of floats ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "fiu":
        raise TypeError(f"{where}: expected a sequence of floats, got elements of dtype {arr.dtype}")
    if spec.is_fixed_array and arr.size == spec.array and arr.ndim > 1:
        arr = arr.reshape(-1)  # e.g. a 3x3 covariance, row-major as ROS stores it
    if arr.ndim != 1:
        raise TypeError(f"{where}: expected a 1-D sequence, got shape {arr.shape}")
    if spec.is_fixed_array and arr.size != spec.array:
        raise TypeError(f"{where}: expected exactly {spec.array} values, got {arr.size}")
    return np.array(arr, dtype=np.float64)  # always a private copy


# --------------------------------------------------------------------------- messages
# Definitions: ROS 2 common_interfaces / rcl_interfaces, comments stripped.


@_ros_message("builtin_interfaces/msg/Time", """
int32 sec
uint32 nanosec
""")
class Time(Message):
    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_nanoseconds(cls, ns: int) -> "Time":
        sec, nanosec = divmod(int(ns), 1_000_000_000)
        return cls(sec, nanosec)

    @classmethod
    def from_seconds(cls, seconds: float) -> "Time":
        return cls.from_nanoseconds(round(seconds * 1e9))

    def to_nanoseconds(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec

    def to_seconds(self) -> float:
        return self.sec + self.nanosec * 1e-9


@_ros_message("std_msgs/msg/Header", """
builtin_interfaces/Time stamp
string frame_id
""")
class Header(Message):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@_ros_message("geometry_msgs/msg/Quaternion", """
float64 x 0
float64 y 0
float64 z 0
float64 w 1
""")
class Quaternion(Message):
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    w: float = 1.0

    def to_numpy(self) -> np.ndarray:
        """``[x, y, z, w]`` (ROS order; MuJoCo orders quaternions ``w, x, y, z``)."""
        return np.array([self.x, self.y, self.z, self.w], dtype=np.float64)

    @classmethod
    def from_numpy(cls, xyzw: Sequence[float]) -> "Quaternion":
        x, y, z, w = (float(v) for v in xyzw)
        return cls(x, y, z, w)


@_ros_message("geometry_msgs/msg/Vector3", """
float64 x
float64 y
float64 z
""")
class Vector3(Message):
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    def to_numpy(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z], dtype=np.float64)

    @classmethod
    def from_numpy(cls, xyz: Sequence[float]) -> "Vector3":
        x, y, z = (float(v) for v in xyz)
        return cls(x, y, z)


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


def _zeros9() -> np.ndarray:
    return np.zeros(9, dtype=np.float64)


@_ros_message("sensor_msgs/msg/JointState", """
std_msgs/Header header
string[] name
float64[] position
float64[] velocity
float64[] effort
""")
class JointState(Message):
    header: Header = field(default_factory=Header)
    name: List[str] = field(default_factory=list)
    position: np.ndarray = field(default_factory=_empty)
    velocity: np.ndarray = field(default_factory=_empty)
    effort: np.ndarray = field(default_factory=_empty)

    def select(self, names: Sequence[str], attribute: str = "position") -> np.ndarray:
        """The values of ``attribute`` for ``names``, in that order (a KeyError names the missing joints)."""
        index = {n: i for i, n in enumerate(self.name)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"joints missing from JointState: {missing}")
        values = getattr(self, attribute)
        if len(values) != len(self.name):
            raise ValueError(f"JointState has {len(self.name)} names but {len(values)} {attribute} values")
        return values[[index[n] for n in names]]


@_ros_message("sensor_msgs/msg/Imu", """
std_msgs/Header header
geometry_msgs/Quaternion orientation
float64[9] orientation_covariance
geometry_msgs/Vector3 angular_velocity
float64[9] angular_velocity_covariance
geometry_msgs/Vector3 linear_acceleration
float64[9] linear_acceleration_covariance
""")
class Imu(Message):
    header: Header = field(default_factory=Header)
    orientation: Quaternion = field(default_factory=Quaternion)
    orientation_covariance: np.ndarray = field(default_factory=_zeros9)  # row-major 3x3; a 3x3 array is accepted
    angular_velocity: Vector3 = field(default_factory=Vector3)
    angular_velocity_covariance: np.ndarray = field(default_factory=_zeros9)
    linear_acceleration: Vector3 = field(default_factory=Vector3)
    linear_acceleration_covariance: np.ndarray = field(default_factory=_zeros9)


@_ros_message("geometry_msgs/msg/Twist", """
geometry_msgs/Vector3 linear
geometry_msgs/Vector3 angular
""")
class Twist(Message):
    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)


@_ros_message("std_msgs/msg/MultiArrayDimension", """
string label
uint32 size
uint32 stride
""")
class MultiArrayDimension(Message):
    label: str = ""
    size: int = 0
    stride: int = 0


@_ros_message("std_msgs/msg/MultiArrayLayout", """
std_msgs/MultiArrayDimension[] dim
uint32 data_offset
""")
class MultiArrayLayout(Message):
    dim: List[MultiArrayDimension] = field(default_factory=list)
    data_offset: int = 0


@_ros_message("std_msgs/msg/Float64MultiArray", """
std_msgs/MultiArrayLayout layout
float64[] data
""")
class Float64MultiArray(Message):
    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: np.ndarray = field(default_factory=_empty)

    @classmethod
    def from_numpy(cls, array: Any, labels: Optional[Sequence[str]] = None) -> "Float64MultiArray":
        """Row-major data with one ``MultiArrayDimension`` per axis (stride = size of the sub-array)."""
        arr = np.ascontiguousarray(array, dtype=np.float64)
        labels = list(labels) if labels is not None else [f"dim{i}" for i in range(arr.ndim)]
        if len(labels) != arr.ndim:
            raise ValueError(f"{len(labels)} labels for an array of {arr.ndim} dimensions")
        dims = [MultiArrayDimension(label, int(size), int(np.prod(arr.shape[i:])))
                for i, (label, size) in enumerate(zip(labels, arr.shape))]
        return cls(MultiArrayLayout(dims, 0), arr.reshape(-1))

    def to_numpy(self) -> np.ndarray:
        """The data reshaped by the layout's sizes (flat when the layout has no dimensions)."""
        data = self.data[self.layout.data_offset:]
        if not self.layout.dim:
            return data.copy()
        shape = tuple(d.size for d in self.layout.dim)
        return data[: int(np.prod(shape))].reshape(shape).copy()


@_ros_message("std_msgs/msg/Bool", """
bool data
""")
class Bool(Message):
    data: bool = False


# --------------------------------------------------------------------------- helpers


def message_type(msg_type: Union[str, Type[Message]]) -> Type[Message]:
    """The message class for a class or a ROS type name (``sensor_msgs/msg/JointState`` or
    ``sensor_msgs/JointState``); ``ValueError`` naming the known types otherwise."""
    if isinstance(msg_type, type):
        if issubclass(msg_type, Message) and MESSAGE_TYPES.get(getattr(msg_type, "ROS_TYPE", None)) is msg_type:
            return msg_type
        raise ValueError(f"unknown message type {msg_type!r}: not one of robotrl.real.messages "
                         f"({', '.join(_known())})")
    if isinstance(msg_type, str):
        cls = MESSAGE_TYPES.get(msg_type.strip())
        if cls is None:
            raise ValueError(f"unknown message type {msg_type!r}; known: {', '.join(_known())}")
        return cls
    raise ValueError(f"unknown message type {msg_type!r}: give a message class or a ROS type name")


def _known() -> List[str]:
    return sorted(k for k in MESSAGE_TYPES if k.count("/") == 2)


def validate(msg: Message, _where: str = "") -> None:
    """Check every field's type and range; ``TypeError``/``ValueError`` names the field."""
    cls = type(msg)
    if not isinstance(msg, Message) or not hasattr(cls, "FIELDS"):
        raise TypeError(f"{_where or 'message'}: expected a robotrl.real.messages message, got {cls.__name__}")
    where = _where or cls.__name__
    for spec in cls.FIELDS:
        value = getattr(msg, spec.name)
        path = f"{where}.{spec.name}"
        if spec.array is None:
            _check_value(value, spec.base_type, path)
        elif spec.base_type in FLOAT_TYPES:
            if not isinstance(value, np.ndarray) or value.dtype != np.float64 or value.ndim != 1:
                # a list assigned after construction: convert the same way the constructor does
                setattr(msg, spec.name, _as_float_array(value, spec, cls.__name__))
            elif spec.is_fixed_array and value.size != spec.array:
                raise TypeError(f"{path}: expected exactly {spec.array} values, got {value.size}")
        else:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise TypeError(f"{path}: expected a list, got {type(value).__name__}")
            if spec.is_fixed_array and len(value) != spec.array:
                raise TypeError(f"{path}: expected exactly {spec.array} elements, got {len(value)}")
            for i, item in enumerate(value):
                _check_value(item, spec.base_type, f"{path}[{i}]")


def _check_value(value: Any, base_type: str, path: str) -> None:
    if base_type == "string":
        if not isinstance(value, str):
            raise TypeError(f"{path}: expected str, got {type(value).__name__}")
    elif base_type == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{path}: expected bool, got {type(value).__name__}")
    elif base_type in FLOAT_TYPES:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{path}: expected float, got {type(value).__name__}")
    elif base_type in INT_RANGES:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{path}: expected int ({base_type}), got {type(value).__name__}")
        lo, hi = INT_RANGES[base_type]
        if not lo <= int(value) <= hi:
            raise ValueError(f"{path}: {value} is out of range for {base_type} [{lo}, {hi}]")
    else:
        expected = MESSAGE_TYPES[base_type]
        if type(value) is not expected:
            raise TypeError(f"{path}: expected {expected.__name__}, got {type(value).__name__}")
        validate(value, path)


def schema_text(msg_type: Union[str, Type[Message]]) -> str:
    """The concatenated ``ros2msg`` schema of a type, as rosbag2 writes it into MCAP:
    the type's definition, then each dependency after a line of 80 ``=`` and ``MSG: pkg/Type``."""
    cls = message_type(msg_type)
    parts = [cls.MSG_DEFINITION]
    seen = {cls.short_type()}
    stack = [cls]
    while stack:
        for spec in stack.pop(0).FIELDS:
            if not spec.is_primitive and spec.base_type not in seen:
                seen.add(spec.base_type)
                dep = MESSAGE_TYPES[spec.base_type]
                parts.append("=" * 80 + f"\nMSG: {spec.base_type}\n" + dep.MSG_DEFINITION)
                stack.append(dep)
    return "".join(parts)


def is_finite(msg: Message) -> bool:
    """True when every float in the message (nested included) is finite."""
    for spec in type(msg).FIELDS:
        value = getattr(msg, spec.name)
        if spec.base_type in FLOAT_TYPES:
            if spec.array is None:
                if not math.isfinite(value):
                    return False
            elif not np.all(np.isfinite(value)):
                return False
        elif not spec.is_primitive:
            items = value if spec.array is not None else [value]
            if not all(is_finite(item) for item in items):
                return False
    return True
