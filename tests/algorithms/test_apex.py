"""APEX and APEX_DDPG on the local backend: worker epsilons, checkpoints, errors.

Their learning tests run the tuned files under mpiexec (tests/mpi/test_apex_mpi.py),
where sampling, replay and learning do not share the driver's process.
"""

from __future__ import annotations

import os

import pytest

from hpcrl.algorithms.apex import ApexTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_each_remote_worker_keeps_its_ape_x_epsilon_and_the_driver_is_greedy():
    config = {"num_workers": 3, "num_replay_buffer_shards": 1, "model": {"fcnet_hiddens": [8]}}
    with ApexTrainer(config, env="CartPole-v1") as trainer:
        remote = trainer.workers.call_remote("apply", lambda w: w.get_policy().epsilon_at(10**6))
        local = trainer.get_policy().epsilon_at(0)
    assert remote == pytest.approx([0.4, 0.4**4.5, 0.4**8])
    assert local == 0.0


def test_checkpoint_holds_one_file_per_shard_and_resumes(tmp_path):
    config = {
        "num_workers": 2,
        "num_replay_buffer_shards": 2,
        "learning_starts": 200,
        "min_iter_time_s": 0.5,
        "timesteps_per_iteration": 0,
        "model": {"fcnet_hiddens": [8]},
        "seed": 0,
    }
    with ApexTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        path = trainer.save(str(tmp_path))
        sampled = trainer.optimizer.num_steps_sampled
    assert {"replay_shard_0.h5", "replay_shard_1.h5"} <= set(os.listdir(path))
    with ApexTrainer(config, env="CartPole-v1") as trainer:
        trainer.restore(path)
        assert trainer.optimizer.num_steps_sampled == sampled
        stats = trainer.optimizer.backend.get(
            trainer.optimizer.backend.call(trainer.optimizer.shards, "stats")
        )
        assert sum(s["rows"] for s in stats) == sampled
        result = trainer.train()
    assert result["timesteps_total"] > sampled


@pytest.mark.parametrize(
    "config, message",
    [
        ({"num_workers": 0}, "num_workers must be >= 1"),
        ({"num_replay_buffer_shards": 0}, "'num_replay_buffer_shards' must be >= 1"),
        ({"training_intensity": 2.0}, "training_intensity does not apply to Ape-X"),
        ({"max_weight_sync_delay": 0}, "'max_weight_sync_delay' must be >= 1"),
    ],
)
def test_bad_config_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        ApexTrainer({"num_workers": 1, "num_replay_buffer_shards": 1, **config}, env="CartPole-v1")


def by_parity(agent_id, episode=None, worker=None, **kwargs):
    return "even" if agent_id % 2 == 0 else "odd"


def test_two_policies_each_replay_and_learn_on_their_own_rows():
    from hpcrl.env.multi_agent_env import make_multi_agent
    from hpcrl.env.registry import register_env

    multi_cartpole = make_multi_agent("CartPole-v1")
    register_env("apex_multi_cartpole", lambda cfg: multi_cartpole({"num_agents": 3}))
    config = {
        "num_workers": 2,
        "num_replay_buffer_shards": 2,
        "learning_starts": 200,
        "train_batch_size": 16,
        "min_iter_time_s": 1.0,
        "timesteps_per_iteration": 0,
        "model": {"fcnet_hiddens": [8]},
        "multiagent": {
            "policies": ["even", "odd"],
            "policy_mapping_fn": by_parity,
            "policies_to_train": ["even"],
        },
    }
    with ApexTrainer(config, env="apex_multi_cartpole") as trainer:
        while trainer.optimizer.num_learner_updates < 5:
            result = trainer.train()
        stats = trainer.optimizer.backend.get(
            trainer.optimizer.backend.call(trainer.optimizer.shards, "stats")
        )
    assert set(result["info"]["learner"]) == {"even"}  # only the trained policy
    assert all(s["num_priority_updates"] > 0 for s in stats), stats
