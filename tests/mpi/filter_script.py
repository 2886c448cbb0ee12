"""Observation filters under mpiexec (driver + 2 worker ranks); see
test_observation_filters_mpi.py.

Usage: mpiexec -n 3 python filter_script.py PPO|IMPALA RECORD_DIR

Trains two iterations on ``RecordingEnv`` with ``MeanStdFilter``, then checks that
the driver's filter holds numpy's statistics of every observation every rank's
envs returned, that every worker rank runs with the same, and that the workers'
updates reached the driver only through ``MPIBackend.reduce`` (one ``Reduce`` per
sync, no message per worker). Prints "FILTERS OK <count>".
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the recording env
from observation_recorder import RecordingEnv, check_merged_filter  # noqa: E402

from hpcrl.algorithms.registry import get_trainer_class  # noqa: E402
from hpcrl.env.registry import register_env  # noqa: E402

EXTRA = {
    "PPO": {"train_batch_size": 80, "sgd_minibatch_size": 40, "num_sgd_iter": 1},
    "IMPALA": {"train_batch_size": 40, "min_iter_time_s": 0.0, "timesteps_per_iteration": 80},
}


def count_calls(backend, counts: Counter) -> None:
    """Count the driver's calls and reductions by method."""
    call, reduce = backend.call, backend.reduce

    def counting_call(actors, method, *args, **kwargs):
        counts[method] += 1
        return call(actors, method, *args, **kwargs)

    def counting_reduce(actors, method, *args, **kwargs):
        counts[f"reduce {method}"] += 1
        return reduce(actors, method, *args, **kwargs)

    backend.call, backend.reduce = counting_call, counting_reduce


def main() -> None:
    algorithm, record_dir = sys.argv[1], sys.argv[2]
    register_env("recording_env", RecordingEnv)
    config = {
        "backend": "mpi",
        "num_workers": 2,
        "observation_filter": "MeanStdFilter",
        "env_config": {"record_dir": record_dir},
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 20,
        "vectorization_mode": "sync",
        "model": {"fcnet_hiddens": [8]},
        "seed": 0,
        **EXTRA[algorithm],
    }
    trainer = get_trainer_class(algorithm)(config, env="recording_env")
    counts: Counter = Counter()
    count_calls(trainer.workers.backend, counts)
    for _ in range(2):
        trainer.train()
    trainer.optimizer.stop()  # IMPALA's workers sample on: stop them, then merge once more
    trainer.workers.sync_filters()
    count = check_merged_filter(trainer, record_dir)
    assert counts["reduce pop_filter_updates"] == 3, counts
    assert counts["pop_filter_updates"] == 0, counts
    trainer.stop()
    print(f"FILTERS OK {count}", flush=True)


if __name__ == "__main__":
    main()
