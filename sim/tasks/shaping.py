"""Reward shaping helpers over an array namespace."""
from __future__ import annotations


def tolerance(xp, x, margin: float, bound: float = 0.0):
    """1 inside ``[-bound, bound]``, falling off as a Gaussian of width ``margin`` outside
    (0.1 at one margin away), in the manner of dm_control's ``rewards.tolerance``."""
    excess = xp.maximum(xp.abs(x) - bound, 0.0) / margin
    return xp.exp(excess**2 * -2.302585092994046)  # ln(0.1)


def quat_rotate_inverse(xp, quat, vec):
    """Rotate world-frame ``vec`` (N,3) into the body frame of unit quaternion ``quat`` (N,4, wxyz)."""
    w = quat[:, 0:1]
    u = quat[:, 1:4]
    t = 2.0 * xp.cross(u, vec)
    return vec - w * t + xp.cross(u, t)


def quat_rotate(xp, quat, vec):
    """Rotate body-frame ``vec`` (N,3) into the world frame by ``quat`` (N,4, wxyz)."""
    w = quat[:, 0:1]
    u = quat[:, 1:4]
    t = 2.0 * xp.cross(u, vec)
    return vec + w * t + xp.cross(u, t)


def projected_gravity(xp, quat):
    """Unit gravity ``(0, 0, -1)`` seen in the body frame of ``quat`` (N,4, wxyz): minus the
    third row of the rotation matrix, what a robot gets from its IMU orientation."""
    return xp.stack(projected_gravity_xyz(quat), axis=1)


def projected_gravity_xyz(quat):
    """:func:`projected_gravity` as three ``(N,)`` components, for callers that need
    only some of them (no stacking)."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    gx = 2.0 * (w * y - x * z)
    gy = -2.0 * (y * z + w * x)
    return gx, gy, projected_gravity_z(quat)


def projected_gravity_z(quat):
    """The z component of :func:`projected_gravity`: -1 upright, +1 upside down."""
    x, y = quat[:, 1], quat[:, 2]
    return 2.0 * (x * x + y * y) - 1.0
