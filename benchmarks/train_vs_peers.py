"""Wall-clock time to a return threshold on cartpole_swingup: robotrl PPO vs peers.

robotrl PPO on the mujoco and the mjx backend against rsl_rl, Stable-Baselines3
and Brax PPO, in one run and one table.

Every trainer learns robotrl's cartpole_swingup, on the same machine in the same
run, one after the other, and stops when its return reaches the threshold (300;
a policy that swings the pole up and holds it scores 250+ in evaluation, see
tests/sim/test_adapters.py) or at the time limit:
- ``robotrl_mujoco``: ``robotrl train`` PPO on the mujoco backend (the reference
  row; train_vs_sb3.robotrl_time), tuned cartpole settings (128 envs x 64 steps).
- ``robotrl_mjx``: the same with ``sim=mjx`` (on ``--device``).
- ``rsl_rl``: rsl_rl's ``OnPolicyRunner`` on robotrl's mujoco env through
  ``robotrl.sim.adapters.rsl_rl``, with robotrl's tuned cartpole settings (as in
  tests/sim/test_adapters.py); a thin wrapper of the env reads the returns of
  finished episodes from ``extras`` and stops the runner.
- ``sb3``: Stable-Baselines3 PPO through robotrl's SB3 adapter
  (train_vs_sb3.sb3_time: 16 envs, rl-zoo-style settings, VecNormalize).
- ``brax_ppo``: Brax's own PPO trainer (``brax.training.agents.ppo``, through
  brax_peer.brax_ppo_time_to_threshold) on the very same task: Brax has no cart-pole
  swing-up (its inverted_pendulum only balances), so robotrl's task on the MJX
  backend is wrapped as a Brax env (``MjxTaskBraxEnv`` below: the MJX backend's
  pure, jitted step function, which also resets finished envs). Settings are
  brax_peer's CPU_PPO (Brax's inverted_pendulum settings scaled to a CPU) with the
  task's episode length and discount 0.99, which every other trainer here uses.

The return: robotrl, rsl_rl and SB3 use the mean return of their last 100 finished
training episodes (checked after each update); Brax's trainer reports only its
evaluations, so its row uses ``eval/episode_reward`` (16 full episodes of its
stochastic policy, about every 50k env steps).

Times: ``total_s`` (the "time s" column) runs from the start of a trainer's setup
(env construction and, for mjx and Brax, JIT compilation) to the threshold, so a
trainer that compiles pays for it; it is ``setup_s`` (before training starts; for
Brax: up to its first evaluation, which includes compiling its env and networks)
plus ``time_s`` (training; Brax compiles its training step during the first
training interval as well). The limit counts training time (Brax: from the start of
``ppo.train``). ratio = trainer total_s / robotrl_mujoco total_s (> 1: robotrl on
the mujoco backend is faster); when a trainer does not reach the threshold in its
limit the ratio is a lower bound and says so.

    python benchmarks/train_vs_peers.py --json results/train_vs_peers.json [--quick]
        [--device cuda] [--trainers robotrl_mujoco robotrl_mjx rsl_rl sb3 brax_ppo]
        [--threshold 300] [--limit 300] [--seed 0]

``--quick`` (CI): threshold 100, 120 s per trainer, and only the trainers that are
cheap to start (robotrl_mujoco, rsl_rl, sb3); the JAX ones compile for tens of
seconds to minutes on a CPU, so their rows say "skipped" unless named by
``--trainers``. ``--device`` (default: cuda if torch or JAX sees a GPU, else cpu)
places robotrl_mjx and Brax; the mujoco-backed trainers learn on the CPU.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections import deque

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import default_device, parser, pin_jax_platform, print_table, write_json  # noqa: E402

TASK = "cartpole_swingup"
THRESHOLD, LIMIT_S = 300.0, 300.0
QUICK_THRESHOLD, QUICK_LIMIT_S = 100.0, 120.0  # CI runs it beside another test worker
WINDOW = 100  # finished training episodes in the mean return, as in train_vs_sb3
TRAINERS = ("robotrl_mujoco", "robotrl_mjx", "rsl_rl", "sb3", "brax_ppo")
QUICK_TRAINERS = ("robotrl_mujoco", "rsl_rl", "sb3")
LABELS = {
    "robotrl_mujoco": ("robotrl PPO", "robotrl cartpole_swingup, mujoco backend"),
    "robotrl_mjx": ("robotrl PPO", "robotrl cartpole_swingup, mjx backend"),
    "rsl_rl": ("rsl_rl OnPolicyRunner", "robotrl cartpole_swingup, mujoco backend, rsl_rl adapter"),
    "sb3": ("SB3 PPO", "robotrl cartpole_swingup, mujoco backend, SB3 adapter"),
    "brax_ppo": ("Brax PPO", "robotrl cartpole_swingup, mjx backend as a Brax env"),
}


# ------------------------------------------------------------ robotrl, SB3
def robotrl_mujoco(threshold: float, limit: float, seed: int, device: str) -> dict:
    from train_vs_sb3 import robotrl_time

    return robotrl_time(TASK, threshold, limit, seed)


def robotrl_mjx(threshold: float, limit: float, seed: int, device: str) -> dict:
    from train_vs_sb3 import robotrl_time

    return robotrl_time(TASK, threshold, limit, seed, overrides=("sim=mjx", f"device={device}"))


def sb3(threshold: float, limit: float, seed: int, device: str) -> dict:
    from train_vs_sb3 import sb3_time

    return sb3_time(TASK, threshold, limit, seed)


# ------------------------------------------------------------------ rsl_rl
RSL_RL_NUM_ENVS = 128  # robotrl's tuned cartpole_swingup setting


class _Stop(Exception):
    """Raised from inside rsl_rl's learn(): its loop has no stopping hook."""


def rsl_rl(threshold: float, limit: float, seed: int, device: str) -> dict:
    from rsl_rl.runners import OnPolicyRunner

    from robotrl.sim import make_env
    from robotrl.sim.adapters.rsl_rl import RslRlVecEnvAdapter, rsl_rl_ppo_config

    cfg = rsl_rl_ppo_config()
    steps_per_env = cfg["num_steps_per_env"]

    class StopAtThreshold(RslRlVecEnvAdapter):
        """The adapter, keeping the returns of finished episodes from ``extras`` and
        checking them at the first step of each rollout, i.e. right after the
        previous update, where robotrl and SB3 check theirs."""

        def __init__(self, env):
            super().__init__(env)
            self.returns: deque = deque(maxlen=WINDOW)
            self.calls = 0
            self.t0 = None
            self.elapsed = 0.0
            self.reached = False

        def step(self, actions):
            if self.calls and self.calls % steps_per_env == 0:
                self.elapsed = time.perf_counter() - self.t0
                self.reached = len(self.returns) == WINDOW and float(np.mean(self.returns)) >= threshold
                if self.reached or self.elapsed >= limit:
                    raise _Stop
            self.calls += 1
            obs, rew, done, extras = super().step(actions)
            if "episode_returns" in extras:
                self.returns.extend(np.asarray(extras["episode_returns"]).tolist())
            return obs, rew, done, extras

    t_setup = time.perf_counter()
    torch.manual_seed(seed)
    env = make_env(TASK, RSL_RL_NUM_ENVS, seed=seed)
    watch = StopAtThreshold(env)
    with contextlib.redirect_stdout(sys.stderr):  # its model summary, away from the table
        runner = OnPolicyRunner(watch, cfg, log_dir=None, device="cpu")
    watch.t0 = time.perf_counter()
    setup_s = watch.t0 - t_setup
    try:
        runner.learn(10**9, init_at_random_ep_len=True)
    except _Stop:
        pass
    finally:
        env.close()
    # The stop comes at the first step of a rollout, before it is taken: whole rollouts.
    return {"time_s": watch.elapsed, "setup_s": setup_s, "steps": watch.calls * RSL_RL_NUM_ENVS, "reached": watch.reached,
            "final_return": float(np.mean(watch.returns)) if watch.returns else float("nan")}


# -------------------------------------------------------------------- Brax
def make_mjx_task_brax_env(task_name: str, num_envs: int, device: str):
    """robotrl task ``task_name`` on the MJX backend as a batched ``brax.envs.Env``
    (``num_envs`` envs in one; train with ``ppo.train(wrap_env=False)``).

    One call of the MJX backend's pure step function advances every env one control
    step and resets the finished ones (new initial states drawn, as on the mjx
    backend; Brax's own AutoResetWrapper would restart from one cached state), so
    the env needs none of Brax's training wrappers. ``reset`` is that function with
    every env forced to reset. ``info`` carries the backend state and what Brax's
    PPO and evaluator read: ``truncation`` (time-outs), ``steps`` (episode length,
    the finished episode's on the step it ends), ``episode_done`` and
    ``episode_metrics`` (empty: Brax's training metrics are off by default), and the
    backend's one-env data template (carried, so the step function gets it as an
    argument).

    This uses the MJX backend's internals (``_Program``, its ``_step``, ``model``
    and ``data_template``): the backend has no public pure-function API yet.
    """
    import jax
    import jax.numpy as jnp
    from brax.envs.base import Env, State

    from robotrl.sim import jax_interop, make_task, mjx_backend

    task = make_task(task_name)
    # One device, like the rest of this benchmark (Brax's trainer is told to use one too).
    jax_device = jax_interop.jax_devices(device)[0]
    mesh = jax_interop.env_mesh([jax_device], num_envs)
    # A program of its own (not the backend's shared cache), its model and data
    # template moved off the backend's env mesh onto the plain device: Brax pmaps
    # its training step, and inside pmap a constant placed on another mesh is an error.
    program = mjx_backend._Program(task, num_envs, dict(task.config["domain_randomization"]), mesh)
    # Through numpy: jax 0.9's device_put from a mesh sharding onto a device keeps
    # the old mesh in the array's type, which pmap still rejects.
    def on_device(tree):
        return jax.tree.map(lambda x: jax.device_put(np.asarray(x), jax_device) if isinstance(x, jax.Array) else x, tree)

    program.model = on_device(program.model)
    program.data_template = on_device(program.data_template)

    def pure_step(core, key, action, force_reset, template):
        # The backend's step function, not jitted (Brax's trainer jits the whole
        # training step around it). The one-env data template is an argument, not a
        # constant, for the reason the backend gives (XLA folding at compile time).
        return program._step(core, key, action, force_reset, template)

    class MjxTaskBraxEnv(Env):
        def _state(self, core, key, out, reward, done, template) -> State:
            return State(
                pipeline_state=None,
                obs=out["obs"]["policy"],
                reward=reward,
                done=done,
                metrics={},
                info={
                    "core": core,
                    "key": jax.random.key_data(key),
                    "template": template,
                    "truncation": out["time_outs"].astype(jnp.float32),
                    "steps": out["episode_length"].astype(jnp.float32),
                    "episode_done": done,
                    "episode_metrics": {},
                },
            )

        def reset(self, rng: jax.Array) -> State:
            # Brax passes one key per env; the backend draws every env's state from one.
            key = jax.random.wrap_key_data(jnp.reshape(rng, (-1, rng.shape[-1]))[0])
            core = program.with_terms(program.template_state())
            zero = jnp.zeros((num_envs, task.num_actions), program.dtype)
            template = program.data_template
            core, key, out = pure_step(core, key, zero, True, template)
            zeros = jnp.zeros(num_envs, jnp.float32)
            state = self._state(core, key, out, zeros, zeros, template)
            state.info["truncation"] = zeros
            state.info["steps"] = zeros
            return state

        def step(self, state: State, action: jax.Array) -> State:
            key = jax.random.wrap_key_data(state.info["key"])
            template = state.info["template"]
            core, key, out = pure_step(state.info["core"], key, action, False, template)
            return self._state(core, key, out, out["reward"], out["done"].astype(jnp.float32), template)

        @property
        def observation_size(self) -> int:
            return sum(w for _, w in program.obs_layout["policy"])

        @property
        def action_size(self) -> int:
            return task.num_actions

        @property
        def backend(self) -> str:
            return "mjx"

    return MjxTaskBraxEnv(), task.max_episode_length


# Brax evaluates about every this many env steps (its only progress report).
BRAX_EVAL_EVERY = 50_000
BRAX_MAX_STEPS = 50_000_000  # an upper bound; the threshold or the limit stops the run


def brax_ppo(threshold: float, limit: float, seed: int, device: str) -> dict:
    from brax_peer import CPU_PPO, brax_ppo_time_to_threshold

    t_setup = time.perf_counter()
    env, episode_length = make_mjx_task_brax_env(TASK, CPU_PPO["num_envs"], device)
    eval_env, _ = make_mjx_task_brax_env(TASK, CPU_PPO["num_eval_envs"], device)
    build_s = time.perf_counter() - t_setup
    r = brax_ppo_time_to_threshold(
        env, threshold, limit, seed=seed, wrap_env=False, eval_env=eval_env, max_devices_per_host=1,
        episode_length=episode_length, discounting=0.99,
        num_timesteps=BRAX_MAX_STEPS, num_evals=BRAX_MAX_STEPS // BRAX_EVAL_EVERY,
    )
    # Brax's clock starts at ppo.train; its first evaluation comes before any training.
    return {"time_s": r["time_s"] - r["first_eval_s"], "setup_s": build_s + r["first_eval_s"], "steps": r["steps"],
            "reached": r["reached"], "final_return": r["final_return"], "eval_s": r["eval_s"],
            "note": f"return of Brax's evaluations; {r['eval_s']:.0f} s in them (the first one's compile included)"}


RUN = {"robotrl_mujoco": robotrl_mujoco, "robotrl_mjx": robotrl_mjx, "rsl_rl": rsl_rl, "sb3": sb3, "brax_ppo": brax_ppo}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="device of robotrl_mjx and brax_ppo (default: cuda if torch or JAX sees a GPU, else cpu)")
    p.add_argument("--trainers", nargs="+", choices=TRAINERS, default=None)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--limit", type=float, default=None, help="time limit per trainer, s")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.device is not None:
        pin_jax_platform(args.device)
    device = args.device or default_device()
    torch.set_num_threads(os.cpu_count() or 1)
    threshold = args.threshold if args.threshold is not None else (QUICK_THRESHOLD if args.quick else THRESHOLD)
    limit = args.limit if args.limit is not None else (QUICK_LIMIT_S if args.quick else LIMIT_S)
    chosen = args.trainers or list(QUICK_TRAINERS if args.quick else TRAINERS)

    rows = []
    for name in TRAINERS:
        trainer, env = LABELS[name]
        row = {"trainer_id": name, "trainer": trainer, "env": env, "threshold": threshold, "limit_s": limit}
        if name not in chosen:
            quick_skip = args.quick and not args.trainers
            row["status"] = "skipped (--quick: slow JIT compile on a CPU)" if quick_skip else "skipped (--trainers)"
            rows.append(row)
            continue
        print(f"[train_vs_peers] {name} ...", file=sys.stderr, flush=True)
        try:
            row.update(RUN[name](threshold, limit, args.seed, device))
            row["status"] = "ok"
        except Exception as e:  # a trainer that cannot run here is a row, not the end of the run
            traceback.print_exc()
            row["status"] = f"error: {type(e).__name__}: {e}"
        rows.append(row)

    base = next((r for r in rows if r["trainer_id"] == "robotrl_mujoco" and r["status"] == "ok"), None)
    for r in rows:
        r["robotrl_time_s"] = base["time_s"] + base["setup_s"] if base else float("nan")
        if r["status"] != "ok":
            r["ratio"], r["ratio_is_lower_bound"] = float("nan"), False
            continue
        r["total_s"] = r["time_s"] + r["setup_s"]
        ok = base is not None and base["reached"]
        r["ratio"] = r["total_s"] / r["robotrl_time_s"] if ok else float("nan")
        r["ratio_is_lower_bound"] = bool(ok and not r["reached"])
    print_table(rows, [("trainer", "trainer"), ("env", "env"), ("threshold", "threshold"), ("setup_s", "setup s"),
                       ("total_s", "time s"), ("steps", "env steps"), ("reached", "reached"),
                       ("final_return", "return"), ("ratio", "ratio (time/robotrl mujoco)"),
                       ("ratio_is_lower_bound", "lower bound"), ("status", "status"), ("note", "note")])
    print("time s: setup (incl. JIT compile) + training to the threshold; ratio > 1: robotrl PPO on the "
          "mujoco backend is faster; lower bound: the trainer stopped at the limit below the threshold.")
    write_json(args.json, "train_vs_peers", rows, task=TASK, quick=args.quick, device=device, window=WINDOW,
               ratio_definition="trainer time / robotrl PPO (mujoco backend) time, setup included")


if __name__ == "__main__":
    main()
