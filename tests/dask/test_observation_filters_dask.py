"""Observation filters on a real Dask LocalCluster: the driver's merge holds the
statistics of every observation every worker process saw (see
tests/evaluation/test_observation_filters.py and, under MPI,
tests/mpi/test_observation_filters_mpi.py)."""

from __future__ import annotations

import pytest
from observation_recorder import RecordingEnv, check_merged_filter

from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.env.registry import register_env

pytest.importorskip("distributed")


@pytest.mark.parametrize("algorithm", ["PPO", "A3C"])
def test_the_merged_filter_holds_every_workers_observations(algorithm, dask_cluster, tmp_path):
    register_env("recording_env", RecordingEnv)
    config = {
        "backend": "dask",
        "dask_address": dask_cluster.scheduler_address,
        "num_workers": 2,
        "observation_filter": "MeanStdFilter",
        "env_config": {"record_dir": str(tmp_path)},
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 20,
        "vectorization_mode": "sync",
        "model": {"fcnet_hiddens": [8]},
        "seed": 0,
    }
    if algorithm == "PPO":
        config.update(train_batch_size=80, sgd_minibatch_size=40, num_sgd_iter=1)
    else:
        config.update(grads_per_step=4)
    trainer = get_trainer_class(algorithm)(config, env="recording_env")
    try:
        pids = {actor.pid for actor in trainer.workers.remote_workers()}
        for _ in range(2):
            trainer.train()
        trainer.optimizer.stop()  # A3C's workers compute on: stop them, then merge once more
        trainer.workers.sync_filters()
        check_merged_filter(trainer, tmp_path)
    finally:
        trainer.stop()
    written_by = {int(f.name.split("-")[1]) for f in tmp_path.glob("obs-*.bin")}
    assert written_by == pids  # the observations came from both worker processes
