"""ES on a real Dask LocalCluster: every worker holds the driver's parameters."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.es import ESTrainer, flat_state

pytest.importorskip("distributed")


def test_es_workers_hold_the_drivers_parameters_after_every_iteration(dask_cluster):
    config = {
        "backend": "dask",
        "dask_address": dask_cluster.scheduler_address,
        "num_workers": 2,
        "noise_size": 200_000,
        "episodes_per_batch": 8,
        "train_batch_size": 0,
        "eval_prob": 0.2,
        "model": {"fcnet_hiddens": [8]},
        "seed": 0,
    }
    with ESTrainer(config, env="CartPole-v1") as trainer:
        for _ in range(3):
            result = trainer.train()
            driver = trainer.get_policy().get_flat()
            for theirs in trainer.workers.call_remote("apply", flat_state):
                np.testing.assert_array_equal(theirs, driver)
    assert result["info"]["iteration"] == 3
    assert result["info"]["exchange"] == "relayed"  # a lost worker can be re-created
