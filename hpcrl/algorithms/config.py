"""Trainer config: common defaults, merging and validation."""

from __future__ import annotations

import copy
import difflib
import math
import os
from typing import Any, NamedTuple

from hpcrl.algorithms.rllib_compat import from_rllib_config
from hpcrl.env.atari import atari_preprocessing_options, check_preprocessor_pref
from hpcrl.evaluation.reward_clipping import reward_clipper
from hpcrl.models.catalog import merge_model_config
from hpcrl.policy.observation_filter import check_filter_name

COMMON_CONFIG: dict[str, Any] = {
    # --- environment ---
    # gymnasium id, "module:EnvId", a name given to register_env, or a creator function.
    "env": None,
    # Passed to the env creator (or as keyword arguments to gymnasium.make_vec).
    "env_config": {},
    # "auto" (the env's own batched implementation if it has one, else "sync"),
    # "vector_entry_point", "sync" or "async" (one subprocess per env).
    "vectorization_mode": "auto",
    # Atari ids (ALE/Pong-v5, PongNoFrameskip-v4...): "deepmind" plays them with DeepMind's
    # preprocessing (no-op starts, frame skip 4, 84x84 grayscale, 4 frames stacked:
    # uint8[4, 84, 84]); "rllib" or None: the game's raw frames. Other envs: no effect.
    "preprocessor_pref": "deepmind",
    # Options of the deepmind preprocessing; see hpcrl.env.atari.ATARI_PREPROCESSING_DEFAULTS
    # (model["dim"], RLlib's key, sets the frames' side too).
    "atari_preprocessing": {},
    # --- rollouts ---
    # Remote rollout workers; 0 samples on the driver. None: the backend's default
    # (0 for "local", every rank but the driver's for "mpi", one per core for a local
    # Dask cluster, the free Dask workers of a joined one).
    "num_workers": None,
    # Envs stepped together (one batched forward pass) by each worker.
    "num_envs_per_worker": 1,
    # Steps per env in one sample() call.
    "rollout_fragment_length": 200,
    # "truncate_episodes" (exact fragments, cut episodes bootstrapped) or
    # "complete_episodes" (whole episodes only, at least one fragment of steps).
    "batch_mode": "truncate_episodes",
    # Sample stochastically (True) or take the most likely action (False).
    "explore": True,
    # Clip continuous actions to the action space bounds before stepping the env.
    "clip_actions": True,
    # RLlib's key: policies act in [-1, 1] and a bounded Box's actions are rescaled to the
    # env's range (hpcrl.env.action_normalization); Discrete and unbounded spaces unchanged.
    "normalize_actions": False,
    # Clip the rewards the policies learn from (episode_reward_mean keeps the env's own):
    # None: to their sign for Atari ids with deepmind preprocessing, else not; True: to
    # their sign; a number c: to [-c, c]; False: never.
    "clip_rewards": None,
    # Normalise observations before the policy sees them (hpcrl.policy.observation_filter):
    # "NoFilter", or "MeanStdFilter" (alias "ConcurrentMeanStdFilter"): each policy's
    # running mean and std of all observations its workers see, merged by the driver
    # every iteration; batches hold the filtered observations; checkpoints keep it.
    "observation_filter": "NoFilter",
    # --- multi-agent (hpcrl.evaluation.policy_specs) ---
    # "policies": {policy_id: (policy_cls or None, obs_space or None, act_space or None,
    #   config overrides)} or a list of ids (None: the trainer's policy, the env's spaces);
    # "policy_mapping_fn": fn(agent_id, episode, worker, **kw) -> policy_id, or a
    #   "module:function" string; "policies_to_train": ids that learn (None: all);
    # "count_steps_by": "env_steps" or "agent_steps" (what train_batch_size and
    #   rollout_fragment_length count).
    "multiagent": {
        "policies": {},
        "policy_mapping_fn": None,
        "policies_to_train": None,
        "count_steps_by": "env_steps",
    },
    # --- training ---
    # Steps gathered before each learning step.
    "train_batch_size": 200,
    # Discount factor.
    "gamma": 0.99,
    # Learning rate.
    "lr": 1e-4,
    # Clip the global gradient norm to this value (None: no clipping).
    "grad_clip": None,
    # Model options; see hpcrl.models.MODEL_DEFAULTS.
    "model": {},
    # Minimum env steps per train() call (optimizer steps repeat until reached).
    "timesteps_per_iteration": 0,
    # Minimum seconds per train() call (optimizer steps repeat until both are reached).
    "min_iter_time_s": 0.0,
    # --- execution ---
    # Where remote workers run: "local" (this process), "mpi" (MPI ranks; launch
    # with mpiexec/srun) or "dask" (Dask actors; see dask_address).
    "backend": "local",
    # Seconds a remote worker may take to answer a call before the run fails with an
    # error naming it (None: wait forever).
    "worker_timeout_s": 600.0,
    # torch threads per worker process (None: the node's cores shared among its ranks).
    "num_torch_threads": None,
    # torch device of the driver's policies, which learn ("cpu", "cuda", "cuda:1"...);
    # remote rollout workers always act on the CPU.
    "device": "cpu",
    # RLlib's key: GPUs for the driver's learner; > 0 sets device to "cuda" (fractions,
    # e.g. RLlib's 0.2, mean one GPU). Data-parallel learners take num_gpus_per_learner.
    "num_gpus": 0.0,
    # Seed for envs, action sampling, model init and minibatch order (None: random).
    "seed": None,
    # Episodes averaged in episode_reward_mean/min/max and episode_len_mean.
    "metrics_smoothing_episodes": 100,
    # --- evaluation (Trainer.evaluate) ---
    # Every this many iterations, play evaluation_num_episodes episodes on the driver
    # with the current policies and add the figures under result["evaluation"] (0 or
    # None: never).
    "evaluation_interval": 0,
    # Episodes per evaluation, each in a fresh env copy, stepped together.
    "evaluation_num_episodes": 10,
    # Overrides for evaluation: "explore" (default False: the most likely action)
    # and "env_config".
    "evaluation_config": {},
    # --- Dask backend and lost workers ---
    # Scheduler of a running Dask cluster to join, e.g. "tcp://head:8786" (backend
    # "dask"); None: start a local cluster, closed when the trainer stops.
    "dask_address": None,
    # TLS for the Dask cluster hpcrl joins or starts: {"tls_ca_file", "tls_client_cert",
    # "tls_client_key", "require_encryption", ...} (distributed.security.Security's keys;
    # see hpcrl.backends.dask_tls); None: Dask's own configuration (plain TCP by default).
    "dask_security": None,
    # Re-create a remote worker whose process died (dask) with the current weights and
    # go on; False: stop with an error naming the worker and why it was lost.
    "recreate_failed_workers": True,
    # Worker restarts allowed over the whole run, all workers together.
    "max_worker_restarts": 100,
    # --- failing envs (hpcrl.env.failures) ---
    # A sub-env that raises in step() or reset() (or exceeds env_step_timeout_s): True
    # rebuilds it, drops the episode it was playing and goes on (results count
    # num_env_restarts); False stops the run with an error naming the worker, the
    # sub-env, the env and the step, with the env's traceback.
    "recreate_failed_envs": False,
    # Seconds one sub-env's step() or reset() may take before it counts as failed
    # (None: no limit). Set, the sub-envs are stepped in a thread the worker watches.
    "env_step_timeout_s": None,
    # --- data-parallel learners (hpcrl.learners) ---
    # Learner processes doing data-parallel SGD over torch.distributed; above 1, or
    # with GPUs, the synchronous algorithms (PG, A2C, PPO, BC) learn on them.
    "num_learners": 1,
    # GPUs per learner: 0 (CPU) or 1 (each learner on a GPU of its node).
    "num_gpus_per_learner": 0,
    # "auto" (NCCL when every learner has a GPU, gloo otherwise), "nccl" or "gloo".
    "learner_backend": "auto",
    # Seconds a learner waits for the others (rendezvous, all-reduce) before failing.
    "learner_timeout_s": 300.0,
    # --- recorded experience and checkpoints (HDF5, hpcrl.io) ---
    # Directory where every sampling worker appends the batches it samples to an HDF5
    # file of its own (None: record nothing).
    "output": None,
    # Compression of recorded columns: None, "gzip" (level 4), "gzip:1".."gzip:9", "lzf".
    "output_compress": None,
    # Learn from recorded batches instead of envs: a directory written by "output", or
    # a list of its files (None: sample envs). Used by offline algorithms (BC).
    "input": None,
    # Checkpoints Trainer.save() keeps in its directory: the newest N (None: all).
    "keep_checkpoints_num": None,
}

# Keys whose value may be of any type (checked where they are used).
_ANY_TYPE = {"env", "target_entropy"}
# Keys that take None ("decide for me", or "off") or, when set, a value of these types.
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "num_workers": (int,),
    "num_torch_threads": (int,),
    "keep_checkpoints_num": (int,),
    "seed": (int,),
    "grad_clip": (int, float),
    "env_step_timeout_s": (int, float),
    "training_intensity": (int, float),
    "dask_address": (str,),
    "dask_security": (dict,),
    "output": (str, os.PathLike),
    "output_compress": (str,),
    "input": (str, os.PathLike, list, tuple),
    "lr_schedule": (list, tuple),
}
# Keys with a default other than None that also accept None ("off").
_NONE_ALLOWED = {
    "preprocessor_pref",
    "vf_clip_param",
    "worker_timeout_s",
    "evaluation_interval",
    "vtrace_clip_rho_threshold",
    "vtrace_clip_pg_rho_threshold",
}


class Interval(NamedTuple):
    """The values a numeric config key takes: ``low``/``high`` bounds (None: none),
    each closed unless marked open.

    Example:
        >>> str(Interval(0, 1, low_open=True)), 0.5 in Interval(0, 1), 0 in Interval(0, 1, True)
        ('in (0, 1]', True, False)
    """

    low: float | None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        opening, closing = "(["[not self.low_open], ")]"[not self.high_open]
        return f"in {opening}{self.low}, {self.high}{closing}"


_SIZE = Interval(1)  # sizes, lengths and counts of things that must exist
_COUNT = Interval(0)  # counts, steps and seconds that may be 0
_POSITIVE = Interval(0, low_open=True)  # scales, thresholds and timeouts
_UNIT = Interval(0, 1)  # probabilities, discounts, fractions
_UNIT_OPEN = Interval(0, 1, low_open=True)  # fractions that must not be 0

# The range of every numeric config key of every algorithm, checked when the config is
# made (a value equal to the algorithm's default is not checked: DD-PPO's unused
# train_batch_size is -1). Keys not listed take any finite number.
CONFIG_RANGES: dict[str, Interval] = {
    # common
    "num_workers": _COUNT,
    "num_envs_per_worker": _SIZE,
    "rollout_fragment_length": _SIZE,
    "train_batch_size": _SIZE,
    "gamma": _UNIT,
    "lr": _COUNT,
    "grad_clip": _POSITIVE,
    "timesteps_per_iteration": _COUNT,
    "min_iter_time_s": _COUNT,
    "worker_timeout_s": _POSITIVE,
    "num_torch_threads": _SIZE,
    "num_gpus": _COUNT,
    "seed": _COUNT,
    "metrics_smoothing_episodes": _SIZE,
    "evaluation_interval": _COUNT,
    "evaluation_num_episodes": _SIZE,
    "max_worker_restarts": _COUNT,
    "env_step_timeout_s": _POSITIVE,
    "num_learners": _SIZE,
    # num_gpus_per_learner: 0 or 1, checked with its meaning by check_learner_options;
    # DD-PPO's num_gpus_per_worker: 0 or 1, checked by its validate_config.
    "learner_timeout_s": _POSITIVE,
    "keep_checkpoints_num": _SIZE,
    # policy gradient family
    "lambda": _UNIT,
    "clip_param": _UNIT_OPEN,
    "vf_clip_param": _POSITIVE,
    "vf_loss_coeff": _COUNT,
    "entropy_coeff": _COUNT,
    "kl_coeff": _COUNT,
    "kl_target": _COUNT,
    "sgd_minibatch_size": _SIZE,
    "num_sgd_iter": _SIZE,
    "grads_per_step": _SIZE,
    "preemption_fraction": _UNIT,
    "preemption_min_fraction": _UNIT_OPEN,
    "preemption_chunks": _SIZE,
    # IMPALA, APPO and the asynchronous optimizers
    "vtrace_clip_rho_threshold": _POSITIVE,
    "vtrace_clip_pg_rho_threshold": _POSITIVE,
    "broadcast_interval": _SIZE,
    "target_update_frequency": _SIZE,
    "minibatch_buffer_size": _SIZE,
    "replay_proportion": _COUNT,
    "replay_buffer_num_slots": _COUNT,
    "learner_queue_size": _SIZE,
    "learner_queue_timeout": _POSITIVE,
    "max_sample_requests_in_flight_per_worker": _SIZE,
    "decay": _UNIT,
    "momentum": _UNIT,
    "epsilon": _POSITIVE,
    # replay (DQN, SAC, DDPG, TD3, Ape-X)
    "buffer_size": _SIZE,
    "learning_starts": _COUNT,
    "n_step": _SIZE,
    "tau": _UNIT_OPEN,
    "target_network_update_freq": _COUNT,
    "training_intensity": _POSITIVE,
    "prioritized_replay_alpha": _UNIT,
    "prioritized_replay_beta": _UNIT,
    "final_prioritized_replay_beta": _UNIT,
    "prioritized_replay_beta_annealing_timesteps": _SIZE,
    "prioritized_replay_eps": _POSITIVE,
    "adam_epsilon": _POSITIVE,
    "actor_lr": _COUNT,
    "critic_lr": _COUNT,
    "l2_reg": _COUNT,
    "huber_threshold": _POSITIVE,
    "policy_delay": _SIZE,
    "target_noise": _COUNT,
    "target_noise_clip": _COUNT,
    "initial_alpha": _POSITIVE,
    "num_replay_buffer_shards": _SIZE,
    "max_adds_in_flight_per_shard": _SIZE,
    "max_requests_in_flight_per_replay_shard": _SIZE,
    "max_weight_sync_delay": _SIZE,
    # ES and ARS
    "episodes_per_batch": _SIZE,
    "noise_stdev": _POSITIVE,
    "stepsize": _POSITIVE,
    "eval_prob": _UNIT,
    "l2_coeff": _COUNT,
    "noise_size": _SIZE,
    "noise_seed": _COUNT,
    "num_rollouts": _SIZE,
    "rollouts_used": _SIZE,
    # entries of dict keys
    "exploration_config.initial_epsilon": _UNIT,
    "exploration_config.final_epsilon": _UNIT,
    "exploration_config.epsilon_timesteps": _COUNT,
    "exploration_config.random_timesteps": _COUNT,
    "exploration_config.ou_theta": _COUNT,
    "exploration_config.ou_sigma": _COUNT,
    "exploration_config.ou_base_scale": _COUNT,
    "exploration_config.stddev": _COUNT,
    "exploration_config.initial_scale": _COUNT,
    "exploration_config.final_scale": _COUNT,
    "exploration_config.scale_timesteps": _COUNT,
    "optimization.actor_learning_rate": _COUNT,
    "optimization.critic_learning_rate": _COUNT,
    "optimization.entropy_learning_rate": _COUNT,
}


def with_common_config(extra: dict[str, Any]) -> dict[str, Any]:
    """COMMON_CONFIG updated with an algorithm's own keys and defaults."""
    config = copy.deepcopy(COMMON_CONFIG)
    config.update(copy.deepcopy(extra))
    return config


def merge_config(
    defaults: dict[str, Any],
    config: dict[str, Any] | None,
    ranges: dict[str, Interval] | None = None,
) -> dict[str, Any]:
    """``config`` merged over ``defaults``, with every key and type checked; RLlib's
    keys are read as hpcrl's first (``rllib_compat.from_rllib_config``).

    Raises:
        ValueError: an unknown key (naming the closest valid one), a value
            of the wrong type (naming the expected type) or a number outside
            its range (naming it): ``CONFIG_RANGES``, updated with ``ranges``.
    """
    merged = copy.deepcopy(defaults)
    for key, value in from_rllib_config(config or {}, defaults).items():
        if key not in defaults:
            raise ValueError(unknown_key_message("config key", key, defaults))
        _check_type(key, value, defaults[key])
        _check_range(key, value, defaults[key], ranges)
        for name, entry in value.items() if isinstance(value, dict) else ():
            if f"{key}.{name}" in CONFIG_RANGES:  # e.g. exploration_config.final_epsilon
                _check_type(f"{key}.{name}", entry, 0.0)
                _check_range(f"{key}.{name}", entry, (defaults[key] or {}).get(name))
        if key == "multiagent":
            from hpcrl.evaluation.policy_specs import check_multiagent_config

            check_multiagent_config(value)  # raises for bad input; workers resolve it
            value = {**defaults[key], **value}
        _check_value(key, value)
        merged[key] = value
    merged["model"] = merge_model_config(merged.get("model") or {})
    atari_preprocessing_options(merged)  # raises for bad options, or a dim that disagrees
    if "device" in merged:
        merged["device"] = learner_device(merged)
    return merged


def learner_device(config: dict[str, Any]) -> str:
    """The driver's torch device: ``device``, or "cuda" when ``num_gpus`` > 0 asks for a
    GPU; a GPU that torch cannot see is an error naming the fix.

    Example:
        >>> learner_device({"device": "cpu", "num_gpus": 0})
        'cpu'
    """
    device = str(config.get("device", "cpu"))
    if config.get("num_gpus", 0) > 0 and device == "cpu":
        device = "cuda"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            asked = (
                f"num_gpus={config['num_gpus']}"
                if config.get("num_gpus", 0) > 0
                else f"device={device!r}"
            )
            raise ValueError(
                f"{asked} asks for a GPU, but torch {torch.__version__} sees none (a CPU "
                "build, or no CUDA device visible); set num_gpus: 0 and device: cpu, or run "
                "on a GPU node with a CUDA build of torch"
            )
    return device


# evaluation_config keys: evaluation plays on the driver with the trained policies,
# so only what changes how they act or what they play on applies.
EVALUATION_CONFIG_KEYS = ("explore", "env_config")


def check_evaluation_config(config: dict[str, Any]) -> None:
    """Raise ValueError for bad ``evaluation_config`` keys, naming the value and the fix
    (``merge_config`` checks the ranges of ``evaluation_interval`` and
    ``evaluation_num_episodes``)."""
    for key, value in config["evaluation_config"].items():
        if key not in EVALUATION_CONFIG_KEYS:
            raise ValueError(
                f"evaluation_config key {key!r} is not supported: evaluation plays on the "
                f"driver with the trained policies; supported keys: "
                f"{', '.join(EVALUATION_CONFIG_KEYS)}"
            )
        _check_type(key, value, COMMON_CONFIG[key])


def unknown_key_message(what: str, key: str, valid: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in valid], n=1)
    hint = (
        f"; did you mean {close[0]!r}?"
        if close
        else f"; valid: {', '.join(sorted(str(k) for k in valid))}"
    )
    return f"unknown {what} {key!r}{hint}"


def _check_value(key: str, value: Any) -> None:
    """Raise ValueError for a bad value of a key whose type alone says too little."""
    if key == "preprocessor_pref":
        check_preprocessor_pref(value)
    elif key == "clip_rewards":
        reward_clipper(value, clip_by_default=False)
    elif key == "observation_filter":
        check_filter_name(value)


def _check_type(key: str, value: Any, default: Any) -> None:
    if key in _ANY_TYPE or (value is None and (key in _OPTIONAL_TYPES or key in _NONE_ALLOWED)):
        return
    expected: tuple[type, ...]
    if key in _OPTIONAL_TYPES:
        expected = _OPTIONAL_TYPES[key]
    elif default is None:
        return
    elif isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, (int, float)):
        expected = (int, float) if isinstance(default, float) else (int,)
    elif isinstance(default, (list, tuple)):
        expected = (list, tuple)
    else:
        expected = (type(default),)
    if isinstance(value, bool) and bool not in expected:
        expected_ok = False  # True and False are ints to isinstance, not to a user
    else:
        expected_ok = isinstance(value, expected)
    if not expected_ok:
        names = " or ".join(t.__name__ for t in expected)
        if key in _OPTIONAL_TYPES or key in _NONE_ALLOWED:
            names += " or None"
        raise ValueError(
            f"config key {key!r} must be {names}, got {type(value).__name__} {value!r}"
        )


def _check_range(
    key: str, value: Any, default: Any, ranges: dict[str, Interval] | None = None
) -> None:
    """Raise ValueError for a number that is not finite or outside its range (``ranges``,
    else ``CONFIG_RANGES``; the algorithm's own default always passes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value == default:
        return
    allowed = (ranges or {}).get(key, CONFIG_RANGES.get(key))
    finite = isinstance(value, int) or math.isfinite(value)
    if finite and (allowed is None or value in allowed):
        return
    expected = str(allowed) if finite else f"a finite number{f' {allowed}' if allowed else ''}"
    valid_default = isinstance(default, (int, float)) and (allowed is None or default in allowed)
    hint = f" (the default is {default!r})" if valid_default else ""
    raise ValueError(f"config key {key!r} must be {expected}, got {value!r}{hint}")
