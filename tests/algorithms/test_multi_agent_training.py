"""Training several policies at once: which policies learn, per-policy stats, metrics
and KL coefficients, per-row loss outputs, exact resume and HDF5 with every policy."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from hpcrl.algorithms.a2c import A2CTrainer
from hpcrl.algorithms.a3c import A3CTrainer
from hpcrl.algorithms.bc import BCTrainer
from hpcrl.algorithms.pg import PGTorchPolicy, PGTrainer
from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.env.multi_agent_env import make_multi_agent
from hpcrl.env.registry import register_env
from hpcrl.io.batch_reader import BatchReader
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy import Policy
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch

MultiAgentCartPole = make_multi_agent("CartPole-v1")
register_env("multi_cartpole", lambda config: MultiAgentCartPole({"num_agents": 4, **config}))


def by_parity(agent_id, episode=None, worker=None, **kwargs):
    return "even" if agent_id % 2 == 0 else "odd"


class Scripted(Policy):
    """Always pushes left; no weights, no learning."""

    def compute_actions(self, obs_batch, state_batches=None, **kwargs):
        return np.zeros(len(obs_batch), np.int64), [], {}


def config(**extra):
    return {
        "env": "multi_cartpole",
        "model": {"fcnet_hiddens": [16]},
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 20,
        "train_batch_size": 80,
        "seed": 5,
        "multiagent": {"policies": ["even", "odd"], "policy_mapping_fn": by_parity},
        **extra,
    }


PPO_EXTRA = {"sgd_minibatch_size": 40, "num_sgd_iter": 2}


def weights_of(trainer, pid):
    return {k: v.copy() for k, v in trainer.get_policy(pid).get_weights().items()}


def test_only_policies_to_train_learn_and_frozen_ones_keep_their_weights_bit_for_bit():
    multiagent = {
        "policies": {"even": None, "odd": None, "left": (Scripted, None, None, {})},
        "policy_mapping_fn": lambda aid, *a, **k: ["even", "odd", "left", "even"][aid],
        "policies_to_train": ["even"],
    }
    with PPOTrainer(config(multiagent=multiagent, **PPO_EXTRA)) as trainer:
        before = {pid: weights_of(trainer, pid) for pid in ("even", "odd")}
        for _ in range(2):
            result = trainer.train()
        assert sorted(result["info"]["learner"]) == ["even"]
        for key, value in before["odd"].items():
            np.testing.assert_array_equal(value, trainer.get_policy("odd").get_weights()[key])
        assert any(
            not np.array_equal(v, trainer.get_policy("even").get_weights()[k])
            for k, v in before["even"].items()
        )
        assert trainer.get_policy("left").get_weights() == {}
        assert set(result["policy_reward_mean"]) == {"even", "odd", "left"}
        # the remote-free local worker and the driver hold the same frozen weights
        assert trainer.get_weights()["odd"].keys() == before["odd"].keys()


def test_ppo_adapts_each_policy_kl_coefficient_and_reports_stats_per_policy():
    with PPOTrainer(config(**PPO_EXTRA, multiagent={
        "policies": {"even": None, "odd": (None, None, None, {"kl_target": 1e-6})},
        "policy_mapping_fn": by_parity,
    })) as trainer:  # fmt: skip
        for _ in range(2):
            result = trainer.train()
        learner = result["info"]["learner"]
        assert sorted(learner) == ["even", "odd"]
        for pid in ("even", "odd"):
            assert {"kl", "policy_loss", "vf_loss", "cur_kl_coeff"} <= set(learner[pid])
        # a KL target no step can stay under raises that policy's coefficient alone
        odd, even = trainer.get_policy("odd").kl_coeff, trainer.get_policy("even").kl_coeff
        assert odd > 0.2 and odd != even
        for stat in ("mean", "min", "max"):
            assert sorted(result[f"policy_reward_{stat}"]) == ["even", "odd"]
        # an episode's return is the sum of its four agents' returns
        assert result["episode_reward_mean"] > result["policy_reward_mean"]["even"]


@pytest.mark.parametrize("trainer_class", [PGTrainer, A2CTrainer])
def test_pg_and_a2c_train_two_policies(trainer_class):
    with trainer_class(config()) as trainer:
        result = trainer.train()
        assert sorted(result["info"]["learner"]) == ["even", "odd"]
        assert result["timesteps_total"] >= 80


def test_a3c_applies_each_policy_gradients_from_remote_workers():
    with A3CTrainer(config(num_workers=2, grads_per_step=4)) as trainer:
        even = weights_of(trainer, "even")
        result = trainer.train()
        assert sorted(result["info"]["learner"]) == ["even", "odd"]
        assert not all(np.array_equal(v, trainer.get_weights()["even"][k]) for k, v in even.items())


def test_agent_steps_are_counted_when_asked():
    multiagent = {"policies": ["even", "odd"], "policy_mapping_fn": by_parity}
    with PGTrainer(config(multiagent={**multiagent, "count_steps_by": "agent_steps"})) as trainer:
        result = trainer.train()
    # 2 copies x 4 agents act at each step until agents leave: 80 agent steps come
    # from at least 10 env steps of the 20-step fragments, not 80 env steps
    assert result["timesteps_this_iter"] >= 80
    with PGTrainer(config(multiagent=multiagent)) as trainer:
        env_counted = trainer.train()
    assert env_counted["timesteps_this_iter"] == 80


def test_recorded_multi_agent_batches_hold_every_policy_and_train_bc(tmp_path):
    with PGTrainer(config(output=str(tmp_path))) as trainer:
        trainer.train()
    reader = BatchReader(str(tmp_path))
    assert sorted(reader.spaces()) == ["even", "odd"]
    batch = next(iter(reader))
    assert sorted(batch.policy_batches) == ["even", "odd"]
    reader.close()
    bc_config = config(input=str(tmp_path), evaluation_interval=0, train_batch_size=40)
    bc_config.pop("env")
    with BCTrainer(bc_config) as bc:
        result = bc.train()
    assert sorted(result["info"]["learner"]) == ["even", "odd"]


class RowLossPolicy(PGTorchPolicy):
    """PG whose loss also returns a per-row output: the row's ``t`` times 10."""

    def loss(self, model, dist_class, train_batch):
        out = super().loss(model, dist_class, train_batch)
        return LossOutput(out.total, out.terms, {"row_tag": train_batch[SampleBatch.T] * 10})


@pytest.mark.parametrize("num_learners", [1, 2])
def test_per_row_loss_outputs_reach_the_optimizer_in_batch_order(num_learners, monkeypatch):
    seen = {}
    trainer_class = build_trainer("RowPG", RowLossPolicy, default_config=PGTrainer.DEFAULT_CONFIG)
    extra = {"num_learners": num_learners, "num_sgd_iter": 1}
    trainer_class = trainer_class.with_updates(
        default_config={**PGTrainer.DEFAULT_CONFIG, "num_sgd_iter": 1, "sgd_minibatch_size": 20},
        make_policy_optimizer=lambda workers, cfg: _sgd(workers, cfg),
    )
    with trainer_class(config(**extra, sgd_minibatch_size=20)) as trainer:
        optimizer = trainer.optimizer
        original = optimizer.learn_on_samples

        def spy(batches):
            fetches = original(batches)
            seen.update({pid: (batches[pid], fetches[pid]) for pid in batches})
            return fetches

        monkeypatch.setattr(optimizer, "learn_on_samples", spy)
        trainer.train()
    for _pid, (batch, fetch) in seen.items():
        # shuffled minibatches (and learners' shards) come back in the batch's row order
        np.testing.assert_array_equal(fetch["row_tag"], batch[SampleBatch.T] * 10)
    assert sorted(seen) == ["even", "odd"]


def _sgd(workers, cfg):
    from hpcrl.algorithms.trainer import make_sync_optimizer

    return make_sync_optimizer(workers, cfg, num_sgd_iter=1, sgd_minibatch_size=20)


def test_multi_agent_run_restored_from_a_checkpoint_matches_the_uninterrupted_run(tmp_path):
    cfg = config(**PPO_EXTRA, num_workers=1)
    with PPOTrainer(cfg) as trainer:
        straight = [trainer.train() for _ in range(4)]
        expected = trainer.get_weights()
    with PPOTrainer(cfg) as trainer:
        for _ in range(2):
            trainer.train()
        checkpoint = trainer.save(str(tmp_path))
    with open(os.path.join(checkpoint, "checkpoint.json")) as f:
        meta = json.load(f)
    assert meta["policies"] == ["even", "odd"]
    with PPOTrainer(cfg) as trainer:
        trainer.restore(checkpoint)
        resumed = [trainer.train() for _ in range(2)]
        weights = trainer.get_weights()
    for a, b in zip(straight[2:], resumed):
        for key in ("timesteps_total", "episodes_total", "episode_reward_mean"):
            assert a[key] == b[key], key
        assert a["policy_reward_mean"] == b["policy_reward_mean"]
    for pid in ("even", "odd"):
        for key, value in expected[pid].items():
            np.testing.assert_array_equal(value, weights[pid][key], err_msg=f"{pid}/{key}")


def test_checkpoint_json_holds_metadata_only(tmp_path):
    from hpcrl.learners.learner_group import uses_learner_group

    cfg = config(**PPO_EXTRA, num_learners=2)
    assert uses_learner_group(cfg)
    with PPOTrainer(cfg) as trainer:
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
        trained = trainer.optimizer.num_steps_trained  # agent rows x epochs
    with open(os.path.join(checkpoint, "checkpoint.json")) as f:
        meta = json.load(f)
    assert meta["counters"] == {"num_steps_sampled": 80, "num_steps_trained": trained}

    def largest_list(value):
        if isinstance(value, dict):
            return max([0, *(largest_list(v) for v in value.values())])
        if isinstance(value, list):
            return max([len(value), *(largest_list(v) for v in value)])
        return 0

    # no weights, optimizer moments or generator states: only short lists (config)
    assert largest_list(meta) < 16


def test_build_trainer_without_a_default_config_uses_the_common_one():
    MyTrainer = build_trainer(name="MyTrainer", default_policy=PGTorchPolicy)
    with MyTrainer(
        {"rollout_fragment_length": 50, "train_batch_size": 100}, env="CartPole-v1"
    ) as t:
        result = t.train()
    assert result["timesteps_total"] == 100
    assert "policy_loss" in result["info"]["learner"]["default_policy"]


def test_a_from_scratch_policy_returning_a_list_of_actions_trains():
    class RandomPolicy(Policy):
        def compute_actions(self, obs_batch, state_batches=None, **kwargs):
            return [self.action_space.sample() for _ in obs_batch], [], {}

        def learn_on_batch(self, samples):
            return {"rows": samples.count}

    RandomTrainer = build_trainer("RandomTrainer", RandomPolicy)
    with RandomTrainer(
        {"train_batch_size": 100, "rollout_fragment_length": 100}, "CartPole-v1"
    ) as t:
        result = t.train()
    assert result["info"]["learner"]["default_policy"] == {"rows": 100}


def test_the_mpi_backend_does_not_import_the_experiment_layer():
    import subprocess
    import sys

    code = "import sys, hpcrl.backends.mpi; print(sorted(m for m in sys.modules if 'tune' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loss_outputs_of_built_policies_carry_their_terms():
    Built = build_torch_policy(
        "Built",
        loss_fn=lambda policy, model, dist, batch: LossOutput(
            torch.zeros((), requires_grad=True), terms={"zero": torch.tensor(0.0)}
        ),
    )
    assert Built.__name__ == "Built"


def test_evaluation_plays_every_policy_and_reports_each():
    with PGTrainer(config(evaluation_interval=1, evaluation_num_episodes=2)) as trainer:
        evaluation = trainer.train()["evaluation"]
    assert evaluation["episodes"] == 2
    assert set(evaluation["policy_reward_mean"]) == {"even", "odd"}
    # an episode's return sums its four agents' returns
    assert evaluation["episode_reward_mean"] >= 4 * 8
