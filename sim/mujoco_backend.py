"""The default backend: MuJoCo C on the CPU, many envs stepped in parallel threads.

Physics runs in ``mujoco.rollout`` (C++ threads with the GIL released), one call
per control step covering all envs and the whole frame skip. Everything around it
(observations, rewards, resets) is vectorized numpy over the env axis, so Python
overhead does not grow with the number of envs.
"""
from __future__ import annotations

import copy
import os
from typing import Any

import mujoco
import numpy as np
import torch
from mujoco import rollout as mj_rollout

from robotrl.sim.randomization import Nominal, randomize_model
from robotrl.sim.render import BatchRenderer, render_config, render_states
from robotrl.sim.task import Sampler, SimState, Task
from robotrl.sim.vecenv import VecEnv, validate_actions

_STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
_CTRL_SPEC = mujoco.mjtState.mjSTATE_CTRL.value


def state_slices(model: mujoco.MjModel, spec: int = _STATE_SPEC) -> dict[str, slice]:
    """Where each component sits in an ``mj_getState`` vector of ``spec``."""
    out, start = {}, 0
    for name, bit in mujoco.mjtState.__members__.items():
        value = int(bit)
        if value & (value - 1) or not (spec & value):  # only single bits in spec
            continue
        size = mujoco.mj_stateSize(model, value)
        out[name.removeprefix("mjSTATE_").lower()] = slice(start, start + size)
        start += size
    return out


class MujocoVecEnv(VecEnv):
    def __init__(
        self,
        task: Task,
        num_envs: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        nthread: int | None = None,
        randomize: bool | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.task = task
        self.cfg = task.config
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.num_actions = task.num_actions
        self.max_episode_length = task.max_episode_length
        self.frame_skip = task.frame_skip
        self.step_dt = float(self.cfg["control_dt"])
        self.action_names = task.action_names
        self.dr = dict(self.cfg["domain_randomization"])
        if randomize is not None:
            self.dr["enabled"] = bool(randomize)
        self.rng = np.random.default_rng(seed)
        self.sampler = Sampler(self.rng)

        self.model = task.model
        self.nominal = Nominal.of(self.model)
        # One model per env when its parameters are randomized; otherwise all envs
        # share the task's model.
        if self.dr["enabled"]:
            self.models = [copy.copy(self.model) for _ in range(self.num_envs)]
        else:
            self.models = [self.model] * self.num_envs
        self.nthread = max(1, min(nthread or os.cpu_count() or 1, self.num_envs))
        self.datas = [mujoco.MjData(self.model) for _ in range(self.nthread)]
        self._pool = mj_rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)

        m = self.model
        self.slices = state_slices(m)
        # Per-step constants, read once: attribute access through the bindings
        # costs microseconds, and a step's Python budget is a few hundred.
        self._time_col = self.slices["time"].start
        self._physics_dt = float(m.opt.timestep)
        self._physics_per_step = self.frame_skip * self._physics_dt
        self._action_clip = float(self.cfg["action_clip"])
        self.nstate = mujoco.mj_stateSize(m, _STATE_SPEC)
        n, fs = self.num_envs, self.frame_skip
        self.state = np.zeros((n, self.nstate))
        self.sensordata = np.zeros((n, m.nsensordata))
        self.ctrl = np.zeros((n, m.nu))
        self._ctrl_seq = np.zeros((n, fs, m.nu))
        self._out_state = np.zeros((n, fs, self.nstate))
        self._out_sens = np.zeros((n, fs, m.nsensordata))
        self.latency = np.zeros(n, dtype=np.int64)
        self.task_vars: dict[str, np.ndarray] = {}
        self.episode_length = np.zeros(n, dtype=np.int64)
        self.episode_return = np.zeros(n)
        # Reward terms summed over each episode, one row per term (names in
        # _term_names, known after the first step): one array op per step, not
        # a few per term.
        self._term_names: tuple[str, ...] = ()
        self._term_scales = np.zeros((0, 1))
        self._term_sums = np.zeros((0, n))
        self._term_buf = np.zeros((0, n))
        self.push_interval = (
            int(round(self.dr["push_interval_s"] / self.step_dt))
            if self.dr["enabled"] and self.dr["push_interval_s"] > 0
            else 0
        )
        self.push_dofs = task.push_dofs
        if self.push_dofs is None:
            free_root = self.model.njnt > 0 and self.model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
            self.push_dofs = (0, 1) if free_root else ()
        if self.push_interval and not self.push_dofs:
            raise ValueError(f"task {task.name} has no floating base to push; set push_interval_s=0")
        self.obs_layout: dict[str, list[tuple[str, int]]] = {}
        self.obs_sizes: dict[str, int] = {}
        self._noise = {k: float(v) for k, v in self.cfg["obs_noise"].items()}
        self._obs: dict[str, torch.Tensor] = {}
        self._renderer: BatchRenderer | None = None
        self._init_all()

    # ------------------------------------------------------------------ resets
    def _sim_state(self) -> SimState:
        s = self.slices
        return SimState(
            qpos=self.state[:, s["qpos"]],
            qvel=self.state[:, s["qvel"]],
            sensordata=self.sensordata,
            ctrl=self.ctrl,
            task=self.task_vars,
        )

    def _sim_state_rows(self, ids: np.ndarray) -> SimState:
        s = self.slices
        return SimState(
            qpos=self.state[ids, s["qpos"]],
            qvel=self.state[ids, s["qvel"]],
            sensordata=self.sensordata[ids],
            ctrl=self.ctrl[ids],
            task={k: v[ids] for k, v in self.task_vars.items()},
        )

    def _init_all(self) -> None:
        # (env ids, their states) that the last step ended, before their reset.
        self._terminal: tuple[np.ndarray, SimState] | None = None
        ids = np.arange(self.num_envs)
        qpos, qvel, task_vars = self.task.reset(np, self.sampler, self.num_envs)
        self.task_vars = {k: np.array(v, dtype=np.float64) for k, v in task_vars.items()}
        self._reset_ids(ids, qpos, qvel, task_vars)
        terms = self.task.observation_terms(np, self._sim_state())
        for group, names in self.task.observation_groups.items():
            self.obs_layout[group] = [(name, int(terms[name].shape[1])) for name in names]
            self.obs_sizes[group] = sum(w for _, w in self.obs_layout[group])
        # Per-column noise amplitude of the policy group: one draw per step, not one per term.
        amp = np.concatenate([np.full(w, self._noise.get(name, 0.0)) for name, w in self.obs_layout["policy"]])
        self._policy_noise = amp if amp.any() else None
        self._obs = self._observe(terms)

    def _reset_ids(self, ids: np.ndarray, qpos=None, qvel=None, task_vars=None) -> None:
        if qpos is None:
            qpos, qvel, task_vars = self.task.reset(np, self.sampler, len(ids))
        s = self.slices
        self.state[ids] = 0.0
        self.state[ids, s["qpos"]] = qpos
        self.state[ids, s["qvel"]] = qvel
        for k, v in task_vars.items():
            self.task_vars[k][ids] = v
        if self.dr["enabled"]:
            lo, hi = self.dr["latency_substeps"]
            self.latency[ids] = self.rng.integers(int(lo), int(hi) + 1, size=len(ids))
            for i in ids:
                randomize_model(self.models[i], self.nominal, self.rng, self.dr)
        self.episode_length[ids] = 0
        self.episode_return[ids] = 0.0
        self._term_sums[:, ids] = 0.0
        # A fresh episode starts from the command of a zero action (the default pose
        # for position-controlled robots); with latency it is what the motors hold
        # until the first command arrives.
        zero = np.zeros((len(ids), self.num_actions))
        self.ctrl[ids] = self.task.ctrl_from_action(np, zero, self._sim_state_rows(ids))
        # Sensors of a fresh state need one forward pass; resets are rare enough
        # that a per-env loop costs little.
        data = self.datas[0]
        for i in ids:
            mujoco.mj_setState(self.models[i], data, self.state[i], _STATE_SPEC)
            data.ctrl[:] = self.ctrl[i]
            mujoco.mj_forward(self.models[i], data)
            self.sensordata[i] = data.sensordata

    def reset(self) -> dict[str, torch.Tensor]:
        self._init_all()
        return self._obs

    def get_observations(self) -> dict[str, torch.Tensor]:
        return self._obs

    def randomize_episode_start(self) -> None:
        """Spread the envs' time-limit clocks over the episode (legged_gym's
        init_at_random_ep_len): otherwise all envs start and time out together, and
        every batch of experience comes from the same phase of the episode."""
        self.episode_length[:] = self.rng.integers(0, self.max_episode_length, size=self.num_envs)

    # ------------------------------------------------------------ observations
    def _observe(self, terms: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        out = {}
        for group, layout in self.obs_layout.items():
            parts = [terms[name] for name, _ in layout]
            # Only what the robot senses is noisy; privileged critic state is clean.
            if group == "policy" and self._policy_noise is not None:
                obs = np.concatenate(parts, axis=1)
                obs = (obs + self._policy_noise * self.rng.uniform(-1.0, 1.0, size=obs.shape)).astype(np.float32)
            else:
                obs = np.concatenate(parts, axis=1, dtype=np.float32)
            out[group] = self._tensor(obs)
        return out

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array)
        # .to() on the same device still costs a dispatch; skip it on the CPU.
        return t if self.device.type == "cpu" else t.to(self.device)

    # -------------------------------------------------------------------- step
    def _check_actions(self, actions) -> np.ndarray:
        if isinstance(actions, torch.Tensor):
            # Checked after the copy to numpy: a torch op costs ~20 us of dispatch per
            # step, and even a no-op .to() ~8 us; numpy widens float32 exactly.
            actions = actions.detach()
            if actions.device.type != "cpu" or actions.dtype not in (torch.float32, torch.float64):
                actions = actions.to("cpu", torch.float64)
            actions = actions.numpy()
        a = np.asarray(actions, dtype=np.float64)
        validate_actions(a, self.num_envs, self.num_actions)
        return a

    def step(self, actions):
        a = self._check_actions(actions)
        clip = self._action_clip
        a = np.minimum(np.maximum(a, -clip), clip)  # np.clip's wrapper costs more than the work
        if self.task.joint_noise:
            # A target domain's motor noise: what the motors get, not what the policy chose.
            a = np.clip(a + self.task.joint_noise * self.sampler.normal(a.shape), -clip, clip)
        state = self._sim_state()
        new_ctrl = np.asarray(self.task.ctrl_from_action(np, a, state), dtype=np.float64)

        seq = self._ctrl_seq
        seq[:] = new_ctrl[:, None, :]
        if self.dr["enabled"] and self.latency.any():
            # The command reaches the motors `latency` physics steps late.
            late = np.arange(self.frame_skip)[None, :] < self.latency[:, None]
            np.copyto(seq, self.ctrl[:, None, :], where=late[:, :, None])
        self._pool.rollout(
            self.models,
            self.datas,
            self.state,
            seq,
            control_spec=_CTRL_SPEC,
            skip_checks=True,
            nstep=self.frame_skip,
            state=self._out_state,
            sensordata=self._out_sens,
        )
        t = self._time_col
        expected_time = self.state[:, t] + self._physics_per_step
        self.state[:] = self._out_state[:, -1]
        self.sensordata[:] = self._out_sens[:, -1]
        self.ctrl[:] = new_ctrl
        self.episode_length += 1

        if self.push_interval:
            self._push(np.flatnonzero(self.episode_length % self.push_interval == 0))

        state = self.task.after_step(np, self.sampler, self._sim_state(), a)
        self.task_vars = dict(state.task)
        # Diverged physics is a terminal state of that env (scored zero), not a
        # crash of the whole batch. MuJoCo resets unstable data to the model's
        # initial state (and its clock to zero) inside the rollout, so a clock
        # that did not advance by the frame skip gives the divergence away.
        clock_reset = np.abs(self.state[:, t] - expected_time) > 0.5 * self._physics_dt
        diverged = clock_reset | ~np.isfinite(self.state).all(axis=1)
        rew_terms = self.task.reward_terms(np, state, a)
        if tuple(rew_terms) != self._term_names:
            self._start_terms(tuple(rew_terms))
        weighted = self._term_buf
        for row, value in zip(weighted, rew_terms.values()):
            row[:] = value
        weighted *= self._term_scales
        if diverged.any():
            weighted[:, diverged] = 0.0
        reward = weighted.sum(axis=0)
        self._term_sums += weighted
        cost = np.where(diverged, 0.0, np.asarray(self.task.cost(np, state, a), dtype=np.float64))
        terminated = np.asarray(self.task.terminated(np, state), dtype=bool) | diverged
        time_outs = (self.episode_length >= self.max_episode_length) & ~terminated
        done = terminated | time_outs
        self.episode_return += reward

        extras: dict[str, Any] = {"episode": {}}
        # Task metrics of the step just taken (before any reset), for evaluation.
        # Copies: a metric may be a view of the state that the resets below overwrite.
        extras["metrics"] = {k: np.array(v, dtype=np.float64) for k, v in self.task.metrics(np, state, a).items()}
        done_ids = np.flatnonzero(done)
        self._terminal = None
        if len(done_ids):
            ep = extras["episode"]
            ep["return"] = float(self.episode_return[done_ids].mean())
            ep["length"] = float(self.episode_length[done_ids].mean())
            for name, v in zip(self._term_names, self._term_sums[:, done_ids].mean(axis=1)):
                ep[f"rew_{name}"] = float(v)
            extras["episode_returns"] = self.episode_return[done_ids].copy()
            extras["episode_lengths"] = self.episode_length[done_ids].copy()
            # The last observation of each finished episode (clean, no noise), for
            # learners that bootstrap time-outs from the true final state.
            self._terminal = (done_ids, self._sim_state_rows(done_ids))
            final_terms = self.task.observation_terms(np, self._terminal[1])
            extras["final_ids"] = done_ids
            extras["final_observations"] = {
                g: np.concatenate([final_terms[n] for n, _ in layout], axis=1).astype(np.float32)
                for g, layout in self.obs_layout.items()
            }
            self._reset_ids(done_ids)
        terms = self.task.observation_terms(np, self._sim_state())
        self._obs = self._observe(terms)
        extras["time_outs"] = self._tensor(time_outs)
        extras["cost"] = self._tensor(cost.astype(np.float32))
        extras["terminated"] = self._tensor(terminated)
        return self._obs, self._tensor(reward.astype(np.float32)), self._tensor(done), extras

    def _start_terms(self, names: tuple[str, ...]) -> None:
        """(Re)start the per-term episode sums for the task's reward term names."""
        scales = self.cfg["reward_scales"]
        self._term_names = names
        self._term_scales = np.array([float(scales.get(n, 0.0)) for n in names])[:, None]
        self._term_sums = np.zeros((len(names), self.num_envs))
        self._term_buf = np.zeros((len(names), self.num_envs))

    def _push(self, ids: np.ndarray) -> None:
        """Kick the root's velocity (the task's ``push_dofs``)."""
        if len(ids) == 0:
            return
        v = float(self.dr["push_velocity"])
        cols = self.slices["qvel"].start + np.asarray(self.push_dofs)
        kick = self.rng.uniform(-v, v, size=(len(ids), len(cols)))
        self.state[np.ix_(ids, cols)] += kick

    # --------------------------------------------------------------- rendering
    def render_frames(self, ids: np.ndarray | None = None) -> np.ndarray:
        state = self._sim_state()
        if self._terminal is not None:
            done_ids, final = self._terminal
            state = _with_rows(state, done_ids, final)
        if self._renderer is None:
            self._renderer = BatchRenderer(self.model, render_config(self.task))
        return render_states(self._renderer, self.task, state, ids)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _with_rows(state: SimState, ids: np.ndarray, rows: SimState) -> SimState:
    """A copy of ``state`` with the envs ``ids`` replaced by ``rows``."""

    def put(full, part):
        out = np.array(full)
        out[ids] = part
        return out

    return SimState(
        qpos=put(state.qpos, rows.qpos),
        qvel=put(state.qvel, rows.qvel),
        sensordata=put(state.sensordata, rows.sensordata),
        ctrl=put(state.ctrl, rows.ctrl),
        task={k: put(v, rows.task[k]) for k, v in state.task.items()},
    )
