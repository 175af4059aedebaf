"""Brax's own PPO as a peer: wall-clock time until its evaluation return reaches a
threshold, for benchmarks that compare trainers.

Brax's ``ppo.train`` runs entirely under JAX (environment, rollouts and updates
are one jitted program); it reports only at its evaluations, so the threshold and
the time limit are checked there: ``num_evals`` sets how finely (a run stops at
the first evaluation at or above the threshold, or past the time limit; Brax has
no other stopping hook, so the callback raises to stop it).

The clock starts just before ``ppo.train`` is called, so ``time_s`` includes JAX
compilation: ``first_eval_s`` is the time to the first evaluation (env, networks
and evaluation compiled, no training yet), and Brax 0.14.2 compiles its training
epoch and its evaluation once more at the second call (jax's compile log shows
it), so the first two training intervals carry compilation too (on a loaded
2-core machine: ~30 s each for inverted_pendulum, ~5 s once compiled). The return
is Brax's ``eval/episode_reward``: the mean undiscounted return of ``num_eval_envs`` full
episodes of the stochastic policy (``deterministic_eval=False``).

Settings (``CPU_PPO``) are Brax's published inverted_pendulum PPO settings
(discount 0.97, lr 3e-4, entropy 1e-2, reward scaling 10, observation
normalization, 4 updates per batch, episodes of 1000) scaled down for a few CPU
cores: 64 envs instead of 2048, batch 64 instead of 1024, 4 minibatches instead
of 32, unroll 10 instead of 5, 16 evaluation envs instead of 128, Brax's default
networks. Keyword arguments override any of them.

    python benchmarks/brax_peer.py [--json PATH] [--quick]
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import parser, print_table, write_json  # noqa: E402

CPU_PPO = dict(
    # An upper bound: the threshold or the time limit stops the run. With 100
    # evaluations the threshold is checked every ~20k env steps.
    num_timesteps=2_000_000,
    num_evals=100,
    episode_length=1000,
    action_repeat=1,
    num_envs=64,
    batch_size=64,
    num_minibatches=4,
    unroll_length=10,
    num_updates_per_batch=4,
    discounting=0.97,
    learning_rate=3e-4,
    entropy_cost=1e-2,
    reward_scaling=10.0,
    normalize_observations=True,
    num_eval_envs=16,
)


class _Stop(Exception):
    """Raised from Brax's progress callback: the only way to end ppo.train early."""


def brax_ppo_time_to_threshold(
    env_name, threshold: float, time_limit_s: float, seed: int = 0, **ppo_kwargs
) -> dict:
    """Train Brax PPO on ``env_name`` (a registered Brax env name, or a
    ``brax.envs.Env`` instance) until its evaluation return reaches
    ``threshold`` or ``time_limit_s`` passes. Returns ``time_s`` (wall time to the
    threshold, or to the stop), ``steps`` (env steps then), ``reached``,
    ``final_return`` (the last evaluation), ``first_eval_s``, ``eval_s`` (time
    spent in Brax's evaluations, included in ``time_s``; subtract it for training
    time alone) and ``history`` (one ``(time_s, steps, return)`` per evaluation)."""
    from brax import envs
    from brax.training.agents.ppo import train as ppo

    settings = {**CPU_PPO, **ppo_kwargs}
    env = envs.get_environment(env_name) if isinstance(env_name, str) else env_name
    history: list[tuple[float, int, float]] = []
    eval_s = [0.0]
    t0 = time.perf_counter()

    def progress(step, metrics):
        elapsed = time.perf_counter() - t0
        eval_s[0] = float(metrics.get("eval/walltime", 0.0))
        history.append((elapsed, int(step), float(metrics["eval/episode_reward"])))
        if history[-1][2] >= threshold or elapsed >= time_limit_s:
            raise _Stop

    try:
        ppo.train(environment=env, seed=seed, progress_fn=progress, **settings)
    except _Stop:
        pass
    time_s, steps, final_return = history[-1]
    return {
        "time_s": time_s,
        "steps": steps,
        "reached": final_return >= threshold,
        "final_return": final_return,
        "first_eval_s": history[0][0],
        "eval_s": eval_s[0],
        "history": history,
        "settings": settings,
    }


# env: (threshold, time limit s, quick threshold, quick limit s). inverted_pendulum
# returns 1 per step it stays up (1000 at most).
TASKS = {"inverted_pendulum": (1000.0, 600.0, 150.0, 300.0)}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rows = []
    for env_name, (threshold, limit, quick_threshold, quick_limit) in TASKS.items():
        if args.quick:
            threshold, limit = quick_threshold, quick_limit
        r = brax_ppo_time_to_threshold(env_name, threshold, limit, seed=0)
        rows.append({"env": env_name, "threshold": threshold, **{k: v for k, v in r.items() if k != "settings"}})
    columns = [("env", "env"), ("threshold", "threshold"), ("reached", "reached"), ("time_s", "time s"),
               ("first_eval_s", "compile+1st eval s"), ("eval_s", "eval s"), ("steps", "env steps"),
               ("final_return", "return")]
    print_table(rows, columns)
    write_json(args.json, "brax_peer", rows, settings=CPU_PPO)


if __name__ == "__main__":
    main()
