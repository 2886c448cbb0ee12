"""Trainer config: common defaults, merging and validation."""

from __future__ import annotations

import copy
import difflib
from typing import Any

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

# Keys whose value may be of any type (free-form or several allowed types).
_ANY_TYPE = {"env", "env_config", "seed", "grad_clip", "target_entropy"}
# Keys that must be an int when given (their default None means "decide for me").
_INT_OR_NONE = {"num_workers", "num_torch_threads", "keep_checkpoints_num"}
# Smallest allowed values (checked when the config is made, not when first used).
_AT_LEAST = {"keep_checkpoints_num": 1, "num_gpus": 0}
# Keys with a default other than None that also accept None ("off").
_NONE_ALLOWED = {
    "preprocessor_pref",
    "vf_clip_param",
    "worker_timeout_s",
    "evaluation_interval",
    "vtrace_clip_rho_threshold",
    "vtrace_clip_pg_rho_threshold",
}


def with_common_config(extra: dict[str, Any]) -> dict[str, Any]:
    """COMMON_CONFIG updated with an algorithm's own keys and defaults."""
    config = copy.deepcopy(COMMON_CONFIG)
    config.update(copy.deepcopy(extra))
    return config


def merge_config(defaults: dict[str, Any], config: dict[str, Any] | None) -> dict[str, Any]:
    """``config`` merged over ``defaults``, with every key and type checked; RLlib's
    keys are read as hpcrl's first (``rllib_compat.from_rllib_config``).

    Raises:
        ValueError: an unknown key (naming the closest valid one) or a value
            of the wrong type (naming the expected type).
    """
    merged = copy.deepcopy(defaults)
    for key, value in from_rllib_config(config or {}, defaults).items():
        if key not in defaults:
            raise ValueError(unknown_key_message("config key", key, defaults))
        _check_type(key, value, defaults[key])
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
    """Raise ValueError for bad ``evaluation_*`` keys, naming the value and the fix."""
    interval = config["evaluation_interval"]
    if interval is not None and interval < 0:
        raise ValueError(
            f"config key 'evaluation_interval' must be >= 0 (0 or None: never), got {interval}"
        )
    if config["evaluation_num_episodes"] < 1:
        raise ValueError(
            "config key 'evaluation_num_episodes' must be >= 1, got "
            f"{config['evaluation_num_episodes']}"
        )
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
    if key in _INT_OR_NONE:  # None (the default) or an int, checked as any int key is
        if value is None:
            return
        default = 0
    if key in _ANY_TYPE or default is None or (value is None and key in _NONE_ALLOWED):
        return
    expected: tuple[type, ...]
    if isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, (int, float)):
        expected = (int, float) if isinstance(default, float) else (int,)
        if isinstance(value, bool):
            expected = ()
    elif isinstance(default, (list, tuple)):
        expected = (list, tuple)
    else:
        expected = (type(default),)
    if not expected or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in (expected or (type(default),)))
        raise ValueError(
            f"config key {key!r} must be {names}, got {type(value).__name__} {value!r}"
        )
    if key in _AT_LEAST and value < _AT_LEAST[key]:
        raise ValueError(f"config key {key!r} must be >= {_AT_LEAST[key]}, got {value!r}")
