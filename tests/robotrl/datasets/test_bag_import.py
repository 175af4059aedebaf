"""ROS 2 bag -> dataset: rollouts written as bags come back as the same transitions;
as-of alignment never looks ahead; episodes split on gaps and resets; bad bags and
mappings fail naming the topic/joint; the dataset trains offline.

Bags are written directly with the MCAP writer (``BagWriter``, mcap's writer with the
ROS 2 profile), from simulated rollouts or crafted message sequences.
"""
import json

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("mcap")
pytest.importorskip("cyclonedds")

from robotrl.datasets import load_dataset  # noqa: E402
from robotrl.datasets.bag_import import BagImportError, import_bag  # noqa: E402
from robotrl.real import messages as m  # noqa: E402
from robotrl.real.dds_transport import to_cdr  # noqa: E402
from robotrl.real.recorder import BagWriter  # noqa: E402

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000  # a wall-clock-like epoch, as a robot's stamps are
PENDULUM_MAP = {"reference": "/joint_command", "joints": {"topic": "/joint_states"},
                "action": {"topic": "/joint_command", "field": "data", "kind": "target"}}


def header(ns: int) -> m.Header:
    return m.Header(m.Time.from_nanoseconds(ns), "")


def write_bag(path, records, chunk_size=256 * 1024):
    """records: (topic, msg, log_ns[, publish_ns]) in any order; written in log-time order."""
    with BagWriter(path, chunk_size=chunk_size, compression="none") as bag:
        for topic, msg, *_ in records:
            if topic not in bag.counts:
                bag.add_topic(topic, type(msg))
        for topic, msg, log, *pub in sorted(records, key=lambda r: r[2]):
            stamp = msg.header.stamp.to_nanoseconds() if hasattr(msg, "header") else log
            bag.write(topic, to_cdr(msg), log, pub[0] if pub else stamp)
    return path


def joint_state(ns, names, pos, vel):
    return m.JointState(header(ns), list(names), np.asarray(pos, float), np.asarray(vel, float), np.zeros(0))


def command(values):
    return m.Float64MultiArray(m.MultiArrayLayout(), np.asarray(values, float))


# ------------------------------------------------------------------ rollouts
def rollout_bag(path, task_name, steps=40, episodes=2, seed=0, task_config=None):
    """Run ``task_name`` on the MuJoCo backend (one env, no auto-reset inside an episode)
    and write what a robot would: JointState (+ IMU, command/target topics) at the
    control rate stamped t_k, the command 2 ms later; a 1 s pause between episodes.
    Returns the rollout's transitions per episode."""
    from robotrl.sim import make_env

    env = make_env(task_name, 1, seed=seed, nthread=1, task_config=task_config)
    task = env.task
    rng = np.random.default_rng(seed)
    import mujoco

    joints = [task.model.joint(j).name for j in range(task.model.njnt)
              if task.model.jnt_type[j] != mujoco.mjtJoint.mjJNT_FREE]
    qadr = [int(task.model.joint(n).qposadr[0]) for n in joints]
    vadr = [int(task.model.joint(n).dofadr[0]) for n in joints]
    dt = int(round(task.config["control_dt"] * 1e9))
    records, truth = [], []
    t = T0
    obs = env.reset()
    for ep in range(episodes):
        if ep:
            obs = env.reset()
            t += 1_000_000_000  # a pause: the importer splits episodes on it
        rows = {"obs": [], "critic": [], "action": [], "reward": [], "next_obs": [], "next_critic": []}
        for k in range(steps + 1):
            s = env._sim_state()
            pos, vel = s.qpos[0, qadr], s.qvel[0, vadr]  # what the joint encoders read
            records.append(("/joint_states", joint_state(t, joints, pos, vel), t + MS // 10))
            if task_name == "reach":
                records.append(("/target", command(s.task["target"][0]), t + MS // 10, t))
            if task_name == "quadruped_walk":
                quat, gyro = task.sensor(s, "imu_quat")[0], task.sensor(s, "gyro")[0]
                imu = m.Imu(header(t), m.Quaternion(quat[1], quat[2], quat[3], quat[0]),
                            angular_velocity=m.Vector3(*gyro))
                records.append(("/imu", imu, t + MS // 10))
                c = s.task["command"][0]
                records.append(("/cmd_vel", m.Twist(m.Vector3(c[0], c[1], 0.0), m.Vector3(0.0, 0.0, c[2])),
                                t + MS // 10, t))
            o = obs["policy"].numpy().astype(np.float64)
            if task_name == "pendulum_swingup":
                # Pump energy along the angular velocity, with noise: a policy of the observation.
                a = np.clip(0.8 * np.sign(o[:, 2:3] + 1e-6) + 0.2 * rng.standard_normal((1, 1)), -1, 1)
            else:
                a = np.clip(0.3 * rng.standard_normal((1, task.num_actions)), -1, 1)
            ctrl = np.asarray(task.ctrl_from_action(np, a, s))[0]
            records.append(("/joint_command", command(ctrl), t + 2 * MS, t + 2 * MS))
            if k == steps:
                break  # the last command only closes the last transition
            next_obs, reward, done, extras = env.step(torch.as_tensor(a, dtype=torch.float32))
            assert not done.any()
            rows["obs"].append(obs["policy"][0].numpy())
            rows["critic"].append(obs["critic"][0].numpy())
            rows["action"].append(a[0])
            rows["reward"].append(float(reward[0]))
            rows["next_obs"].append(next_obs["policy"][0].numpy())
            rows["next_critic"].append(next_obs["critic"][0].numpy())
            obs = next_obs
            t += dt
        truth.append({k: np.asarray(v) for k, v in rows.items()})
    env.close()
    write_bag(path, records, chunk_size=4096)  # small chunks: the truncation test keeps most
    return truth


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "pendulum.mcap"
    truth = rollout_bag(path, "pendulum_swingup", steps=60, episodes=2)
    return path, truth


def cat(truth, key):
    return np.concatenate([ep[key] for ep in truth])


def test_pendulum_rollout_bag_reconstructs_the_rollout(pendulum):
    path, truth = pendulum
    ds = import_bag(path, "pendulum_swingup", PENDULUM_MAP)
    assert len(ds) == 120
    np.testing.assert_array_equal(ds.episode_ends, [59, 119])
    assert ds.truncated[[59, 119]].all() and not ds.terminated.any()
    np.testing.assert_allclose(ds.action, cat(truth, "action"), atol=1e-6)
    np.testing.assert_allclose(ds.obs["policy"], cat(truth, "obs"), atol=1e-5)
    np.testing.assert_allclose(ds.next_obs["policy"], cat(truth, "next_obs"), atol=1e-5)
    np.testing.assert_allclose(ds.obs["critic"], cat(truth, "critic"), atol=1e-5)
    np.testing.assert_allclose(ds.reward, cat(truth, "reward"), atol=1e-5)  # the task's own reward_terms
    assert ds.meta["reward_computed"] and ds.meta["source"]["gaps"] == 1
    assert ds.meta["obs_layout"]["policy"] == [["pendulum", 3]]


def test_reach_rollout_uses_kinematics_and_the_target_topic(tmp_path):
    path = tmp_path / "reach.mcap"
    truth = rollout_bag(path, "reach", steps=25, episodes=1)
    mapping = {"reference": "/joint_command", "task_vars": {"target": {"topic": "/target", "field": "data"}}}
    ds = import_bag(path, "reach", mapping)
    assert len(ds) == 25 and ds.truncated[-1]
    np.testing.assert_allclose(ds.action, cat(truth, "action"), atol=1e-6)
    obs, want = ds.obs["policy"], cat(truth, "obs")
    # joint_pos(4) joint_vel(4) target(3) ee_to_target(3) last_action(4): joints, target and
    # last action exactly; the fingertip within the simulator's one-substep sensor lag.
    exact = np.r_[0:11, 14:18]
    np.testing.assert_allclose(obs[:, exact], want[:, exact], atol=1e-5)
    np.testing.assert_allclose(obs[:, 11:14], want[:, 11:14], atol=0.02)
    assert np.abs(ds.reward - cat(truth, "reward")).max() < 0.05


def test_quadruped_policy_obs_from_joints_imu_and_twist_reward_not_computed(tmp_path):
    path = tmp_path / "quad.mcap"
    noise_free = {"obs_noise": {k: 0.0 for k in ("ang_vel", "gravity", "command", "joint_pos", "joint_vel", "last_action")}}
    truth = rollout_bag(path, "quadruped_walk", steps=10, episodes=1, task_config=noise_free)
    mapping = {
        "reference": "/joint_command",
        "sensors": {"gyro": {"topic": "/imu", "field": "angular_velocity"},
                    "imu_quat": {"topic": "/imu", "field": "orientation"}},
        "task_vars": {"command": {"topic": "/cmd_vel", "field": ["linear.x", "linear.y", "angular.z"]}},
        "action": {"topic": "/joint_command", "field": "data", "kind": "target"},
    }
    ds = import_bag(path, "quadruped_walk", mapping, task_config=noise_free)
    assert set(ds.obs) == {"policy"} and len(ds) == 10
    np.testing.assert_allclose(ds.action, cat(truth, "action"), atol=1e-6)
    # ang_vel(3) gravity(3) command(3) [IMU/Twist: the sensors themselves] exactly;
    # joint_pos/vel(24) from qpos; last_action(12) exactly.
    obs, want = ds.obs["policy"], cat(truth, "obs")
    np.testing.assert_allclose(obs[:, :9], want[:, :9], atol=1e-5)
    np.testing.assert_allclose(obs[:, 9:33], want[:, 9:33], atol=1e-5)
    np.testing.assert_allclose(obs[:, 33:], want[:, 33:], atol=1e-6)
    assert not ds.meta["reward_computed"] and "not computed" in ds.meta["source"]["reward"]
    assert (ds.reward == 0).all() and (ds.cost == 0).all()


# ------------------------------------------------------------- crafted bags
def pendulum_stream(path, n=20, period=20 * MS, extra=(), skip_joint=(), start=T0, angle=lambda k: 0.1 * k):
    """References (commands) at start + k*period; a JointState 5 ms before each (angle(k))."""
    recs = []
    for k in range(n):
        t = start + k * period
        if k not in skip_joint:
            recs.append(("/joint_states", joint_state(t - 5 * MS, ["hinge"], [angle(k)], [0.0]), t - 5 * MS + 100))
        recs.append(("/joint_command", command([0.5]), t + 100, t))
    return write_bag(path, recs + list(extra))


def test_asof_never_uses_a_message_stamped_after_the_reference(tmp_path):
    # A JointState stamped 1 ms AFTER each reference time, received (logged) before the
    # reference message, with a telltale angle: it must never appear in obs.
    future = [("/joint_states", joint_state(T0 + k * 20 * MS + MS, ["hinge"], [2.5], [9.0]), T0 + k * 20 * MS - MS)
              for k in range(20)]
    path = pendulum_stream(tmp_path / "future.mcap", extra=future)
    ds = import_bag(path, "pendulum_swingup", PENDULUM_MAP)
    assert len(ds) == 19
    np.testing.assert_allclose(ds.obs["policy"][:, 0], np.cos(0.1 * np.arange(19)), atol=1e-6)
    np.testing.assert_allclose(ds.next_obs["policy"][:, 0], np.cos(0.1 * np.arange(1, 20)), atol=1e-6)
    assert not np.isclose(ds.obs["policy"][:, 2], 9.0).any()


def test_future_message_is_used_once_it_is_in_the_past(tmp_path):
    # Counter-check: without fresher data, the "future" message of reference k is the
    # latest one at reference k+1 and is used there.
    recs = [("/joint_states", joint_state(T0 - 5 * MS, ["hinge"], [0.0], [0.0]), T0 - 5 * MS),
            ("/joint_states", joint_state(T0 + MS, ["hinge"], [1.0], [0.0]), T0 - MS),
            ("/joint_command", command([0.0]), T0 + 100, T0),
            ("/joint_command", command([0.0]), T0 + 20 * MS + 100, T0 + 20 * MS)]
    ds = import_bag(write_bag(tmp_path / "b.mcap", recs), "pendulum_swingup", PENDULUM_MAP)
    np.testing.assert_allclose([ds.obs["policy"][0, 0], ds.next_obs["policy"][0, 0]], [1.0, np.cos(1.0)], atol=1e-6)


def test_episodes_split_on_a_gap_and_on_stale_inputs(tmp_path):
    gap_start = T0 + 30 * 20 * MS + 500 * MS  # no reference for 0.5 s = 25 periods
    path = tmp_path / "gap.mcap"
    recs = []
    for start, n in ((T0, 30), (gap_start, 30)):
        for k in range(n):
            t = start + k * 20 * MS
            recs.append(("/joint_states", joint_state(t - 5 * MS, ["hinge"], [0.01 * k], [0.0]), t - 5 * MS))
            recs.append(("/joint_command", command([0.5]), t + 100, t))
    ds = import_bag(write_bag(path, recs), "pendulum_swingup", PENDULUM_MAP)
    np.testing.assert_array_equal(ds.episode_ends, [28, 57])
    assert ds.meta["source"]["gaps"] == 1
    # Joint states missing for references 10..14: the last one (of reference 9) is 25 ms
    # old at reference 10, 45 ms at 11, 65 ms at 12 > the 50 ms window: rows 12..14 are dropped.
    ds2 = import_bag(pendulum_stream(tmp_path / "stale.mcap", n=30, skip_joint=range(10, 15)),
                     "pendulum_swingup", PENDULUM_MAP)
    assert ds2.meta["source"]["dropped"]["stale_rows"] == 3
    np.testing.assert_array_equal(ds2.episode_ends, [10, 24])  # rows 0..11 -> 11 transitions, 15..29 -> 14


def test_reset_topic_and_field_jump_split_episodes(tmp_path):
    reset = [("/reset", m.Bool(True), T0 + 10 * 20 * MS - MS, T0 + 10 * 20 * MS - MS)]
    path = pendulum_stream(tmp_path / "reset.mcap", n=20, extra=reset)
    ds = import_bag(path, "pendulum_swingup", {**PENDULUM_MAP, "reset": {"topic": "/reset"}})
    np.testing.assert_array_equal(ds.episode_ends, [8, 17])
    assert ds.meta["source"]["resets"] == 1
    jumpy = pendulum_stream(tmp_path / "jump.mcap", n=20, angle=lambda k: 0.05 * k + (2.0 if k >= 12 else 0.0))
    ds = import_bag(jumpy, "pendulum_swingup",
                    {**PENDULUM_MAP, "reset": {"jump": {"term": "pendulum", "threshold": 0.5}}})
    np.testing.assert_array_equal(ds.episode_ends, [10, 17])
    assert ds.meta["source"]["jumps"] == 1


# ---------------------------------------------------------------- bad input
def test_missing_joint_is_named(tmp_path):
    names = ["shoulder_yaw", "shoulder_pitch", "wrist_pitch"]  # no elbow
    recs = []
    for k in range(5):
        t = T0 + k * 20 * MS
        recs.append(("/joint_states", joint_state(t, names, [0.0] * 3, [0.0] * 3), t))
        recs.append(("/target", command([0.3, 0.0, 0.3]), t, t))
        recs.append(("/joint_command", command([0.0] * 4), t + MS, t + MS))
    path = write_bag(tmp_path / "reach.mcap", recs)
    mapping = {"reference": "/joint_command", "task_vars": {"target": {"topic": "/target", "field": "data"}}}
    with pytest.raises(BagImportError, match=r"\['elbow'\].*missing from the JointState"):
        import_bag(path, "reach", mapping)
    # A renamed joint is found through joints.rename.
    renamed = [("/joint_states", joint_state(r[1].header.stamp.to_nanoseconds(), names + ["elbow_joint"],
                                             [0.0] * 4, [0.0] * 4), r[2]) if r[0] == "/joint_states" else r
               for r in recs]
    ds = import_bag(write_bag(tmp_path / "r2.mcap", renamed), "reach",
                    {**mapping, "joints": {"topic": "/joint_states", "rename": {"elbow": "elbow_joint"}}})
    assert len(ds) == 4
    with pytest.raises(BagImportError, match=r"task reach needs task variable\(s\) \['target'\]"):
        import_bag(path, "reach", {"reference": "/joint_command"})


def test_absent_topic_is_named(tmp_path):
    path = pendulum_stream(tmp_path / "p.mcap", n=5)
    with pytest.raises(BagImportError, match=r"topic /reset \(reset\) is not in the bag; the bag has: "
                                             r"/joint_command, /joint_states"):
        import_bag(path, "pendulum_swingup", {**PENDULUM_MAP, "reset": {"topic": "/reset"}})
    with pytest.raises(BagImportError, match=r"topic /cmd \(reference\) is not in the bag"):
        import_bag(path, "pendulum_swingup", {**PENDULUM_MAP, "reference": "/cmd", "action": {"topic": "/joint_command"}})
    with pytest.raises(BagImportError, match="bag import supports pendulum_swingup"):
        import_bag(path, "hopper", PENDULUM_MAP)
    with pytest.raises(BagImportError, match="unknown key 'refrence'"):
        import_bag(path, "pendulum_swingup", {"refrence": "/joint_command"})


def test_wrong_sizes_are_errors(tmp_path):
    recs = [("/joint_states", joint_state(T0, ["hinge"], [0.0], [0.0]), T0),
            ("/joint_command", command([0.1, 0.2]), T0 + MS, T0 + MS)]
    with pytest.raises(BagImportError, match=r"/joint_command: message 0 .*wrong size for the action: "
                                             r"field 'data' has 2 values, task pendulum_swingup needs 1"):
        import_bag(write_bag(tmp_path / "a.mcap", recs), "pendulum_swingup", PENDULUM_MAP)
    recs = [("/joint_states", joint_state(T0, ["hinge"], [0.0], []), T0),
            ("/joint_command", command([0.1]), T0 + MS, T0 + MS)]
    with pytest.raises(BagImportError, match=r"/joint_states: message 0 .*wrong size: 1 names but 1 positions "
                                             r"and 0 velocities"):
        import_bag(write_bag(tmp_path / "b.mcap", recs), "pendulum_swingup", PENDULUM_MAP)


def test_out_of_order_stamps_are_dropped_or_refused(tmp_path):
    # JointState 7 is stamped before JointState 6 (a clock step back): dropped and counted.
    def angle_stamp(k):
        return T0 + k * 20 * MS - (30 * MS if k == 7 else 5 * MS)

    recs = []
    for k in range(12):
        t = T0 + k * 20 * MS
        recs.append(("/joint_states", joint_state(angle_stamp(k), ["hinge"], [0.1 * k], [0.0]), t - 4 * MS))
        recs.append(("/joint_command", command([0.0]), t + 100, t))
    path = write_bag(tmp_path / "ooo.mcap", recs)
    ds = import_bag(path, "pendulum_swingup", PENDULUM_MAP)
    assert ds.meta["source"]["dropped"]["out_of_order"] == {"/joint_states": 1}
    # Reference 7 then sees joint state 6 (25 ms old, fresh), never the dropped one.
    assert np.isclose(ds.obs["policy"][7, 0], np.cos(0.6), atol=1e-6)
    with pytest.raises(BagImportError, match=r"/joint_states: message 7 is stamped .* not after the previous"):
        import_bag(path, "pendulum_swingup", {**PENDULUM_MAP, "out_of_order": "error"})


def test_truncated_bag_is_still_imported(pendulum, tmp_path):
    # A recorder killed before writing the summary: read with the streaming reader.
    path, _ = pendulum
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    from robotrl.datasets.bag_import import read_bag

    topics, complete = read_bag(cut)
    assert not complete and topics["/joint_states"].records
    ds = import_bag(cut, "pendulum_swingup", PENDULUM_MAP)
    assert 0 < len(ds) <= 120 and ds.meta["source"]["complete"] is False


# ----------------------------------------------------- CLI + offline training
def test_cli_import_then_offline_training(pendulum, tmp_path):
    from robotrl.cli import main

    path, truth = pendulum
    mapping = tmp_path / "map.yaml"
    mapping.write_text(yaml.safe_dump(PENDULUM_MAP))
    out = tmp_path / "pendulum_bag.npz"
    assert main(["dataset", "import-bag", f"bag={path}", "task=pendulum_swingup", f"config={mapping}",
                 f"out={out}"]) == 0
    from robotrl.sim import make_task

    ds = load_dataset(out, task=make_task("pendulum_swingup"))
    assert len(ds) == 120 and ds.meta["source"]["kind"] == "bag"

    # Behaviour cloning: a small MLP fit on the imported (obs, action) beats the mean action.
    torch.manual_seed(0)
    x, y = torch.as_tensor(ds.obs["policy"]), torch.as_tensor(ds.action)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    baseline = torch.nn.functional.mse_loss(y.mean(0).expand_as(y), y)
    assert loss.item() < 0.5 * baseline.item()

    # And the offline learner through the real CLI, on a tiny budget.
    run = tmp_path / "iql"
    args = ["train", "algo=iql", "task=pendulum_swingup", "steps=60", f"dataset={out}", "algo.eval_interval=0",
            "algo.batch_size=32", "algo.hidden=[32,32]", "eval_episodes=1", "checkpoint_interval=1", "progress=false",
            "sim.nthread=1", "sim.torch_threads=1", "+task.config.episode_length_s=0.5", f"out={run}"]
    assert main(args) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["train"]["gradient_steps"] == 60 and (run / "artifact" / "policy.onnx").is_file()


def test_cartpole_rollout_bag_reconstructs_the_rollout(tmp_path):
    path = tmp_path / "cartpole.mcap"
    truth = rollout_bag(path, "cartpole_swingup", steps=20, episodes=1)
    ds = import_bag(path, "cartpole_swingup", PENDULUM_MAP)  # the unactuated hinge comes from the JointState too
    assert len(ds) == 20
    np.testing.assert_allclose(ds.obs["policy"], cat(truth, "obs"), atol=1e-5)
    np.testing.assert_allclose(ds.next_obs["policy"], cat(truth, "next_obs"), atol=1e-5)
    np.testing.assert_allclose(ds.reward, cat(truth, "reward"), atol=1e-5)
