"""Uni-O4: pure losses, the dynamics ensemble and OPE, the runner through the CLI,
and learning (slow): online fine-tuning improves on the offline policy; offline against BC is reported."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from robotrl.algos.uni_o4 import (
    UniO4,
    UniO4Config,
    ensemble_bc_loss,
    iql_q_loss,
    iql_value_loss,
    linear_decay,
    load_into_actor_critic,
    normalize_advantage,
    offline_improvement_loss,
)
from robotrl.datasets.dataset import Dataset
from robotrl.policies.networks import ActorCritic
from robotrl.sim import make_env, make_task

torch.set_num_threads(1)


# ------------------------------------------------------------------ helpers
def collect(task_name, policy_fn, num_envs=16, steps_per_env=500, seed=0, noise=0.0, task_config=None):
    """Step a VecEnv with ``policy_fn(obs) + noise`` and return the transitions as a
    :class:`Dataset` in episode order (env by env; the last step of each env's
    stream ends an episode by truncation)."""
    task = make_task(task_name, task_config or {})
    env = make_env(task, num_envs, seed=seed, nthread=1)
    gen = torch.Generator().manual_seed(seed)
    groups = list(env.obs_layout)
    steps = {k: [] for k in ("obs", "next_obs", "action", "reward", "cost", "terminated", "truncated")}
    try:
        obs = env.reset()
        for _ in range(steps_per_env):
            with torch.no_grad():
                action = torch.as_tensor(np.asarray(policy_fn(obs["policy"])), dtype=torch.float32)
            if noise:
                action = action + noise * torch.randn(action.shape, generator=gen)
            next_obs, reward, done, extras = env.step(action)
            nxt = {g: next_obs[g].clone() for g in groups}
            if "final_ids" in extras:
                ids = torch.as_tensor(extras["final_ids"])
                for g in groups:
                    nxt[g][ids] = torch.as_tensor(extras["final_observations"][g])
            time_outs = extras["time_outs"]
            steps["obs"].append({g: obs[g].clone() for g in groups})
            steps["next_obs"].append(nxt)
            steps["action"].append(action)
            steps["reward"].append(reward)
            steps["cost"].append(extras["cost"])
            steps["terminated"].append(done & ~time_outs)
            steps["truncated"].append(time_outs.clone())
            obs = next_obs
    finally:
        env.close()
    steps["truncated"][-1][:] = True

    def stack(items):  # (T, E, ...) -> env-major rows
        x = torch.stack(items).transpose(0, 1)
        return x.reshape(-1, *x.shape[2:]).numpy()

    return Dataset(
        obs={g: stack([o[g] for o in steps["obs"]]).astype(np.float32) for g in groups},
        next_obs={g: stack([o[g] for o in steps["next_obs"]]).astype(np.float32) for g in groups},
        action=stack(steps["action"]).astype(np.float32),
        reward=stack(steps["reward"]).astype(np.float32),
        cost=stack(steps["cost"]).astype(np.float32),
        terminated=stack(steps["terminated"]).astype(bool),
        truncated=stack(steps["truncated"]).astype(bool),
        meta={"task": task_name, "obs_layout": {g: [list(t) for t in env.obs_layout[g]] for g in groups},
              "action_names": list(env.action_names), "domain": None, "source": "tests/robotrl/test_uni_o4.py"},
    )


def random_policy(num_actions, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lambda obs: 2 * torch.rand(obs.shape[0], num_actions, generator=g) - 1


def pendulum_swingup_controller(obs):
    """Hand-made pendulum swing-up: pump energy (bang-bang along the angular
    velocity) until the energy reaches the upright one, then hold with PD near the
    top. Scores ~385 of 500 (PPO's 300 k-step policy: ~340; random: ~-5)."""
    c, s, w = obs[:, 0:1], obs[:, 1:2], obs[:, 2:3]
    inertia, mgl = 0.26, 5.15  # about the hinge (bob 1 kg at 0.5 m, rod 0.1 kg)
    energy = 0.5 * inertia * w**2 + mgl * c
    pump = torch.sign(w) * (energy < mgl).float() + (w == 0).float()
    hold = (-(10.0 * s + 2.0 * w) / 2.0).clamp(-1.0, 1.0)
    return torch.where(c > 0.85, hold, pump)


def concat(a: Dataset, b: Dataset) -> Dataset:
    cat = lambda x, y: np.concatenate([x, y])  # noqa: E731
    return Dataset(
        obs={g: cat(a.obs[g], b.obs[g]) for g in a.obs}, next_obs={g: cat(a.next_obs[g], b.next_obs[g]) for g in a.obs},
        action=cat(a.action, b.action), reward=cat(a.reward, b.reward), cost=cat(a.cost, b.cost),
        terminated=cat(a.terminated, b.terminated), truncated=cat(a.truncated, b.truncated), meta=a.meta,
    )


# -------------------------------------------------------------- pure losses
def test_ensemble_bc_loss_by_hand():
    # Members' log-likelihoods of two dataset actions.
    lp = torch.tensor([[-1.0, -2.0], [-3.0, -0.5], [-2.0, -4.0]])
    loss = ensemble_bc_loss(lp, alpha=0.1)
    # member 0: max over others = [-2.0, -0.5]; per sample 1 - 0.1*(-1+2) = 0.9 and
    #           2 - 0.1*(-2+0.5) = 2.15 -> mean 1.525
    # member 1: others' max = [-1.0, -2.0]; 3 - 0.1*(-3+1) = 3.2, 0.5 - 0.1*(-0.5+2) = 0.35 -> 1.775
    # member 2: others' max = [-1.0, -0.5]; 2 - 0.1*(-1) = 2.1, 4 - 0.1*(-3.5) = 4.35 -> 3.225
    assert torch.allclose(loss, torch.tensor([1.525, 1.775, 3.225]))
    # The others' term is detached: member i's gradient is (1 + alpha) x its NLL's.
    lp = lp.clone().requires_grad_(True)
    ensemble_bc_loss(lp, 0.1).sum().backward()
    assert torch.allclose(lp.grad, torch.full_like(lp, -1.1 / 2))
    # One member: plain NLL.
    assert torch.allclose(ensemble_bc_loss(torch.tensor([[-1.0, -3.0]]), 0.1), torch.tensor([2.0]))


def test_clipped_improvement_objective_by_hand():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([1.0, -2.0, 3.0])
    # clip 0.25: r A = [1.5, -1.0, 3.3]; clip(r) A = [1.25, -1.5, 3.3]; min = [1.25, -1.5, 3.3]
    expected = -(1.25 - 1.5 + 3.3) / 3
    assert offline_improvement_loss(new, old, adv, 0.25).item() == pytest.approx(expected)
    # An entropy bonus lowers the loss by weight x mean entropy.
    ent = torch.tensor([1.0, 2.0, 3.0])
    assert offline_improvement_loss(new, old, adv, 0.25, ent, 0.1).item() == pytest.approx(expected - 0.2)
    assert linear_decay(0.25, 0, 100) == 0.25 and linear_decay(0.25, 50, 100) == 0.125 and linear_decay(0.25, 100, 100) == 0
    a = normalize_advantage(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(a, torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)


def test_expectile_and_q_losses_by_hand():
    q = torch.tensor([2.0, 0.0])
    v = torch.tensor([1.0, 1.0])
    # diff = [1, -1]: 0.7 * 1 + 0.3 * 1, mean -> 0.5
    assert iql_value_loss(q, v, 0.7).item() == pytest.approx(0.5)
    # expectile 0.9 on diff [2, -1]: (0.9*4 + 0.1*1) / 2
    assert iql_value_loss(torch.tensor([3.0, 0.0]), v, 0.9).item() == pytest.approx((3.6 + 0.1) / 2)
    twin = torch.tensor([[1.0, 2.0], [0.0, 2.0]])
    r, not_done, next_v = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 5.0])
    # targets: [1 + 0.5 * 1, 0] = [1.5, 0]; twin 0: (0.25 + 4)/2, twin 1: (2.25 + 4)/2
    assert iql_q_loss(twin, r, not_done, next_v, 0.5).item() == pytest.approx(2.125 + 3.125)


def test_offline_actor_loads_into_ppo_actor_critic():
    cfg = UniO4Config(actor_hidden=(32, 16), critic_hidden=(32, 16), num_policies=2)
    algo = UniO4(cfg, obs_dim=5, num_actions=2)
    member = algo.members[1]
    with torch.no_grad():
        member.log_std.fill_(-0.7)
        member.actor_norm.mean.fill_(0.3)
    model = ActorCritic(5, 5, 2, (32, 16), (32, 16), "elu")
    load_into_actor_critic(model, member, algo.v)
    x = torch.randn(4, 5)
    assert torch.allclose(model.action_mean(x), member.action_mean(x))
    assert torch.allclose(model.log_std, member.log_std)
    assert torch.allclose(model.value(x), algo.v(x))


# ------------------------------------------------------ dynamics and OPE
@pytest.fixture(scope="module")
def pendulum_data():
    """Pendulum data, "medium-replay"-like: 8 envs x 300 steps of random actions and
    8 x 300 of the swing-up controller with action noise 0.5 (episodes cut at 300)."""
    return concat(
        collect("pendulum_swingup", random_policy(1), num_envs=8, steps_per_env=300, seed=1),
        collect("pendulum_swingup", pendulum_swingup_controller, num_envs=8, steps_per_env=300, seed=2, noise=0.5),
    )


def test_dynamics_ensemble_fits_held_out_data(pendulum_data):
    from robotrl.algos.dynamics_model import DynamicsConfig, DynamicsEnsemble

    ds = pendulum_data
    torch.manual_seed(0)
    model = DynamicsEnsemble(3, 1, DynamicsConfig(hidden=(64, 64), max_steps=1500, eval_interval=250))
    info = model.fit(ds.obs["policy"], ds.action, ds.next_obs["policy"], ds.reward)
    # Held-out error is in normalized target units: 1.0 = predicting the mean delta
    # and reward. Measured: 0.060 for every member.
    assert len(info["elites"]) == 5 and info["holdout_rows"] > 0
    assert max(info["holdout_mse"][i] for i in info["elites"]) < 0.1, info
    # On fresh data, per target: error / variance measured 0.005 (cos), 0.005 (sin),
    # 0.28 (angular velocity), 1e-4 (reward). The angular velocity is not fully
    # predictable from (obs, action): the mujoco backend's observations come from
    # sensordata, which mj_step computes *before* its last substep, so an action
    # shows half its effect one control step late.
    fresh = collect("pendulum_swingup", random_policy(1, seed=5), num_envs=4, steps_per_env=200, seed=7)
    obs, act = torch.as_tensor(fresh.obs["policy"]), torch.as_tensor(fresh.action)
    nxt, _, _ = model.step(obs, act, deterministic=True)
    err = ((nxt - torch.as_tensor(fresh.next_obs["policy"])) ** 2).mean(0)
    var = torch.as_tensor(fresh.next_obs["policy"] - fresh.obs["policy"]).var(0)
    assert (err < 0.4 * var).all() and (err[:2] < 0.05 * var[:2]).all(), (err, var)
    # Rollouts stop where the predicted state leaves the data's box.
    far = torch.tensor([[0.0, 0.0, 1e3]])
    assert model.out_of_range(far).all() and not model.out_of_range(obs[:10]).any()


def test_ope_ranks_a_good_policy_above_a_random_one(pendulum_data):
    """With critics and model fitted on the data, OPE ranks the swing-up controller
    above random and zero actions."""
    cfg = UniO4Config(actor_hidden=(32, 32), critic_hidden=(64, 64), q_hidden=(64, 64), num_policies=1,
                      ope_batch=256, ope_horizon=60, batch_size=256,
                      dynamics={"hidden": [64, 64], "max_steps": 1500})
    torch.manual_seed(0)
    algo = UniO4(cfg, obs_dim=3, num_actions=1, seed=0)
    algo.set_dataset(pendulum_data)
    for _ in range(1500):
        algo.pretrain_step()
    algo.fit_dynamics()

    class Fixed(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def action_mean(self, obs):
            return self.fn(obs)

    g = torch.Generator().manual_seed(0)
    good = Fixed(pendulum_swingup_controller)
    rand = Fixed(lambda o: 2 * torch.rand(o.shape[0], 1, generator=g) - 1)
    zero = Fixed(lambda o: torch.zeros(o.shape[0], 1))
    s_good, s_rand, s_zero = (algo.ope_score(p)["q_mean"] for p in (good, rand, zero))
    print("OPE scores: controller", s_good, "random", s_rand, "zero", s_zero)
    # Real 500-step returns: controller ~385, random ~-5, zero ~0.
    # Measured: 4.52 vs 2.64 (random) and 2.72 (zero).
    assert s_good > max(s_rand, s_zero) + 0.4, (s_good, s_rand, s_zero)


# ------------------------------------------------------------ runner / CLI
SMALL_NETS = ["algo.actor_hidden=[32,32]", "algo.critic_hidden=[32,32]", "algo.q_hidden=[32,32]",
              "algo.dynamics.hidden=[32,32]", "algo.batch_size=128", "algo.num_policies=2", "algo.ope_batch=64",
              "algo.ope_horizon=20"]
TINY = ["task=pendulum_swingup", "algo=uni_o4", "num_envs=8", "sim.nthread=1", "sim.torch_threads=1", "eval_episodes=2",
        "progress=false", "algo.offline_steps=60", "algo.improve_steps=20", "algo.ope_interval=10",
        "algo.dynamics.max_steps=60", "algo.dynamics.eval_interval=20", "algo.online.num_steps_per_env=16",
        "checkpoint_interval=1", *SMALL_NETS]


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory, pendulum_data):
    from robotrl.datasets import save_dataset

    return save_dataset(pendulum_data, tmp_path_factory.mktemp("data") / "pendulum.npz")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, dataset_file):
    from robotrl.cli import main

    out = tmp_path_factory.mktemp("uo4") / "run"
    assert main(["train", *TINY, f"dataset={dataset_file}", "steps=256", f"out={out}"]) == 0
    return out


def test_cli_run_writes_offline_and_final_results(cli_run):
    out = cli_run
    for name in ("config.yaml", "checkpoints/latest.pt", "eval.json", "report.md", "return_curve.png",
                 "artifact/policy.onnx", "artifact/policy.yaml", "artifact_offline/policy.onnx"):
        assert (out / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    result = json.loads((out / "eval.json").read_text())
    assert result["episodes"] == 2 and result["task"] == "pendulum_swingup"
    for entry in (result, result["offline"], result["bc"]):
        assert math.isfinite(entry["return_mean"]) and entry["length_mean"] == 500
    sel = result["offline_selection"]
    assert sel["method"] == "ope" and sel["member"] in (0, 1) and len(sel["ope_scores"]) == 2
    assert result["train"]["env_steps"] == 256 and result["train"]["offline_steps"] == 60
    report = (out / "report.md").read_text()
    assert "offline (artifact_offline/)" in report and "selected by OPE only" in report


def test_resume_and_refusals(cli_run, dataset_file, capsys):
    from robotrl.cli import main

    ckpt = cli_run / "checkpoints/latest.pt"
    before = torch.load(ckpt, weights_only=True)
    assert before["phase"] == "done" and before["iteration"] == 2
    # An existing run without resume=true is refused.
    assert main(["train", *TINY, f"dataset={dataset_file}", "steps=256", f"out={cli_run}"]) == 1
    assert "resume=true" in capsys.readouterr().err
    # Resuming with more steps fine-tunes further, without redoing the offline phase.
    assert main(["train", *TINY, f"dataset={dataset_file}", "steps=512", f"out={cli_run}", "resume=true"]) == 0
    after = torch.load(ckpt, weights_only=True)
    assert after["iteration"] == 4 and after["env_steps"] == 512
    assert torch.equal(after["algo"]["offline"]["best_scores"], before["algo"]["offline"]["best_scores"])


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_overwritten(tmp_path, dataset_file, capsys):
    from robotrl.cli import main

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints/latest.pt").write_bytes(b"not a checkpoint")
    (out / "config.yaml").write_text("original")
    assert main(["train", *TINY, f"dataset={dataset_file}", "steps=0", f"out={out}", "resume=true"]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert (out / "checkpoints/latest.pt").read_bytes() == b"not a checkpoint"
    assert (out / "config.yaml").read_text() == "original"


def test_offline_only_run_and_interrupt_keeps_progress(tmp_path, pendulum_data):
    from robotrl.cli import compose
    from robotrl.uni_o4_runner import UniO4Runner

    cfg = compose("train", [*TINY, "steps=0", f"out={tmp_path / 'run'}", "dataset=in-memory"])
    runner = UniO4Runner(cfg, dataset=pendulum_data)
    calls = {"n": 0}
    real_step = runner.offline.pretrain_step

    def interrupted():
        calls["n"] += 1
        if calls["n"] == 31:
            raise KeyboardInterrupt
        return real_step()

    runner.offline.pretrain_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        runner.learn(progress=False)
    runner.close()
    state = torch.load(tmp_path / "run/checkpoints/latest.pt", weights_only=True)
    assert state["phase"] == "pretrain" and state["offline_step"] == 30

    runner = UniO4Runner({**cfg, "resume": True}, dataset=pendulum_data)
    try:
        assert runner.offline_step == 30
        runner.learn(progress=False)
        result = runner.finish(progress=False)
    finally:
        runner.close()
    # steps=0: the final policy is the offline one.
    assert result["train"]["env_steps"] == 0 and result["return_mean"] == result["offline"]["return_mean"]


def test_online_selection_is_explicit_and_reported(tmp_path, pendulum_data):
    from robotrl.cli import compose
    from robotrl.uni_o4_runner import UniO4Runner

    cfg = compose("train", [*TINY, "steps=0", f"out={tmp_path / 'run'}", "dataset=in-memory",
                            "algo.online_selection=true", "algo.online_selection_episodes=2", "algo.evaluate_bc=false"])
    runner = UniO4Runner(cfg, dataset=pendulum_data)
    try:
        runner.learn(progress=False)
        result = runner.finish(progress=False)
    finally:
        runner.close()
    sel = result["offline_selection"]
    assert sel["method"] == "online" and len(sel["online_returns"]) == 2
    assert sel["member"] == int(np.argmax(sel["online_returns"])) and sel["online_env_steps"] == 2 * 2 * 500
    assert "bc" not in result
    assert "ONLINE evaluation (2000 env steps" in (tmp_path / "run/report.md").read_text()


def test_bad_input(tmp_path, dataset_file, capsys):
    from robotrl.cli import main
    from robotrl.datasets import save_dataset

    assert main(["train", *TINY, "steps=0", f"out={tmp_path / 'a'}"]) == 1
    assert "algo=uni_o4 needs dataset=PATH (make one with robotrl dataset collect ...)" in capsys.readouterr().err
    # A dataset of another task: cartpole data for the pendulum task.
    other = collect("cartpole_swingup", random_policy(1), num_envs=2, steps_per_env=20, seed=0)
    path = save_dataset(other, tmp_path / "cartpole.npz")
    assert main(["train", *TINY, "steps=0", f"dataset={path}", f"out={tmp_path / 'b'}"]) == 1
    err = capsys.readouterr().err
    assert "width 5 but task pendulum_swingup observes 3" in err, err
    # Same widths, wrong task name: still refused by name.
    other.meta["task"] = "reach"
    other.obs = {g: np.zeros((len(other), 3), np.float32) for g in other.obs}
    other.next_obs = {g: np.zeros((len(other), 3), np.float32) for g in other.obs}
    other.meta["obs_layout"] = {g: [["pendulum", 3]] for g in other.obs}
    path = save_dataset(other, tmp_path / "renamed.npz")
    assert main(["train", *TINY, "steps=0", f"dataset={path}", f"out={tmp_path / 'c'}"]) == 1
    assert "is from task 'reach', not 'pendulum_swingup'" in capsys.readouterr().err
    assert main(["train", *TINY, "steps=0", f"dataset={tmp_path / 'missing.npz'}", f"out={tmp_path / 'd'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", *TINY, "steps=0", f"dataset={dataset_file}", "algo.online_domain=moon", f"out={tmp_path / 'e'}"]) == 1
    assert "online_domain" in capsys.readouterr().err


# ----------------------------------------------------------------- learning
@pytest.mark.slow
def test_uni_o4_fine_tunes_online_and_reports_offline_against_bc(tmp_path):
    """Pendulum swing-up with a medium dataset: PPO trained for 150 k steps, its
    actions plus Gaussian noise 0.3 for 16 episodes (8000 transitions). Uni-O4 with
    3000 pre-training and 1000 improvement steps, then 164 k online env steps with
    the default (reference-like, gentle) online settings; returns over 16
    deterministic episodes.

    Asserted: online fine-tuning ends well above its offline start (the paper's
    claim). Reported as an expected failure: the offline policy beating BC of the
    data. The data is noise around one PPO policy, so BC already recovers the
    behaviour's mean and the improvement has little room; with Q and the dynamics
    model fitted on 8000 transitions it loses return instead, and both OPE scores
    (the reference's mean Q, and a model return with V at the horizon, even when
    all five elite models must agree) accept the worse policies. Measured with
    torch 2.14.1, one thread (seed 0): dataset 96, BC 88.8, offline 34.5 (mean-Q
    gate; 35.8 with the model-return gate, 33.0 with all elites agreeing),
    fine-tuned 222.9; 67 s. Earlier builds measured BC 137.6, offline 117.8,
    fine-tuned 247.5."""
    from robotrl.cli import compose, main
    from robotrl.policies.artifact import ArtifactPolicy
    from robotrl.uni_o4_runner import UniO4Runner

    ppo = tmp_path / "ppo"
    assert main(["train", "task=pendulum_swingup", "steps=150000", "num_envs=64", "sim.nthread=1", "sim.torch_threads=1",
                 "algo.actor_hidden=[64,64]", "algo.critic_hidden=[64,64]", "algo.num_steps_per_env=64",
                 f"out={ppo}", "progress=false", "eval_episodes=8"]) == 0
    behaviour = ArtifactPolicy(ppo / "artifact")
    ds = collect("pendulum_swingup", lambda o: torch.as_tensor(behaviour.act(o.numpy())), num_envs=16,
                 steps_per_env=500, seed=3, noise=0.3)
    cfg = compose("train", [
        "algo=uni_o4", "task=pendulum_swingup", f"out={tmp_path / 'uo4'}", "sim.nthread=1", "sim.torch_threads=1",
        "progress=false", "eval_episodes=16", "dataset=in-memory", "num_envs=32", "steps=163840",
        "algo.actor_hidden=[64,64]", "algo.critic_hidden=[64,64]", "algo.q_hidden=[64,64]",
        "algo.dynamics.hidden=[64,64]", "algo.batch_size=256", "algo.offline_steps=3000", "algo.tau=0.02",
        "algo.improve_steps=1000", "algo.dynamics.max_steps=2000",
    ])
    runner = UniO4Runner(cfg, dataset=ds)
    try:
        runner.learn(progress=False)
        result = runner.finish(progress=False)
    finally:
        runner.close()
    bc, offline, final = result["bc"]["return_mean"], result["offline"]["return_mean"], result["return_mean"]
    print(f"dataset {ds.episode_returns.mean():.1f}  BC {bc:.1f}  Uni-O4 offline {offline:.1f}  fine-tuned {final:.1f}")
    assert result["offline_selection"]["method"] == "ope"
    assert final > offline + 15, (offline, final)
    if offline <= bc + 10:
        pytest.xfail(f"Uni-O4 offline {offline:.1f} not above BC {bc:.1f} + 10 on this dataset (see the docstring)")
