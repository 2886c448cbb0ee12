"""RLlib's config keys read as hpcrl's, so RLlib's YAML files run as they stand.

RLlib renamed keys over its versions (``sample_batch_size`` became
``rollout_fragment_length``, ``num_workers`` became ``num_env_runners``...) and has
keys for Ray, TensorFlow and its own internals that mean nothing here.
``from_rllib_config`` gives every renamed key whose meaning hpcrl implements
hpcrl's name, drops the keys with no meaning here, upgrades env ids gymnasium no
longer makes, and logs one note saying all it did. Any other key stays for
``merge_config`` to reject by name, and a key of the algorithm's own defaults is
never touched, so nothing is ignored silently.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("hpcrl.algorithms.rllib_compat")

# Stands for "any value" in IGNORED_KEYS.
ANY = object()

_CPU_WORKERS = (
    "rollout workers act on the CPU; num_gpus puts the learner on a GPU "
    "(DD-PPO's workers, which learn, take num_gpus_per_worker: 1)"
)

# RLlib keys for Ray's resources, TensorFlow, logging or RLlib's internals -> the values
# at which they change nothing here (ANY: all). Another value is an error.
IGNORED_KEYS: dict[str, Any] = {
    # hpcrl runs PyTorch whatever these say: RLlib's tuned files set framework: tf with
    # "works for both torch and tf", and the issue asks that such files run unchanged.
    "framework": ANY,
    "use_pytorch": ANY,
    "eager": ANY,
    "eager_tracing": ANY,
    "eager_max_retraces": ANY,
    "tf_session_args": ANY,
    "local_tf_session_args": ANY,
    # RLlib's switches between its own code paths (the algorithm stays the same).
    "_enable_new_api_stack": ANY,
    "enable_rl_module_and_learner": ANY,
    "enable_env_runner_and_connector_v2": ANY,
    "_enable_learner_api": ANY,
    "_enable_rl_module_api": ANY,
    "_use_trajectory_view_api": ANY,
    "_disable_execution_plan_api": ANY,
    "enable_connectors": ANY,
    "simple_optimizer": ANY,
    # hpcrl always merges the workers' observation filters each iteration.
    "synchronize_filters": (True,),
    # Ray's resource requests: the backend decides where processes run.
    "num_cpus_per_worker": ANY,
    "num_cpus_per_env_runner": ANY,
    "num_cpus_for_driver": ANY,
    "num_cpus_for_local_worker": ANY,
    "num_cpus_for_main_process": ANY,
    "num_cpus_per_learner_worker": ANY,
    "num_cpus_per_learner": ANY,
    "custom_resources_per_worker": ANY,
    "custom_resources_per_env_runner": ANY,
    "placement_strategy": ANY,
    "memory": ANY,
    "object_store_memory": ANY,
    "memory_per_worker": ANY,
    "object_store_memory_per_worker": ANY,
    "num_gpus_per_worker": (0,),
    "num_gpus_per_env_runner": (0,),
    "_fake_gpus": (False,),
    # Logging and Ray's metric collection.
    "log_level": ANY,
    "log_sys_usage": ANY,
    "collect_metrics_timeout": ANY,
    "metrics_episode_collection_timeout_s": ANY,
    # What hpcrl always does (evaluation on the driver, gymnasium's truncated flag for
    # time limits, global-norm gradient clipping...).
    "evaluation_num_workers": (0,),
    "evaluation_num_env_runners": (0,),
    "evaluation_parallel_to_training": (False,),
    "evaluation_duration_unit": ("episodes",),
    "num_aggregation_workers": (0,),
    "horizon": (None,),
    "soft_horizon": (False,),
    "no_done_at_end": ANY,
    "create_env_on_driver": ANY,
    "disable_env_checking": ANY,
    "sample_async": (False,),
    "remote_worker_envs": (False,),
    "compress_observations": (False,),
    "monitor": (False,),
    "render_env": (False,),
    "grad_clip_by": ("global_norm",),
    "min_train_timesteps_per_iteration": (0,),
    "min_train_timesteps_per_reporting": (0,),
    # RLlib's default exploration for policy-gradient algorithms: sample the policy.
    "exploration_config": ({}, {"type": "StochasticSampling"}),
    # ES and ARS: results average the unperturbed episodes over
    # metrics_smoothing_episodes (RLlib: the last report_length iterations' means);
    # TensorFlow's threads; the fitness shaping ES always does; ARS's reward offset
    # (the ARS paper's survival-bonus shift for MuJoCo), not implemented but at 0.
    "report_length": ANY,
    "tf_single_threaded": ANY,
    "return_proc_mode": ("centered_rank",),
    "offset": (0, 0.0),
}
_WHY_NOT_IGNORED = {
    "num_gpus_per_worker": _CPU_WORKERS,
    "num_gpus_per_env_runner": _CPU_WORKERS,
}

# RLlib's old or new name -> hpcrl's (the same meaning).
RENAMED_KEYS: dict[str, str] = {
    "sample_batch_size": "rollout_fragment_length",
    "num_rollout_workers": "num_workers",
    "num_env_runners": "num_workers",
    "num_envs_per_env_runner": "num_envs_per_worker",
    "num_epochs": "num_sgd_iter",
    "lambda_": "lambda",
    "metrics_num_episodes_for_smoothing": "metrics_smoothing_episodes",
    "min_time_s_per_reporting": "min_iter_time_s",
    "min_time_s_per_iteration": "min_iter_time_s",
    "min_sample_timesteps_per_reporting": "timesteps_per_iteration",
    "min_sample_timesteps_per_iteration": "timesteps_per_iteration",
    "evaluation_duration": "evaluation_num_episodes",
    "num_steps_sampled_before_learning_starts": "learning_starts",
    "num_learner_workers": "num_learners",
    "num_gpus_per_learner_worker": "num_gpus_per_learner",
    "Q_model": "q_model_config",
    "policy_model": "policy_model_config",
    "restart_failed_sub_environments": "recreate_failed_envs",
    "sgd_stepsize": "stepsize",  # ARS's name for its step size (ES's is stepsize)
}
# Per learner in RLlib's new stack; hpcrl's keys count all learners together.
PER_LEARNER_KEYS: dict[str, str] = {
    "train_batch_size_per_learner": "train_batch_size",
    "minibatch_size": "sgd_minibatch_size",
}
# model keys: RLlib's name -> hpcrl's (one or more).
RENAMED_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "custom_options": ("custom_model_config",),
    "lstm_use_prev_action_reward": ("lstm_use_prev_action", "lstm_use_prev_reward"),
}
# replay_buffer_config keys -> hpcrl's top-level replay keys.
REPLAY_BUFFER_KEYS: dict[str, str] = {
    "capacity": "buffer_size",
    "learning_starts": "learning_starts",
    "prioritized_replay_alpha": "prioritized_replay_alpha",
    "prioritized_replay_beta": "prioritized_replay_beta",
    "prioritized_replay_eps": "prioritized_replay_eps",
    "worker_side_prioritization": "worker_side_prioritization",
}
# replay_buffer_config "type" (class name, or its dotted path) -> prioritized_replay.
REPLAY_BUFFER_TYPES: dict[str, bool] = {
    "ReplayBuffer": False,
    "MultiAgentReplayBuffer": False,
    "EpisodeReplayBuffer": False,
    "MultiAgentEpisodeReplayBuffer": False,
    "PrioritizedReplayBuffer": True,
    "MultiAgentPrioritizedReplayBuffer": True,
    "PrioritizedEpisodeReplayBuffer": True,
    "MultiAgentPrioritizedEpisodeReplayBuffer": True,
}
# Result keys of RLlib's stop criteria -> hpcrl's.
RENAMED_RESULT_KEYS: dict[str, str] = {
    "sampler_results/episode_reward_mean": "episode_reward_mean",
    "env_runners/episode_reward_mean": "episode_reward_mean",
    "env_runners/episode_return_mean": "episode_reward_mean",
    "num_env_steps_sampled_lifetime": "timesteps_total",
    "evaluation/sampler_results/episode_reward_mean": "evaluation/episode_reward_mean",
    "evaluation/env_runners/episode_reward_mean": "evaluation/episode_reward_mean",
    "evaluation/env_runners/episode_return_mean": "evaluation/episode_reward_mean",
}


def from_rllib_config(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``config`` with RLlib's keys read as hpcrl's (``translate_rllib_config``), logging
    one warning that lists what was ignored, renamed or upgraded."""
    translated, notes = translate_rllib_config(config, defaults)
    if notes:
        logger.warning("RLlib config read for hpcrl: %s", "; ".join(notes))
    return translated


def translate_rllib_config(
    config: dict[str, Any], defaults: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``(config, notes)``: RLlib's renamed keys under hpcrl's names, the keys with no
    meaning here dropped, an old env id upgraded; ``notes`` says what was done.

    Raises:
        ValueError: an ignorable key at a value that would mean something
            (``num_gpus_per_worker: 1``), or an RLlib name and hpcrl's given different values.

    Example:
        >>> config, notes = translate_rllib_config(
        ...     {"framework": "torch", "sample_batch_size": 50}, {"rollout_fragment_length": 200}
        ... )
        >>> config, notes
        ({'rollout_fragment_length': 50}, ['ignored (no meaning in hpcrl): framework', \
'renamed: sample_batch_size -> rollout_fragment_length'])
    """
    translation = _Translation(config, defaults)
    translation.drop_ignored()
    translation.rename()
    translation.rename_per_learner()
    translation.rename_model_keys()
    translation.replay_buffer_config()
    translation.epsilon_greedy_type()
    translation.lr_schedule()
    translation.upgrade_env()
    return translation.config, translation.notes()


def from_rllib_stop(stop: dict[str, Any]) -> dict[str, Any]:
    """Stop criteria with RLlib's newer result keys under hpcrl's, logging one note.

    Example:
        >>> from_rllib_stop({"env_runners/episode_return_mean": 150})
        {'episode_reward_mean': 150}
    """
    renamed = {RENAMED_RESULT_KEYS.get(key, key): value for key, value in stop.items()}
    moved = [f"{key} -> {RENAMED_RESULT_KEYS[key]}" for key in stop if key in RENAMED_RESULT_KEYS]
    if len(renamed) < len(stop):
        raise ValueError(
            f"stop criteria {sorted(stop)} name the same result twice under RLlib's and "
            "hpcrl's names; give it once"
        )
    if moved:
        logger.warning("RLlib stop keys read for hpcrl: renamed: %s", ", ".join(moved))
    return renamed


class _Translation:
    """One config on its way from RLlib's keys to hpcrl's, with what was done to it."""

    def __init__(self, config: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.config = dict(config)
        self.defaults = defaults
        self.ignored: list[str] = []
        self.renamed: list[str] = []
        self.upgraded: list[str] = []
        # hpcrl key -> the key the user wrote it as (for conflict messages).
        self.written_as: dict[str, str] = {key: key for key in config}

    def notes(self) -> list[str]:
        notes = []
        if self.ignored:
            notes.append(f"ignored (no meaning in hpcrl): {', '.join(self.ignored)}")
        if self.renamed:
            notes.append(f"renamed: {', '.join(self.renamed)}")
        return notes + self.upgraded

    def is_rllib_key(self, key: str) -> bool:
        """Whether the config has ``key`` and the algorithm's defaults do not."""
        return key in self.config and key not in self.defaults

    def rllib_keys(self, table: dict[str, Any]) -> list[str]:
        """Keys of ``table`` in the config that the algorithm's defaults do not have."""
        return [key for key in list(self.config) if key in table and self.is_rllib_key(key)]

    def drop_ignored(self) -> None:
        for key in self.rllib_keys(IGNORED_KEYS):
            allowed = IGNORED_KEYS[key]
            value = self.config[key]
            if allowed is not ANY and value not in allowed:
                why = _WHY_NOT_IGNORED.get(key, "hpcrl does not implement other values")
                only = " or ".join(repr(v) for v in allowed)
                raise ValueError(
                    f"config key {key!r} is {value!r}; hpcrl ignores this RLlib key only as "
                    f"{only}: {why}"
                )
            del self.config[key]
            self.ignored.append(key)

    def rename(self) -> None:
        for old in self.rllib_keys(RENAMED_KEYS):
            if RENAMED_KEYS[old] in self.defaults:
                self.move(old, RENAMED_KEYS[old], self.config.pop(old))

    def rename_per_learner(self) -> None:
        learners = self.config.get("num_learners", 1)
        learners = learners if isinstance(learners, int) and learners > 1 else 1
        for old in self.rllib_keys(PER_LEARNER_KEYS):
            if PER_LEARNER_KEYS[old] in self.defaults:
                value = self.config.pop(old)
                total = value * learners if isinstance(value, int) else value
                self.move(old, PER_LEARNER_KEYS[old], total)
                if learners > 1:
                    self.renamed[-1] += f" (times {learners} learners)"

    def rename_model_keys(self) -> None:
        """``model`` keys RLlib renamed, and the top-level ``vf_share_layers`` of old."""
        given = self.config.get("model")
        if given is not None and not isinstance(given, dict):
            return  # merge_config names the wrong type
        model = dict(given or {})
        for old in [key for key in model if key in RENAMED_MODEL_KEYS]:
            value = model.pop(old)
            for new in RENAMED_MODEL_KEYS[old]:
                _set_once(model, new, value, f"model.{old}")
            self.renamed.append(
                f"model.{old} -> model." + " and model.".join(RENAMED_MODEL_KEYS[old])
            )
        if self.is_rllib_key("vf_share_layers"):
            _set_once(
                model, "vf_share_layers", self.config.pop("vf_share_layers"), "vf_share_layers"
            )
            self.renamed.append("vf_share_layers -> model.vf_share_layers")
        if model != (given or {}):
            self.config["model"] = model

    def replay_buffer_config(self) -> None:
        """RLlib's ``replay_buffer_config`` dict as hpcrl's top-level replay keys."""
        if not self.is_rllib_key("replay_buffer_config") or "buffer_size" not in self.defaults:
            return
        replay = dict(self.config.pop("replay_buffer_config") or {})
        if "type" in replay:
            kind = str(replay.pop("type")).rsplit(".", 1)[-1]
            if kind not in REPLAY_BUFFER_TYPES:
                raise ValueError(
                    f"replay_buffer_config type {kind!r} is not one hpcrl has; it replays "
                    f"from {', '.join(REPLAY_BUFFER_TYPES)}"
                )
            self.move("replay_buffer_config.type", "prioritized_replay", REPLAY_BUFFER_TYPES[kind])
        for sub, value in replay.items():
            if (sub, value) in (("replay_sequence_length", 1), ("storage_unit", "timesteps")):
                self.ignored.append(f"replay_buffer_config.{sub}")
                continue
            new = REPLAY_BUFFER_KEYS.get(sub)
            if new not in self.defaults:
                takes = [k for k, v in REPLAY_BUFFER_KEYS.items() if v in self.defaults]
                raise ValueError(
                    f"replay_buffer_config key {sub!r} has no counterpart in hpcrl; it takes "
                    f"type, {', '.join(takes)}"
                )
            self.move(f"replay_buffer_config.{sub}", new, value)

    def epsilon_greedy_type(self) -> None:
        """DQN's ``exploration_config`` has no ``type``: it is epsilon-greedy, or Ape-X's
        per-worker epsilons with ``per_worker_exploration``."""
        exploration = self.config.get("exploration_config")
        default = self.defaults.get("exploration_config")
        if not (isinstance(exploration, dict) and isinstance(default, dict)):
            return
        if "type" not in exploration or "type" in default:
            return
        kind = str(exploration["type"]).rsplit(".", 1)[-1]
        if kind == "EpsilonGreedy":
            self.ignored.append("exploration_config.type (EpsilonGreedy)")
        elif kind == "PerWorkerEpsilonGreedy" and "per_worker_exploration" in self.defaults:
            self.move("exploration_config.type", "per_worker_exploration", True)
        else:
            return  # the algorithm's own check names the key
        self.config["exploration_config"] = {k: v for k, v in exploration.items() if k != "type"}

    def lr_schedule(self) -> None:
        """RLlib's new stack takes a schedule as ``lr: [[timestep, value], ...]``."""
        schedule = self.config.get("lr")
        pairs = isinstance(schedule, list) and schedule
        pairs = pairs and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in schedule)
        if pairs and "lr_schedule" in self.defaults:  # else merge_config names the bad type
            self.move("lr", "lr_schedule", schedule)
            self.config["lr"] = schedule[0][1]

    def upgrade_env(self) -> None:
        env = self.config.get("env")
        if not isinstance(env, str):
            return
        from hpcrl.env.registry import newest_gymnasium_id

        newest = newest_gymnasium_id(env)
        if newest is not None:
            self.config["env"] = newest
            self.upgraded.append(f"env {env!r} -> {newest!r} (gymnasium's version of it)")

    def move(self, old: str, new: str, value: Any) -> None:
        """Set hpcrl's ``new`` to ``value`` given as RLlib's ``old``; an error if ``new``
        was given too, with another value."""
        if new in self.config and self.config[new] != value:
            raise ValueError(
                f"config keys {old!r} (RLlib's name for {new!r}) and "
                f"{self.written_as.get(new, new)!r} disagree: {value!r} vs "
                f"{self.config[new]!r}; give {new!r} only"
            )
        self.config[new] = value
        self.written_as.setdefault(new, old)
        self.renamed.append(f"{old} -> {new}")


def _set_once(model: dict[str, Any], key: str, value: Any, old: str) -> None:
    if key in model and model[key] != value:
        raise ValueError(
            f"config keys {old!r} (RLlib's name for 'model.{key}') and 'model.{key}' disagree: "
            f"{value!r} vs {model[key]!r}; give 'model.{key}' only"
        )
    model[key] = value
