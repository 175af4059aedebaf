"""The policy node's modes and the transitions between them.

::

    PASSIVE --enable (healthy)--> SOFT_START --soft_start_s elapsed--> POLICY
       ^                              |                                  |
       |                     fault / disable / e-stop / shutdown         |
       |                              v                                  v
       +---------(never back)------ HOLD or DAMP  <----------------------+
                                      |
                      enable again (healthy, e-stop released) --> SOFT_START

- PASSIVE: nothing is published; the robot's driver keeps whatever it does
  without commands. The node waits for healthy observations and an enable.
- SOFT_START: joint-position targets move linearly from the measured pose at
  enable to the artifact's default pose over ``soft_start_s`` (position-type
  artifacts; a torque-type artifact has no pose to go to and starts the policy
  at once).
- POLICY: the artifact (inside its shield) drives the robot.
- HOLD: targets frozen at the last commanded targets (the default pose if none
  was ever sent); for a torque-type artifact hold is damp.
- DAMP: zero stiffness: no position targets, zero velocity targets, so the robot's
  PD applies only damping (``kd * (0 - qd)``).

Watchdog faults and a disable go to ``fault_action`` (hold by default), an e-stop
to ``estop_action`` (damp by default), shutdown to ``shutdown_action``. A safe mode
latches: only a fresh enable while healthy (and with the e-stop released) leaves it.
"""
from __future__ import annotations

import enum
import logging
from typing import Optional

__all__ = ["Mode", "StateMachine"]

log = logging.getLogger(__name__)


class Mode(str, enum.Enum):
    PASSIVE = "passive"
    SOFT_START = "soft_start"
    POLICY = "policy"
    HOLD = "hold"
    DAMP = "damp"

    @property
    def active(self) -> bool:
        return self in (Mode.SOFT_START, Mode.POLICY)

    @property
    def safe(self) -> bool:
        return self in (Mode.HOLD, Mode.DAMP)


def _safe_mode(name: str) -> Mode:
    mode = Mode(name)
    if not mode.safe:
        raise ValueError(f"a safe action is 'hold' or 'damp', not {name!r}")
    return mode


class StateMachine:
    def __init__(self, soft_start_s: float, has_pose: bool, fault_action: str = "hold",
                 estop_action: str = "damp", shutdown_action: str = "damp", name: str = "policy_node"):
        self.soft_start_s = max(0.0, float(soft_start_s)) if has_pose else 0.0
        self.fault_action = _safe_mode(fault_action)
        self.estop_action = _safe_mode(estop_action)
        self.shutdown_action = _safe_mode(shutdown_action)
        self.mode = Mode.PASSIVE
        self.reason = "starting"
        self.since = 0.0  # time the current mode began (the node's clock)
        self.estopped = False
        self.refusal: Optional[str] = None  # latched: the node must not start at all
        self.name = name

    def _go(self, mode: Mode, reason: str, now: float) -> None:
        if mode != self.mode:
            level = logging.WARNING if mode.safe else logging.INFO
            log.log(level, "%s: %s -> %s (%s)", self.name, self.mode.value, mode.value, reason)
        self.mode, self.reason, self.since = mode, reason, now

    def refuse(self, reason: str, now: float) -> None:
        """A configuration error (e.g. joints missing): never start; stop if running."""
        if self.refusal is None:
            log.error("%s: refusing to start: %s", self.name, reason)
        self.refusal = reason
        if self.mode.active:
            self._go(self.fault_action, reason, now)

    def enable(self, health: Optional[str], now: float) -> Optional[str]:
        """Request to run; returns why it was refused, or None."""
        if self.mode.active:
            return None
        why = self.refusal or ("e-stop is engaged" if self.estopped else None) or health
        if why is not None:
            log.warning("%s: enable refused: %s", self.name, why)
            return why
        if self.soft_start_s > 0:
            self._go(Mode.SOFT_START, "enabled", now)
        else:
            self._go(Mode.POLICY, "enabled (no soft start)", now)
        return None

    def disable(self, now: float) -> None:
        if self.mode.active:
            self._go(self.fault_action, "disabled", now)

    def fault(self, reason: str, now: float) -> bool:
        """A watchdog fault; True if it changed the mode (the node was running)."""
        if self.mode.active:
            self._go(self.fault_action, reason, now)
            return True
        return False

    def set_estop(self, engaged: bool, now: float) -> bool:
        changed = engaged != self.estopped
        self.estopped = engaged
        if engaged and self.mode != self.estop_action:
            self._go(self.estop_action, "e-stop", now)
            return True
        if engaged and changed:
            log.warning("%s: e-stop engaged", self.name)
        elif changed:
            log.warning("%s: e-stop released (enable again to run)", self.name)
        return False

    def shutdown(self, now: float) -> None:
        if self.mode != Mode.PASSIVE:
            self._go(self.shutdown_action, "shutdown", now)

    def tick(self, now: float) -> None:
        if self.mode == Mode.SOFT_START and now - self.since >= self.soft_start_s:
            self._go(Mode.POLICY, "soft start done", now)

    def soft_start_fraction(self, now: float) -> float:
        if self.soft_start_s <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - self.since) / self.soft_start_s))
