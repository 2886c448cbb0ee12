"""IMPALA and APPO: the losses on a tiny batch, learning, checkpoints, config errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from training_helpers import train_until

from hpcrl.algorithms.appo import APPOTorchPolicy, APPOTrainer
from hpcrl.algorithms.impala import IMPALATorchPolicy, IMPALATrainer
from hpcrl.evaluation.vtrace import vtrace
from hpcrl.policy.sample_batch import SampleBatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACES = (gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2))
SMALL = {"model": {"fcnet_hiddens": [8]}, "seed": 0}


def tiny_batch(policy) -> SampleBatch:
    """Two trajectories: episode 1 of 3 steps, terminated; episode 2 of 2 steps, cut."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 3)).astype(np.float32)
    next_obs = rng.normal(size=(5, 3)).astype(np.float32)
    actions = np.array([0, 1, 1, 0, 1])
    logp = np.log(rng.uniform(0.2, 0.8, size=5)).astype(np.float32)
    return SampleBatch(
        {
            SampleBatch.OBS: obs,
            SampleBatch.NEXT_OBS: next_obs,
            SampleBatch.ACTIONS: actions,
            SampleBatch.REWARDS: np.array([1.0, 0.5, 2.0, -1.0, 1.0], np.float32),
            SampleBatch.TERMINATEDS: np.array([0, 0, 1, 0, 0], bool),
            SampleBatch.TRUNCATEDS: np.zeros(5, bool),
            SampleBatch.EPS_ID: np.array([1, 1, 1, 2, 2]),
            SampleBatch.ACTION_LOGP: logp,
        }
    )


def expected_impala_terms(policy, batch):
    """The loss worked from V-trace per trajectory, each as its own [T, 1] sequence."""
    model = policy.model
    with torch.no_grad():
        obs = torch.as_tensor(batch[SampleBatch.OBS])
        logits, _ = model({SampleBatch.OBS: obs}, [], None)
        values = model.value_function()
        model({SampleBatch.OBS: torch.as_tensor(batch[SampleBatch.NEXT_OBS])}, [], None)
        next_obs_values = model.value_function()
    logp = torch.log_softmax(logits, 1)[torch.arange(5), torch.as_tensor(batch["actions"])]
    gamma = policy.config["gamma"]
    vs, adv = torch.zeros(5), torch.zeros(5)
    for start, end in ((0, 3), (3, 5)):
        rows = slice(start, end)
        nxt = torch.cat([values[start + 1 : end], next_obs_values[end - 1 : end]])
        out = vtrace(
            (logp[rows] - torch.as_tensor(batch["action_logp"][rows]))[:, None],
            (gamma * (1 - torch.as_tensor(batch["terminateds"][rows]).float()))[:, None],
            torch.as_tensor(batch["rewards"][rows])[:, None],
            values[rows][:, None],
            nxt[:, None],
        )
        vs[rows], adv[rows] = out.vs[:, 0], out.pg_advantages[:, 0]
    return logp, values, vs, adv


def test_impala_loss_by_hand_on_two_trajectories():
    policy = IMPALATorchPolicy(*SPACES, SMALL)
    batch = tiny_batch(policy)
    logp, values, vs, adv = expected_impala_terms(policy, batch)
    stats = policy.learn_on_batch(batch)["learner_stats"]
    assert stats["policy_loss"] == pytest.approx(float(-(logp * adv).sum() / 5), rel=1e-5)
    assert stats["vf_loss"] == pytest.approx(float(0.5 * ((values - vs) ** 2).sum() / 5), rel=1e-5)


def test_appo_vtrace_ratio_is_against_the_target_network():
    config = {**SMALL, "vtrace": True, "target_update_frequency": 2}
    policy = APPOTorchPolicy(*SPACES, config)
    batch = tiny_batch(policy)
    target_before = {k: v.clone() for k, v in policy.target_model.state_dict().items()}
    policy.learn_on_batch(batch)
    # after one update the target network is still the initial one (refresh every 2)
    for key, value in policy.target_model.state_dict().items():
        torch.testing.assert_close(value, target_before[key])
    stats = policy.learn_on_batch(batch)["learner_stats"]
    assert stats["kl"] > 0  # the policy moved away from the target during the 2nd update
    for key, value in policy.target_model.state_dict().items():
        torch.testing.assert_close(value, policy.model.state_dict()[key])


def test_appo_kl_loss_adapts_its_coefficient():
    policy = APPOTorchPolicy(*SPACES, {**SMALL, "vtrace": True, "use_kl_loss": True})
    batch = tiny_batch(policy)
    policy.learn_on_batch(batch)  # kl 0 against a fresh target: coefficient halves
    assert policy.kl_coeff == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("trainer_class", "extra", "budget"),
    [
        (IMPALATrainer, {}, 500_000),
        (APPOTrainer, {"vtrace": True}, 200_000),
        (APPOTrainer, {"vtrace": False}, 200_000),
    ],
    ids=["IMPALA", "APPO-vtrace", "APPO-GAE"],
)
def test_learns_cartpole_v0_with_two_workers(trainer_class, extra, budget):
    config = {"num_workers": 2, "min_iter_time_s": 2.0, "seed": 1, **extra}
    with trainer_class(config, env="CartPole-v0") as trainer:
        result = train_until(trainer, 150, budget)
    assert result["episode_reward_mean"] >= 150, (
        f"{result['episode_reward_mean']:.1f} after {result['timesteps_total']} steps"
    )
    info = result["info"]
    assert info["num_steps_trained"] <= info["num_steps_sampled"]
    assert 0 <= info["policy_lag_mean"] <= 4


def test_impala_learns_with_two_data_parallel_learners():
    """Two gloo learner processes, one shard of each train batch each."""
    config = {"num_workers": 2, "num_learners": 2, "min_iter_time_s": 2.0, "seed": 1}
    with IMPALATrainer(config, env="CartPole-v0") as trainer:
        result = train_until(trainer, 150, 500_000)
    info = result["info"]
    assert info["num_learners"] == 2 and info["learner_backend"] == "gloo"
    assert result["episode_reward_mean"] >= 150, (
        f"{result['episode_reward_mean']:.1f} after {result['timesteps_total']} steps"
    )


def test_two_learners_checkpoint_the_learners_policy_state_and_resume(tmp_path):
    config = {
        **SMALL,
        "num_workers": 2,
        "num_learners": 2,
        "vtrace": True,
        "train_batch_size": 100,
        "min_iter_time_s": 0.0,
        "timesteps_per_iteration": 400,
    }
    with APPOTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        path = trainer.save(str(tmp_path))
        saved = trainer.get_policy().get_state()
        [learner_state] = trainer.optimizer.learner.group.call("get_policy_state", first=True)
    # the driver's policy, which the checkpoint holds, is learner 0's: target network too
    learned = learner_state["default_policy"]
    assert saved["num_updates"] == learned["num_updates"] > 0
    for key, value in learned["target_weights"].items():
        np.testing.assert_array_equal(saved["target_weights"][key], value)
    with APPOTrainer(config, env="CartPole-v1") as restored:
        restored.restore(path)
        result = restored.train()
        [states] = restored.optimizer.learner.group.call("get_policy_state", first=True)
    # the learners went on from the restored state, not from a fresh policy
    assert states["default_policy"]["num_updates"] > saved["num_updates"]
    assert result["info"]["num_learners"] == 2


def test_checkpoint_resumes_weights_target_and_counters(tmp_path):
    config = {
        **SMALL,
        "num_workers": 2,
        "vtrace": True,
        "train_batch_size": 100,
        "min_iter_time_s": 0.0,
        "timesteps_per_iteration": 400,
    }
    with APPOTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        path = trainer.save(str(tmp_path))
        saved = trainer.get_policy().get_state()
        counters = trainer.optimizer.save()
    with APPOTrainer(config, env="CartPole-v1") as restored:
        restored.restore(path)
        state = restored.get_policy().get_state()
        assert restored.optimizer.save() == counters
        assert state["num_updates"] == saved["num_updates"] > 0
        for key, value in saved["target_weights"].items():
            np.testing.assert_array_equal(state["target_weights"][key], value)
        result = restored.train()
    assert result["timesteps_total"] > counters["num_steps_sampled"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"num_learners": 2, "minibatch_buffer_size": 2}, "minibatch_buffer_size=2 needs the"),
        ({"batch_mode": "complete_episodes"}, "need batch_mode 'truncate_episodes'"),
        ({"opt_type": "sgd"}, "opt_type must be 'adam' or 'rmsprop', got 'sgd'"),
        ({"replay_proportion": 0.5}, "needs replay_buffer_num_slots >= 1"),
    ],
)
def test_bad_config_is_named(extra, match):
    with pytest.raises(ValueError, match=match):
        IMPALATrainer({**SMALL, "num_workers": 0, **extra}, env="CartPole-v1")


def test_rmsprop_and_multi_agent_policies_train():
    from hpcrl.env.multi_agent_env import make_multi_agent

    env = make_multi_agent("CartPole-v1")
    config = {
        **SMALL,
        "num_workers": 1,
        "opt_type": "rmsprop",
        "train_batch_size": 100,
        "min_iter_time_s": 0.0,
        "timesteps_per_iteration": 300,
        "multiagent": {
            "policies": ["a", "b"],
            "policy_mapping_fn": lambda agent_id, *args, **kwargs: "ab"[agent_id % 2],
        },
        "env_config": {"num_agents": 2},
    }
    with IMPALATrainer(config, env=env) as trainer:
        assert isinstance(trainer.get_policy("a")._optimizer, torch.optim.RMSprop)
        result = trainer.train()
    assert set(result["info"]["learner"]) == {"a", "b"}


def test_sigusr1_checkpoints_and_the_resumed_run_goes_on(tmp_path):
    import os
    import signal

    from hpcrl.tune.experiment import Experiment
    from hpcrl.tune.preemption import TrialPreempted

    config = {
        **SMALL,
        "env": "CartPole-v1",
        "num_workers": 2,
        "train_batch_size": 100,
        "min_iter_time_s": 0.0,
        "timesteps_per_iteration": 300,
    }

    def signal_at_one(result):
        if result["training_iteration"] == 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    def experiment(**kwargs):
        stop = {"training_iteration": 3}
        return Experiment("IMPALA", config, stop, local_dir=str(tmp_path), verbose=0, **kwargs)

    with pytest.raises(TrialPreempted, match="SIGUSR1 after iteration 1"):
        experiment(on_result=signal_at_one).run()
    resumed = experiment(resume=True)
    assert resumed.trainer.iteration == 1
    steps = resumed.trainer.optimizer.num_steps_sampled
    updates = resumed.trainer.optimizer.num_learner_updates
    assert steps >= 300 and updates >= 1
    result = resumed.run()
    assert result["training_iteration"] == 3 and result["timesteps_total"] >= steps + 600
    assert result["info"]["num_learner_updates"] > updates
