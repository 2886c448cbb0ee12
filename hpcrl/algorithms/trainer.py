"""Trainer: config, workers, optimizer and metrics behind ``train()``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hpcrl.algorithms.config import COMMON_CONFIG, merge_config
from hpcrl.env.registry import resolve_env_creator
from hpcrl.evaluation.metrics import MetricsWindow
from hpcrl.evaluation.postprocessing import Postprocessing
from hpcrl.evaluation.worker_set import WorkerSet
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
)


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

    def __init__(self, config: dict[str, Any] | None = None, env: Any = None) -> None:
        config = dict(config or {})
        if env is not None:
            config["env"] = env
        self.config = merge_config(self._default_config, config)
        if self.config["env"] is None:
            raise ValueError(f"{self._name} needs an env: pass env=... or config['env']")
        self.env_creator = resolve_env_creator(self.config["env"])
        self.validate_config(self.config)
        self.iteration = 0
        self._time_total = 0.0
        self._metrics = MetricsWindow(self.config["metrics_smoothing_episodes"])
        self.before_init()
        self.workers = WorkerSet(
            policy=self.get_policy_class(self.config),
            env_creator=self.config["env"],
            num_workers=self.config["num_workers"],
            config=self.config,
            backend=self.config["backend"],
        )
        self.config["num_workers"] = self.workers.num_workers
        self.optimizer = self.make_policy_optimizer(self.workers, self.config)
        self.after_init()

    # -- hooks (build_trainer replaces these) ----------------------------
    def validate_config(self, config: dict[str, Any]) -> None:
        """Raise ValueError for an inconsistent config."""

    def get_policy_class(self, config: dict[str, Any]) -> type[Policy]:
        if self._policy is None:
            raise ValueError(f"{self._name} has no default policy")
        return self._policy

    def make_policy_optimizer(self, workers: WorkerSet, config: dict[str, Any]) -> PolicyOptimizer:
        """``SyncSamplesOptimizer`` over ``train_batch_size`` rows, with the config's
        ``num_sgd_iter``, ``sgd_minibatch_size`` and ``standardize_advantages`` where
        the algorithm has them (one whole-batch step, no scaling otherwise)."""
        fields = (Postprocessing.ADVANTAGES,) if config.get("standardize_advantages") else ()
        return SyncSamplesOptimizer(
            workers,
            train_batch_size=config["train_batch_size"],
            num_sgd_iter=config.get("num_sgd_iter", 1),
            sgd_minibatch_size=config.get("sgd_minibatch_size", 0),
            standardize_fields=fields,
        )

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
        """One training iteration: optimizer steps until ``timesteps_per_iteration``."""
        start = time.perf_counter()
        self.before_train_step()
        sampled_before = self.optimizer.num_steps_sampled
        while True:
            fetches = self.optimizer.step()
            self.after_optimizer_step(fetches)
            sampled = self.optimizer.num_steps_sampled - sampled_before
            if sampled >= self.config["timesteps_per_iteration"]:
                break
        self._update_global_vars()
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
            "num_healthy_workers": len(self.workers.remote_workers()),
            "num_worker_restarts": 0,
            "info": self.optimizer.stats(),
        }
        self.after_train_result(result)
        return result

    def _update_global_vars(self) -> None:
        self.workers.set_global_vars({"timestep": self.optimizer.num_steps_sampled})

    def _collect_worker_metrics(self) -> list[dict[str, Any]]:
        remote = self.workers.remote_workers()
        if not remote:
            return [self.workers.local_worker().get_metrics()]
        backend = self.workers.backend
        return backend.get(backend.call(remote, "get_metrics"))

    # -- using the policy ------------------------------------------------
    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Policy:
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
