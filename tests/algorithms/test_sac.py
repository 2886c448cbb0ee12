"""SAC: losses worked by hand on tiny linear networks, which parameters each loss
reaches, target updates, acting in the bounds, exact resume with the buffer, and
learning Pendulum (continuous) and CartPole (discrete)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from hpcrl.algorithms.sac import SACTorchPolicy, SACTrainer
from hpcrl.policy.sample_batch import SampleBatch

OBS = gym.spaces.Box(-10, 10, (1,), np.float32)
BOX = gym.spaces.Box(-2, 2, (1,), np.float32)
LINEAR = {"fcnet_hiddens": [], "fcnet_activation": "relu"}


def value(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


def linear_policy(action_space, actor, critics, targets, **config):
    """A SAC policy whose networks are single linear layers with the given
    (weight, bias) pairs; alpha 0.5, gamma 0.5."""
    policy = SACTorchPolicy(
        OBS,
        action_space,
        {
            "policy_model_config": LINEAR,
            "q_model_config": LINEAR,
            "initial_alpha": 0.5,
            "gamma": 0.5,
            "seed": 0,
            **config,
        },
    )
    layers = [policy.model.output]
    layers += [critic.net[-1] for critic in (*policy.critics, *policy.target_critics)]
    with torch.no_grad():
        for layer, (weight, bias) in zip(layers, [actor, *critics, *targets]):
            layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return policy


def continuous_policy():
    # actor: mean 0 and log_std 0 for every observation;
    # critics on (obs, action in [-1, 1]): Q1 = obs + u, Q2 = obs - u;
    # target critics: Q1' = obs + 1, Q2' = 2 obs (the same for every action).
    return linear_policy(
        BOX,
        actor=([[0.0], [0.0]], [0.0, 0.0]),
        critics=[([[1.0, 1.0]], [0.0]), ([[1.0, -1.0]], [0.0])],
        targets=[([[1.0, 0.0]], [1.0]), ([[2.0, 0.0]], [0.0])],
    )


def continuous_batch():
    # action 1.0 in [-2, 2] is u = 0.5 for the critics
    return SampleBatch(
        {
            "obs": np.array([[1.0]], np.float32),
            "new_obs": np.array([[2.0]], np.float32),
            "actions": np.array([[1.0]], np.float32),
            "rewards": np.array([1.0], np.float32),
            "terminateds": np.array([False]),
            "truncateds": np.array([False]),
        }
    )


def test_continuous_losses_by_hand():
    policy = continuous_policy()
    # The loss draws the noise of a~ ~ pi(s) first, then that of a' ~ pi(s'):
    # with seed 2 these are 0.39229682 and -0.22356401.
    policy.torch_generator.manual_seed(2)
    noise = torch.randn(2, generator=torch.Generator().manual_seed(2)).tolist()
    assert noise == pytest.approx([0.39229682, -0.22356401])
    policy.torch_generator.manual_seed(2)
    loss, _ = policy.compute_loss(continuous_batch())
    # log pi(x) = -x^2 / 2 - log(2 pi) / 2 - log(1 - tanh(x)^2), with std 1 and x the noise:
    # a~: x = 0.39229682, u = tanh(x) = 0.37333861, log pi = -0.84578272
    # a': x = -0.22356401, log pi = -0.89435898
    # target y = 1 + 0.5 * (min(2 + 1, 2 * 2) - 0.5 * -0.89435898) = 2.72358975
    # critics: Q1(1, 0.5) = 1.5, Q2(1, 0.5) = 0.5:
    #   0.5 * (1.5 - y)^2 + 0.5 * (0.5 - y)^2 = 3.22076161; |TD| mean 1.72358975
    # actor: 0.5 * -0.84578272 - min(1 + u, 1 - u) = -0.42289136 - 0.62666139
    # alpha: -log(0.5) * (-0.84578272 + target entropy -1)
    assert value(loss.terms["critic_loss"]) == pytest.approx(3.22076161, rel=1e-5)
    assert value(loss.terms["actor_loss"]) == pytest.approx(-1.04955275, rel=1e-5)
    assert value(loss.terms["alpha_loss"]) == pytest.approx(-1.27939909, rel=1e-5)
    np.testing.assert_allclose(loss.per_row["td_error"].numpy(), [1.72358975], rtol=1e-5)
    assert value(loss.total) == pytest.approx(3.22076161 - 1.04955275 - 1.27939909, rel=1e-5)
    assert value(loss.terms["entropy"]) == pytest.approx(0.84578272, rel=1e-5)


def discrete_policy():
    # actor: logits (0, log 3) for every observation: pi = (0.25, 0.75);
    # critics: Q1(s) = (s, 3 s), Q2(s) = (2 s, 2 s);
    # target critics: Q1'(s) = (s, s + 1), Q2'(s) = (2 s, 2): (2, 3) and (4, 2) at s = 2.
    return linear_policy(
        gym.spaces.Discrete(2),
        actor=([[0.0], [0.0]], [0.0, math.log(3.0)]),
        critics=[([[1.0], [3.0]], [0.0, 0.0]), ([[2.0], [2.0]], [0.0, 0.0])],
        targets=[([[1.0], [1.0]], [0.0, 1.0]), ([[2.0], [0.0]], [0.0, 2.0])],
    )


def discrete_batch(**extra):
    columns = {
        "obs": np.array([[1.0], [1.0]], np.float32),
        "new_obs": np.array([[2.0], [2.0]], np.float32),
        "actions": np.array([1, 0]),
        "rewards": np.array([1.0, -1.0], np.float32),
        "terminateds": np.array([False, True]),
        "truncateds": np.array([False, False]),
    }
    columns.update(extra)
    return SampleBatch(columns)


# Entropy of pi = (0.25, 0.75): H = 0.56233514; V(s') = min Q' - alpha log pi averaged
# under pi = 2 + 0.5 H = 2.28116757. Row 1: y = 1 + 0.5 * V = 2.14058379, Q1 = 3, Q2 = 2;
# row 2 is terminated: y = -1, Q1(s, 0) = 1, Q2(s, 0) = 2.
@pytest.mark.parametrize(
    ("extra", "critic_loss", "td"),
    [
        # 0.5 * mean(0.85941621^2, 2^2) + 0.5 * mean(0.14058379^2, 3^2)
        ({}, 3.43959001, [0.5, 2.5]),
        # a 2-step row bootstraps with 0.5^2: y = 1 + 0.25 * V = 1.57029189; the
        # terminated row has importance weight 0.5:
        # 0.5 * mean(1.42970811^2, 0.5 * 2^2) + 0.5 * mean(0.42970811^2, 0.5 * 3^2)
        (
            {"n_steps": np.array([2, 1]), "weights": np.array([1.0, 0.5], np.float32)},
            2.18217858,
            [0.92970811, 2.5],
        ),
    ],
    ids=["one-step", "n-step-and-importance-weights"],
)
def test_discrete_losses_by_hand(extra, critic_loss, td):
    loss, _ = discrete_policy().compute_loss(discrete_batch(**extra))
    assert value(loss.terms["critic_loss"]) == pytest.approx(critic_loss, rel=1e-5)
    np.testing.assert_allclose(loss.per_row["td_error"].numpy(), td, rtol=1e-5)
    # actor: sum pi (alpha log pi - min(Q1, Q2)) = -0.5 H - (0.25 * 1 + 0.75 * 2)
    assert value(loss.terms["actor_loss"]) == pytest.approx(-2.03116757, rel=1e-5)
    # alpha: -log(0.5) * (sum pi log pi + 0.98 log 2) = 0.69314718 * (0.67929019 - H)
    assert value(loss.terms["alpha_loss"]) == pytest.approx(0.08106293, rel=1e-5)
    assert value(loss.terms["entropy"]) == pytest.approx(0.56233514, rel=1e-5)


@pytest.mark.parametrize("make_policy", [continuous_policy, discrete_policy])
def test_each_loss_reaches_only_its_own_parameters(make_policy):
    policy = make_policy()
    batch = continuous_batch() if make_policy is continuous_policy else discrete_batch()
    loss, _ = policy.compute_loss(batch)
    groups = {
        "actor": list(policy.model.parameters()),
        "critics": list(policy.critics.parameters()),
        "alpha": [policy.log_alpha],
    }
    reaches = {"critic_loss": "critics", "actor_loss": "actor", "alpha_loss": "alpha"}
    for term, own in reaches.items():
        for name, parameters in groups.items():
            grads = torch.autograd.grad(
                loss.terms[term], parameters, retain_graph=True, allow_unused=True
            )
            reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            assert reached == (name == own), f"{term} reaches the {name}: {grads}"
    # the target critics take no gradient at all
    assert not any(p.requires_grad for p in policy.target_critics.parameters())


def test_one_step_learns_all_three_parts_with_their_own_learning_rates():
    rates = {"actor_learning_rate": 1e-3, "critic_learning_rate": 2e-3}
    policy = SACTorchPolicy(OBS, BOX, {"seed": 0, "optimization": rates})
    assert [group["lr"] for group in policy._optimizer.param_groups] == [1e-3, 2e-3, 3e-4]
    before = {
        "actor": [p.detach().clone() for p in policy.model.parameters()],
        "critics": [p.detach().clone() for p in policy.critics.parameters()],
        "targets": [p.detach().clone() for p in policy.target_critics.parameters()],
    }
    alpha_before = value(policy.log_alpha)
    result = policy.learn_on_batch(continuous_batch())
    stats = result["learner_stats"]
    assert {"critic_loss", "actor_loss", "alpha_loss", "alpha_value"} <= set(stats)
    after = {
        "actor": list(policy.model.parameters()),
        "critics": list(policy.critics.parameters()),
        "targets": list(policy.target_critics.parameters()),
    }
    # Adam's first step moves every parameter with a gradient by about its learning rate
    for name in ("actor", "critics"):
        assert any(not torch.equal(a, b) for a, b in zip(before[name], after[name])), name
    for a, b in zip(before["targets"], after["targets"]):
        torch.testing.assert_close(a, b)  # only update_target() moves the targets
    assert value(policy.log_alpha) == pytest.approx(alpha_before - 3e-4, rel=1e-3)


def test_grad_clip_clips_each_parameter_group():
    policy = SACTorchPolicy(OBS, BOX, {"seed": 0, "grad_clip": 1e-3})
    stats = policy.learn_on_batch(continuous_batch())["learner_stats"]
    groups = ("actor", "critic", "alpha")
    assert all(stats[f"{name}_grad_gnorm"] > 1e-3 for name in groups)
    for group in policy._optimizer.param_groups:  # the gradients of the step, clipped
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in group["params"]]))
        assert float(norm) <= 1e-3 * (1 + 1e-4)


def test_compute_and_apply_gradients_cover_the_critics_and_alpha():
    learner, worker = (SACTorchPolicy(OBS, BOX, {"seed": 1}) for _ in range(2))
    learner.learn_on_batch(continuous_batch())
    gradients, result = worker.compute_gradients(continuous_batch())
    assert len(gradients) == len(worker.learned_parameters())
    assert all(g is not None for g in gradients) and "critic_loss" in result["learner_stats"]
    worker.apply_gradients(gradients)
    for a, b in zip(learner.learned_parameters(), worker.learned_parameters()):
        torch.testing.assert_close(a, b)


def test_polyak_target_updates():
    policy = SACTorchPolicy(OBS, BOX, {"seed": 0, "tau": 0.1})
    critics = [p.detach().clone() for p in policy.critics.parameters()]
    targets = [p.detach().clone() for p in policy.target_critics.parameters()]
    for critic, target in zip(critics, targets):
        torch.testing.assert_close(critic, target)  # the targets start as copies
    with torch.no_grad():
        for parameter in policy.critics.parameters():
            parameter.add_(1.0)
    policy.update_target()  # tau from the config
    for critic, target, now in zip(critics, targets, policy.target_critics.parameters()):
        torch.testing.assert_close(now, 0.1 * (critic + 1.0) + 0.9 * target)
    policy.update_target(tau=1.0)
    for critic, now in zip(policy.critics.parameters(), policy.target_critics.parameters()):
        torch.testing.assert_close(now, critic)


def test_actions_in_the_bounds_deterministic_without_exploration():
    space = gym.spaces.Box(np.float32([-1.0, 0.0]), np.float32([3.0, 0.5]))
    policy = SACTorchPolicy(gym.spaces.Box(-10, 10, (3,), np.float32), space, {"seed": 0})
    obs = np.random.default_rng(0).normal(0, 5, (500, 3)).astype(np.float32)
    greedy, _, _ = policy.compute_actions(obs, explore=False)
    again, _, _ = policy.compute_actions(obs, explore=False)
    np.testing.assert_array_equal(greedy, again)
    with torch.no_grad():
        mean = policy.model({"obs": torch.as_tensor(obs)}, [], None)[0][:, :2]
    expected = space.low + (np.tanh(mean.numpy()) + 1) / 2 * (space.high - space.low)
    np.testing.assert_allclose(greedy, expected, rtol=1e-5, atol=1e-6)
    explored, _, extra = policy.compute_actions(obs)
    assert greedy.shape == explored.shape == (500, 2) and explored.dtype == np.float32
    for actions in (greedy, explored):
        assert (actions >= space.low).all() and (actions <= space.high).all()
    assert not np.allclose(explored, greedy) and np.isfinite(extra["action_logp"]).all()
    # the same seed samples the same actions
    twin = SACTorchPolicy(gym.spaces.Box(-10, 10, (3,), np.float32), space, {"seed": 0})
    np.testing.assert_array_equal(twin.compute_actions(obs)[0], explored)
    # logp of an action as sampled and as computed from the action agree
    logp = policy.compute_log_likelihoods(explored, obs)
    np.testing.assert_allclose(logp, extra["action_logp"], rtol=1e-3, atol=1e-3)


def test_discrete_actions_sampled_or_greedy():
    policy = SACTorchPolicy(OBS, gym.spaces.Discrete(3), {"seed": 0})
    obs = np.zeros((3000, 1), np.float32)
    greedy, _, _ = policy.compute_actions(obs, explore=False)
    assert len(set(greedy.tolist())) == 1
    explored, _, _ = policy.compute_actions(obs)
    assert set(explored.tolist()) == {0, 1, 2}  # all three, each with probability ~1/3


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (gym.spaces.MultiDiscrete([2, 3]), r"Box or Discrete action space, got MultiDiscrete"),
        (gym.spaces.Box(-np.inf, np.inf, (1,)), r"infinite bounds"),
    ],
)
def test_refuses_other_action_spaces_naming_them(space, message):
    with pytest.raises(ValueError, match=message):
        SACTorchPolicy(OBS, space, {})


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown optimization keys \['actor_lr'\]"):
        SACTrainer({"optimization": {"actor_lr": 1e-3}}, env="Pendulum-v1")
    with pytest.raises(ValueError, match=r"target_entropy must be a number or 'auto'"):
        SACTrainer({"target_entropy": "max"}, env="Pendulum-v1")


SMALL = {
    "learning_starts": 64,
    "buffer_size": 500,
    "train_batch_size": 32,
    "timesteps_per_iteration": 100,
    "policy_model_config": {"fcnet_hiddens": [16]},
    "q_model_config": {"fcnet_hiddens": [16]},
    # distinct rates, which a restore must keep
    "optimization": {"actor_learning_rate": 1e-3, "critic_learning_rate": 2e-3},
    "seed": 3,
}


def _learned_state(trainer):
    state = trainer.get_policy().get_state()
    return {
        **{f"actor/{k}": v for k, v in state["weights"].items()},
        **{f"critic/{k}": v for k, v in state["critic_weights"].items()},
        **{f"target/{k}": v for k, v in state["target_critic_weights"].items()},
        "log_alpha": state["log_alpha"],
    }


@pytest.mark.parametrize(
    ("env", "extra"),
    [
        ("Pendulum-v1", {"n_step": 3, "target_network_update_freq": 10}),
        ("CartPole-v1", {"prioritized_replay": True}),
    ],
    ids=["continuous-n-step", "discrete-prioritised"],
)
def test_restored_run_with_its_buffer_matches_the_uninterrupted_run(tmp_path, env, extra):
    config = {**SMALL, **extra}
    with SACTrainer(config, env=env) as trainer:
        straight = [trainer.train() for _ in range(4)]
        expected = _learned_state(trainer)
    with SACTrainer(config, env=env) as trainer:
        trainer.train()
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
    with SACTrainer(config, env=env) as trainer:
        trainer.restore(checkpoint)
        resumed = [trainer.train() for _ in range(2)]
        state = _learned_state(trainer)
        rates = [group["lr"] for group in trainer.get_policy()._optimizer.param_groups]
    assert rates == [1e-3, 2e-3, 3e-4]
    for a, b in zip(straight[2:], resumed):
        for key in ("timesteps_total", "episodes_total", "episode_reward_mean"):
            assert a[key] == b[key], key
        assert a["info"]["num_target_updates"] == b["info"]["num_target_updates"]
        assert a["info"]["num_steps_trained"] == b["info"]["num_steps_trained"]
    assert set(state) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


# A smaller, faster-learning setup than the defaults (RLlib's): 64-unit layers (a
# quarter of the compute per update) at learning rates 1e-3.
FAST = {
    "policy_model_config": {"fcnet_hiddens": [64, 64]},
    "q_model_config": {"fcnet_hiddens": [64, 64]},
    "optimization": {
        "actor_learning_rate": 1e-3,
        "critic_learning_rate": 1e-3,
        "entropy_learning_rate": 1e-3,
    },
    "learning_starts": 1000,
    # the mean return of the last 10 episodes (2,000 Pendulum steps)
    "metrics_smoothing_episodes": 10,
}


def _train_until(trainer, reward, max_steps):
    result = {"timesteps_total": 0, "episode_reward_mean": float("nan")}
    while result["timesteps_total"] < max_steps:
        result = trainer.train()
        if result["episode_reward_mean"] >= reward:
            break
    return result


def test_learns_pendulum_to_minus_300_within_10k_steps(one_torch_thread):
    # The target. About 6,000 steps and 20 s on one core.
    config = {**FAST, "seed": 0, "timesteps_per_iteration": 200}
    with SACTrainer(config, env="Pendulum-v1") as trainer:
        result = _train_until(trainer, -300, 10_000)
    assert result["episode_reward_mean"] >= -300, result["episode_reward_mean"]


@pytest.mark.slow
def test_learns_pendulum_to_minus_200_within_20k_steps(one_torch_thread):
    config = {**FAST, "seed": 1, "timesteps_per_iteration": 200}
    with SACTrainer(config, env="Pendulum-v1") as trainer:
        result = _train_until(trainer, -200, 20_000)
    assert result["episode_reward_mean"] >= -200, result["episode_reward_mean"]


def test_discrete_sac_learns_cartpole(one_torch_thread):
    # A random policy averages about 22 on CartPole. The target entropy is a number:
    # "auto" (RLlib's 0.98 log 2 = 0.68, near the most a two-action policy has) keeps
    # the policy near uniform and lets alpha grow without bound on this task.
    config = {**FAST, "seed": 0, "timesteps_per_iteration": 500, "target_entropy": 0.3}
    with SACTrainer(config, env="CartPole-v1") as trainer:
        result = _train_until(trainer, 100, 10_000)
        stats = result["info"]["learner"]["default_policy"]
    assert result["episode_reward_mean"] >= 100, result["episode_reward_mean"]
    assert all(np.isfinite(stats[k]) for k in ("critic_loss", "actor_loss", "alpha_loss"))
