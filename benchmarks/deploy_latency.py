"""Deployment latency: observation received -> command published, control-period jitter,
and watchdog reaction, with real DDS traffic between processes on loopback.

A robot process (this script with ``--robot``) publishes ``sensor_msgs/JointState``
and ``sensor_msgs/Imu`` of a 12-joint quadruped at 1 kHz, as a robot driver does.
The policy node (no rclpy, the ``dds`` transport) runs an MLP artifact of
``quadruped_walk`` (48 -> 256 -> 128 -> 128 -> 12, ELU: the PPO default network) at
50, 200 and 500 Hz. Measured by the node itself on its monotonic clock:

- ``latency_*_ms``: receipt of the joint state a command was computed from -> that
  command published (includes the wait for the tick: up to one robot period, 1 ms);
- ``compute_*_ms``: tick start -> command published (observation, policy, limits, publish);
- ``jitter_*_ms``: |interval between ticks - control period|.

Watchdog reaction, measured in the robot process on the wire (receipt of the first
safe command): e-stop (-> damp) and a NaN joint state (-> hold) from the event's
publish; a robot falling silent (-> hold) from the moment its silence exceeds
``obs_timeout_s`` (counted from its last publish, so the transport latency is included).

Where the process may (root or CAP_SYS_NICE), the node's control thread, Cyclone's
receive threads and the robot's publishing loop run SCHED_FIFO, as on a real-time robot
computer; ``--realtime-priority 0`` measures the plain scheduler.

Targets (issue 6): latency p99 < 2 ms, period jitter p99 < 1 ms at 200 Hz, watchdog
reaction <= one control period + 5 ms. ``ratio`` = target / measured (> 1: better than
the target).

    python benchmarks/deploy_latency.py --json results/deploy_latency.json [--quick]
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import parser, print_table, write_json  # noqa: E402

RATES = (50.0, 200.0, 500.0)
ROBOT_RATE_HZ = 1000.0
OBS_TIMEOUT_S = 0.05


def make_artifact(folder: Path) -> Path:
    import torch

    from robotrl.export import export_artifact
    from robotrl.sim import make_env, make_task

    task = make_task("quadruped_walk")
    with make_env(task, 1) as env:
        layout, size = env.obs_layout["policy"], env.obs_sizes["policy"]
    torch.manual_seed(0)
    layers, width = [], size
    for hidden in (256, 128, 128):
        layers += [torch.nn.Linear(width, hidden), torch.nn.ELU()]
        width = hidden
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, task.num_actions))
    with torch.no_grad():
        net[-1].weight.mul_(0.01)
    return export_artifact(net, task, layout, folder / "artifact")


# ----------------------------------------------------------------- the robot


def rt_config(priority: int) -> str:
    """loopback_config() with Cyclone's receive threads (which run the subscription
    callbacks) at SCHED_FIFO ``priority`` - 1, as on a real-time robot computer."""
    from robotrl.real.dds_transport import loopback_config

    xml = loopback_config()
    if priority <= 0:
        return xml
    threads = "".join(
        f'<Thread Name="{name}"><Scheduling><Class>realtime</Class><Priority>{priority - 1}</Priority>'
        "</Scheduling></Thread>" for name in ("recv", "recvUC", "dq.user"))
    return xml.replace("</Domain>", f"<Threads>{threads}</Threads></Domain>")


def robot_main(artifact: str) -> None:
    """The robot process: joint states + IMU at 1 kHz, and the operator's side of the
    watchdog measurements (e-stop, a NaN joint state, falling silent), run on request
    from stdin (``watchdog RATE REPEATS`` -> one JSON line of reaction times).

    Everything the benchmark publishes lives here, none of it in the node's process:
    a cyclonedds write that delivers to a reader of the same process runs the reader's
    Python listener under the writer's call, which can deadlock with the GIL."""
    import json

    from robotrl.policies.artifact import load_meta
    from robotrl.real import messages as m
    from robotrl.real.dds_transport import DdsTransport
    from robotrl.real.transport import ROS_DEFAULT, SENSOR_DATA

    meta = load_meta(artifact)
    names = list(meta["action"]["joint_names"])
    q = np.asarray(meta["action"]["default_pose"], dtype=float)
    t = DdsTransport()
    js = t.create_publisher("/joint_states", m.JointState, SENSOR_DATA)
    imu = t.create_publisher("/imu", m.Imu, SENSOR_DATA)
    enable = t.create_publisher("/policy_node/enable", m.Bool, ROS_DEFAULT)
    estop = t.create_publisher("/policy_node/estop", m.Bool, ROS_DEFAULT)
    lock = threading.Lock()
    commands: list = []

    def on_cmd(msg):
        with lock:
            commands.append((time.monotonic(), msg.header.frame_id))
            del commands[:-2000]

    t.create_subscription("/joint_commands", m.JointState, on_cmd, ROS_DEFAULT)
    paused = threading.Event()
    nan_next = threading.Event()
    last_pub = [0.0]
    nan_time = [0.0]
    stop = threading.Event()

    def run():
        priority = int(os.environ.get("BENCH_RT_PRIORITY", "0"))
        if priority > 0:  # a robot driver's publishing loop is real-time too
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        period, next_t = 1.0 / ROBOT_RATE_HZ, time.monotonic()
        zeros = np.zeros(len(names))
        while not stop.is_set():
            if not paused.is_set():
                stamp = m.Header(m.Time.from_nanoseconds(time.time_ns()))
                pos = q
                if nan_next.is_set():
                    pos = np.full(len(names), np.nan)
                    nan_time[0] = time.monotonic()  # the event: a NaN reading goes out
                    nan_next.clear()
                js.publish(m.JointState(stamp, names, pos, zeros, zeros))
                last_pub[0] = time.monotonic()
                imu.publish(m.Imu(stamp, m.Quaternion(0.0, 0.0, 0.0, 1.0), np.zeros(9), m.Vector3(), np.zeros(9),
                                  m.Vector3(0.0, 0.0, 9.81), np.zeros(9)))
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                next_t = time.monotonic()

    def wait_mode(mode, after, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                hit = [c for c, f in commands if f == mode and c >= after]
            if hit:
                return hit[0]
            time.sleep(0.0005)
        raise RuntimeError(f"no {mode} command within {timeout} s")

    def to_policy():
        paused.clear()
        estop.publish(m.Bool(False))
        for _ in range(50):
            after = time.monotonic()
            enable.publish(m.Bool(True))
            try:
                wait_mode("policy", after, timeout=0.3)
                return
            except RuntimeError:
                continue
        raise RuntimeError("the node does not return to policy mode")

    def watchdog(repeats):
        out = {"estop": [], "nan": [], "timeout": []}
        wait_mode("policy", 0.0, timeout=30)
        for _ in range(repeats):
            to_policy()
            time.sleep(0.05 + random.random() * 0.02)  # a random phase against the ticks
            t0 = time.monotonic()
            estop.publish(m.Bool(True))
            out["estop"].append(wait_mode("damp", t0) - t0)

            to_policy()
            time.sleep(0.05 + random.random() * 0.02)
            for _ in range(10):  # best effort, like any sensor stream: a sample may drop
                t0 = time.monotonic()
                nan_next.set()
                try:
                    t_hold = wait_mode("hold", t0, timeout=0.5)
                    out["nan"].append(t_hold - nan_time[0])
                    break
                except RuntimeError:
                    continue
            else:
                raise RuntimeError("no hold after 10 NaN joint states")

            to_policy()
            time.sleep(0.05 + random.random() * 0.02)
            t0 = time.monotonic()
            paused.set()
            t_last = last_pub[0]  # the node received it a little later: this overstates
            out["timeout"].append(wait_mode("hold", t0) - (t_last + OBS_TIMEOUT_S))
        paused.clear()
        return out

    threading.Thread(target=run, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "watchdog":
            try:
                print(json.dumps(watchdog(int(words[1]))), flush=True)
            except RuntimeError as exc:
                print(json.dumps({"error": str(exc)}), flush=True)
    stop.set()
    time.sleep(0.01)
    t.close()


# -------------------------------------------------------------- measurements


def start_node(artifact: Path, rate_hz: float, priority: int, config: str):
    from robotrl.real.dds_transport import DdsTransport
    from robotrl.real.policy_node import PolicyNode, PolicyNodeParams

    params = PolicyNodeParams(policy=str(artifact), control_rate_hz=rate_hz, autostart=True, soft_start_s=0.0,
                              obs_timeout_s=OBS_TIMEOUT_S, max_obs_age_s=0.0, stats_window=100_000,
                              log_stats_period_s=1e9, realtime_priority=priority)
    return PolicyNode(params, transport=DdsTransport(config=config)).start()


def run_rate(node, seconds: float) -> dict:
    deadline = time.monotonic() + 30
    while node.policy_ticks == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node did not start: {node.sm.reason}")
        time.sleep(0.01)
    time.sleep(0.5)  # warm-up, then measure on fresh statistics
    with node._lock:
        node._lat.clear(), node._compute.clear(), node._jitter.clear(), node._lateness.clear()
    overruns = node.overruns
    time.sleep(seconds)
    s = node.stats()
    s["overruns"] = node.overruns - overruns
    return s


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--robot", help=argparse_hidden())
    p.add_argument("--realtime-priority", type=int, default=None,
                   help="SCHED_FIFO priority of the node's control thread (default: 50 where permitted, else 0)")
    args = p.parse_args()
    if args.robot:
        return robot_main(args.robot)
    import faulthandler

    faulthandler.dump_traceback_later(240 if args.quick else 1800, exit=True)  # a hang fails loudly
    priority = args.realtime_priority if args.realtime_priority is not None else default_priority()
    seconds, repeats = (2.0, 3) if args.quick else (15.0, 10)
    domain_id = random.SystemRandom().randint(1, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), CYCLONEDDS_URI=rt_config(priority), OMP_NUM_THREADS="1",
               BENCH_RT_PRIORITY=str(priority))
    with tempfile.TemporaryDirectory() as tmp:
        artifact = make_artifact(Path(tmp))
        robot = subprocess.Popen([sys.executable, __file__, "--robot", str(artifact)], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert robot.stdout.readline().strip() == "ready", "the robot process did not start"
        rows = []
        config = rt_config(priority)
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)
        try:
            for rate in RATES:
                node = start_node(artifact, rate, priority, config)
                try:
                    s = run_rate(node, seconds)
                finally:
                    node.shutdown()
                rows.append({
                    "metric": "obs_to_command_latency", "rate_hz": rate, "policy": "MLP 48-256-128-128-12",
                    "latency_p50_ms": s["latency_p50_ms"], "latency_p99_ms": s["latency_p99_ms"],
                    "latency_max_ms": s["latency_max_ms"], "compute_p50_ms": s["compute_p50_ms"],
                    "compute_p99_ms": s["compute_p99_ms"], "ticks": int(s["policy_ticks"]),
                    "overruns": int(s["overruns"]), "target_ms": 2.0, "ratio": 2.0 / s["latency_p99_ms"],
                })
                rows.append({
                    "metric": "period_jitter", "rate_hz": rate, "jitter_p50_ms": s["jitter_p50_ms"],
                    "jitter_p99_ms": s["jitter_p99_ms"], "lateness_p99_ms": s["lateness_p99_ms"],
                    "target_ms": 1.0, "ratio": 1.0 / max(s["jitter_p99_ms"], 1e-6),
                    "target_applies": rate == 200.0,
                })
            for rate in (50.0, 200.0):
                node = start_node(artifact, rate, priority, config)
                try:
                    robot.stdin.write(f"watchdog {repeats}\n")
                    robot.stdin.flush()
                    reactions = json.loads(robot.stdout.readline())
                finally:
                    node.shutdown()
                if "error" in reactions:
                    raise RuntimeError(f"watchdog measurement at {rate} Hz: {reactions['error']}")
                target = 1e3 / rate + 5.0
                for event, values in reactions.items():
                    worst = max(values) * 1e3
                    rows.append({
                        "metric": f"watchdog_{event}", "rate_hz": rate, "reaction_p50_ms": float(np.median(values)) * 1e3,
                        "reaction_max_ms": worst, "repeats": len(values), "target_ms": target,
                        "ratio": target / max(worst, 1e-3),
                    })
        finally:
            robot.stdin.close()
            robot.wait(10)
    columns = [("metric", "metric"), ("rate_hz", "Hz"), ("latency_p50_ms", "p50 ms"),
               ("latency_p99_ms", "p99 ms"), ("compute_p99_ms", "compute p99"), ("jitter_p50_ms", "jitter p50"),
               ("jitter_p99_ms", "jitter p99"), ("reaction_p50_ms", "reaction p50"),
               ("reaction_max_ms", "reaction max"), ("target_ms", "target ms"), ("ratio", "ratio")]
    print_table(rows, columns)
    print(f"control thread: {'SCHED_FIFO priority %d' % priority if priority else 'SCHED_OTHER'}; "
          f"robot publishes at {ROBOT_RATE_HZ:.0f} Hz")
    write_json(args.json, "deploy_latency", rows, quick=bool(args.quick), robot_rate_hz=ROBOT_RATE_HZ,
               obs_timeout_s=OBS_TIMEOUT_S, realtime_priority=priority)


def default_priority() -> int:
    """50 if this process may use SCHED_FIFO (tried on a throw-away thread), else 0."""
    result = []

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
            result.append(50)
        except (OSError, AttributeError):
            result.append(0)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return result[0]


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
