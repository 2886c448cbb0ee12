from __future__ import annotations

import numpy as np

from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers import SyncSamplesOptimizer
from hpcrl.policy.sample_batch import concat_samples
from hpcrl.policy.sgd import minibatch_sgd, plan_minibatches

CONFIG = {"model": {"fcnet_hiddens": [16]}, "rollout_fragment_length": 25, "seed": 3}


def test_make_with_remote_workers_counts_steps():
    opt = SyncSamplesOptimizer.make(
        "CartPole-v1", A2CTorchPolicy, num_workers=2, worker_config=CONFIG, train_batch_size=120
    )
    stats = opt.step()
    # two workers x 25 rows per round, three rounds to reach 120
    assert opt.num_steps_sampled == 150 and opt.num_steps_trained == 150
    assert "vf_loss" in stats["default_policy"]["learner_stats"]
    assert set(opt.stats()) >= {"num_steps_sampled", "sample_time_s", "learner"}
    opt.workers.stop()


def test_driver_loop_written_with_workerset_and_backend():
    workers = WorkerSet(
        policy=A2CTorchPolicy, env_creator="CartPole-v1", num_workers=2, config=CONFIG
    )
    backend, local = workers.backend, workers.local_worker()
    before = local.get_weights()["default_policy"]
    batch = concat_samples(backend.get(backend.call(workers.remote_workers(), "sample")))
    assert batch.count == 50
    local.learn_on_batch(batch)
    workers.sync_weights()
    after = backend.get(backend.call(workers.remote_workers(), "get_weights"))
    for weights in after:
        for key, value in weights["default_policy"].items():
            np.testing.assert_array_equal(value, local.get_weights()["default_policy"][key])
    assert any(
        not np.array_equal(before[k], v) for k, v in local.get_weights()["default_policy"].items()
    )
    workers.stop()


def test_minibatch_sgd_runs_every_minibatch_of_every_epoch():
    workers = WorkerSet(policy=A2CTorchPolicy, env_creator="CartPole-v1", config=CONFIG)
    local = workers.local_worker()
    batch = local.sample()
    calls = []
    policy = local.get_policy()
    original = policy.learn_on_batch

    def counting(minibatch):
        calls.append(minibatch.count)
        return original(minibatch)

    policy.learn_on_batch = counting
    [epochs] = plan_minibatches([batch.count], 3, 10, np.random.default_rng(0))
    result = minibatch_sgd(policy, batch, epochs)
    # 25 rows in minibatches of 10: 25 // 10 = 2 near-equal minibatches per epoch
    assert calls == [13, 12] * 3 and "total_loss" in result["learner_stats"]
    workers.stop()
