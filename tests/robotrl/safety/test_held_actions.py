"""A safety critic over actions held for several control steps: the explorer holds
its picks, the rollouts are cut into k-step transitions, the critic discounts by
gamma ** k, and the shield's braking candidates and settings travel in the artifact."""
import numpy as np
import pytest
import torch

from robotrl.datasets import Dataset, collect
from robotrl.datasets.collect import row_layout
from robotrl.policies.shield import Shield
from robotrl.safety.critic import CandidateExplorer, SafetyCriticConfig, fit_safety_critic, held_transitions
from robotrl.sim import make_env, make_task


class LinePolicy:
    """Acts ``obs[:, 0]`` scaled: a different action on every step."""

    def __init__(self, layout, actions):
        self.obs_layout, self.action_names = list(layout), list(actions)

    def reset(self, env_ids=None):
        pass

    def act(self, obs):
        obs = np.asarray(obs, np.float32)
        return np.repeat(np.tanh(obs[:, :1] * 3.0), len(self.action_names), axis=1)


@pytest.fixture(scope="module")
def held_rollouts():
    task = make_task("point_goal_hazards", {"episode_length_s": 1.3})  # 65 steps: episodes end inside holds
    with make_env(task, 1) as env:
        policy = LinePolicy(env.obs_layout["policy"], env.action_names)
    kwargs = {"num_candidates": 8, "noise_std": 0.3, "action_clip": 1.0, "wide_fraction": 0.0, "gentler": "reverse"}
    explorer = CandidateExplorer(policy, kwargs, explore=0.5, seed=3, hold_steps=4)
    # 3 envs, 1003 rows: unequal shares (335, 334, 334).
    steps = collect(task, 1003, policies=[explorer], num_envs=3, seed=3, progress=False)
    return steps, held_transitions(steps, 4)


def env_rows(steps):
    return row_layout(len(steps), steps.meta["source"]["num_envs"])


def test_the_explorer_holds_each_pick_for_k_steps(held_rollouts):
    steps, _ = held_rollouts
    step, env = env_rows(steps)
    for e in range(3):
        rows = np.flatnonzero(env == e)
        for start in rows[step[rows] % 4 == 0]:
            hold = steps.action[start:min(start + 4, rows[-1] + 1)]
            np.testing.assert_array_equal(hold, np.broadcast_to(hold[0], hold.shape))
    # and the holds differ: the policy's action changes with the state
    assert len(np.unique(steps.action[step % 4 == 0], axis=0)) > 100


def test_held_transitions_span_k_steps_or_end_with_the_episode(held_rollouts):
    steps, held = held_rollouts
    step, env = env_rows(steps)
    starts = np.flatnonzero(step % 4 == 0)
    assert len(held) == len(starts) and held.meta["hold_steps"] == 4
    np.testing.assert_array_equal(held.obs["policy"], steps.obs["policy"][starts])
    np.testing.assert_array_equal(held.action, steps.action[starts])
    ends = steps.terminated | steps.truncated
    short = 0
    for m, i in enumerate(starts):
        last = i
        while last < i + 3 and not ends[last]:
            last += 1
        np.testing.assert_array_equal(held.next_obs["policy"][m], steps.next_obs["policy"][last])
        assert held.cost[m] == steps.cost[i:last + 1].max()
        assert held.reward[m] == pytest.approx(steps.reward[i:last + 1].sum(), rel=1e-5, abs=1e-5)
        assert held.truncated[m] == steps.truncated[last] and held.terminated[m] == steps.terminated[last]
        short += last < i + 3
    # episodes end inside holds (65 = 16 * 4 + 1 steps), and each env's stream ends truncated
    assert held.truncated.sum() >= 15 and short >= 12
    # within an episode, a hold continues where the previous one stopped
    cont = ~(held.terminated | held.truncated)[:-1] & (env[starts][1:] == env[starts][:-1])
    np.testing.assert_array_equal(held.next_obs["policy"][:-1][cont], held.obs["policy"][1:][cont])


def test_held_transitions_need_rollouts_that_held():
    data = Dataset(obs={"policy": np.zeros((4, 2), np.float32)}, action=np.zeros((4, 1), np.float32),
                   reward=np.zeros(4, np.float32), cost=np.zeros(4, np.float32),
                   next_obs={"policy": np.zeros((4, 2), np.float32)}, terminated=np.zeros(4, bool),
                   truncated=np.array([0, 0, 0, 1], bool), meta={"source": {"kind": "import"}})
    assert held_transitions(data, 1) is data
    with pytest.raises(ValueError, match="actions were not held"):
        held_transitions(data, 3)


def test_an_explorer_that_holds_must_act_for_every_env():
    policy = LinePolicy([("x", 2)], ["a"])
    explorer = CandidateExplorer(policy, {"num_candidates": 4, "action_clip": 1.0}, hold_steps=2)
    explorer.act(np.zeros((4, 2)))
    with pytest.raises(RuntimeError, match="every env on every step"):
        explorer.act(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="hold_steps"):
        CandidateExplorer(policy, {"num_candidates": 4}, hold_steps=0)


def test_the_critic_discounts_held_transitions_by_gamma_to_the_k():
    """A -> B, where B always violates: Q(A) -> gamma ** k (0.9 ** 3 = 0.729), not gamma."""
    n = 2000
    rng = np.random.default_rng(0)
    state = (np.arange(n) % 2).astype(np.float32)  # 0: A, 1: B
    obs = np.stack([state, np.zeros(n, np.float32)], 1)
    nxt = np.stack([1.0 - state, np.zeros(n, np.float32)], 1)
    data = Dataset(obs={"policy": obs}, action=rng.uniform(-1, 1, (n, 1)).astype(np.float32),
                   reward=np.zeros(n, np.float32), cost=state.copy(), next_obs={"policy": nxt},
                   terminated=np.zeros(n, bool), truncated=(np.arange(n) % 2 == 1),
                   meta={"action_clip": 1.0, "hold_steps": 3})
    policy = LinePolicy([("x", 2)], ["a"])
    cfg = SafetyCriticConfig(gamma_risk=0.9, backup="policy", steps=1500, hidden=(32, 32), learning_rate=3e-3,
                             distance_terms=())
    critic = fit_safety_critic(data, policy, cfg, seed=0, progress=False)
    risk_a = critic.numpy_risk(np.zeros((64, 2), np.float32), np.linspace(-1, 1, 64, dtype=np.float32)[:, None])
    assert abs(float(risk_a.mean()) - 0.729) < 0.05, risk_a.mean()
    single = fit_safety_critic(Dataset(**{**data.__dict__, "meta": {"action_clip": 1.0}}), policy, cfg, seed=0,
                               progress=False)
    assert abs(float(single.numpy_risk(np.zeros((1, 2), np.float32), np.zeros((1, 1), np.float32))[0]) - 0.9) < 0.05


def test_reversed_candidates_brake():
    class Forward:
        obs_layout, action_names = [("x", 3)], ["force", "turn"]

        def reset(self, env_ids=None):
            pass

        def act(self, obs):
            return np.tile(np.float32([1.0, 0.2]), (len(obs), 1))

    shield = Shield(Forward(), None, 0.0, num_candidates=16, noise_std=0.1, action_clip=1.0, wide_fraction=0.0,
                    gentler="reverse")
    cand = shield.candidates(np.zeros((2, 3), np.float32), np.tile(np.float32([1.0, 0.2]), (2, 1)))
    np.testing.assert_allclose(cand[:, 0], [[1.0, 0.2]] * 2)  # the policy's own action
    np.testing.assert_allclose(cand[:, 1], [[-1.0, -0.2]] * 2)  # full reverse: braking
    assert (cand[:, 1:5, 0] < 1.0).all() and (np.diff(cand[:, 1:5, 0], axis=1) > 0).all()  # the line back
    with pytest.raises(ValueError, match="gentler"):
        Shield(Forward(), None, 0.0, gentler="brake")


def test_the_explorer_draws_candidates_around_the_clipped_action_as_the_shield_does():
    class Saturated:
        obs_layout, action_names = [("x", 2)], ["force"]

        def reset(self, env_ids=None):
            pass

        def act(self, obs):
            return np.full((len(obs), 1), 3.0, np.float32)  # a Gaussian policy's raw output, far outside the box

    kwargs = {"num_candidates": 4, "noise_std": 0.5, "action_clip": 1.0, "wide_fraction": 0.0, "gentler": "zero"}
    picks = CandidateExplorer(Saturated(), kwargs, explore=1.0, seed=0).act(np.zeros((2000, 2), np.float32))[:, 0]
    # around 3.0, every noisy candidate clips to 1.0; around the clipped 1.0, half fall inside the box
    assert ((picks > 0.05) & (picks < 0.999)).mean() > 0.15  # expected 2 of 4 candidates x 1/2 = 0.25
