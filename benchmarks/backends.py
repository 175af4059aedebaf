"""Env steps/s of robotrl's mujoco, mjx, brax and gymnasium backends, per device.

A hopper and a quadruped, batch 64 to 4096, each row naming its device.

Every row steps a robotrl VecEnv (torch tensors in and out, automatic resets,
episode statistics) with random actions in [-1, 1]; steps/s counts env (control)
steps: batch x step calls / time, measured after warm-up. The time before
measuring (env construction, first reset, JIT compilation, warm-up steps) has its
own column, "setup+compile s".

What each backend runs:
- ``mujoco`` and ``mjx``: robotrl's own tasks ``hopper`` and ``quadruped_walk``
  (same MJCF, same task code, default task config).
- ``brax``: Brax's own ``hopper`` and ``ant`` envs, on the env's default Brax
  pipeline unless ``--brax-pipeline`` says otherwise. ``ant`` is Brax's only
  quadruped, the nearest thing to ``quadruped_walk`` (a different robot and task).
- ``gymnasium``: Gymnasium's own ``Hopper-v5`` and, as the nearest quadruped,
  ``Ant-v5``, in a synchronous ``gymnasium.vector`` env (one Python env per
  batch entry, stepped one after the other in this process).
The brax and gymnasium rows are therefore the libraries' own versions of the
robots: other MJCF files, frame skips and control periods (the "control dt ms"
column), so their steps/s compare simulators on similar, not identical, robots.

Ratio: steps/s are only comparable on one device, and backends run on different
ones (JAX on a GPU, MuJoCo C on the CPU), so the ``ratio`` column is "vs mujoco":
this backend's steps/s / robotrl's default mujoco backend's steps/s on the same
task and batch (> 1: faster than the default backend; the mujoco rows are 1).

Devices: ``--device`` (default: cuda when torch or JAX sees a GPU, else cpu)
places mjx and brax; mjx shards the envs over every local GPU when given "cuda"
and the batch divides evenly (pass "cuda:0" for one). mujoco and gymnasium
always step on the CPU (the device column gives the core count; mujoco steps in
one thread per core, gymnasium's sync vector env in one).

Time per cell is capped: at most ``--max-steps`` env steps and ``--seconds`` of
measuring (at least a few calls), so a 4096-env Gymnasium vector env finishes;
its construction (4096 Python envs) is not capped. ``--backends`` and
``--batches`` select cells.

    python benchmarks/backends.py --json results/backends.json [--quick]
        [--device cuda] [--backends mujoco mjx brax gymnasium] [--batches 64 256 1024 4096]
        [--tasks hopper quadruped_walk] [--seconds 10] [--max-steps 1000000]

``--quick`` (CI): hopper only, batch 64 (each batch size compiles again on mjx and
brax, ~60 s of a CI run for no new check), a few steps, every backend whose
library imports.

What to expect on a GPU: Brax's own description (its package README, installed as
brax-*.dist-info/METADATA) says it "simulates environments at millions of physics
steps per second on TPU"; the MJX and MuJoCo Playground publications report
locomotion throughput on a single modern GPU with thousands of envs on the order of
millions of steps/s. Those count physics steps of bare rollouts or of their own
training loops; this table counts control steps (several physics steps each) with
robotrl's task code and the torch hand-off included, so the mjx rows at batch 4096
should come out below those figures by about the frame skip and the overhead.
MJX's own physics-only speed test ships with mujoco-mjx, for a like-for-like
check: ``python -m mujoco.mjx.testspeed --mjcf=PATH --batch_size=4096``. On a CPU
(where this script was written: 2 shared cores, no GPU) mjx and brax run well
below mujoco: XLA's CPU code does not match MuJoCo C, and mjx's compile takes
tens of seconds per task and batch.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from _common import default_device, parser, pin_jax_platform, print_table, write_json  # noqa: E402

BACKENDS = ("mujoco", "mjx", "brax", "gymnasium")
TASKS = ("hopper", "quadruped_walk")
BATCHES = (64, 256, 1024, 4096)
# robotrl task -> (env name, label) per backend whose library brings its own robot.
OWN_MODELS = {
    "brax": {
        "hopper": ("hopper", "Brax's own hopper"),
        "quadruped_walk": ("ant", "Brax's own ant (nearest quadruped)"),
    },
    "gymnasium": {
        "hopper": ("Hopper-v5", "Gymnasium's own Hopper-v5"),
        "quadruped_walk": ("Ant-v5", "Gymnasium's own Ant-v5 (nearest quadruped)"),
    },
}
WARMUP_CALLS = 3  # the first calls may compile (JAX) or fault in memory
MIN_CALLS = 5
NUM_ACTION_BATCHES = 8  # random actions are drawn before timing and cycled


def cpu_name() -> str:
    return f"cpu ({os.cpu_count()} cores)"


def jax_device_name(devices) -> str:
    """A JAX device's kind ("NVIDIA A100-SXM4-40GB", "TPU v5 lite", "cpu"); "Nx kind" when sharded."""
    kind = devices[0].device_kind
    if devices[0].platform == "cpu":
        kind = f"cpu (jax, {os.cpu_count()} cores)"
    return kind if len(devices) == 1 else f"{len(devices)}x {kind}"


def library_missing(backend: str) -> str | None:
    """Why ``backend`` cannot run here (its library does not import), or None."""
    modules = {"mjx": ("jax", "mujoco.mjx"), "brax": ("jax", "brax"), "gymnasium": ("gymnasium",)}.get(backend, ())
    for module in modules:
        try:
            # mujoco.mjx prints its optional-dependency notes ("Failed to import
            # warp") on stdout; keep them out of the table.
            with contextlib.redirect_stdout(sys.stderr):
                __import__(module)
        except Exception as e:  # ImportError, or a broken install that fails on import
            return f"n/a: {module} does not import ({type(e).__name__}: {e})"
    return None


def make(backend: str, task: str, batch: int, device: str, brax_pipeline: str | None):
    """The VecEnv of one cell, its env label, device name and thread count."""
    from robotrl.sim import make_env

    if backend == "mujoco":
        threads = os.cpu_count() or 1
        env = make_env(task, batch, sim="mujoco", seed=0, nthread=threads)
        return env, f"robotrl {task}", cpu_name(), threads
    if backend == "mjx":
        env = make_env(task, batch, sim="mjx", seed=0, device=device)
        return env, f"robotrl {task}", jax_device_name(env.devices), "XLA"
    name, label = OWN_MODELS[backend][task]
    if backend == "brax":
        env = make_env(name, batch, sim="brax", seed=0, device=device, backend=brax_pipeline)
        pipeline = brax_pipeline or getattr(env.brax_env, "backend", "default")
        return env, f"{label}, {pipeline} pipeline", jax_device_name([env.jax_device]), "XLA"
    env = make_env(name, batch, sim="gymnasium", seed=0, vectorization="sync")
    return env, label, cpu_name(), 1


def synchronize(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def measure(backend: str, task: str, batch: int, device: str, max_steps: int, seconds: float,
            brax_pipeline: str | None) -> dict:
    """One cell: steps/s after warm-up, and the time everything before took."""
    import torch

    row = {"task": task, "backend": backend, "batch": batch}
    t0 = time.perf_counter()
    env, label, device_name, threads = make(backend, task, batch, device, brax_pipeline)
    try:
        row.update(env=label, device=device_name, threads=threads, control_dt_ms=1000 * float(env.step_dt))
        gen = torch.Generator().manual_seed(0)
        actions = [(2 * torch.rand(batch, env.num_actions, generator=gen) - 1).to(env.device)
                   for _ in range(NUM_ACTION_BATCHES)]
        for i in range(WARMUP_CALLS):
            env.step(actions[i % NUM_ACTION_BATCHES])
        synchronize(env.device)
        row["setup_s"] = time.perf_counter() - t0
        max_calls = max(MIN_CALLS, max_steps // batch)
        calls = 0
        t = time.perf_counter()
        while calls < max_calls and (calls < MIN_CALLS or time.perf_counter() - t < seconds):
            env.step(actions[calls % NUM_ACTION_BATCHES])
            calls += 1
        synchronize(env.device)
        elapsed = time.perf_counter() - t
    finally:
        env.close()
    row.update(calls=calls, env_steps=calls * batch, measure_s=elapsed, steps_per_s=calls * batch / elapsed)
    return row


def add_ratios(rows: list[dict]) -> None:
    """ratio = steps/s / the mujoco row's steps/s of the same task and batch."""
    base = {(r["task"], r["batch"]): r["steps_per_s"] for r in rows if r["backend"] == "mujoco" and "steps_per_s" in r}
    for r in rows:
        ref = base.get((r["task"], r["batch"]))
        r["mujoco_steps_per_s"] = ref if ref is not None else float("nan")
        r["ratio"] = r["steps_per_s"] / ref if ref and "steps_per_s" in r else float("nan")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="device of mjx and brax (default: cuda if torch or JAX sees a GPU, else cpu)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    p.add_argument("--batches", nargs="+", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None, help="cap on measuring time per cell")
    p.add_argument("--max-steps", type=int, default=None, help="cap on env steps measured per cell")
    p.add_argument("--brax-pipeline", default=None, help="Brax physics pipeline (generalized, positional, spring, mjx); default: the env's own")
    args = p.parse_args()
    if args.device is not None:
        pin_jax_platform(args.device)
    device = args.device or default_device()
    tasks = args.tasks or (["hopper"] if args.quick else list(TASKS))
    batches = args.batches or ([64] if args.quick else list(BATCHES))
    seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 10.0)
    max_steps = args.max_steps if args.max_steps is not None else (20_000 if args.quick else 1_000_000)

    rows = []
    for task in tasks:
        for backend in args.backends:
            missing = library_missing(backend)
            for batch in batches:
                if missing:
                    rows.append({"task": task, "backend": backend, "batch": batch, "status": missing})
                    continue
                print(f"[backends] {backend} {task} batch {batch} ...", file=sys.stderr, flush=True)
                try:
                    row = measure(backend, task, batch, device, max_steps, seconds, args.brax_pipeline)
                    row["status"] = "ok"
                except Exception as e:  # one failing cell (an unsupported model, out of memory) is a row
                    traceback.print_exc()
                    row = {"task": task, "backend": backend, "batch": batch, "status": f"error: {type(e).__name__}: {e}"}
                rows.append(row)
    add_ratios(rows)
    print_table(rows, [("task", "task"), ("backend", "backend"), ("env", "env (whose model)"), ("batch", "batch"),
                       ("device", "device"), ("threads", "threads"), ("control_dt_ms", "control dt ms"),
                       ("setup_s", "setup+compile s"), ("steps_per_s", "steps/s"),
                       ("mujoco_steps_per_s", "mujoco steps/s"), ("ratio", "ratio (vs mujoco)"), ("status", "status")])
    print("ratio = steps/s / robotrl mujoco backend steps/s, same task and batch (> 1: faster than the default "
          "backend). brax and gymnasium rows run the libraries' own robot models, not robotrl's.")
    write_json(args.json, "backends", rows, quick=args.quick, device=device, seconds_per_cell=seconds,
               max_steps_per_cell=max_steps, warmup_calls=WARMUP_CALLS,
               ratio_definition="backend steps/s / robotrl mujoco backend steps/s, same task and batch",
               steps_definition="env (control) steps: batch x step calls / time, after warm-up")


if __name__ == "__main__":
    main()
