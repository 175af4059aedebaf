"""Any Brax environment as a robotrl VecEnv.

The env is wrapped the way Brax's own trainers wrap it (``brax.envs.wrappers.
training``: Vmap or DomainRandomizationVmap, Episode, AutoReset), reset and step
are jitted, and arrays cross to and from torch through DLPack without copies.

Brax's AutoResetWrapper restarts a finished env from the state its *first* reset
produced (it keeps ``first_obs``/``first_pipeline_state``), not from a fresh
sample: that is Brax's training semantics and is kept here; ``reset()`` draws new
initial states for all envs.

``extras`` carries the same keys as the mujoco backend: ``time_outs`` (from
``state.info["truncation"]``), ``terminated``, ``cost`` (``state.metrics`` or
``state.info`` "cost", else zeros), ``metrics`` (always ``{}``: Brax metrics are
not robotrl task metrics), and for the envs that finished this step ``episode``
(mean ``return``, ``length`` and, per Brax ``reward_*`` metric, ``rew_*`` episode
sums), ``episode_returns``, ``episode_lengths``, ``final_ids`` and
``final_observations`` (the true last observation, recorded just below the
AutoResetWrapper before it swaps in the first one).

Observation tensors are views of JAX buffers: treat them as read-only. Actions go
to the Brax env unclipped (Brax envs expect a tanh policy's [-1, 1]). Unlike the
mujoco backend, diverged physics is not detected here: Brax envs own that.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import torch
from brax import envs as brax_envs
from brax.envs.base import State, Wrapper
from brax.envs.wrappers import training as brax_training

from robotrl.sim.jax_interop import from_torch, jax_devices, to_torch, torch_device
from robotrl.sim.vecenv import VecEnv, validate_actions

# Playground's convention for dict observations: what the robot senses, and the
# privileged state for an asymmetric critic.
_PLAYGROUND_GROUPS = {"policy": "state", "critic": "privileged_state"}


def brax_env_names() -> list[str]:
    # Brax keeps its registry private; reading it is the only way to list names.
    return sorted(brax_envs._envs)


def observation_groups(obs) -> tuple[dict[str, jax.Array], dict[str, list[tuple[str, int]]]]:
    """Map a Brax observation (batched array or dict of arrays) onto the
    ``policy``/``critic`` groups, returning the groups and their layout.

    An array is both groups. A dict with ``policy``/``critic`` keys (or
    Playground's ``state``/``privileged_state``) maps by name; any other dict is
    flattened and concatenated in key order into both groups.
    """
    flat = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731
    if not isinstance(obs, dict):
        x = flat(obs)
        return {"policy": x, "critic": x}, {g: [("obs", x.shape[1])] for g in ("policy", "critic")}
    for names in ({"policy": "policy", "critic": "critic"}, _PLAYGROUND_GROUPS):
        if names["policy"] in obs:
            groups, layout = {}, {}
            for group in ("policy", "critic"):
                key = names[group] if names[group] in obs else names["policy"]
                groups[group] = flat(obs[key])
                layout[group] = [(key, groups[group].shape[1])]
            return groups, layout
    keys = sorted(obs)
    x = jnp.concatenate([flat(obs[k]) for k in keys], axis=1)
    parts = [(k, int(np.prod(obs[k].shape[1:]))) for k in keys]
    return {"policy": x, "critic": x}, {"policy": parts, "critic": list(parts)}


class _Frozen(dict):
    """Env kwargs as a hashable cache key (a TypeError if a value is unhashable)."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))


class _RecordFinalObs(Wrapper):
    """Keeps each step's observation in ``info["final_obs"]``; placed below the
    AutoResetWrapper, it holds the last observation of an episode that just ended
    (AutoReset replaces ``obs`` but leaves ``info`` alone)."""

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        state.info["final_obs"] = state.obs
        return state

    def step(self, state: State, action: jax.Array) -> State:
        state = self.env.step(state, action)
        state.info["final_obs"] = state.obs
        return state


def scale_friction_and_mass(
    friction_range: tuple[float, float] = (0.6, 1.4),
    mass_range: tuple[float, float] = (0.8, 1.2),
) -> Callable:
    """A ``randomization_fn(sys, rng) -> (sys_batched, in_axes)`` in the Brax /
    MuJoCo Playground style: per env, one factor scales every geom's sliding
    friction and one factor per body scales its mass and inertia (uniform
    density, so the body stays physically consistent). ``rng`` holds one key per
    env. Both the MJX fields (``body_mass``, ``body_inertia``) and the Brax
    pipelines' copies (``link.inertia``, without the world body) are scaled, so
    it works on every Brax backend."""

    def randomize(sys, rng):
        @jax.vmap
        def sample(key):
            k_friction, k_mass = jax.random.split(key)
            f = jax.random.uniform(k_friction, (), minval=friction_range[0], maxval=friction_range[1])
            m = jax.random.uniform(k_mass, (sys.nbody,), minval=mass_range[0], maxval=mass_range[1])
            return {
                "geom_friction": sys.geom_friction.at[:, 0].multiply(f),
                "body_mass": sys.body_mass * m,
                "body_inertia": sys.body_inertia * m[:, None],
                "link.inertia.mass": sys.link.inertia.mass * m[1:],
                "link.inertia.i": sys.link.inertia.i * m[1:, None, None],
            }

        values = sample(rng)
        in_axes = jax.tree_util.tree_map(lambda _: None, sys)
        in_axes = in_axes.tree_replace({k: 0 for k in values})
        return sys.tree_replace(values), in_axes

    return randomize


def _reset_impl(env, num_envs, key):
    state = env.reset(jax.random.split(key, num_envs))
    zeros = jnp.zeros(num_envs)
    return (state, zeros, zeros.astype(jnp.int32)), observation_groups(state.obs)[0]


def _step_impl(env, num_envs, carry, action):
    state, ep_return, ep_length = carry
    state = env.step(state, action)
    done = state.done.astype(bool)
    time_outs = state.info["truncation"].astype(bool)
    ep_return = ep_return + state.reward
    ep_length = ep_length + 1
    cost = state.metrics.get("cost", state.info.get("cost", jnp.zeros(num_envs)))
    out = {
        "obs": observation_groups(state.obs)[0],
        "final_obs": observation_groups(state.info["final_obs"])[0],
        "reward": state.reward.astype(jnp.float32),
        "done": done,
        "time_outs": time_outs,
        "terminated": done & ~time_outs,
        "cost": jnp.asarray(cost, jnp.float32),
        "episode_return": ep_return,
        "episode_length": ep_length,
        # Brax's EpisodeWrapper sums each metric over the episode; at the step an
        # episode ends these are its totals.
        "episode_metrics": {k: v for k, v in state.info["episode_metrics"].items() if k.startswith("reward_")},
    }
    carry = (state, jnp.where(done, 0.0, ep_return), jnp.where(done, 0, ep_length))
    # Brax's wrappers return some weakly typed leaves after a step (not after a
    # reset); made strong, the step compiles once instead of twice.
    carry = jax.tree.map(lambda x: x.astype(x.dtype) if hasattr(x, "dtype") else x, carry)
    return carry, out


def _build(env_name, kwargs, num_envs, episode_length, action_repeat, randomization_fn=None):
    """The Brax env, its training-wrapped batch and the jitted reset and step."""
    brax_env = brax_envs.get_environment(env_name, **kwargs)
    # The same layering as brax.envs.wrappers.training.wrap, plus the final
    # observation recorder just below AutoReset.
    if randomization_fn is None:
        env = brax_training.VmapWrapper(brax_env)
    else:
        env = brax_training.DomainRandomizationVmapWrapper(brax_env, randomization_fn)
    env = brax_training.EpisodeWrapper(env, episode_length, action_repeat)
    env = brax_training.AutoResetWrapper(_RecordFinalObs(env))
    reset = jax.jit(functools.partial(_reset_impl, env, num_envs))
    step = jax.jit(functools.partial(_step_impl, env, num_envs))
    return brax_env, reset, step


# Compiling a Brax env takes tens of seconds on a CPU; envs of the same
# configuration (an evaluation env next to the training one, a test's second env)
# share one compilation. Jitted functions follow their inputs' device, so the
# device is not part of the key.
_build_cached = functools.lru_cache(maxsize=8)(_build)


class BraxVecEnv(VecEnv):
    def __init__(
        self,
        env_name: str,
        num_envs: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        episode_length: int = 1000,
        action_repeat: int = 1,
        randomization_fn: Callable | None = None,
        env_kwargs: dict | None = None,
        backend: str | None = None,
        **ignored,  # options meant for other backends (nthread, randomize, ...)
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if env_name not in brax_envs._envs:
            raise KeyError(f"unknown Brax env {env_name!r}; available: {', '.join(brax_env_names())}")
        # One device: a Brax env's batch is not sharded here.
        self.jax_device = jax_devices(device)[0]
        self.device = torch_device(self.jax_device)
        self.num_envs = int(num_envs)
        self.env_name = env_name
        self.action_repeat = int(action_repeat)
        kwargs = dict(env_kwargs or {})
        if backend is not None:
            kwargs["backend"] = backend
        self._key = jax.device_put(jax.random.PRNGKey(seed), self.jax_device)
        # Its own stream, so that with and without randomization the same seed
        # draws the same initial states.
        randomization_key = jax.random.fold_in(self._key, 1)
        shape = (self.num_envs, int(episode_length), self.action_repeat)
        if randomization_fn is not None:
            # Brax's hook: randomization_fn(sys, rng) with one key per env.
            fn = functools.partial(randomization_fn, rng=jax.random.split(randomization_key, self.num_envs))
            built = _build(env_name, kwargs, *shape, randomization_fn=fn)
        else:
            try:
                built = _build_cached(env_name, _Frozen(kwargs), *shape)
            except TypeError:  # unhashable env_kwargs: build uncached
                built = _build(env_name, kwargs, *shape)
        self.brax_env, self._reset_fn, self._step_fn = built
        self.num_actions = int(self.brax_env.action_size)
        # One VecEnv step is `action_repeat` Brax steps, and Brax's episode_length
        # counts Brax steps; both are the same with the default action_repeat=1.
        try:
            dt = float(self.brax_env.dt)
        except AttributeError:  # no physics System (Brax's "fast" test env)
            dt = float(getattr(self.brax_env, "_dt", 0.0))
        self.step_dt = dt * self.action_repeat
        self.max_episode_length = math.ceil(episode_length / self.action_repeat)
        self.action_names = self._action_names()
        self._carry = None
        self._obs: dict[str, torch.Tensor] = {}
        self.reset()

    def _action_names(self) -> list[str]:
        mj_model = getattr(getattr(self.brax_env, "sys", None), "mj_model", None)
        if mj_model is not None and mj_model.nu == self.num_actions:
            names = [mujoco.mj_id2name(mj_model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(mj_model.nu)]
            if all(names):
                return names
        return [f"action_{i}" for i in range(self.num_actions)]

    # ---------------------------------------------------------------- contract
    def reset(self) -> dict[str, torch.Tensor]:
        self._key, key = jax.random.split(self._key)
        self._carry, obs = self._reset_fn(key)
        if not hasattr(self, "obs_layout"):
            _, self.obs_layout = observation_groups(self._carry[0].obs)
            self.obs_sizes = {g: sum(w for _, w in layout) for g, layout in self.obs_layout.items()}
        self._obs = {g: to_torch(x) for g, x in obs.items()}
        return self._obs

    def get_observations(self) -> dict[str, torch.Tensor]:
        return self._obs

    def randomize_episode_start(self) -> None:
        """Spread the time-limit clocks over the episode (legged_gym's
        init_at_random_ep_len), in Brax's step count and in ours."""
        state, ep_return, _ = self._carry
        self._key, key = jax.random.split(self._key)
        ep_length = jax.random.randint(key, (self.num_envs,), 0, self.max_episode_length)
        info = dict(state.info, steps=(ep_length * self.action_repeat).astype(state.info["steps"].dtype))
        self._carry = (state.replace(info=info), ep_return, ep_length.astype(jnp.int32))

    def _check_actions(self, actions) -> torch.Tensor:
        a = torch.as_tensor(actions)
        validate_actions(a, self.num_envs, self.num_actions)
        return a.detach().to(self.device, torch.float32).contiguous()

    def step(self, actions):
        a = from_torch(self._check_actions(actions))
        self._carry, out = self._step_fn(self._carry, a)
        self._obs = {g: to_torch(x) for g, x in out["obs"].items()}
        done = to_torch(out["done"])
        extras: dict[str, Any] = {
            "time_outs": to_torch(out["time_outs"]),
            "terminated": to_torch(out["terminated"]),
            "cost": to_torch(out["cost"]),
            "episode": {},
            "metrics": {},
        }
        done_ids = np.flatnonzero(np.asarray(out["done"]))
        if len(done_ids):
            returns = np.asarray(out["episode_return"])[done_ids].astype(np.float64)
            lengths = np.asarray(out["episode_length"])[done_ids].astype(np.int64)
            ep = extras["episode"]
            ep["return"] = float(returns.mean())
            ep["length"] = float(lengths.mean())
            for name, v in out["episode_metrics"].items():
                ep["rew_" + name.removeprefix("reward_")] = float(np.asarray(v)[done_ids].mean())
            extras["episode_returns"] = returns
            extras["episode_lengths"] = lengths
            extras["final_ids"] = done_ids
            extras["final_observations"] = {g: np.asarray(x)[done_ids] for g, x in out["final_obs"].items()}
        return self._obs, to_torch(out["reward"]), done, extras
