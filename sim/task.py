"""The Task contract: an MJCF model plus pure functions over batched arrays.

A task is written once against an array namespace ``xp`` (``numpy`` on the CPU
backend, ``jax.numpy`` on MJX) and never mutates arrays in place, so the same code
traces under ``jax.jit``. Every array carries a leading env axis.

The backend hands the task a :class:`SimState` and a :class:`Sampler`; the task
returns named observation terms, named reward terms, cost, termination and the
reset distribution. Anything beyond raw ``qpos``/``qvel`` (IMU, foot contact,
end-effector position) comes from MJCF sensors read by name with
:meth:`Task.sensor`, so a real robot's sensors map onto the same names.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Callable, Mapping

import mujoco
import numpy as np

from robotrl.sim.domains import apply_shift, resolve_domain


@dataclass(frozen=True)
class SimState:
    """Batched physics state as a task sees it (arrays of shape ``(num_envs, ...)``)."""

    qpos: Any
    qvel: Any
    sensordata: Any
    ctrl: Any
    # Per-env task variables (targets, commands, last action ...): name -> array.
    task: Mapping[str, Any] = field(default_factory=dict)

    def with_task(self, **updates) -> "SimState":
        merged = dict(self.task)
        merged.update(updates)
        return replace(self, task=merged)


class Sampler:
    """Random numbers for reset distributions, independent of the array library.

    The numpy backend wraps a ``np.random.Generator``; the JAX backend wraps a key
    that it splits on every draw, so tasks call ``uniform``/``normal`` the same way
    on both.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def uniform(self, low, high, shape) -> np.ndarray:
        return self.rng.uniform(low, high, size=shape).astype(np.float64)

    def normal(self, shape) -> np.ndarray:
        return self.rng.standard_normal(size=shape)


class KeySampler:
    """The :class:`Sampler` API over a JAX PRNG key, for the MJX backend.

    Every draw splits the key, so a task's ``reset``/``after_step`` trace under
    ``jax.jit`` unchanged and a seed fixes every draw; ``key`` is the state to carry
    into the next call. Draws have JAX's default float dtype (float32 unless x64 is
    enabled).
    """

    def __init__(self, key):
        self.key = key

    def next_key(self):
        """A fresh key for draws of one's own; the sampler moves on."""
        import jax  # only the JAX backends construct a KeySampler

        self.key, sub = jax.random.split(self.key)
        return sub

    def uniform(self, low, high, shape):
        import jax

        return jax.random.uniform(self.next_key(), _shape(shape), minval=low, maxval=high)

    def normal(self, shape):
        import jax

        return jax.random.normal(self.next_key(), _shape(shape))

    def integers(self, low: int, high: int, shape):
        """Integers in ``[low, high)``, as ``np.random.Generator.integers``."""
        import jax

        return jax.random.randint(self.next_key(), _shape(shape), low, high)


def _shape(shape) -> tuple[int, ...]:
    if shape is None:
        return ()
    return (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)


def deep_update(base: dict, updates: Mapping) -> dict:
    """Recursively merge ``updates`` into a copy of ``base``; unknown keys are an error."""
    out = copy.deepcopy(base)
    for key, value in updates.items():
        if key not in out:
            raise KeyError(
                f"unknown config key {key!r}; known keys: {', '.join(sorted(out))}"
            )
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Task:
    """Base class of every simulated task. Subclasses set ``name`` and ``asset``.

    Config keys every task has (see :func:`common_config`): ``sim_dt`` and
    ``control_dt`` (frame skip = control_dt / sim_dt), ``episode_length_s``,
    ``action_scale``, ``action_clip``, ``reward_scales``, ``obs_noise`` (per
    observation term, uniform noise amplitude), ``domain_randomization``, ``render``
    (camera and size of rendered frames, see :mod:`robotrl.sim.render`), and
    optionally ``dynamics_shift`` (a target domain, see :mod:`robotrl.sim.domains`).
    """

    name: str = ""
    asset: str = ""  # file name in robotrl/assets
    # "position": ctrl = default_pose + action_scale * action (PD targets);
    # "motor": ctrl = action_scale * action.
    action_type: str = "motor"
    # Termination means the robot fell (eval counts these as falls).
    termination_is_fall: bool = False
    # Velocity dofs that random pushes kick; None: the planar linear velocity of a
    # free-floating root (dofs 0 and 1), nothing for a fixed base.
    push_dofs: tuple[int, ...] | None = None
    # How eval aggregates each step metric over an episode: "mean" or "last".
    metric_aggregation: Mapping[str, str] = {}
    # A model feature MJX cannot run, as the reason to report (e.g. "the noslip
    # solver"); the mjx backend then refuses the task and parity tests skip it.
    mjx_unsupported: str | None = None

    def __init__(self, config: Mapping | None = None):
        self.config = deep_update(self.default_config(), config or {})
        self.model = self.build_model()
        # A target ("real") domain: the same task with shifted dynamics.
        shift = resolve_domain(self.config.get("dynamics_shift"))
        apply_shift(self.model, shift)
        self.joint_noise = shift.joint_noise
        self._validate_timing()
        self._sensor_slices = {
            self.model.sensor(i).name: slice(
                int(self.model.sensor_adr[i]),
                int(self.model.sensor_adr[i] + self.model.sensor_dim[i]),
            )
            for i in range(self.model.nsensor)
        }
        self.setup()

    # ----------------------------------------------------------------- config
    @classmethod
    def default_config(cls) -> dict:
        raise NotImplementedError

    def setup(self) -> None:
        """Derive constants from the model (joint ids, default pose ...)."""

    def build_model(self) -> mujoco.MjModel:
        xml = resources.files("robotrl.assets").joinpath(self.asset).read_text()
        model = mujoco.MjModel.from_xml_string(xml)
        model.opt.timestep = self.config["sim_dt"]
        return model

    def _validate_timing(self) -> None:
        ratio = self.config["control_dt"] / self.config["sim_dt"]
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(
                f"task {self.name}: control_dt={self.config['control_dt']} must be a whole "
                f"multiple of sim_dt={self.config['sim_dt']}"
            )

    @property
    def frame_skip(self) -> int:
        return int(round(self.config["control_dt"] / self.config["sim_dt"]))

    @property
    def max_episode_length(self) -> int:
        return int(round(self.config["episode_length_s"] / self.config["control_dt"]))

    @property
    def num_actions(self) -> int:
        return self.model.nu

    @property
    def action_names(self) -> list[str]:
        """Names of the actuated joints, in action order."""
        names = []
        for i in range(self.model.nu):
            jnt = self.model.actuator_trnid[i, 0]
            names.append(self.model.joint(jnt).name)
        return names

    # ------------------------------------------------------------ array helpers
    def sensor(self, state: SimState, name: str):
        """The named MJCF sensor's reading, shape ``(num_envs, dim)``."""
        return state.sensordata[:, self._sensor_slices[name]]

    # ------------------------------------------------------ the task functions
    def reset(self, xp, sampler: Sampler, num: int) -> tuple[Any, Any, dict]:
        """Initial ``(qpos, qvel, task_vars)`` for ``num`` envs."""
        raise NotImplementedError

    def ctrl_from_action(self, xp, action, state: SimState):
        """Actuator controls from a clipped policy action."""
        return action * self.config["action_scale"]

    def after_step(self, xp, sampler: Sampler, state: SimState, action) -> SimState:
        """Update per-env task variables after a control step (e.g. last action)."""
        return state

    def observation_terms(self, xp, state: SimState) -> dict[str, Any]:
        """Named observation terms, each ``(num_envs, k)``."""
        raise NotImplementedError

    # Which terms, in order, make up each observation group.
    observation_groups: Mapping[str, tuple[str, ...]] = {}

    def reward_terms(self, xp, state: SimState, action) -> dict[str, Any]:
        """Named reward terms ``(num_envs,)``; weighted by ``reward_scales``."""
        raise NotImplementedError

    def cost(self, xp, state: SimState, action):
        return xp.zeros(state.qpos.shape[0])

    def terminated(self, xp, state: SimState):
        return xp.zeros(state.qpos.shape[0], dtype=bool)

    def metrics(self, xp, state: SimState, action) -> dict[str, Any]:
        """Per-step task metrics ``(num_envs,)`` for evaluation reports."""
        return {}

    def render_state(self, xp, state: SimState) -> dict[str, Any]:
        """What frames show beyond ``qpos``: keyword arguments of
        :meth:`robotrl.sim.render.BatchRenderer.render` (``site_pos``, ``mocap_pos``).

        All envs share one model, so task variables (a target, a goal) appear in
        frames through visual-only sites. By default a world-body site named after a
        task variable of 2 or 3 columns is drawn at it (a 2-D position keeps the
        site's height)."""
        m, sites = self.model, {}
        for name, value in state.task.items():
            i = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, name)
            if i < 0 or m.site_bodyid[i] != 0 or value.ndim != 2 or value.shape[1] not in (2, 3):
                continue
            if value.shape[1] == 2:
                value = xp.concatenate([value, xp.full((value.shape[0], 1), float(m.site_pos[i, 2]))], axis=1)
            sites[name] = value
        return {"site_pos": sites} if sites else {}


# ---------------------------------------------------------------- defaults
def common_config(**overrides) -> dict:
    """The config keys every task carries, with neutral defaults."""
    cfg = {
        "sim_dt": 0.01,
        "control_dt": 0.02,
        "episode_length_s": 10.0,
        "action_scale": 1.0,
        "action_clip": 1.0,
        "reward_scales": {},
        "obs_noise": {},
        # A target domain's shift of the dynamics (None: the simulator as written).
        "dynamics_shift": None,
        # Frames for VLM rewards (robotrl.sim.render): camera None is the MJCF's first.
        "render": {"camera": None, "width": 64, "height": 64, "interval": 1},
        "domain_randomization": {
            "enabled": False,
            "friction": [1.0, 1.0],  # multiplier on geom sliding friction
            "added_mass": [0.0, 0.0],  # kg added to the root body
            "mass_scale": [1.0, 1.0],  # multiplier on every link mass
            "com_offset": [0.0, 0.0],  # m, uniform per axis on the root body
            "damping_scale": [1.0, 1.0],
            "armature_scale": [1.0, 1.0],
            "kp_scale": [1.0, 1.0],  # PD gains of position actuators
            "kd_scale": [1.0, 1.0],
            "motor_strength": [1.0, 1.0],  # multiplier on actuator force
            "latency_substeps": [0, 0],  # action applied this many physics steps late
            "push_interval_s": 0.0,  # 0 disables pushes
            "push_velocity": 0.0,  # m/s, max planar velocity kick of the root
        },
    }
    dr = overrides.pop("domain_randomization", {})
    render = overrides.pop("render", {})
    cfg.update(overrides)  # task-specific keys (reward terms, commands ...) are new here
    cfg["domain_randomization"] = deep_update(cfg["domain_randomization"], dr)
    cfg["render"] = deep_update(cfg["render"], render)
    return cfg


# ---------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., Task]] = {}


def register(cls):
    """Class decorator: make a task available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_tasks() -> None:
    from robotrl.sim import tasks  # noqa: F401  (registers on import)


def task_names() -> list[str]:
    _load_builtin_tasks()
    return sorted(_REGISTRY)


def get_task_class(name: str):
    _load_builtin_tasks()
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_task(name: str, config: Mapping | None = None) -> Task:
    return get_task_class(name)(config)
