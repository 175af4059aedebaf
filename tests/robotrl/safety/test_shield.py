"""The run-time shield: selection rule, layout checks, the critic's target, export
into the artifact and what the ROS node will load."""
import json
import shutil

import numpy as np
import pytest
import torch

from robotrl.cli import main
from robotrl.policies.artifact import ArtifactError
from robotrl.policies.shield import Shield, load_shielded_policy
from robotrl.safety.critic import SafetyCritic, export_shield, risk_target


class ConstantPolicy:
    obs_layout = [("x", 3)]
    action_names = ["a", "b"]

    def __init__(self, action):
        self.action = np.asarray(action, np.float32)

    def reset(self, env_ids=None):
        pass

    def act(self, obs):
        return np.tile(self.action, (len(obs), 1))


def forward_risk(obs, action):
    """Risk grows with the first action component (driving forward into a wall)."""
    return np.clip(np.asarray(action)[:, 0], 0.0, 1.0)


def test_risk_target_by_hand():
    cost = torch.tensor([0.0, 2.0, 0.0])
    done = torch.tensor([False, False, True])
    nxt = torch.tensor([0.5, 0.9, 0.9])
    # safe step: 0.9 * 0.5; violation: 1; termination (a fall): terminal_risk, 1 unless told
    torch.testing.assert_close(risk_target(cost, done, nxt, 0.9), torch.tensor([0.45, 1.0, 1.0]))
    torch.testing.assert_close(risk_target(cost, done, nxt, 0.9, terminal_risk=0.0), torch.tensor([0.45, 1.0, 0.0]))


def test_shield_leaves_safe_actions_and_replaces_risky_ones():
    obs = np.zeros((4, 3), np.float32)
    safe = Shield(ConstantPolicy([0.1, 0.0]), forward_risk, threshold=0.3, critic_obs_dim=3)
    np.testing.assert_array_equal(safe.act(obs), np.tile(np.float32([0.1, 0.0]), (4, 1)))
    assert safe.stats()["interventions"] == 0

    risky = Shield(ConstantPolicy([0.9, 0.0]), forward_risk, threshold=0.3, num_candidates=64, noise_std=0.5,
                   action_clip=1.0, critic_obs_dim=3)
    action = risky.act(obs)
    assert (forward_risk(obs, action) < 0.3).all()  # 64 samples of std 0.5 reach below 0.3
    assert risky.stats() == {"interventions": 4, "steps": 4, "intervention_rate": 1.0}
    assert risky.last_intervened.all()


def test_the_critic_judges_the_action_the_robot_gets_not_the_raw_output():
    """A Gaussian policy's raw output may lie far outside the action box; the env
    clips it, and the critic only ever saw clipped actions."""

    def edge_risk(obs, action):
        # Risky at full forward force (what the robot gets); nothing was seen beyond.
        return (np.abs(np.asarray(action)[:, 0]) >= 0.95).astype(np.float64)

    shield = Shield(ConstantPolicy([3.0, 0.0]), edge_risk, threshold=0.5, num_candidates=64, noise_std=0.5,
                    action_clip=1.0, critic_obs_dim=3)
    action = shield.act(np.zeros((4, 3), np.float32))
    assert shield.last_intervened.all()
    assert (np.abs(action[:, 0]) < 0.95).all()
    # Safe after clipping: passed on clipped (the env would clip it anyway).
    calm = Shield(ConstantPolicy([0.5, -3.0]), edge_risk, threshold=0.5, action_clip=1.0, critic_obs_dim=3)
    np.testing.assert_array_equal(calm.act(np.zeros((2, 3), np.float32)), np.float32([[0.5, -1.0]] * 2))
    assert not calm.last_intervened.any()


def test_recovery_policy_takes_over_above_the_threshold():
    shield = Shield(ConstantPolicy([0.9, 0.0]), forward_risk, 0.3, recovery=ConstantPolicy([-1.0, 0.2]),
                    critic_obs_dim=3)
    np.testing.assert_array_equal(shield.act(np.zeros((2, 3))), np.float32([[-1.0, 0.2]] * 2))


def test_mismatched_critic_and_bad_threshold_are_refused():
    with pytest.raises(ValueError, match="critic takes 5 observations but the policy's layout has 3"):
        Shield(ConstantPolicy([0.0, 0.0]), forward_risk, 0.3, critic_obs_dim=5)
    with pytest.raises(ValueError, match=r"threshold is a risk \(probability\) in \[0, 1\]"):
        Shield(ConstantPolicy([0.0, 0.0]), forward_risk, 1.5, critic_obs_dim=3)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "task=point_goal_hazards", "steps=2000", "num_envs=8", f"out={out}", "eval_episodes=1",
                 "progress=false", "sim.nthread=1"]) == 0
    return out / "artifact"


def test_shield_exports_into_the_artifact_and_loads_as_on_the_robot(artifact, tmp_path):
    critic = SafetyCritic(37, 2, (32, 32))
    torch.nn.init.normal_(critic.net[-1].weight, std=1.0)  # risks spread over (0, 1)
    folder = export_shield(critic, artifact, threshold=0.4, num_candidates=8, out=tmp_path / "shielded",
                           gentler="reverse", hold_steps=5)
    policy = load_shielded_policy(folder)
    assert isinstance(policy, Shield) and policy.threshold == 0.4 and policy.num_candidates == 8
    assert policy.gentler == "reverse" and policy.meta["shield"]["hold_steps"] == 5
    obs, act = np.random.default_rng(0).normal(size=(64, 37)).astype(np.float32), np.zeros((64, 2), np.float32)
    np.testing.assert_allclose(policy.critic(obs, act), critic.numpy_risk(obs, act), atol=1e-5)
    assert load_shielded_policy(artifact).__class__.__name__ == "ArtifactPolicy"  # the original is untouched
    with pytest.raises(FileExistsError):
        export_shield(critic, artifact, 0.4, out=tmp_path / "shielded")
    with pytest.raises(ValueError, match="critic takes"):
        export_shield(SafetyCritic(5, 2), artifact, 0.4, out=tmp_path / "other")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "shield_critic.onnx").unlink()
    with pytest.raises(ArtifactError, match="shield_critic.onnx is missing"):
        load_shielded_policy(broken)


def test_eval_of_a_shielded_artifact_reports_interventions(artifact, tmp_path):
    critic = SafetyCritic(37, 2, (32, 32))
    with torch.no_grad():
        critic.net[-1].bias.fill_(5.0)  # risk ~ 1 everywhere: the shield always intervenes
    folder = export_shield(critic, artifact, threshold=0.5, num_candidates=4, out=tmp_path / "always")
    assert main(["eval", f"policy={folder}", "episodes=2", f"out={tmp_path}", "progress=false"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["intervention_rate"] == 1.0 and result["interventions_mean"] == result["length_mean"]


class PositionArm(ConstantPolicy):
    """A position-controlled arm's policy: target = default + scale * action."""
    obs_layout = [("joint_pos", 2), ("last_action", 2)]
    meta = {"action": {"type": "position", "scale": [0.5, 2.0]}}


class MotorArm(PositionArm):
    meta = {"action": {"type": "motor", "scale": [0.5, 2.0]}}


def test_a_position_controlled_robot_can_hold_still():
    """Under position control the gentler candidate is the target of the present joint
    positions, not the last action (a moving arm's last target is still ahead of it)."""
    shield = Shield(PositionArm([0.9, 0.0]), forward_risk, 0.3, num_candidates=16, noise_std=0.2, action_clip=1.0)
    obs = np.array([[0.1, -0.4, 0.8, 0.0]], np.float32)  # joints 0.1, -0.4 rad from the default pose
    cand = shield.candidates(obs, np.array([[0.9, 0.0]], np.float32))
    np.testing.assert_allclose(cand[0, 1], [0.2, -0.2])  # (q - default) / scale
    assert np.all(cand[0, 2:5, 0] > 0.2) and np.all(np.diff(cand[0, 1:5, 0]) > 0)  # on the way to the policy's action
    # Under motor (torque) control the gentler candidate stays the observed last action.
    motor = Shield(MotorArm([0.9, 0.0]), forward_risk, 0.3, num_candidates=16, action_clip=1.0)
    np.testing.assert_allclose(motor.candidates(obs, np.array([[0.9, 0.0]], np.float32))[0, 1], [0.8, 0.0])


def test_roc_auc_by_hand():
    from robotrl.safety.critic import roc_auc

    # Pairs (violating, safe): (0.9, 0.1) 1, (0.9, 0.4) 1, (0.4, 0.1) 1, (0.4, 0.4) a tie, 1/2.
    assert roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(3.5 / 4)
    assert roc_auc([1, 1, 0], [0.2, 0.3, 0.9]) == 0.0
    assert roc_auc([0, 0], [0.1, 0.2]) is None  # no violation to rank


def test_choose_threshold_keeps_the_fewest_interventions_that_meet_the_target():
    from robotrl.safety.fit_shield import choose_threshold

    rows = [{"threshold": 0.5, "violation_reduction": 0.70}, {"threshold": 0.4, "violation_reduction": 0.92},
            {"threshold": 0.3, "violation_reduction": 0.97}]
    assert choose_threshold(rows, 0.9) == 0.4
    assert choose_threshold(rows, 0.99) == 0.3  # none meets it: the one that cuts the most


def test_calibration_runs_more_episodes_when_violations_are_rare():
    from robotrl.safety.fit_shield import enough_episodes

    asked = []

    def run(n, per_episode):
        asked.append(n)
        return {"violations_mean": per_episode}

    # 4.5 per episode: 18 in 4 episodes, 36 in 8, 72 in 16 >= 50.
    episodes, result = enough_episodes(lambda n: run(n, 4.5), 4, 32, 50)
    assert (episodes, asked, result["violations_mean"]) == (16, [4, 8, 16], 4.5)
    asked.clear()
    assert enough_episodes(lambda n: run(n, 60.0), 4, 32, 50)[0] == 4 and asked == [4]
    asked.clear()
    assert enough_episodes(lambda n: run(n, 0.0), 4, 12, 50)[0] == 12 and asked == [4, 8, 12]  # the cap ends it


def test_shield_summary_says_when_the_shield_makes_things_worse():
    """Measured on a PPO car_goal_hazards policy: the shield raised violations by 27%
    and no calibration threshold cut them; the summary must say so, not '-27% fewer'."""
    from robotrl.safety.fit_shield import format_shield

    row = lambda v: {"episodes": 16, "return_mean": 20.0, "cost_mean": v, "violations_mean": v}  # noqa: E731
    s = {"artifact": "a", "task": "car_goal_hazards", "unshielded": row(61.3), "shielded": row(77.6),
         "violation_reduction": -0.266, "return_loss": -0.05, "threshold": 0.5,
         "calibration": {"episodes": 4, "target_violation_reduction": 0.9,
                         "rows": [{"threshold": 0.5, "violation_reduction": 0.0},
                                  {"threshold": 0.4, "violation_reduction": -0.33}]}}
    text = format_shield(s)
    assert "violations 27% more, return 5% higher" in text
    assert "0.5: +0%, 0.4: +33%" in text and "target -90%" in text
    assert "the shield does not protect this policy" in text
    s["calibration"]["rows"][1]["violation_reduction"] = 0.95
    s["violation_reduction"], s["return_loss"] = 0.95, 0.16
    text = format_shield(s)
    assert "violations 95% fewer, return 16% lower" in text and "0.4: -95%" in text
    assert "does not protect" not in text


def test_the_critic_reads_lidar_as_log_distance_on_the_robot_too(artifact, tmp_path):
    """A pseudo-lidar reads 1 - d / d_max; the critic sees log distance, and the exported
    ONNX (what the robot runs) applies the same transform."""
    from robotrl.policies.artifact import ArtifactPolicy
    from robotrl.safety.critic import distance_columns

    layout = ArtifactPolicy(artifact).obs_layout  # point_goal_hazards: 2 + 1 + 16 goal + 16 hazard + 2
    assert [n for n, _ in layout][2:4] == ["goal_lidar", "hazard_lidar"]
    assert distance_columns(layout, ("hazard_lidar",)) == list(range(19, 35))
    assert distance_columns(layout, ("no_such_term",)) == []
    critic = SafetyCritic(37, 2, (32, 32), distance_columns(layout, ("hazard_lidar", "goal_lidar")))
    obs = np.random.default_rng(1).uniform(0.0, 1.0, size=(64, 37)).astype(np.float32)
    feats = critic.features(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(feats[:, 3:35], np.log(1.0 - obs[:, 3:35] + 1e-3), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(feats[:, :3], obs[:, :3])
    np.testing.assert_array_equal(feats[:, 35:], obs[:, 35:])
    # 0.94 (inside a 0.2 m hazard of a 3 m lidar) and 0.92 (outside): 0.28 apart in log distance, 0.02 in lidar
    near = critic.features(torch.tensor([[0.94] * 37, [0.92] * 37])).numpy()[:, 20]
    assert near[1] - near[0] > 0.25
    torch.nn.init.normal_(critic.net[-1].weight, std=1.0)
    folder = export_shield(critic, artifact, threshold=0.4, out=tmp_path / "lidar")
    act = np.random.default_rng(2).uniform(-1, 1, size=(64, 2)).astype(np.float32)
    np.testing.assert_allclose(load_shielded_policy(folder).critic(obs, act), critic.numpy_risk(obs, act), atol=1e-5)


def test_held_actions_refuse_what_would_break_the_holds(artifact, tmp_path, capsys):
    assert main(["shield", f"policy={artifact}", "hold_steps=5", f"dataset={tmp_path / 'd.npz'}", "progress=false"]) != 0
    assert "which a dataset's actions were not" in capsys.readouterr().err
    assert main(["shield", f"policy={artifact}", "hold_steps=5", "noise_std=0.2", "progress=false"]) != 0
    assert "would break the holds" in capsys.readouterr().err
    assert main(["shield", f"policy={artifact}", "gentler=sideways", "transitions=200", "progress=false"]) != 0
    assert "gentler must be one of" in capsys.readouterr().err


def test_null_settings_come_from_the_task_entry_then_the_fallback():
    from robotrl.safety.fit_shield import FALLBACK, with_task_defaults

    cfg = {"transitions": None, "thresholds": None, "gentler": None, "hold_steps": 3,
           "critic": {"gamma_risk": None, "steps": None, "hidden": [64]},
           "per_task": {"bot": {"hold_steps": 5, "gentler": "reverse", "critic": {"gamma_risk": 0.95}}}}
    bot = with_task_defaults(cfg, "bot")
    assert bot["hold_steps"] == 3  # given on the command line: it wins
    assert bot["gentler"] == "reverse" and bot["critic"]["gamma_risk"] == 0.95  # the task's entry
    assert bot["transitions"] == FALLBACK["transitions"] and bot["critic"]["steps"] == 4000  # the fallback
    assert bot["critic"]["hidden"] == [64] and cfg["critic"]["gamma_risk"] is None  # the input is not changed
    other = with_task_defaults(cfg, "other")
    assert other["gentler"] == "auto" and other["critic"]["gamma_risk"] == 0.9
    with pytest.raises(KeyError, match="per_task.bot sets"):
        with_task_defaults({**cfg, "per_task": {"bot": {"hold": 5}}}, "bot")
