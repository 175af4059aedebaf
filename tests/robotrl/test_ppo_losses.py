"""PPO's pure functions against hand-computed values."""
import math

import pytest
import torch

from robotrl.algos.ppo import PPOConfig, adapt_learning_rate, gae, gaussian_kl, surrogate_loss, value_loss


def test_gae_matches_hand_computation():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    last = torch.tensor([2.0])
    # t=2: delta = 3 + 0.9*2 - 1.5 = 3.3; adv = 3.3
    # t=1: done -> delta = 2 - 1 = 1; adv = 1
    # t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4; adv = 1.4 + 0.9*0.8*1 = 2.12
    returns, adv = gae(rewards, values, dones, last, gamma, lam)
    assert torch.allclose(adv[:, 0], torch.tensor([2.12, 1.0, 3.3]))
    assert torch.allclose(returns, adv + values)


def test_surrogate_clips_large_ratios():
    old = torch.zeros(2)
    adv = torch.tensor([1.0, -1.0])
    new = torch.log(torch.tensor([2.0, 2.0]))  # ratio 2
    # positive advantage: min(2*1, 1.2*1) = 1.2 -> loss -1.2; negative: max(-2, -1.2)... loss = max(2, 1.2) = 2
    loss = surrogate_loss(new, old, adv, clip_param=0.2)
    assert loss.item() == pytest.approx((-1.2 + 2.0) / 2)


def test_value_loss_clipped_and_plain():
    v, old, ret = torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([2.5])
    assert value_loss(v, old, ret, 0.2, clipped=False).item() == pytest.approx(0.25)
    # clipped value 1.2: max((3-2.5)^2, (1.2-2.5)^2) = 1.69
    assert value_loss(v, old, ret, 0.2, clipped=True).item() == pytest.approx(1.69)


def test_gaussian_kl_zero_for_same_and_known_value():
    mu, s = torch.zeros(1, 2), torch.ones(1, 2)
    assert gaussian_kl(mu, s, mu, s).item() == pytest.approx(0.0)
    # KL(N(0,1) || N(1,1)) = 0.5 per dim
    assert gaussian_kl(mu, s, mu + 1, s).item() == pytest.approx(1.0)
    assert gaussian_kl(mu, s, mu, 2 * s).item() == pytest.approx(2 * (math.log(2) + 1 / 8 - 0.5))


def test_adaptive_learning_rate_rule():
    assert adapt_learning_rate(1e-3, 0.05, 0.01) == pytest.approx(1e-3 / 1.5)
    assert adapt_learning_rate(1e-3, 0.001, 0.01) == pytest.approx(1.5e-3)
    assert adapt_learning_rate(1e-3, 0.01, 0.01) == 1e-3


def test_config_rejects_unknown_keys():
    with pytest.raises(KeyError, match="learning_rat"):
        PPOConfig.from_dict({"learning_rat": 1e-3})


def test_reward_normalization_divides_by_running_std_of_discounted_return():
    from robotrl.algos.ppo import PPO, PPOConfig

    cfg = PPOConfig(num_steps_per_env=4, normalize_reward=True, gamma=0.5, actor_hidden=(8,), critic_hidden=(8,))
    alg = PPO(cfg, {"policy": 3, "critic": 3}, 1, num_envs=2)
    obs = {"policy": torch.zeros(2, 3), "critic": torch.zeros(2, 3)}
    rewards = torch.tensor([2.0, 4.0])
    no = torch.zeros(2, dtype=torch.bool)
    returns = []
    ret = torch.zeros(2)
    for _ in range(4):
        alg.act(obs)
        alg.process_step(rewards, no, no)
        ret = ret * 0.5 + rewards
        returns.append(ret.clone())
    seen = torch.stack(returns).reshape(-1)
    std = torch.sqrt(seen.var(unbiased=False) + 1e-4)
    # The last stored reward was divided by the std of every discounted return so far.
    stored = alg.storage.rewards[3]  # no time-outs, so no bootstrap term was added
    assert torch.allclose(stored, rewards / std, rtol=1e-5)
    assert not torch.allclose(stored, rewards)


def test_critic_normalizer_follows_the_policy_group_when_no_critic_group():
    """A task without a privileged ``critic`` group: the critic reads ``policy`` and its
    normalizer learns that group's statistics."""
    from robotrl.algos.ppo import PPO

    alg = PPO(PPOConfig(), {"policy": 3}, num_actions=2, num_envs=4)
    assert alg.critic_group == "policy"
    obs = {"policy": torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [5.0, 6.0, 7.0], [7.0, 8.0, 9.0]])}
    alg.act(obs)
    assert torch.allclose(alg.model.critic_norm.mean, torch.tensor([4.0, 5.0, 6.0]))
    assert torch.allclose(alg.model.critic_norm.mean, alg.model.actor_norm.mean)
