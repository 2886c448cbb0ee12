"""Trainer: config, workers, optimizer and metrics behind ``train()``."""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np

from hpcrl.algorithms.config import (
    COMMON_CONFIG,
    Interval,
    check_evaluation_config,
    merge_config,
)
from hpcrl.env.registry import resolve_env_creator
from hpcrl.evaluation.metrics import MetricsWindow
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.learners.learner_group import check_learner_config, uses_learner_group
from hpcrl.optimizers.data_parallel_optimizer import DataParallelOptimizer
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer
from hpcrl.optimizers.sync_samples_optimizer import SyncSamplesOptimizer
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID

# Keys of every train() result (besides the nested "info" stats).
RESULT_KEYS = (
    "episode_reward_mean",
    "episode_reward_min",
    "episode_reward_max",
    "episode_len_mean",
    "episodes_this_iter",
    "episodes_total",
    "timesteps_this_iter",
    "timesteps_total",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timesteps_per_s",
    "num_healthy_workers",
    "num_worker_restarts",
    "num_env_restarts",
)


def make_sync_optimizer(
    workers: WorkerSet,
    config: dict[str, Any],
    *,
    num_sgd_iter: int = 1,
    sgd_minibatch_size: int = 0,
    standardize_fields: tuple[str, ...] = (),
) -> SyncSamplesOptimizer:
    """``SyncSamplesOptimizer`` over ``train_batch_size`` steps with the given SGD
    settings, or the ``DataParallelOptimizer`` with the same settings when the config
    asks for data-parallel learners (``num_learners > 1`` or ``num_gpus_per_learner > 0``).

    Algorithms that learn by minibatch SGD name it with their own keys, e.g. PPO's
    ``num_sgd_iter``, ``sgd_minibatch_size`` and ``standardize_advantages``."""
    sgd = {
        "train_batch_size": config["train_batch_size"],
        "num_sgd_iter": num_sgd_iter,
        "sgd_minibatch_size": sgd_minibatch_size,
        "standardize_fields": standardize_fields,
    }
    if uses_learner_group(config):
        return DataParallelOptimizer(
            workers,
            **sgd,
            num_learners=config["num_learners"],
            num_gpus_per_learner=config["num_gpus_per_learner"],
            learner_backend=config["learner_backend"],
            learner_timeout_s=config["learner_timeout_s"],
        )
    return SyncSamplesOptimizer(workers, **sgd)


class Trainer:
    """Runs an algorithm: ``train()`` performs one iteration and returns results.

    Algorithms are made with ``build_trainer`` (or by subclassing and setting
    ``_name``, ``_default_config``, ``_policy`` and overriding the hooks).

    Args:
        config: keys of the algorithm's ``DEFAULT_CONFIG`` to override.
        env: the env (overrides ``config["env"]``).

    Example:
        >>> from hpcrl.algorithms.pg import PGTrainer
        >>> trainer = PGTrainer({"num_envs_per_worker": 1, "rollout_fragment_length": 100,
        ...                      "train_batch_size": 200}, env="CartPole-v1")
        >>> result = trainer.train()
        >>> result["timesteps_total"]
        200
        >>> trainer.stop()
    """

    _name = "Trainer"
    _default_config: dict[str, Any] = COMMON_CONFIG
    _policy: type[Policy] | None = None
    # The class of the remote rollout workers (DD-PPO's also learn).
    remote_worker_class: type[RolloutWorker] = RolloutWorker
    # Merge the workers' observation filters after every iteration (ES and ARS
    # update theirs identically on every process instead).
    sync_observation_filters = True
    # Ranges of this algorithm's keys where they differ from config.CONFIG_RANGES.
    config_ranges: dict[str, Interval] = {}

    def __init__(self, config: dict[str, Any] | None = None, env: Any = None) -> None:
        config = dict(config or {})
        if env is not None:
            config["env"] = env
        self.config = merge_config(self._default_config, config, self.config_ranges)
        if self.config["env"] is None and not self.config["input"]:
            raise ValueError(
                f"{self._name} needs an env: pass env=... or config['env'] (or config['input'] "
                "to learn from recorded batches)"
            )
        env_given = self.config["env"] is not None
        self.env_creator = resolve_env_creator(self.config["env"]) if env_given else None
        self.validate_config(self.config)
        check_learner_config(self.config)
        check_evaluation_config(self.config)
        self.iteration = 0
        self._time_total = 0.0
        # Where save() writes by default (an Experiment sets its trial directory).
        self.logdir: str | None = None
        self._metrics = MetricsWindow(self.config["metrics_smoothing_episodes"])
        self.before_init()
        self.workers = WorkerSet(
            policy=self.get_policy_class(self.config),
            env_creator=self.config["env"],
            num_workers=self.config["num_workers"],
            config=self.config,
            backend=self.workers_backend(),
            worker_class=self.remote_worker_class,
        )
        self.config["num_workers"] = self.workers.num_workers
        if self.config["input"] and self.env_creator is not None:
            self._check_input_fits_env()
        self.optimizer = self.make_policy_optimizer(self.workers, self.config)
        self.after_init()

    def workers_backend(self) -> Any:
        """Where the remote workers run: the config's ``backend`` (DD-PPO's workers,
        each a rank of its own, run in child processes on the local backend)."""
        return self.config["backend"]

    def _check_input_fits_env(self) -> None:
        """The env evaluations play on must have the spaces of the recorded batches
        (``input``), which the policies were made for."""
        from hpcrl.evaluation.policy_evaluation import check_policy_fits_env

        policies = self.workers.local_worker().policy_map
        if len(policies) != 1:  # multi-agent batches: each policy has its own agents
            return
        fix = (
            f"the batches in input {self.config['input']!r} were recorded with these; give "
            "the env they were recorded on, or no env"
        )
        policy = next(iter(policies.values()))
        try:
            check_policy_fits_env(policy, self.config["env"], self.config["env_config"], fix)
        except ValueError:
            self.workers.stop()
            raise

    # -- hooks (build_trainer replaces these) ----------------------------
    def validate_config(self, config: dict[str, Any]) -> None:
        """Raise ValueError for an inconsistent config."""

    def get_policy_class(self, config: dict[str, Any]) -> type[Policy]:
        if self._policy is None:
            raise ValueError(f"{self._name} has no default policy")
        return self._policy

    def make_policy_optimizer(self, workers: WorkerSet, config: dict[str, Any]) -> PolicyOptimizer:
        """The algorithm's optimizer; by default ``make_sync_optimizer``: one
        whole-batch learning step per ``train_batch_size`` steps sampled."""
        return make_sync_optimizer(workers, config)

    def before_init(self) -> None:
        """Called after the config is checked, before workers are made."""

    def after_init(self) -> None:
        """Called once workers and optimizer exist."""

    def before_train_step(self) -> None:
        """Called at the start of every ``train()``."""

    def after_optimizer_step(self, fetches: dict[str, Any]) -> None:
        """Called after every optimizer step with its learner stats."""

    def after_train_result(self, result: dict[str, Any]) -> None:
        """Called with the result dict of every ``train()``; may add keys."""

    # -- training --------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """One training iteration: optimizer steps until ``timesteps_per_iteration``
        steps are sampled and ``min_iter_time_s`` seconds have passed; then the
        workers' observation filters are merged on the driver and sent back
        (``WorkerSet.sync_filters``)."""
        start = time.perf_counter()
        self.before_train_step()
        sampled_before = self.optimizer.num_steps_sampled
        while True:
            fetches = self.optimizer.step()
            self.after_optimizer_step(fetches)
            sampled = self.optimizer.num_steps_sampled - sampled_before
            if (
                sampled >= self.config["timesteps_per_iteration"]
                and time.perf_counter() - start >= self.config["min_iter_time_s"]
            ):
                break
        self._update_global_vars()
        if self.sync_observation_filters:
            self.workers.sync_filters()
        episodes = self._metrics.add(self._collect_worker_metrics())
        self.iteration += 1
        elapsed = time.perf_counter() - start
        self._time_total += elapsed
        result: dict[str, Any] = {
            **self._metrics.summary(),
            "episodes_this_iter": episodes,
            "episodes_total": self._metrics.episodes_total,
            "timesteps_this_iter": sampled,
            "timesteps_total": self.optimizer.num_steps_sampled,
            "training_iteration": self.iteration,
            "time_this_iter_s": elapsed,
            "time_total_s": self._time_total,
            "timesteps_per_s": sampled / elapsed if elapsed > 0 else float("nan"),
            "num_healthy_workers": self.workers.num_healthy_workers(),
            "num_worker_restarts": self.workers.num_worker_restarts,
            "num_env_restarts": self._metrics.env_restarts,
            "info": self.optimizer.stats(),
        }
        interval = self.config["evaluation_interval"]
        if interval and self.iteration % interval == 0:
            result.update(self.evaluate())
        self.after_train_result(result)
        return result

    def evaluate(self) -> dict[str, Any]:
        """Play ``evaluation_num_episodes`` episodes of the env on the driver with
        the current policies (most likely actions unless ``evaluation_config`` sets
        ``explore``), each in a fresh env copy.

        Returns:
            ``{"evaluation": {"episode_reward_mean", "episode_reward_min",
            "episode_reward_max", "episode_len_mean", "episodes"}}``, plus
            ``policy_reward_mean`` per policy on a multi-agent env.
        """
        if self.env_creator is None:
            raise ValueError(
                f"{self._name} has no env to evaluate on: set config['env'] (the run learns "
                "from recorded batches only)"
            )
        overrides = self.config["evaluation_config"]
        worker = self.workers.local_worker()
        seed = self.config["seed"]
        kwargs = {
            "env_config": overrides.get("env_config", self.config["env_config"]),
            "seed": None if seed is None else seed + 7919 * self.iteration,
            "explore": overrides.get("explore", False),
        }
        num_episodes = self.config["evaluation_num_episodes"]
        # A learner thread (IMPALA, Ape-X) waits meanwhile: acting with a policy it
        # updates at the same time would read the model half-written.
        with self.optimizer.paused():
            metrics = self._play_evaluation(worker, num_episodes, kwargs)
        metrics["episodes"] = len(metrics.pop("episode_returns"))
        metrics.pop("episode_lengths")
        return {"evaluation": metrics}

    def _play_evaluation(self, worker: Any, num_episodes: int, kwargs: dict) -> dict[str, Any]:
        from hpcrl.evaluation.policy_evaluation import evaluate_policies, evaluate_policy

        if worker.multi_agent:
            metrics = evaluate_policies(
                worker.policy_map,
                self.config["env"],
                num_episodes,
                policy_mapping_fn=self.config["multiagent"]["policy_mapping_fn"],
                **kwargs,
            )
            per_policy = metrics.pop("policy_returns")
            metrics["policy_reward_mean"] = {
                pid: float(np.mean(returns)) for pid, returns in per_policy.items()
            }
        else:
            policy = worker.get_policy()
            metrics = evaluate_policy(policy, self.config["env"], num_episodes, **kwargs)
        return metrics

    def _update_global_vars(self) -> None:
        self.workers.set_global_vars({"timestep": self.optimizer.num_steps_sampled})

    def _collect_worker_metrics(self) -> list[dict[str, Any]]:
        remote = self.workers.remote_workers()
        if not remote:
            return [self.workers.local_worker().get_metrics()]
        return self.workers.call_remote("get_metrics")

    # -- using the policy ------------------------------------------------
    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Policy:
        """The driver's policy ``policy_id`` (the only one when there is one)."""
        return self.workers.local_worker().get_policy(policy_id)

    def compute_single_action(
        self,
        observation: Any,
        state: list[np.ndarray] | None = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
        info: dict | None = None,
        policy_id: str = DEFAULT_POLICY_ID,
        full_fetch: bool = False,
        explore: bool | None = None,
    ) -> Any:
        """The action for one observation.

        Returns:
            The action; or ``(action, state_out, extra_info)`` when ``state`` is
            given or ``full_fetch`` is set.
        """
        action, state_out, extra = self.get_policy(policy_id).compute_single_action(
            observation, state, prev_action, prev_reward, info, explore=explore
        )
        if state is not None or full_fetch:
            return action, state_out, extra
        return action

    def get_weights(self) -> dict[str, dict[str, np.ndarray]]:
        return self.workers.local_worker().get_weights()

    def set_weights(self, weights: dict[str, dict[str, np.ndarray]]) -> None:
        self.workers.local_worker().set_weights(weights)
        self.workers.sync_weights()

    # -- checkpoints -----------------------------------------------------
    def save(self, checkpoint_dir: str | None = None) -> str:
        """Write a checkpoint (JSON and HDF5, no pickle; see ``hpcrl.io.checkpoint``)
        to ``checkpoint_dir/checkpoint_<iteration>/`` and return its path.

        ``checkpoint_dir`` defaults to ``self.logdir`` (the trial directory under
        an Experiment, else a new ``~/hpcrl_results/<algorithm>_<time>``). The
        oldest checkpoints there beyond ``keep_checkpoints_num`` are deleted.
        """
        from hpcrl.io.checkpoint import save_trainer_checkpoint

        if checkpoint_dir is None:
            if self.logdir is None:
                stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
                self.logdir = os.path.join("~", "hpcrl_results", f"{self._name}_{stamp}")
            checkpoint_dir = self.logdir
        return save_trainer_checkpoint(self, checkpoint_dir)

    def restore(self, checkpoint_path: str) -> None:
        """Continue from a checkpoint of ``save()``: weights, optimizer state, counters,
        metrics, random generators and the workers' episodes. The trainer must be
        of the same algorithm; with the same config and a fixed seed, training on
        gives the weights an uninterrupted run would have (see the README,
        "Checkpoints and preemption", for which configurations).

        Raises:
            hpcrl.io.checkpoint.CheckpointError: a checkpoint of another algorithm,
                an incomplete or truncated checkpoint, or a newer format version.
        """
        from hpcrl.io.checkpoint import restore_trainer_checkpoint

        restore_trainer_checkpoint(self, checkpoint_path)

    def get_state(self) -> dict[str, Any]:
        """The trainer's state as a tree of arrays and plain values (what ``save()`` writes)."""
        from hpcrl.io.rng_state import process_rng_state

        local = self.workers.local_worker()
        workers = {"0": local.get_state(policy_state="none")}
        if self.workers.remote_workers():
            remote_states = self.workers.call_remote("get_state", policy_state="no_weights")
            workers.update({str(i): s for i, s in enumerate(remote_states, start=1)})
        with self.optimizer.paused():  # a learner thread (IMPALA) waits meanwhile
            optimizer = self.optimizer.save()
            policies = {pid: p.get_state() for pid, p in local.policy_map.items()}
        return {
            "iteration": self.iteration,
            "time_total_s": self._time_total,
            "metrics": self._metrics.get_state(),
            "optimizer": optimizer,
            "policies": policies,
            "workers": workers,
            "process_rng": process_rng_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()``."""
        from hpcrl.io.rng_state import set_process_rng_state

        self.iteration = int(state["iteration"])
        self._time_total = float(state["time_total_s"])
        self._metrics.set_state(state["metrics"])
        local = self.workers.local_worker()
        with self.optimizer.paused():
            self.optimizer.restore(state["optimizer"])
            for pid, policy_state in state["policies"].items():
                local.get_policy(pid).set_state(policy_state)
        local.set_state(state["workers"]["0"])
        remote = self.workers.remote_workers()
        saved = [state["workers"][str(i)] for i in range(1, len(state["workers"]))]
        if len(saved) != len(remote):
            warnings.warn(
                f"the checkpoint has {len(saved)} remote workers, this trainer {len(remote)}: "
                f"the first {min(len(saved), len(remote))} continue their episodes, the others "
                "start afresh",
                stacklevel=2,
            )
        backend = self.workers.backend
        backend.get([backend.call([actor], "set_state", s)[0] for actor, s in zip(remote, saved)])
        filters = local.get_filter_states()
        if filters and remote[len(saved) :]:  # workers the checkpoint has no state for
            backend.get(backend.call(remote[len(saved) :], "sync_filters", filters))
        self.workers.sync_weights()
        set_process_rng_state(state["process_rng"])

    def stop(self) -> None:
        """Stop the optimizer, the workers and the backend."""
        self.optimizer.stop()
        self.workers.stop()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{self._name}(env={self.config['env']!r}, iteration={self.iteration})"
