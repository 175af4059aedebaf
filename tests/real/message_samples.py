"""Messages with non-trivial content for every type the transports carry (shared by
the tests and the peer process ``dds_peer.py``)."""

import numpy as np

from robotrl.real import messages as m

def sample_messages():
    """Fresh instances on every call (tests mutate them)."""
    header = m.Header(m.Time(1_700_000_123, 456_789_012), "base_link")
    dims = [m.MultiArrayDimension("rows", 2, 6), m.MultiArrayDimension("cols", 3, 3)]
    return {
        "Time": m.Time(1_700_000_123, 456_789_012),
        "Header": header,
        "Quaternion": m.Quaternion(0.1, -0.2, 0.3, 0.927),
        "Vector3": m.Vector3(1.5, -2.25, 9.81),
        "JointState": m.JointState(
            header, ["hip_joint", "knee_joint", "ankle"],
            [0.1, -1.25, 3.0e-7], [1.0, 2.0, -3.5], np.array([], dtype=np.float64)),
        "Imu": m.Imu(
            header, m.Quaternion(0.0, 0.0, 0.38268343, 0.92387953), np.eye(3) * 0.01,
            m.Vector3(0.01, -0.02, 0.3), np.arange(9, dtype=float) * 1e-3,
            m.Vector3(0.1, 0.2, 9.80665), np.full(9, -1.0)),
        "Twist": m.Twist(m.Vector3(0.5, 0.0, 0.0), m.Vector3(0.0, 0.0, -0.75)),
        "MultiArrayDimension": dims[0],
        "MultiArrayLayout": m.MultiArrayLayout(dims, 1),
        "Float64MultiArray": m.Float64MultiArray(m.MultiArrayLayout(dims, 1),
                                                 [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        "Bool": m.Bool(True),
    }


# The cross-process round trip covers these with both QoS presets.
ROUND_TRIP_TYPES = ["JointState", "Imu", "Float64MultiArray", "Bool", "Twist"]
