"""Ape-X: DQN and DDPG with distributed prioritised replay (Horgan et al. 2018).

``APEX`` is DQN and ``APEX_DDPG`` is DDPG, each trained by
``AsyncReplayOptimizer``: many rollout workers sample without pause and
compute their rows' first priorities, replay shards (actors like the
workers) hold the buffer, and a learner thread on the driver learns from
what the shards replay, sending new priorities back. See
``hpcrl.optimizers.async_replay_optimizer`` for the pattern. (A module of its
own, not part of ``dqn`` as DESIGN.md's layout has it: Ape-X spans DQN and
DDPG, and keeps both of their modules free of the distributed keys.)

Exploration (APEX): remote worker ``i`` of ``N`` keeps epsilon
``0.4 ** (1 + 7 * i / (N - 1))`` (``per_worker_exploration``, on by default);
the driver's worker, used for evaluation, is greedy. APEX_DDPG keeps DDPG's
noise on every worker.

Under MPI the job needs one rank for the driver, one per worker and one per
shard: ``mpiexec -n 4 hpcrl train --run APEX --env CartPole-v0 --backend mpi
--config '{"num_workers": 2, "num_replay_buffer_shards": 1}'``. With
``num_workers`` unset, the ranks left after the shards become workers.

Example:
    >>> with ApexTrainer({"num_workers": 2, "num_replay_buffer_shards": 1,
    ...                   "learning_starts": 200, "min_iter_time_s": 1},
    ...                  env="CartPole-v1") as trainer:
    ...     result = trainer.train()
    >>> result["info"]["num_steps_sampled"] > 0
    True
"""

from __future__ import annotations

from typing import Any

from hpcrl.algorithms import ddpg, dqn
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.async_replay_optimizer import AsyncReplayOptimizer

# The keys of AsyncReplayOptimizer, with RLlib's Ape-X defaults except where noted.
APEX_DEFAULTS: dict[str, Any] = {
    "num_workers": 32,
    # Replay shard actors; each holds buffer_size / shards rows per policy.
    "num_replay_buffer_shards": 4,
    "buffer_size": 2_000_000,
    "learning_starts": 50_000,
    "train_batch_size": 512,
    "rollout_fragment_length": 50,
    "n_step": 3,
    "prioritized_replay": True,
    # Workers compute the first priorities of their rows (else: the shards' maximum).
    "worker_side_prioritization": True,
    # Steps a worker samples between new weights.
    "max_weight_sync_delay": 400,
    # Batches a worker may have sampled and not yet delivered (its credits).
    "max_sample_requests_in_flight_per_worker": 2,
    # Replayed batches asked of each shard ahead of the learner.
    "max_requests_in_flight_per_replay_shard": 2,
    # Adds waiting at a shard beyond which a worker's batch is dropped (counted in
    # num_dropped_batches): sampling never waits for replay. (hpcrl's key.)
    "max_adds_in_flight_per_shard": 16,
    # Replayed batches waiting for the learner, at most.
    "learner_queue_size": 16,
    # Seconds the learner may go without a batch, once replay has started, before
    # the run fails naming the silent shards. (hpcrl's key.)
    "learner_queue_timeout": 300.0,
    "target_network_update_freq": 500_000,
    "timesteps_per_iteration": 25_000,
    "min_iter_time_s": 30.0,
}


def make_apex_optimizer(workers: WorkerSet, config: dict[str, Any]) -> AsyncReplayOptimizer:
    """``AsyncReplayOptimizer`` from the config's replay and ``APEX_DEFAULTS`` keys."""
    keys = (
        *dqn.REPLAY_OPTIMIZER_KEYS,
        "num_replay_buffer_shards",
        "max_weight_sync_delay",
        "max_sample_requests_in_flight_per_worker",
        "max_requests_in_flight_per_replay_shard",
        "max_adds_in_flight_per_shard",
        "learner_queue_size",
        "learner_queue_timeout",
        "worker_side_prioritization",
    )
    return AsyncReplayOptimizer(
        workers, **{key: config[key] for key in keys}, seed=config.get("seed")
    )


def check_apex_config(config: dict[str, Any]) -> None:
    if config["num_workers"] is not None and config["num_workers"] < 1:
        raise ValueError(
            f"Ape-X samples on remote rollout workers only: num_workers must be >= 1, got "
            f"{config['num_workers']}"
        )
    if config["training_intensity"] is not None:
        raise ValueError(
            "training_intensity does not apply to Ape-X: its learner trains as fast as it "
            "can on what the shards replay; remove the key"
        )


APEX_CONFIG: dict[str, Any] = {
    **dqn.DEFAULT_CONFIG,
    **APEX_DEFAULTS,
    "per_worker_exploration": True,
}


def validate_apex_config(config: dict[str, Any]) -> None:
    check_apex_config(config)
    dqn.validate_config(config)


ApexTorchPolicy = dqn.DQNTorchPolicy.with_updates(
    name="ApexTorchPolicy", get_default_config=lambda: APEX_CONFIG
)

ApexTrainer = dqn.DQNTrainer.with_updates(
    name="APEX",
    default_policy=ApexTorchPolicy,
    default_config=APEX_CONFIG,
    make_policy_optimizer=make_apex_optimizer,
    validate_config=validate_apex_config,
)

APEX_DDPG_CONFIG: dict[str, Any] = {
    **ddpg.DEFAULT_CONFIG,
    **APEX_DEFAULTS,
    # RLlib's APEX_DDPG values for these.
    "n_step": 3,
    "train_batch_size": 512,
    "rollout_fragment_length": 50,
    "target_network_update_freq": 500_000,
    "tau": 1.0,
}

_validate_ddpg = ddpg.config_validator(APEX_DDPG_CONFIG)


def validate_apex_ddpg_config(config: dict[str, Any]) -> None:
    check_apex_config(config)
    _validate_ddpg(config)


ApexDDPGTorchPolicy = ddpg.DDPGTorchPolicy.with_updates(
    name="ApexDDPGTorchPolicy", get_default_config=lambda: APEX_DDPG_CONFIG
)

ApexDDPGTrainer = ddpg.DDPGTrainer.with_updates(
    name="APEX_DDPG",
    default_policy=ApexDDPGTorchPolicy,
    default_config=APEX_DDPG_CONFIG,
    make_policy_optimizer=make_apex_optimizer,
    validate_config=validate_apex_ddpg_config,
)
