"""DD-PPO: decentralised distributed PPO (Wijmans et al. 2020).

Every rollout worker is also a learner: it samples ``rollout_fragment_length
x num_envs_per_worker`` steps, computes GAE on its own data, standardises its
advantages, and runs ``num_sgd_iter`` epochs of minibatch SGD on them, the
gradients of each minibatch averaged over all workers by one all-reduce
(torch.distributed: gloo on CPUs; with ``num_gpus_per_worker: 1`` each worker
samples and learns on a GPU of its node and the all-reduce runs on NCCL). There is
no central learner and no weight broadcast: every worker applies the same
averaged gradients to the same weights with the same optimizer state, so the
weights stay identical. The driver only starts each iteration and gathers
metrics; it copies worker 0's policy when it needs one (checkpoints,
evaluation).

The workers form their process group as the data-parallel learners do
(``LearnerGroup`` with the workers as its actors), so it runs wherever those
do: MPI ranks (``mpiexec -n 3 hpcrl train --run DDPPO --backend mpi``),
``srun``/sbatch (``slurm/mpi_job.sbatch --run DDPPO``), Dask actors, and on the
local backend child processes of the driver, one per worker (one worker stays
in the driver's process).

The paper's straggler rule, off by default: with ``preemption_fraction`` > 0
a worker samples its fragment in ``preemption_chunks`` parts and, after at
least ``preemption_min_fraction`` of it, stops once that fraction of the
workers has finished theirs (counted in the process group's store).
``should_stop_sampling`` is the rule.

A lost worker (Dask; under MPI a lost rank ends the job) is re-created: the
others leave the group, every worker takes a survivor's weights and
optimizer state, a new group is formed and the iteration runs again
(``DDPPOOptimizer._recover``; ``recreate_failed_workers`` and
``max_worker_restarts`` apply as for every algorithm).

Example:
    >>> with DDPPOTrainer({"num_workers": 1, "rollout_fragment_length": 32,
    ...                    "num_envs_per_worker": 2, "sgd_minibatch_size": 32,
    ...                    "num_sgd_iter": 2}, env="CartPole-v1") as trainer:
    ...     result = trainer.train()
    >>> result["info"]["num_steps_trained"] >= 2 * 32  # a fragment of 32 steps from 2 envs
    True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from hpcrl.algorithms.ppo import DEFAULT_CONFIG as PPO_CONFIG
from hpcrl.algorithms.ppo import PPOTorchPolicy
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.backends.base import WorkerLostError
from hpcrl.backends.local import LocalBackend
from hpcrl.backends.prestart import DDPPO_DEFAULT_WORKERS, ddppo_worker_env
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.learners.learner_group import LearnerGroup
from hpcrl.learners.rendezvous import check_learner_options
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer
from hpcrl.policy.loss_output import LEARNER_STATS_KEY
from hpcrl.policy.observation_filter import without_filter_state
from hpcrl.policy.sgd import mean_stats, plan_sequence_minibatches, standardize_fields

logger = logging.getLogger("hpcrl.algorithms.ddppo")


def should_stop_sampling(
    steps: int,
    target: int,
    workers_done: int,
    num_workers: int,
    preemption_fraction: float,
    min_fraction: float,
) -> bool:
    """The straggler rule of Wijmans et al.: stop sampling once ``preemption_fraction``
    of the ``num_workers`` workers have finished, but not before ``min_fraction`` of
    this worker's ``target`` steps (0: the rule is off).

    Example:
        >>> should_stop_sampling(300, 1000, 2, 3, 0.6, 0.25)  # 2 of 3 done, 30% sampled
        True
        >>> should_stop_sampling(200, 1000, 3, 4, 0.6, 0.25)  # under 25% sampled
        False
    """
    if preemption_fraction <= 0 or steps >= target:
        return steps >= target
    return steps >= min_fraction * target and workers_done >= preemption_fraction * num_workers


class DDPPOWorker(RolloutWorker):
    """A rollout worker that learns on its own samples, in a process group with the
    other workers (a ``Learner`` for the group's side, holding this worker's
    trainable policies)."""

    def __init__(self, env: Any, policy: Any, config: dict[str, Any], **kwargs: Any) -> None:
        self.target_steps = int(config["rollout_fragment_length"])
        chunks = int(config.get("preemption_chunks", 1)) if config.get("preemption_fraction") else 1
        # With the straggler rule the fragment is sampled in parts, checked between them.
        part = -(-self.target_steps // max(1, chunks))
        super().__init__(env, policy, {**config, "rollout_fragment_length": part}, **kwargs)
        from hpcrl.learners.learner import Learner

        self.learner = Learner({})

    def describe(self) -> dict[str, Any]:
        return self.learner.describe()

    def open_store(self, timeout_s: float) -> int:
        return self.learner.open_store(timeout_s)

    def join(self, rendezvous: Any, backend: str, device: str, timeout_s: float) -> None:
        """Join the workers' process group; with a GPU (``num_gpus_per_worker: 1``) the
        trainable policies move to it first, to sample and learn there."""
        for pid in self.policies_to_train:
            self.policy_map[pid].to_device(device)
        self.learner.join(rendezvous, backend, device, timeout_s)
        self.learner.policies = {pid: self.policy_map[pid] for pid in self.policies_to_train}

    def policy_devices(self) -> dict[str, str]:
        """Where each trainable policy is (for the results and the tests)."""
        return {pid: str(self.policy_map[pid].device) for pid in self.policies_to_train}

    def leave_group(self) -> None:
        """Leave the process group (after a peer was lost; a new one is formed)."""
        self.learner.stop()
        self.learner.store = None

    def sample_and_learn(
        self, num_sgd_iter: int, minibatches_per_epoch: int, iteration: int
    ) -> dict[str, Any]:
        """One DD-PPO iteration of this worker: sample, standardise the advantages,
        ``num_sgd_iter`` epochs of ``minibatches_per_epoch`` minibatches, each
        gradient averaged over all workers. Returns the steps and the stats."""
        batch = self._sample_fragment(iteration)
        rng = np.random.default_rng([self.seed or 0, self.worker_index, iteration])
        shards = {}
        for pid, rows in self.trainable_batches(batch).items():
            standardize_fields(rows, ["advantages"])
            seq_lens = self.policy_map[pid].sequence_lengths(rows)
            if seq_lens is None:
                epochs = [
                    np.array_split(rng.permutation(rows.count), minibatches_per_epoch)
                    for _ in range(num_sgd_iter)
                ]
            else:
                # Every worker must run as many minibatches (one all-reduce each).
                if len(seq_lens) < minibatches_per_epoch:
                    raise ValueError(
                        f"worker {self.worker_index} sampled {len(seq_lens)} sequences for "
                        f"{minibatches_per_epoch} minibatches per epoch; raise "
                        "rollout_fragment_length or sgd_minibatch_size"
                    )
                [epochs] = plan_sequence_minibatches(
                    [rows.count], num_sgd_iter, minibatches_per_epoch, rng, seq_lens
                )
            shards[pid] = (rows, epochs)
        answer = self.learner.learn(shards)
        return {
            "steps": batch.count,
            "steps_cut_short": self.steps_cut_short * self.num_envs,
            "results": {
                pid: {"stats": r["result"][LEARNER_STATS_KEY], "rows": r["rows"]}
                for pid, r in answer["results"].items()
            },
            "allreduce_s": answer["allreduce_s"],
            "sgd_s": answer["sgd_s"],
        }

    def _sample_fragment(self, iteration: int) -> Any:
        """``rollout_fragment_length`` steps per env, in parts when the straggler rule
        is on (stopping early by it); then this worker counts itself as done."""
        from hpcrl.policy.sample_batch import concat_samples

        config = self.config
        store = self.learner.store
        key = f"ddppo/done/{iteration}"
        parts, steps = [], 0
        while True:
            parts.append(self.sample())
            steps += self.fragment_length
            done = int(store.add(key, 0)) if store is not None and steps < self.target_steps else 0
            if should_stop_sampling(
                steps,
                self.target_steps,
                done,
                self.num_workers,
                float(config.get("preemption_fraction") or 0.0),
                float(config.get("preemption_min_fraction", 0.25)),
            ):
                break
        if store is not None:
            store.add(key, 1)
        self.steps_cut_short = max(0, self.target_steps - steps)
        return parts[0] if len(parts) == 1 else concat_samples(parts)

    def stop(self) -> None:
        """Leave the process group too: a Dask worker process outlives its actor, and
        the next DD-PPO run there makes a group of its own."""
        self.learner.stop()
        super().stop()

    def get_policy_states(self) -> dict[str, dict[str, Any]]:
        """The trainable policies' whole state (optimizer included), by policy id, but
        their observation filters: the driver's (merged from every worker's, see
        ``WorkerSet.sync_filters``) stay the driver's."""
        return {
            pid: without_filter_state(self.policy_map[pid].get_state())
            for pid in self.policies_to_train
        }

    def set_policy_states(self, states: dict[str, dict[str, Any]]) -> None:
        for pid, state in states.items():
            self.policy_map[pid].set_state(state)


class DDPPOOptimizer(PolicyOptimizer):
    """Starts each DD-PPO iteration on every worker and gathers the metrics.

    Args:
        workers: the WorkerSet of ``DDPPOWorker``s (at least one remote).
        num_sgd_iter: epochs per iteration.
        minibatches_per_epoch: minibatches per epoch on each worker (the same on
            all: one all-reduce each).
        learner_backend: "auto", "gloo" or "nccl".
        timeout_s: seconds a worker waits in the rendezvous or an all-reduce.
        num_gpus_per_worker: 0 (every worker on the CPU, gloo) or 1 (a GPU each,
            picked by its local rank on its node, as for data-parallel learners;
            NCCL unless ``learner_backend`` is "gloo").
    """

    def __init__(
        self,
        workers: WorkerSet,
        num_sgd_iter: int = 10,
        minibatches_per_epoch: int = 1,
        learner_backend: str = "auto",
        timeout_s: float = 300.0,
        num_gpus_per_worker: int = 0,
    ) -> None:
        super().__init__(workers)
        remote = workers.remote_workers()
        if not remote:
            raise ValueError(
                "DD-PPO samples and learns on its rollout workers: set num_workers >= 1"
            )
        if isinstance(self.backend, LocalBackend) and len(remote) > 1:
            raise ValueError(
                f"DD-PPO runs one process per worker; the local backend would hold all "
                f"{len(remote)} in the driver's process: use --backend mpi (mpiexec -n "
                f"{len(remote) + 1}) or --backend dask, or num_workers 1"
            )
        self.num_sgd_iter = num_sgd_iter
        self.minibatches_per_epoch = minibatches_per_epoch
        self.learner_backend = learner_backend
        self.timeout_s = timeout_s
        self.num_gpus_per_worker = num_gpus_per_worker
        self.group = self._form_group()
        self.iteration = 0
        self.num_steps_cut_short = 0  # steps the straggler rule spared
        self._state_due = False  # the driver's policies to the workers (after a restore)
        self.learner_stats: dict[str, Any] = {}
        self.timings = {"sgd_s": 0.0, "allreduce_s": 0.0}

    def step(self) -> dict[str, Any]:
        remote = self.workers.remote_workers()
        if self._state_due:
            self.backend.get(self.backend.call(remote, "set_policy_states", self._driver_states()))
            self._state_due = False
        with self._timed("sample_and_learn"):
            while True:
                calls = self.backend.call(
                    remote,
                    "sample_and_learn",
                    self.num_sgd_iter,
                    self.minibatches_per_epoch,
                    self.iteration,
                )
                try:
                    answers = self.group._gather(calls)
                    break
                except WorkerLostError as error:
                    self._recover(calls, error)
        self.iteration += 1
        steps = sum(a["steps"] for a in answers)
        self.num_steps_sampled += steps
        self.num_steps_trained += steps
        self.num_steps_cut_short += sum(a["steps_cut_short"] for a in answers)
        self.timings = {key: max(a[key] for a in answers) for key in ("sgd_s", "allreduce_s")}
        fetches = {}
        for pid in answers[0]["results"]:
            parts = [a["results"][pid] for a in answers]
            stats = mean_stats([p["stats"] for p in parts], [p["rows"] for p in parts])
            fetches[pid] = {LEARNER_STATS_KEY: stats}
        self.learner_stats = {pid: f[LEARNER_STATS_KEY] for pid, f in fetches.items()}
        return fetches

    def _form_group(self) -> LearnerGroup:
        return LearnerGroup(
            self.backend,
            {},
            actors=self.workers.remote_workers(),
            num_gpus_per_learner=self.num_gpus_per_worker,
            gpus_key="num_gpus_per_worker",
            learner_backend=self.learner_backend,
            timeout_s=self.timeout_s,
        )

    def _recover(self, calls: list[Any], error: WorkerLostError) -> None:
        """After a worker was lost in an iteration: the others' calls end (their next
        all-reduce fails once the lost peer's connections close, at the latest after
        ``timeout_s``) and they leave the group; the lost worker is re-created
        (``WorkerSet.recreate_worker``: refused, naming it, when
        ``recreate_failed_workers`` is off or the restarts are spent); every worker
        takes a survivor's policies (weights and optimizer state, as the iteration
        left them); a new group is formed. The caller then runs the iteration again.
        """
        self.backend.wait(calls, num_returns=len(calls), timeout=self.timeout_s)
        remote = self.workers.remote_workers()
        survivors = [actor for actor in remote if self.backend.is_alive(actor)]
        for actor in remote:
            if actor not in survivors:
                self.workers.recreate_worker(actor, error)
        if survivors:
            self.backend.get(self.backend.call(survivors, "leave_group"))
            [states] = self.backend.get(self.backend.call(survivors[:1], "get_policy_states"))
        else:
            states = self._driver_states()
        self.backend.get(self.backend.call(remote, "set_policy_states", states))
        self.group = self._form_group()

    def _driver_states(self) -> dict[str, dict[str, Any]]:
        # Without the observation filters: each worker restored its own.
        local = self.workers.local_worker()
        return {
            pid: without_filter_state(local.get_policy(pid).get_state())
            for pid in local.policies_to_train
        }

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The driver's policies made worker 0's (weights, optimizer state, counters)
        for a checkpoint or an evaluation."""
        [states] = self.backend.get(
            self.backend.call(self.workers.remote_workers()[:1], "get_policy_states")
        )
        local = self.workers.local_worker()
        for pid, state in states.items():
            local.get_policy(pid).set_state(state)
        yield

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "num_workers_learning": self.group.num_learners,
            "num_steps_cut_short": self.num_steps_cut_short,
            "learner_backend": self.group.process_group_backend,
            "worker_devices": list(self.group.devices),
            "learner_allreduce_s": round(self.timings["allreduce_s"], 4),
            "learner_sgd_s": round(self.timings["sgd_s"], 4),
            "learner": self.learner_stats,
        }

    def save(self) -> dict[str, Any]:
        return {**super().save(), "ddppo_iteration": self.iteration}

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        self.iteration = int(data["ddppo_iteration"])
        self._state_due = True

    def stop(self) -> None:
        self.group.stop()


DDPPO_CONFIG: dict[str, Any] = {
    **PPO_CONFIG,
    # RLlib's DD-PPO values: per worker, fragments of 100 steps from 5 envs,
    # minibatches of 50 rows; no KL penalty (each worker would adapt its own).
    "num_workers": DDPPO_DEFAULT_WORKERS,
    "rollout_fragment_length": 100,
    "num_envs_per_worker": 5,
    "sgd_minibatch_size": 50,
    "num_sgd_iter": 10,
    # PPO's former default, kept: DD-PPO's tests ran with it (PPO's own default is
    # 1e-3 since, chosen for PPO's larger minibatches on small envs).
    "lr": 3e-4,
    "kl_coeff": 0.0,
    "kl_target": 0.0,
    # Each worker learns on its own fragment (rollout_fragment_length x
    # num_envs_per_worker rows). -1: that; a value (rows per worker, as in RLlib's
    # pendulum-ddppo.yaml) sets rollout_fragment_length to it / num_envs_per_worker.
    "train_batch_size": -1,
    # The straggler rule (Wijmans et al.): > 0 turns it on; a worker stops sampling
    # once this fraction of the workers has finished, after at least
    # preemption_min_fraction of its fragment, checking between preemption_chunks
    # parts of it. (hpcrl's keys; off by default.)
    "preemption_fraction": 0.0,
    "preemption_min_fraction": 0.25,
    "preemption_chunks": 4,
    # RLlib's key, with its meaning for DD-PPO: 1 gives every worker a GPU of its
    # node (by local rank) to sample and learn on, the gradients all-reduced over
    # NCCL; 0: CPUs and gloo.
    "num_gpus_per_worker": 0,
}


def validate_config(config: dict[str, Any]) -> None:
    rows = config["train_batch_size"]
    if rows != -1:
        envs = config["num_envs_per_worker"]
        fragment = rows // envs
        if rows % envs:
            raise ValueError(
                f"DD-PPO reads train_batch_size as rows per worker: {rows} is not a multiple "
                f"of num_envs_per_worker ({envs}); set rollout_fragment_length instead "
                "(steps per env) and leave train_batch_size at -1"
            )
        given = config["rollout_fragment_length"]
        if given not in (DDPPO_CONFIG["rollout_fragment_length"], fragment):
            raise ValueError(
                f"train_batch_size {rows} (rows per worker: {fragment} steps x {envs} envs) "
                f"and rollout_fragment_length {given} say different things; give one of them"
            )
        config["rollout_fragment_length"] = fragment
        logger.warning(
            "DD-PPO: train_batch_size %d read as rows per worker: rollout_fragment_length %d "
            "x %d envs",
            rows,
            fragment,
            envs,
        )
    if config["kl_coeff"] != 0:
        raise ValueError(
            f"DD-PPO has no KL penalty (each worker would adapt its own coefficient); "
            f"got kl_coeff={config['kl_coeff']}: set it to 0"
        )
    if config["batch_mode"] != "truncate_episodes":
        raise ValueError(
            "DD-PPO needs batch_mode 'truncate_episodes': every worker must learn on the same "
            f"number of rows (one all-reduce per minibatch); got {config['batch_mode']!r}"
        )
    if config["num_learners"] != 1 or config["num_gpus_per_learner"]:
        raise ValueError(
            "DD-PPO's workers are its learners: leave num_learners at 1 and "
            "num_gpus_per_learner at 0 (set num_workers for more of them, "
            "num_gpus_per_worker: 1 to put each on a GPU)"
        )
    # The learners' own check, before any worker starts.
    check_learner_options(
        config["num_gpus_per_worker"], config["learner_backend"], "num_gpus_per_worker"
    )


def make_ddppo_optimizer(workers: WorkerSet, config: dict[str, Any]) -> DDPPOOptimizer:
    rows = config["rollout_fragment_length"] * config["num_envs_per_worker"]
    return DDPPOOptimizer(
        workers,
        num_sgd_iter=config["num_sgd_iter"],
        minibatches_per_epoch=max(1, rows // config["sgd_minibatch_size"]),
        learner_backend=config["learner_backend"],
        timeout_s=config["learner_timeout_s"],
        num_gpus_per_worker=int(config["num_gpus_per_worker"]),
    )


class DDPPOWorkersMixin:
    """The trainer's remote workers are ``DDPPOWorker``s; on the local backend, more
    than one run in child processes of the driver."""

    remote_worker_class = DDPPOWorker

    def workers_backend(self) -> Any:
        """torch.distributed needs a process per rank, so on the local backend two or
        more workers are child processes of the driver (``ProcessBackend``, as the
        data-parallel learners are), each with its share of the cores' torch
        threads (``num_torch_threads`` if set). Such a worker is not re-created if
        its process dies: the run stops naming it."""
        config = self.config
        workers = config["num_workers"]
        if config["backend"] != "local" or not isinstance(workers, int) or workers < 2:
            return config["backend"]
        from hpcrl.learners.processes import ProcessBackend

        # (hpcrl train started these processes already: hpcrl.backends.prestart)
        return ProcessBackend(env=ddppo_worker_env(config, workers))


DDPPOTorchPolicy = PPOTorchPolicy.with_updates(
    name="DDPPOTorchPolicy", get_default_config=lambda: DDPPO_CONFIG
)

DDPPOTrainer = build_trainer(
    "DDPPO",
    DDPPOTorchPolicy,
    default_config=DDPPO_CONFIG,
    make_policy_optimizer=make_ddppo_optimizer,
    validate_config=validate_config,
    mixins=[DDPPOWorkersMixin],
)
