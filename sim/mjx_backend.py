"""The MJX backend: the same tasks on MuJoCo MJX, jitted and vmapped over envs.

One jitted function advances every env by one control step: the task code runs on
batched ``jax.numpy`` arrays, the physics is ``jax.vmap`` of the frame skip (a
``fori_loop`` of :func:`~robotrl.sim.mjx_model.physics_step`) over envs with one
model per env where domain randomization gives them their own parameters, and
finished envs are reset inside the same function (fresh states drawn, then
selected with ``jnp.where`` over the state tree). ``reset()`` runs that function
with every env marked finished, so one compilation serves both.

Semantics follow the mujoco backend (observations, reward scaling, ``extras``,
randomization, latency, pushes, divergence as a terminal state) so that the same
task gives the same trajectories on both (see tests/sim/test_mjx_parity.py for the
tolerances). Two differences remain. Random draws (resets, noise, randomization)
come from a JAX key, not numpy's generator, so equal seeds do not give equal
draws across backends. A diverged env's ``final_observations`` are zeros (MuJoCo C
restarts such an env from the model's initial pose instead).

Precision: float32, JAX's default, which is what MJX targets on GPUs (float64
runs there at a fraction of the speed); it matches the mujoco backend to 1e-5..1e-3
over 50-100 control steps, except where stiff contacts amplify float32 rounding
(halfcheetah: 5 steps). With ``JAX_ENABLE_X64=1`` the physics runs in float64 and
agrees to 1e-13..1e-8 over tens of steps. Matmuls use the "highest" precision (no
TF32 on GPUs).

Devices: ``device`` is a torch-style name ("cpu", "cuda", "cuda:1", "gpu"); without
an index the env axis is sharded over all local devices of that platform when
``num_envs`` divides evenly. Observations, rewards and flags cross to torch by
DLPack without copies (on the first device); treat them as read-only. Actions
cross the other way likewise.

Not supported on MJX: models that :func:`~robotrl.sim.mjx_model.put_task_model`
refuses (a clear :class:`~robotrl.sim.mjx_model.MjxUnsupportedError`), and
``nthread`` (accepted and ignored: XLA decides the parallelism). Known MJX
approximation our tasks meet: box-plane contacts keep only the corners within
1 mm of the deepest one, so the quadruped's trunk (which collides only to end the
episode) touches down with fewer contacts than in MuJoCo C.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Any

# A GPU shared with torch: let JAX allocate as it goes instead of grabbing 75% of
# the memory up front (only effective before JAX initializes its GPU backend).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mujoco import mjx  # noqa: E402

from robotrl.sim import jax_interop  # noqa: E402
from robotrl.sim.mjx_model import (  # noqa: E402
    batched_model,
    diverged,
    draw_model_fields,
    nominal_fields,
    physics_step,
    put_task_model,
)
from robotrl.sim.randomization import Nominal  # noqa: E402
from robotrl.sim.render import BatchRenderer, render_config, render_states  # noqa: E402
from robotrl.sim.task import KeySampler, SimState, Task  # noqa: E402
from robotrl.sim.vecenv import VecEnv  # noqa: E402


class _Program:
    """The compiled step of one env spec (task, config, model, randomization,
    num_envs, devices). Envs of the same spec share it, so a second env of a task
    does not compile again."""

    def __init__(self, task: Task, num_envs: int, dr: dict, mesh):
        self.task = task
        cfg = task.config
        self.num_envs = n = num_envs
        self.frame_skip = task.frame_skip
        self.max_episode_length = task.max_episode_length
        self.clip = float(cfg["action_clip"])
        self.reward_scales = {k: float(v) for k, v in cfg["reward_scales"].items()}
        self.noise = {k: float(v) for k, v in cfg["obs_noise"].items()}
        self.dr = dr
        self.randomize_model = bool(dr["enabled"])
        lo, hi = (int(x) for x in dr["latency_substeps"])
        self.latency_range = (lo, hi) if dr["enabled"] else (0, 0)
        step_dt = float(cfg["control_dt"])
        self.push_interval = (
            int(round(dr["push_interval_s"] / step_dt)) if dr["enabled"] and dr["push_interval_s"] > 0 else 0
        )
        self.push_dofs = np.asarray(_push_dofs(task), dtype=np.int32)
        self.nominal = Nominal.of(task.model)
        self.dtype = jnp.zeros(()).dtype  # float32, or float64 under x64

        self.mesh = mesh
        self.env_sharding = jax_interop.env_sharded(mesh)
        self.replicated = jax_interop.replicated(mesh)
        model, data = put_task_model(task)
        self.model = jax.device_put(model, self.replicated)
        # One env's fresh mjData. The step takes it as an argument: as a constant
        # inside the jitted function, XLA would fold the reset's forward pass at
        # compile time, which takes minutes.
        self.data_template = jax.device_put(data, self.replicated)

        # Names and widths of what the task returns, from shapes alone (no compile).
        template = self.template_state()
        terms = jax.eval_shape(lambda s: task.observation_terms(jnp, self.sim_state(s)), template)
        self.obs_layout = {
            group: [(name, int(terms[name].shape[1])) for name in names]
            for group, names in task.observation_groups.items()
        }
        action = jax.ShapeDtypeStruct((n, task.num_actions), self.dtype)
        rewards = jax.eval_shape(lambda s, a: task.reward_terms(jnp, self.sim_state(s), a), template, action)
        self.reward_names = list(rewards)
        metrics = jax.eval_shape(lambda s, a: task.metrics(jnp, self.sim_state(s), a), template, action)
        self.metric_names = list(metrics)

        self.step = jax.jit(
            self._step,
            donate_argnums=0,
            out_shardings=(self.env_sharding, self.replicated, self.replicated),
        )
        self.observe = jax.jit(self._observe_state, out_shardings=(self.replicated, self.replicated))

    # ------------------------------------------------------------- state tree
    def template_state(self) -> dict:
        """A state of the right structure (zeros); ``reset`` fills it in."""
        n, task = self.num_envs, self.task
        key = jax.random.key(0)
        qpos, qvel, task_vars = jax.eval_shape(lambda k: task.reset(jnp, KeySampler(k), n), key)
        params = {}
        if self.randomize_model:
            nominal = nominal_fields(self.nominal)
            params = {k: jnp.broadcast_to(jnp.asarray(v, self.dtype), (n,) + v.shape) for k, v in nominal.items()}
        data = self.batched(self.data_template).replace(
            qpos=jnp.broadcast_to(jnp.asarray(task.model.qpos0, self.dtype), (n, task.model.nq))
        )
        return {
            "data": data,
            "params": params,
            "task": {k: jnp.zeros(v.shape, self.dtype) for k, v in task_vars.items()},
            "latency": jnp.zeros(n, jnp.int32),
            "episode_length": jnp.zeros(n, jnp.int32),
            "episode_return": jnp.zeros(n, self.dtype),
            "episode_terms": {},  # filled in below, once the reward names are known
        }

    def batched(self, tree):
        return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (self.num_envs,) + x.shape), tree)

    def with_terms(self, state: dict) -> dict:
        zeros = jnp.zeros(self.num_envs, self.dtype)
        return dict(state, episode_terms={name: zeros for name in self.reward_names})

    @staticmethod
    def sim_state(state: dict) -> SimState:
        d = state["data"]
        return SimState(qpos=d.qpos, qvel=d.qvel, sensordata=d.sensordata, ctrl=d.ctrl, task=state["task"])

    # ---------------------------------------------------------------- physics
    def _physics(self, params, data, new_ctrl, latency):
        """The frame skip of every env; the command reaches the motors ``latency``
        physics steps late (the previous command holds until then)."""
        model, in_axes = batched_model(self.model, params)
        with_latency = self.latency_range[1] > 0

        def control_step(m, d, ctrl, lat):
            # mujoco.rollout restarts every control step from mj_resetData plus the
            # saved state, so MuJoCo's solver starts each one without a warm start.
            old_ctrl = d.ctrl
            d = d.replace(qacc_warmstart=jnp.zeros_like(d.qacc_warmstart))

            def substep(i, d):
                c = jnp.where(i < lat, old_ctrl, ctrl) if with_latency else ctrl
                return physics_step(m, d.replace(ctrl=c))

            d = jax.lax.fori_loop(0, self.frame_skip, substep, d)
            return d.replace(ctrl=ctrl)

        return jax.vmap(control_step, in_axes=(in_axes, 0, 0, 0))(model, data, new_ctrl, latency)

    # ------------------------------------------------------------------ reset
    def _fresh(self, state: dict, key, template: mjx.Data) -> dict:
        """A new episode's state for every env (the caller picks which to use)."""
        n, task = self.num_envs, self.task
        sampler = KeySampler(key)
        qpos, qvel, task_vars = task.reset(jnp, sampler, n)
        task_vars = {
            k: jnp.broadcast_to(jnp.asarray(v, self.dtype), state["task"][k].shape) for k, v in task_vars.items()
        }
        params = state["params"]
        latency = state["latency"]
        if self.randomize_model:
            params = draw_model_fields(sampler.next_key(), n, self.nominal, self.dr)
            params = {k: v.astype(self.dtype) for k, v in params.items()}
            lo, hi = self.latency_range
            latency = sampler.integers(lo, hi + 1, n).astype(jnp.int32)
        data = self.batched(template)
        data = data.replace(
            qpos=jnp.broadcast_to(jnp.asarray(qpos, self.dtype), data.qpos.shape),
            qvel=jnp.broadcast_to(jnp.asarray(qvel, self.dtype), data.qvel.shape),
        )
        # A fresh episode starts from the command of a zero action (the default pose
        # for position-controlled robots), which the motors hold under latency.
        zero = jnp.zeros((n, task.num_actions), self.dtype)
        sim = SimState(qpos=data.qpos, qvel=data.qvel, sensordata=data.sensordata, ctrl=data.ctrl, task=task_vars)
        ctrl = jnp.broadcast_to(jnp.asarray(task.ctrl_from_action(jnp, zero, sim), self.dtype), data.ctrl.shape)
        model, in_axes = batched_model(self.model, params)
        # Sensors of the fresh state need a forward pass.
        data = jax.vmap(mjx.forward, in_axes=(in_axes, 0))(model, data.replace(ctrl=ctrl))
        return {
            "data": data,
            "params": params,
            "task": task_vars,
            "latency": latency,
            "episode_length": jnp.zeros_like(state["episode_length"]),
            "episode_return": jnp.zeros_like(state["episode_return"]),
            "episode_terms": {k: jnp.zeros_like(v) for k, v in state["episode_terms"].items()},
        }

    def _reset_where(self, state: dict, mask, key, template: mjx.Data) -> dict:
        fresh = self._fresh(state, key, template)

        def pick(new, old):
            return jnp.where(mask.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)

        return jax.tree_util.tree_map(pick, fresh, state)

    # ----------------------------------------------------------- observation
    def _groups(self, terms: dict, sampler: KeySampler | None) -> dict:
        out = {}
        for group, layout in self.obs_layout.items():
            parts = []
            for name, _ in layout:
                x = terms[name]
                amp = self.noise.get(name, 0.0)
                # Only what the robot senses is noisy; privileged critic state is clean.
                if sampler is not None and amp > 0.0 and group == "policy":
                    x = x + sampler.uniform(-amp, amp, x.shape)
                parts.append(jnp.asarray(x, jnp.float32))
            out[group] = jnp.concatenate(parts, axis=1)
        return out

    def _observe_state(self, state: dict, key):
        sampler = KeySampler(key)
        obs = self._groups(self.task.observation_terms(jnp, self.sim_state(state)), sampler)
        return obs, sampler.key

    # ------------------------------------------------------------------- step
    def _step(self, state: dict, key, action, force_reset, template: mjx.Data):
        task, n = self.task, self.num_envs
        sampler = KeySampler(key)
        a = jnp.clip(jnp.asarray(action, self.dtype), -self.clip, self.clip)
        if task.joint_noise:
            # A target domain's motor noise: what the motors get, not what the policy chose.
            noisy = a + task.joint_noise * sampler.normal(a.shape).astype(self.dtype)
            a = jnp.clip(noisy, -self.clip, self.clip)
        ctrl = jnp.asarray(task.ctrl_from_action(jnp, a, self.sim_state(state)), self.dtype)
        ctrl = jnp.broadcast_to(ctrl, (n, task.num_actions))
        data = self._physics(state["params"], state["data"], ctrl, state["latency"])
        episode_length = state["episode_length"] + 1
        if self.push_interval:
            due = (episode_length % self.push_interval == 0)[:, None]
            v = float(self.dr["push_velocity"])
            kick = jnp.where(due, sampler.uniform(-v, v, (n, len(self.push_dofs))), 0.0)
            data = data.replace(qvel=data.qvel.at[:, self.push_dofs].add(kick.astype(self.dtype)))

        sim = SimState(qpos=data.qpos, qvel=data.qvel, sensordata=data.sensordata, ctrl=data.ctrl, task=state["task"])
        sim = task.after_step(jnp, sampler, sim, a)
        task_vars = {k: jnp.asarray(v, self.dtype).reshape(state["task"][k].shape) for k, v in sim.task.items()}
        sim = SimState(qpos=sim.qpos, qvel=sim.qvel, sensordata=sim.sensordata, ctrl=sim.ctrl, task=task_vars)
        # Diverged physics is a terminal state of that env (scored zero), not a
        # crash of the whole batch.
        bad = diverged(data)
        reward = jnp.zeros(n, self.dtype)
        terms = {}
        for name, value in task.reward_terms(jnp, sim, a).items():
            weighted = jnp.where(bad, 0.0, value * self.reward_scales.get(name, 0.0)).astype(self.dtype)
            reward = reward + weighted
            terms[name] = state["episode_terms"][name] + weighted
        cost = jnp.where(bad, 0.0, jnp.asarray(task.cost(jnp, sim, a), self.dtype))
        terminated = jnp.asarray(task.terminated(jnp, sim), bool) | bad
        time_outs = (episode_length >= self.max_episode_length) & ~terminated
        done = terminated | time_outs
        episode_return = state["episode_return"] + reward
        # The last observation of each finished episode (clean, no noise), for
        # learners that bootstrap time-outs from the true final state.
        final = self._groups(task.observation_terms(jnp, sim), None)
        final = {g: jnp.where(bad[:, None], 0.0, x) for g, x in final.items()}
        out = {
            "reward": reward.astype(jnp.float32),
            "done": done,
            "time_outs": time_outs,
            "terminated": terminated,
            "cost": cost.astype(jnp.float32),
            # Task metrics of the step just taken (before any reset), for evaluation.
            "metrics": {k: jnp.asarray(v, self.dtype) for k, v in task.metrics(jnp, sim, a).items()},
            "episode_return": episode_return,
            "episode_length": episode_length,
            "episode_terms": terms,
            "final_obs": final,
            # The states this step reached, before any reset, for render_frames.
            "reached": {"qpos": sim.qpos, "qvel": sim.qvel, "sensordata": sim.sensordata, "ctrl": sim.ctrl,
                        "task": sim.task},
        }
        stepped = {
            "data": data,
            "params": state["params"],
            "task": task_vars,
            "latency": state["latency"],
            "episode_length": episode_length,
            "episode_return": episode_return,
            "episode_terms": terms,
        }
        reset_mask = done | force_reset
        reset_key = sampler.next_key()
        stepped = jax.lax.cond(
            reset_mask.any(),
            lambda s: self._reset_where(s, reset_mask, reset_key, template),
            lambda s: s,
            stepped,
        )
        out["obs"] = self._groups(task.observation_terms(jnp, self.sim_state(stepped)), sampler)
        return stepped, sampler.key, out


def _push_dofs(task: Task) -> tuple[int, ...]:
    if task.push_dofs is not None:
        return tuple(task.push_dofs)
    m = task.model
    free_root = m.njnt > 0 and m.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
    return (0, 1) if free_root else ()


# Compiled programs by spec, newest last; a few are kept so a test suite or a
# train-then-evaluate run does not compile the same env twice.
_PROGRAMS: OrderedDict[tuple, _Program] = OrderedDict()
_MAX_PROGRAMS = 16


def _model_digest(model: mujoco.MjModel) -> str:
    buf = np.zeros(mujoco.mj_sizeModel(model), dtype=np.uint8)
    mujoco.mj_saveModel(model, None, buf)
    return hashlib.sha1(buf.tobytes()).hexdigest()


def _program(task: Task, num_envs: int, dr: dict, mesh) -> _Program:
    # Two tasks of the same class, config and model behave the same, so the
    # program of the first serves the second; how frames are rendered is no part
    # of the step (an evaluation video does not compile the task again).
    physics_config = {k: v for k, v in task.config.items() if k != "render"}
    spec = (
        type(task),
        json.dumps(physics_config, sort_keys=True, default=str),
        _model_digest(task.model),
        json.dumps(dr, sort_keys=True, default=str),
        num_envs,
        tuple(d.id for d in mesh.devices.flat),
        mesh.devices.flat[0].platform,
        bool(jax.config.jax_enable_x64),
    )
    if spec in _PROGRAMS:
        _PROGRAMS.move_to_end(spec)
        return _PROGRAMS[spec]
    program = _Program(task, num_envs, dr, mesh)
    _PROGRAMS[spec] = program
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


class MjxVecEnv(VecEnv):
    def __init__(
        self,
        task: Task,
        num_envs: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        nthread: int | None = None,
        randomize: bool | None = None,
    ):
        del nthread  # XLA decides the parallelism
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        # Physics in float32 must not lose more to TF32 matmuls on GPUs.
        jax.config.update("jax_default_matmul_precision", "highest")
        self.task = task
        self.cfg = task.config
        self.num_envs = int(num_envs)
        self.num_actions = task.num_actions
        self.max_episode_length = task.max_episode_length
        self.frame_skip = task.frame_skip
        self.step_dt = float(self.cfg["control_dt"])
        self.action_names = task.action_names
        self.dr = dict(self.cfg["domain_randomization"])
        if randomize is not None:
            self.dr["enabled"] = bool(randomize)
        if self.dr["enabled"] and self.dr["push_interval_s"] > 0 and not _push_dofs(task):
            raise ValueError(f"task {task.name} has no floating base to push; set push_interval_s=0")

        mesh = jax_interop.env_mesh(jax_interop.jax_devices(device), self.num_envs)
        self.devices = list(mesh.devices.flat)
        self.device = jax_interop.torch_device(self.devices[0])
        self._program = _program(task, self.num_envs, self.dr, mesh)
        p = self._program
        self.obs_layout = {g: list(layout) for g, layout in p.obs_layout.items()}
        self.obs_sizes = {g: sum(w for _, w in layout) for g, layout in p.obs_layout.items()}
        self._torch_dtype = torch.float64 if p.dtype == jnp.float64 else torch.float32
        self._key = jax.device_put(jax.random.key(seed), p.replicated)
        # Distinct buffers per leaf: the step donates the state, and a buffer shared
        # by two leaves cannot be donated twice.
        template = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), p.with_terms(p.template_state()))
        self._state = jax.device_put(template, p.env_sharding)
        self._obs: dict[str, torch.Tensor] = {}
        self._renderer: BatchRenderer | None = None
        self.reset()

    # ------------------------------------------------------------------ resets
    def reset(self) -> dict[str, torch.Tensor]:
        p = self._program
        zero = jax.device_put(jnp.zeros((self.num_envs, self.num_actions), p.dtype), p.env_sharding)
        self._advance(zero, force_reset=True)
        self._reached = None  # the reset state is what frames show
        return self._obs

    def get_observations(self) -> dict[str, torch.Tensor]:
        return self._obs

    def randomize_episode_start(self) -> None:
        """Spread the envs' time-limit clocks over the episode (legged_gym's
        init_at_random_ep_len), as the mujoco backend does."""
        key, sub = jax.random.split(self._key)
        lengths = jax.random.randint(sub, (self.num_envs,), 0, self.max_episode_length, dtype=jnp.int32)
        # Placed as the step function expects them, or it would compile anew.
        self._key = jax.device_put(key, self._program.replicated)
        self._state = dict(self._state, episode_length=jax.device_put(lengths, self._program.env_sharding))

    # -------------------------------------------------------------------- step
    def _check_actions(self, actions) -> jax.Array:
        a = torch.as_tensor(actions)
        if tuple(a.shape) != (self.num_envs, self.num_actions):
            raise ValueError(
                f"actions must have shape (num_envs, num_actions) = "
                f"({self.num_envs}, {self.num_actions}), got {tuple(a.shape)}"
            )
        a = a.detach().to(self.device, self._torch_dtype)
        bad = ~torch.isfinite(a).all(dim=1)
        if bad.any():
            ids = torch.nonzero(bad).flatten().tolist()
            shown = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
            raise ValueError(f"non-finite actions (NaN/inf) for env ids [{shown}]")
        # A view of the torch tensor, placed on the env sharding (no copy on one device).
        return jax.device_put(jax_interop.from_torch(a), self._program.env_sharding)

    def _advance(self, actions: jax.Array, force_reset: bool) -> dict:
        p = self._program
        self._state, self._key, out = p.step(self._state, self._key, actions, force_reset, p.data_template)
        # JAX returns dicts with sorted keys; keep the task's group order.
        self._obs = {g: jax_interop.to_torch(out["obs"][g]) for g in self.obs_layout}
        return out

    def step(self, actions):
        out = self._advance(self._check_actions(actions), force_reset=False)
        self._reached = out["reached"]  # stays on the device until frames are asked for
        # One transfer for what the host needs every step.
        host = jax.device_get({"done": out["done"], "metrics": out["metrics"]})
        extras: dict[str, Any] = {
            "episode": {},
            "metrics": {k: np.asarray(host["metrics"][k], dtype=np.float64) for k in self._program.metric_names},
        }
        done_ids = np.flatnonzero(host["done"])
        if len(done_ids):
            ep = jax.device_get(
                {k: out[k] for k in ("episode_return", "episode_length", "episode_terms", "final_obs")}
            )
            returns = np.asarray(ep["episode_return"], dtype=np.float64)[done_ids]
            lengths = np.asarray(ep["episode_length"], dtype=np.int64)[done_ids]
            extras["episode"] = {"return": float(returns.mean()), "length": float(lengths.mean())}
            for name in self._program.reward_names:
                v = np.asarray(ep["episode_terms"][name], dtype=np.float64)
                extras["episode"][f"rew_{name}"] = float(v[done_ids].mean())
            extras["episode_returns"] = returns
            extras["episode_lengths"] = lengths
            extras["final_ids"] = done_ids
            extras["final_observations"] = {g: np.asarray(ep["final_obs"][g])[done_ids] for g in self.obs_layout}
        extras["time_outs"] = jax_interop.to_torch(out["time_outs"])
        extras["cost"] = jax_interop.to_torch(out["cost"])
        extras["terminated"] = jax_interop.to_torch(out["terminated"])
        return self._obs, jax_interop.to_torch(out["reward"]), jax_interop.to_torch(out["done"]), extras

    # ---------------------------------------------- inspection (tests, debugging)
    @property
    def episode_length(self) -> np.ndarray:
        """A copy of the envs' episode clocks; assign a whole array to set them
        (rsl_rl's runner does, for init_at_random_ep_len)."""
        return np.array(self._state["episode_length"], dtype=np.int64)

    @episode_length.setter
    def episode_length(self, value) -> None:
        lengths = jnp.asarray(np.asarray(value, dtype=np.int32).reshape(self.num_envs))
        self._state = dict(self._state, episode_length=jax.device_put(lengths, self._program.env_sharding))

    @property
    def latency(self) -> np.ndarray:
        """Per env, how many physics steps late each command arrives."""
        return np.array(self._state["latency"], dtype=np.int64)

    def randomized_model_fields(self) -> dict[str, np.ndarray]:
        """Each env's randomized model fields (leading env axis); empty without
        randomization."""
        return {k: np.array(v) for k, v in self._state["params"].items()}

    def sim_state(self) -> SimState:
        """Copies of every env's physics and task state."""
        s = self._program.sim_state(self._state)
        return SimState(
            qpos=np.array(s.qpos),
            qvel=np.array(s.qvel),
            sensordata=np.array(s.sensordata),
            ctrl=np.array(s.ctrl),
            task={k: np.array(v) for k, v in s.task.items()},
        )

    def set_sim_state(self, qpos, qvel, sensordata, ctrl, task_vars: dict) -> None:
        """Put every env in the given state (rows per env; time and the episode
        clock restart), e.g. where another backend's envs are, and observe it."""
        p, s = self._program, self._state

        def put(x, like):
            return np.asarray(x, dtype=like.dtype).reshape(like.shape)

        data = s["data"].replace(
            qpos=put(qpos, s["data"].qpos),
            qvel=put(qvel, s["data"].qvel),
            sensordata=put(sensordata, s["data"].sensordata),
            ctrl=put(ctrl, s["data"].ctrl),
            time=np.zeros(s["data"].time.shape, s["data"].time.dtype),
        )
        tv = {k: put(task_vars[k], v) for k, v in s["task"].items()}
        state = dict(s, data=data, task=tv, episode_length=np.zeros(self.num_envs, np.int32))
        # Every leaf back on the env sharding, or the next step would compile anew.
        self._state = jax.device_put(state, p.env_sharding)
        obs, self._key = p.observe(self._state, self._key)
        self._obs = {g: jax_interop.to_torch(obs[g]) for g in self.obs_layout}
        self._reached = None

    # --------------------------------------------------------------- rendering
    def render_frames(self, ids: np.ndarray | None = None) -> np.ndarray:
        if self._reached is None:
            state = self.sim_state()
        else:
            r = jax.device_get(self._reached)
            state = SimState(qpos=r["qpos"], qvel=r["qvel"], sensordata=r["sensordata"], ctrl=r["ctrl"], task=r["task"])
        if self._renderer is None:
            self._renderer = BatchRenderer(self.task.model, render_config(self.task))
        return render_states(self._renderer, self.task, state, ids)

    def close(self) -> None:
        # Drop the device buffers; the compiled program stays cached for reuse.
        self._state = None
        self._reached = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
