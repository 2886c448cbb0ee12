from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.algorithms.pg import PGTorchPolicy, pg_loss, postprocess_returns
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.models import Categorical, ModelCatalog
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy

OBS = gym.spaces.Box(-1, 1, (4,), np.float32)
ACT = gym.spaces.Discrete(2)
CONFIG = {"model": {"fcnet_hiddens": [16]}, "seed": 0, "lr": 0.01}


def obs_batch(n=5, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 4)).astype(np.float32)


def batch_from(policy, n=32):
    worker = RolloutWorker(
        "CartPole-v1",
        type(policy),
        {**policy.config, "num_envs_per_worker": 2, "rollout_fragment_length": n // 2},
    )
    worker.get_policy().set_weights(policy.get_weights())
    return worker.sample()


def test_compute_actions_and_extra_outputs():
    policy = A2CTorchPolicy(OBS, ACT, CONFIG)
    actions, state, extra = policy.compute_actions(obs_batch())
    assert actions.shape == (5,) and state == []
    assert set(extra) == {"action_logp", "action_dist_inputs", "vf_preds"}
    assert extra["vf_preds"].shape == (5,) and extra["action_dist_inputs"].shape == (5, 2)
    same = policy.compute_actions_from_input_dict({"obs": obs_batch()}, explore=False)
    greedy = extra["action_dist_inputs"].argmax(axis=1)
    np.testing.assert_array_equal(same[0], greedy)
    action, _, single_extra = policy.compute_single_action(obs_batch()[0], explore=False)
    assert action == greedy[0] and single_extra["vf_preds"].shape == ()


def test_log_likelihoods_match_sampled_logp():
    policy = PGTorchPolicy(OBS, ACT, CONFIG)
    actions, _, extra = policy.compute_actions(obs_batch(64))
    logp = policy.compute_log_likelihoods(actions, obs_batch(64))
    np.testing.assert_allclose(logp, extra["action_logp"], rtol=1e-5, atol=1e-6)


def test_weights_and_state_round_trip():
    a, b = PGTorchPolicy(OBS, ACT, CONFIG), PGTorchPolicy(OBS, ACT, {**CONFIG, "seed": 1})
    batch = batch_from(a)
    a.learn_on_batch(batch)
    b.set_state(a.get_state())
    for key, value in a.get_weights().items():
        np.testing.assert_array_equal(value, b.get_weights()[key])
    # the optimizer state came along: the next update is the same on both
    a.learn_on_batch(batch)
    b.learn_on_batch(batch)
    for key, value in a.get_weights().items():
        np.testing.assert_allclose(value, b.get_weights()[key], rtol=1e-6)
    with pytest.raises(ValueError, match="missing"):
        b.set_weights({})


def test_state_without_optimizer_and_a_partial_state_leave_the_rest_alone():
    policy = PGTorchPolicy(OBS, ACT, CONFIG)
    policy.learn_on_batch(batch_from(policy))
    policy.global_timestep = 1234
    state = policy.get_state(include_optimizer=False)
    assert "optimizer_state" not in state and state["global_timestep"] == 1234
    weights = policy.get_weights()
    policy.set_state({"optimizer_state": policy.get_state()["optimizer_state"]})
    assert policy.global_timestep == 1234
    for key, value in weights.items():
        np.testing.assert_array_equal(value, policy.get_weights()[key])


def test_a_generator_state_from_another_device_type_seeds_the_generator():
    """A CUDA generator's state (16 bytes: seed and offset) cannot set a CPU generator
    (5,056 bytes) or the reverse: the state seeds it instead, the same way each time."""
    a, b = PGTorchPolicy(OBS, ACT, CONFIG), PGTorchPolicy(OBS, ACT, {**CONFIG, "seed": 1})
    foreign = {"torch_generator": np.arange(16, dtype=np.uint8)}
    a.set_state(foreign)
    b.set_state(foreign)
    first = a.compute_actions(obs_batch(64))[0]
    np.testing.assert_array_equal(first, b.compute_actions(obs_batch(64))[0])
    a.set_state({"torch_generator": np.arange(1, 17, dtype=np.uint8)})
    b.set_state(foreign)
    assert not np.array_equal(
        a.compute_actions(obs_batch(64))[0], b.compute_actions(obs_batch(64))[0]
    )
    # a state of its own kind still continues the stream exactly
    b.set_state(a.get_state())
    np.testing.assert_array_equal(
        a.compute_actions(obs_batch(64))[0], b.compute_actions(obs_batch(64))[0]
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_to_device_moves_the_model_optimizer_and_generator_and_back():
    a, b = PGTorchPolicy(OBS, ACT, CONFIG), PGTorchPolicy(OBS, ACT, CONFIG)
    batch = batch_from(a)
    a.learn_on_batch(batch)
    b.learn_on_batch(batch)
    b.to_device("cuda:0")
    assert b.device.type == "cuda" and next(b.model.parameters()).is_cuda
    assert b.torch_generator.device.type == "cuda"
    assert b.compute_actions(obs_batch())[0].shape == (5,)
    # Adam's moments came along: the next update is the one on the CPU
    a.learn_on_batch(batch)
    b.learn_on_batch(batch)
    for key, value in a.get_weights().items():
        np.testing.assert_allclose(value, b.get_weights()[key], rtol=1e-4, atol=1e-6)
    b.to_device("cpu")
    assert next(b.model.parameters()).device.type == "cpu"
    a.set_state(b.get_state())


def test_gradients_applied_elsewhere_equal_learn_on_batch():
    a = PGTorchPolicy(OBS, ACT, CONFIG)
    b = PGTorchPolicy(OBS, ACT, CONFIG)
    c = PGTorchPolicy(OBS, ACT, CONFIG)
    batch = batch_from(a)
    a.learn_on_batch(batch)
    gradients, result = b.compute_gradients(batch)
    assert "policy_loss" in result["learner_stats"]
    # the value branch has no gradient under a policy-only loss
    assert any(isinstance(g, np.ndarray) for g in gradients) and any(g is None for g in gradients)
    c.apply_gradients(gradients)
    for key, value in a.get_weights().items():
        np.testing.assert_allclose(value, c.get_weights()[key], rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_export_model_as_torchscript(tmp_path):
    policy = A2CTorchPolicy(OBS, ACT, CONFIG)
    path = policy.export_model(str(tmp_path))
    module = torch.jit.load(path)
    logits, value = module(torch.as_tensor(obs_batch()))
    _, _, extra = policy.compute_actions(obs_batch())
    np.testing.assert_allclose(logits.detach().numpy(), extra["action_dist_inputs"], rtol=1e-5)
    np.testing.assert_allclose(value.detach().numpy(), extra["vf_preds"], rtol=1e-5)


def test_global_vars_apply_exploration_state():
    policy = PGTorchPolicy(OBS, ACT, CONFIG)
    policy.on_global_var_update({"timestep": 1234})
    assert policy.global_timestep == 1234 and policy.get_state()["global_timestep"] == 1234
    assert policy.apply(lambda p, x: (p is policy, x), 3) == (True, 3)
    assert policy.get_exploration_state() == {}
    assert not policy.is_recurrent() and policy.num_state_tensors() == 0


def test_with_updates_replaces_the_loss():
    calls = []

    def counting_loss(policy, model, dist_class, batch):
        calls.append(batch.count)
        return pg_loss(policy, model, dist_class, batch)

    Counting = PGTorchPolicy.with_updates(name="CountingPG", loss_fn=counting_loss)
    policy = Counting(OBS, ACT, CONFIG)
    policy.learn_on_batch(batch_from(policy))
    assert calls == [32] and type(policy).__name__ == "CountingPG"
    with pytest.raises(TypeError, match="unknown arguments"):
        PGTorchPolicy.with_updates(los_fn=counting_loss)


def test_build_torch_policy_calls_every_hook():
    seen = []

    def make_model(policy, obs_space, action_space, config):
        seen.append("make_model")
        return ModelCatalog.get_model(obs_space, action_space, 2, config["model"])

    def optimizer_fn(policy, config):
        seen.append("optimizer_fn")
        return torch.optim.SGD(policy.model.parameters(), lr=config["lr"])

    def action_distribution_fn(policy, model, input_dict, state, seq_lens, explore, timestep):
        seen.append("action_distribution_fn")
        logits, state_out = model(input_dict, state, seq_lens)
        return logits, Categorical, state_out

    def extra_grad_process_fn(policy, optimizer, loss):
        seen.append("extra_grad_process_fn")
        return {"custom_grad_stat": 1.0}

    Hooked = build_torch_policy(
        "Hooked",
        loss_fn=pg_loss,
        postprocess_fn=postprocess_returns,
        before_init=lambda p, o, a, c: seen.append("before_init"),
        after_init=lambda p, o, a, c: seen.append("after_init"),
        before_loss_init=lambda p, o, a, c: seen.append("before_loss_init"),
        make_model=make_model,
        optimizer_fn=optimizer_fn,
        action_distribution_fn=action_distribution_fn,
        extra_grad_process_fn=extra_grad_process_fn,
        stats_fn=lambda p, batch: {"rows": batch.count},
        get_default_config=lambda: {"lr": 0.5},
    )
    policy = Hooked(OBS, ACT, {"model": {"fcnet_hiddens": [8]}})
    assert seen == ["before_init", "make_model", "before_loss_init", "optimizer_fn", "after_init"]
    assert isinstance(policy._optimizer, torch.optim.SGD) and policy.config["lr"] == 0.5
    policy.compute_actions(obs_batch())
    batch = batch_from(policy, 8)
    stats = policy.learn_on_batch(batch)["learner_stats"]
    assert stats["rows"] == 8 and stats["custom_grad_stat"] == 1.0
    assert "action_distribution_fn" in seen and "extra_grad_process_fn" in seen


def test_action_sampler_fn_replaces_sampling():
    def sampler(policy, model, input_dict, state, explore, timestep):
        n = input_dict["obs"].shape[0]
        return torch.ones(n, dtype=torch.int64), None, state

    Ones = PGTorchPolicy.with_updates(name="Ones", action_sampler_fn=sampler)
    actions, _, extra = Ones(OBS, ACT, CONFIG).compute_actions(obs_batch())
    assert actions.tolist() == [1] * 5 and "action_logp" not in extra


def test_multidiscrete_and_box_actions_through_a_worker():
    for space in (gym.spaces.MultiDiscrete([3, 2]), gym.spaces.Box(-2, 2, (2,), np.float32)):
        policy = PGTorchPolicy(OBS, space, CONFIG)
        actions, _, extra = policy.compute_actions(obs_batch())
        assert actions.shape == (5, 2)
        logp = policy.compute_log_likelihoods(actions, obs_batch())
        np.testing.assert_allclose(logp, extra["action_logp"], rtol=1e-4, atol=1e-5)


def test_per_row_outputs_of_a_loss_come_back_from_learn_on_batch():
    def loss_keeping_row_errors(policy, model, dist_class, batch):
        out = pg_loss(policy, model, dist_class, batch)
        # RLlib's way: the loss keeps a per-row tensor on the policy ...
        policy.td_error = batch["advantages"] * 2
        # ... hpcrl's way: the loss returns it
        return LossOutput(out.total, out.terms, per_row={"row_loss": batch["advantages"] + 1})

    Fetching = build_torch_policy(
        "Fetching",
        loss_fn=loss_keeping_row_errors,
        postprocess_fn=postprocess_returns,
        extra_learn_fetches_fn=lambda policy: {"td_error": policy.td_error},
    )
    policy = Fetching(OBS, ACT, CONFIG)
    batch = batch_from(policy, 8)
    result = policy.learn_on_batch(batch)
    np.testing.assert_allclose(result["td_error"], batch["advantages"] * 2)
    np.testing.assert_allclose(result["row_loss"], batch["advantages"] + 1)
    _, from_gradients = policy.compute_gradients(batch)
    assert sorted(from_gradients) == ["learner_stats", "row_loss", "td_error"]
