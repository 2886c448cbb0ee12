"""Bad input, fuzzed: every config key with a wrong type or an out-of-range number,
contradictory keys, malformed experiment files, damaged checkpoints, bad recorded
batch files and env modules that fail to import.

Each must end ``hpcrl`` with exit code 2 and one line, ``hpcrl: error: ...``, naming
the offending value and the fix (never a traceback from h5py, torch or numpy), and
leave what exists on disk as it was. Config errors must come before any rollout
worker is made: the ``no_workers`` fixture fails a case that gets that far.

``num_workers`` above the MPI job's ranks is covered by
``tests/mpi/test_mpi_backend.py::test_more_workers_than_ranks_is_a_clear_error``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import hpcrl.algorithms.trainer as trainer_module
from hpcrl.algorithms.config import COMMON_CONFIG
from hpcrl.algorithms.registry import ALGORITHMS, get_trainer_class
from hpcrl.cli import main

CONTINUOUS = {"SAC", "DDPG", "TD3", "APEX_DDPG"}
SMALL_PG = {
    "model": {"fcnet_hiddens": [8]},
    "num_envs_per_worker": 1,
    "rollout_fragment_length": 20,
    "train_batch_size": 40,
    "seed": 1,
}


def env_of(algorithm: str) -> str:
    return "Pendulum-v1" if algorithm in CONTINUOUS else "CartPole-v1"


def assert_usage_error(code: int, err: str, *fragments: str) -> str:
    """Exit code 2 and one line ``hpcrl: error: ...`` holding every fragment."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("hpcrl: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under ``root`` (but ``skip``): what must stay as it was."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and (skip is None or path != skip)
    }


class WorkersStarted(BaseException):
    """Raised instead of making workers: the config got past every check."""


@pytest.fixture
def no_workers(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise WorkersStarted("the config was accepted and workers were about to start")

    monkeypatch.setattr(trainer_module, "WorkerSet", refuse)


# -- every config key: wrong types and out-of-range numbers ----------------------
# The values each numeric key takes (the reference the checks are held to), and the
# values outside them that are tried.
OUTSIDE = {
    "size": [0, -1],  # >= 1
    "count": [-1, -0.5],  # >= 0
    "positive": [0, -1.0],  # > 0
    "unit": [-0.1, 1.5],  # in [0, 1]
    "unit_open": [0, 1.5],  # in (0, 1]
    "any": [],  # any number suits (checked where used, or not numbers only)
}
RANGE_OF = {
    **dict.fromkeys(
        ["num_envs_per_worker", "rollout_fragment_length", "train_batch_size",
         "num_torch_threads", "metrics_smoothing_episodes", "evaluation_num_episodes",
         "num_learners", "keep_checkpoints_num", "sgd_minibatch_size", "num_sgd_iter",
         "grads_per_step", "preemption_chunks", "broadcast_interval", "target_update_frequency",
         "minibatch_buffer_size", "learner_queue_size",
         "max_sample_requests_in_flight_per_worker", "buffer_size", "n_step",
         "prioritized_replay_beta_annealing_timesteps", "policy_delay",
         "num_replay_buffer_shards", "max_adds_in_flight_per_shard",
         "max_requests_in_flight_per_replay_shard", "max_weight_sync_delay",
         "episodes_per_batch", "noise_size", "num_rollouts", "rollouts_used"],
        "size",
    ),
    **dict.fromkeys(
        ["num_workers", "lr", "timesteps_per_iteration", "min_iter_time_s", "num_gpus", "seed",
         "evaluation_interval", "max_worker_restarts", "vf_loss_coeff", "entropy_coeff",
         "kl_coeff", "kl_target", "replay_proportion", "replay_buffer_num_slots",
         "learning_starts", "target_network_update_freq", "actor_lr", "critic_lr", "l2_reg",
         "target_noise", "target_noise_clip", "l2_coeff", "noise_seed",
         "exploration_config.epsilon_timesteps", "exploration_config.random_timesteps",
         "exploration_config.ou_theta", "exploration_config.ou_sigma",
         "exploration_config.ou_base_scale", "exploration_config.stddev",
         "exploration_config.initial_scale", "exploration_config.final_scale",
         "exploration_config.scale_timesteps", "optimization.actor_learning_rate",
         "optimization.critic_learning_rate", "optimization.entropy_learning_rate"],
        "count",
    ),
    **dict.fromkeys(
        ["grad_clip", "worker_timeout_s", "env_step_timeout_s", "learner_timeout_s",
         "vf_clip_param", "vtrace_clip_rho_threshold", "vtrace_clip_pg_rho_threshold",
         "learner_queue_timeout", "epsilon", "training_intensity", "prioritized_replay_eps",
         "adam_epsilon", "huber_threshold", "initial_alpha", "noise_stdev", "stepsize"],
        "positive",
    ),
    **dict.fromkeys(
        ["gamma", "lambda", "num_gpus_per_learner", "num_gpus_per_worker", "preemption_fraction",
         "decay", "momentum",
         "prioritized_replay_alpha", "prioritized_replay_beta", "final_prioritized_replay_beta",
         "eval_prob", "exploration_config.initial_epsilon", "exploration_config.final_epsilon"],
        "unit",
    ),
    **dict.fromkeys(["clip_param", "tau", "preemption_min_fraction"], "unit_open"),
    **dict.fromkeys(["target_entropy", "clip_rewards"], "any"),
}  # fmt: skip
# Where an algorithm's key takes other values than RANGE_OF says.
ALGORITHM_RANGE_OF = {("ES", "train_batch_size"): "count"}  # the least steps; 0: none
# Dict keys whose numeric entries are checked like keys ("key.entry" above).
NESTED = ("exploration_config", "optimization")
# Keys whose default's type does not say what they take (None-default keys, keys of
# several types), and a value of a wrong type for each (None: any type goes).
WRONG_TYPE: dict[str, Any] = {
    "target_entropy": "high",
    "env": None,  # a name or a creator: checked by resolve_env_creator, see below
    "num_workers": "2",
    "num_torch_threads": 1.5,
    "seed": "42",
    "grad_clip": "40",
    "clip_rewards": "sign",
    "dask_address": 8786,
    "dask_security": "tls",
    "env_step_timeout_s": "10s",
    "output": 1,
    "output_compress": 4,
    "input": 3,
    "keep_checkpoints_num": "2",
    "lr_schedule": 0.001,
    "training_intensity": "high",
}


def wrong_types(key: str, default: Any) -> list[Any]:
    if default is None or key in WRONG_TYPE:  # a None key missing fails the test below
        wrong = WRONG_TYPE.get(key)
        return [] if wrong is None else [wrong]
    if isinstance(default, bool):
        return ["yes", 1]
    if isinstance(default, int):
        return [str(default), 2.5, True]
    if isinstance(default, float):
        return [str(default), False]
    if isinstance(default, str):
        return [3, ["a"]]
    if isinstance(default, dict):
        return [["not", "a", "dict"], "x"]
    return ["x", 5]  # a list


def numeric(default: Any) -> bool:
    return isinstance(default, (int, float)) and not isinstance(default, bool)


def bad_values(algorithm: str, key: str, default: Any) -> list[Any]:
    """Wrong types, numbers outside the key's range, NaN and infinity, and the same
    for the numeric entries of a dict key (as one-entry dicts)."""
    kind = ALGORITHM_RANGE_OF.get((algorithm, key), RANGE_OF.get(key, "any"))
    values = wrong_types(key, default) + OUTSIDE[kind]
    if isinstance(default, float) or kind in ("positive", "unit", "unit_open"):
        values += [math.nan, math.inf]
    for name, entry in default.items() if key in NESTED else ():
        if numeric(entry):
            values += [{name: "0.5"}] + [{name: v} for v in OUTSIDE[RANGE_OF[f"{key}.{name}"]]]
    return values


def config_cases() -> list[Any]:
    """(algorithm, key, value) for every key of COMMON_CONFIG (with PG) and every key
    an algorithm adds or changes the default of (with that algorithm)."""
    cases = []
    for algorithm in ALGORITHMS:
        for key, default in get_trainer_class(algorithm).DEFAULT_CONFIG.items():
            if algorithm != "PG" and COMMON_CONFIG.get(key, ...) == default:
                continue
            cases += [
                pytest.param(algorithm, key, value, id=f"{algorithm}-{key}={value!r}")
                for value in bad_values(algorithm, key, default)
                # not the default itself (DD-PPO's train_batch_size is -1: unused)
                if type(value) is not type(default) or value != default
            ]
    return cases


def test_every_numeric_key_has_a_range_here():
    """A new numeric key must be given a range above (and a check in hpcrl)."""
    unranged, untyped = set(), set()
    for algorithm in ALGORITHMS:
        for key, default in get_trainer_class(algorithm).DEFAULT_CONFIG.items():
            if numeric(default) and key not in RANGE_OF:
                unranged.add(key)
            if default is None and key not in WRONG_TYPE:
                untyped.add(key)
            for name, entry in default.items() if key in NESTED else ():
                if numeric(entry) and f"{key}.{name}" not in RANGE_OF:
                    unranged.add(f"{key}.{name}")
    assert not unranged, f"give these keys a range in this file and hpcrl: {sorted(unranged)}"
    assert not untyped, f"name a wrong type for these None-default keys: {sorted(untyped)}"


@pytest.mark.parametrize("algorithm, key, value", config_cases())
def test_bad_config_value_is_one_line_naming_it(
    algorithm, key, value, tmp_path, capsys, no_workers
):
    config = {key: value}
    if algorithm == "BC" and key != "input":
        config["input"] = str(tmp_path / "recorded")
    code, err = run_cli(
        capsys,
        *("train", "--run", algorithm, "--env", env_of(algorithm), "--local-dir", str(tmp_path)),
        *("--config", json.dumps(config), "-q"),
    )
    if isinstance(value, dict):  # an entry of a dict key
        [(name, value)] = value.items()
        key = f"{key}.{name}"
    shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    assert_usage_error(code, err, key, shown, "must be")
    assert list(tmp_path.iterdir()) == []  # nothing written


MODEL_WRONG_TYPE = {"custom_model": 3, "custom_action_dist": 3, "conv_filters": "x", "dim": "84"}
MODEL_SIZES = {"fcnet_hiddens", "post_fcnet_hiddens", "lstm_cell_size", "max_seq_len", "dim"}


def model_cases() -> list[Any]:
    """(model key, value): every key of MODEL_DEFAULTS with a wrong type, sizes < 1."""
    from hpcrl.models.catalog import MODEL_DEFAULTS

    cases = []
    for name, default in MODEL_DEFAULTS.items():
        values = [MODEL_WRONG_TYPE[name]] if default is None else wrong_types(name, default)
        if name in MODEL_SIZES:
            values += [[64, 0], ["64"]] if isinstance(default, list) else [0, -1]
        cases += [pytest.param(name, value, id=f"model.{name}={value!r}") for value in values]
    return cases


@pytest.mark.parametrize("name, value", model_cases())
def test_bad_model_value_is_one_line_naming_it(name, value, tmp_path, capsys, no_workers):
    code, err = run_cli(
        capsys,
        *("train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(tmp_path)),
        *("--config", json.dumps({"model": {name: value}}), "-q"),
    )
    assert_usage_error(code, err, f"model config key {name!r}", repr(value), "must be")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env", [3, ["CartPole-v1"], {"id": "CartPole-v1"}])
def test_env_of_the_wrong_type(env, no_workers):
    from hpcrl.algorithms.pg import PGTrainer

    with pytest.raises((TypeError, ValueError), match=r"env must be a name or a creator"):
        PGTrainer({"env": env})


def test_values_at_the_edges_of_their_ranges_are_accepted(no_workers):
    """The checks are not stricter than the ranges: 0 and 1 where allowed."""
    from hpcrl.algorithms.ppo import PPOTrainer

    edges = {"gamma": 1, "lambda": 0, "clip_param": 1, "lr": 0, "entropy_coeff": 0}
    with pytest.raises(WorkersStarted):
        PPOTrainer({**edges, "num_workers": 0, "seed": 0}, env="CartPole-v1")


# -- contradictory keys ------------------------------------------------------------
@pytest.mark.parametrize(
    "algorithm, config, message",
    [
        ("PPO", {"sgd_minibatch_size": 512, "train_batch_size": 256}, "lower sgd_minibatch_size"),
        ("PPO", {"num_learners": 4, "sgd_minibatch_size": 2}, "make sgd_minibatch_size at least 4"),
        ("ARS", {"num_rollouts": 4, "rollouts_used": 8}, "rollouts_used must be between 1 and"),
        ("A3C", {"num_workers": 0}, "set num_workers to 1 or more"),
        ("A3C", {"num_learners": 2}, "leave them at 1 and 0"),
        ("APEX", {"num_workers": 0}, "num_workers must be >= 1"),
        ("DQN", {"per_worker_exploration": True, "num_workers": 0}, "set num_workers"),
        ("IMPALA", {"batch_mode": "complete_episodes"}, "need batch_mode 'truncate_episodes'"),
        ("IMPALA", {"replay_proportion": 0.5}, "set replay_buffer_num_slots"),
        ("APPO", {"use_critic": False}, "use_gae=True needs use_critic=True"),
        ("DDPPO", {"kl_coeff": 0.2}, "set it to 0"),
        ("ES", {"episodes_per_batch": 1}, "one antithetic pair"),
    ],
)
def test_contradictory_keys(algorithm, config, message, tmp_path, capsys, no_workers):
    code, err = run_cli(
        capsys,
        *("train", "--run", algorithm, "--env", env_of(algorithm), "--local-dir", str(tmp_path)),
        *("--config", json.dumps(config), "-q"),
    )
    assert_usage_error(code, err, message)
    assert list(tmp_path.iterdir()) == []


def test_a_dask_address_with_another_backend(tmp_path, capsys):
    """Checked as the backend is chosen, before any worker starts."""
    config = {"backend": "mpi", "dask_address": "tcp://head:8786"}
    code, err = run_cli(
        capsys, "train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(tmp_path),
        "--config", json.dumps(config),
    )  # fmt: skip
    assert_usage_error(code, err, "dask_address='tcp://head:8786' is set", "set backend='dask'")


def test_a_gpu_that_torch_cannot_see(tmp_path, capsys, no_workers):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    code, err = run_cli(
        capsys, "train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(tmp_path),
        "--config", '{"num_gpus": 1}',
    )  # fmt: skip
    assert_usage_error(code, err, "num_gpus=1 asks for a GPU", "set num_gpus: 0")


def test_an_evaluation_stop_key_without_evaluation(tmp_path, capsys):
    code, err = run_cli(
        capsys, "train", "--run", "PG", "--env", "CartPole-v1", "--local-dir", str(tmp_path),
        "--config", json.dumps(SMALL_PG), "--stop", '{"evaluation/episode_reward_mean": 100}',
    )  # fmt: skip
    assert_usage_error(
        code, err, "evaluation/episode_reward_mean", "set config 'evaluation_interval'"
    )


# -- experiment files of the wrong structure -----------------------------------------
GOOD = "exp:\n  run: PG\n  env: CartPole-v1\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("- run: PG\n- env: CartPole-v1\n", "must map experiment names to their settings"),
        ("just a string\n", "it holds a str"),
        ("", "it holds nothing"),
        ("exp: [PG, CartPole-v1]\n", "experiment 'exp' in"),
        ("exp:\n  env: CartPole-v1\n", "no algorithm: give --run"),
        ("exp:\n  run: PG\n", "no env: give --env"),
        (GOOD + "  config: [1, 2]\n", "'config' of experiment 'exp'"),
        (GOOD + "  config: lr=0.1\n", "must be a mapping of config keys"),
        (GOOD + "  stop: 100\n", "must be a mapping of stop criteria"),
        (GOOD + "  stopp: {timesteps_total: 1}\n", "unknown setting(s) ['stopp']"),
        (GOOD + "  config: {lrr: 0.1}\n", "unknown config key 'lrr'; did you mean 'lr'?"),
        (GOOD + "  config: {model: [64]}\n", "config key 'model' must be dict"),
        (GOOD + "  stop: {timesteps_total: abc}\n", "must be a number, got 'abc'"),
        (GOOD + "  checkpoint_at_end: maybe\n", "must be true or false"),
        (GOOD + "  checkpoint_freq: often\n", "checkpoint_freq must be an int"),
        (GOOD + "  num_samples: two\n", "num_samples must be an int >= 1"),
        (GOOD + "  max_failures: -1\n", "max_failures must be an int >= 0"),
        (GOOD + "  local_dir: 5\n", "'local_dir' of experiment 'exp'"),
        ("exp:\n  run: [PG]\n  env: CartPole-v1\n", "must be an algorithm name (run: PPO)"),
        ("exp:\n  run: PG\n  env: [CartPole-v1]\n", "must be an env id (env: CartPole-v1)"),
        (GOOD + "  config: {lr: 0.1\n", "is not valid YAML: expected ',' or '}'"),
        (GOOD + "  config: !!python/object/apply:os.system [ls]\n", "could not determine a"),
        ("a: &a [*a]\n", "experiment 'a' in"),
        ("\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not"),
    ],
)
def test_experiment_file_of_the_wrong_structure(text, message, tmp_path, capsys, no_workers):
    path = tmp_path / "experiment.yaml"
    path.write_bytes(text.encode("latin-1"))
    code, err = run_cli(capsys, "train", "-f", str(path), "--local-dir", str(tmp_path / "out"))
    assert_usage_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_experiment_file_that_is_a_directory(tmp_path, capsys):
    code, err = run_cli(capsys, "train", "-f", str(tmp_path))
    assert_usage_error(code, err, "cannot read experiment file", "Is a directory")


# -- damaged checkpoints -------------------------------------------------------------
CHECKPOINT_FILES = [
    "checkpoint.json",
    "trainer_state.h5",
    "policies/default_policy/policy.json",
    "policies/default_policy/policy_state.h5",
]
DAMAGES = ["flip:1", "flip:2", "flip:3", "flip:4", "flips:5", "half", "empty", "missing"]


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> Path:
    """A PG trial of 2 iterations with a checkpoint after each, as ``hpcrl train`` wrote it."""
    root = tmp_path_factory.mktemp("trial")
    code = main(
        ["train", "--run", "PG", "--env", "CartPole-v1", "--config", json.dumps(SMALL_PG)]
        + ["--stop", '{"training_iteration": 2}', "--checkpoint-freq", "1", "-q"]
        + ["--local-dir", str(root), "--name", "exp", "--trial-name", "t"]
    )
    assert code == 0
    return root / "exp" / "t"


@pytest.fixture(scope="module")
def pg_trainer():
    from hpcrl.algorithms.pg import PGTrainer

    with PGTrainer({**SMALL_PG, "num_workers": 0}, env="CartPole-v1") as trainer:
        yield trainer


def damage(path: Path, kind: str) -> None:
    """Flip one byte (``flip:<seed>``) or 16 (``flips:<seed>``), cut the file in half,
    empty it or remove it. A JSON flip that leaves the same document is tried again."""
    if kind == "missing":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    if kind in ("half", "empty"):
        path.write_bytes(bytes(data[: len(data) // 2 if kind == "half" else 0]))
        return
    name, seed = kind.split(":")
    rng = random.Random(f"{path.name}:{seed}")
    flipped = bytearray(data)
    while flipped == data or (path.suffix == ".json" and same_json(flipped, data)):
        flipped = bytearray(data)
        for _ in range(1 if name == "flip" else 16):
            flipped[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(flipped))


def same_json(a: bytes, b: bytes) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def damaged_copy(trial: Path, tmp_path: Path, name: str, kind: str) -> tuple[Path, dict[str, str]]:
    """A copy of the trial, as left by a run killed while running, with ``name`` of its
    newest checkpoint damaged; and the digests of every other file."""
    copy = tmp_path / "exp" / "t"
    shutil.copytree(trial, copy)
    state = json.loads((copy / "trial_state.json").read_text())
    (copy / "trial_state.json").write_text(json.dumps({**state, "status": "running"}))
    target = copy / "checkpoint_000002" / name
    damage(target, kind)
    return copy, tree_digest(copy, skip=target)


def assert_earlier_checkpoint_loads(trainer: Any, copy: Path) -> None:
    trainer.restore(str(copy / "checkpoint_000001"))
    assert trainer.iteration == 1


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_damaged_checkpoint_restored_by_the_trainer(name, kind, trial, pg_trainer, tmp_path):
    from hpcrl.io.checkpoint import CheckpointError

    copy, before = damaged_copy(trial, tmp_path, name, kind)
    with pytest.raises(CheckpointError) as raised:
        pg_trainer.restore(str(copy / "checkpoint_000002"))
    message = str(raised.value)
    assert "\n" not in message and "checkpoint_000002" in message
    assert "use an earlier checkpoint" in message or "not a checkpoint directory" in message
    assert tree_digest(copy, skip=copy / "checkpoint_000002" / name) == before
    assert_earlier_checkpoint_loads(pg_trainer, copy)


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_damaged_checkpoint_evaluated(name, kind, trial, tmp_path, capsys):
    copy, before = damaged_copy(trial, tmp_path, name, kind)
    checkpoint = str(copy / "checkpoint_000002")
    code, err = run_cli(capsys, "evaluate", checkpoint, "--episodes", "1")
    if name == "trainer_state.h5":  # not needed to play the policy, whose files are whole
        assert code == 0, err
    else:
        assert_usage_error(code, err, "checkpoint_000002")
    assert tree_digest(copy, skip=copy / "checkpoint_000002" / name) == before


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_damaged_checkpoint_resumed(name, kind, trial, pg_trainer, tmp_path, capsys):
    copy, before = damaged_copy(trial, tmp_path, name, kind)
    code, err = run_cli(
        capsys, "train", "--run", "PG", "--env", "CartPole-v1", "--config", json.dumps(SMALL_PG),
        "--stop", '{"training_iteration": 4}', "--local-dir", str(tmp_path), "--name", "exp",
        "--trial-name", "t", "--resume", "-q",
    )  # fmt: skip
    assert_usage_error(code, err, "checkpoint_000002", "to resume from checkpoint_000001, move")
    assert tree_digest(copy, skip=copy / "checkpoint_000002" / name) == before
    assert_earlier_checkpoint_loads(pg_trainer, copy)


@pytest.mark.parametrize("command", ["restore", "evaluate"])
def test_missing_checkpoint_directory(command, tmp_path, pg_trainer, capsys):
    from hpcrl.io.checkpoint import CheckpointError

    missing = str(tmp_path / "checkpoint_000009")
    if command == "restore":
        with pytest.raises(CheckpointError, match="checkpoint_000009' is not a checkpoint"):
            pg_trainer.restore(missing)
    else:
        code, err = run_cli(capsys, "evaluate", missing)
        assert_usage_error(code, err, "checkpoint_000009")


def resume(capsys: pytest.CaptureFixture, local_dir: Path) -> tuple[int, str]:
    return run_cli(
        capsys, "train", "--run", "PG", "--env", "CartPole-v1", "--config", json.dumps(SMALL_PG),
        "--stop", '{"training_iteration": 3}', "--local-dir", str(local_dir), "--name", "exp",
        "--trial-name", "t", "--resume", "-q",
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("trial_state.json", '{"status": "runn', "trial_state.json' (Unterminated string"),
        ("trial_state.json", "[1, 2]", "delete it to resume the trial from its newest"),
        ("result.json", '{"training_iteration": 1, "episode_re\n', "line 1 of"),
    ],
)
def test_damaged_trial_files_on_resume(name, text, message, trial, tmp_path, capsys):
    copy = tmp_path / "exp" / "t"
    shutil.copytree(trial, copy)
    (copy / "trial_state.json").write_text('{"status": "running"}')  # killed while running
    lines = (copy / name).read_text().splitlines(keepends=True)
    (copy / name).write_text(text + "".join(lines[1:]) if name == "result.json" else text)
    before = tree_digest(copy)
    code, err = resume(capsys, tmp_path)
    assert_usage_error(code, err, message)
    assert tree_digest(copy) == before


def test_a_result_line_cut_short_by_a_kill_is_dropped_on_resume(trial, tmp_path, capsys):
    """The run was killed as it logged iteration 3, after the checkpoint of iteration 2."""
    copy = tmp_path / "exp" / "t"
    shutil.copytree(trial, copy)
    (copy / "trial_state.json").write_text('{"status": "running"}')
    with open(copy / "result.json", "a") as f:
        f.write('{"training_iteration": 3, "episode_rew')
    code, err = resume(capsys, tmp_path)
    assert code == 0, err
    results = [json.loads(line) for line in (copy / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in results] == [1, 2, 3]


# -- recorded batch files as input ----------------------------------------------------
@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A directory of batches PG recorded on CartPole-v1 (config "output")."""
    from hpcrl.algorithms.pg import PGTrainer

    directory = tmp_path_factory.mktemp("recorded")
    with PGTrainer({**SMALL_PG, "output": str(directory)}, env="CartPole-v1") as trainer:
        trainer.train()
    return directory


def bad_input(recorded: Path, tmp_path: Path, kind: str) -> Path:
    """An input directory holding a damaged copy of a recorded file, or another file."""
    directory = tmp_path / "input"
    directory.mkdir()
    [source] = recorded.glob("*.h5")
    target = directory / source.name
    if kind == "truncated":
        target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif kind == "cut_at_the_superblock":
        target.write_bytes(source.read_bytes()[:40])
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "not_hdf5":
        target.write_text("batches, honest\n")
    elif kind == "not_a_batch_file":  # an HDF5 file of another kind: a policy's state
        import h5py

        with h5py.File(target, "w") as f:
            f["weights"] = [1.0, 2.0]
    return directory


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "is truncated"),
        ("cut_at_the_superblock", "is truncated"),
        ("empty", "cannot read batch file"),
        ("not_hdf5", "cannot read batch file"),
        ("not_a_batch_file", "is not an hpcrl batch file"),
        ("no_files", "no batch files (*.h5) in input"),
    ],
)
def test_bad_batch_files_as_input(kind, message, recorded, tmp_path, capsys):
    directory = bad_input(recorded, tmp_path, kind)
    before = tree_digest(recorded)
    config = {"input": str(directory), "train_batch_size": 40, "sgd_minibatch_size": 20}
    code, err = run_cli(
        capsys, "train", "--run", "BC", "--env", "CartPole-v1", "--config", json.dumps(config),
        "--local-dir", str(tmp_path / "out"), "-q",
    )  # fmt: skip
    assert_usage_error(code, err, message, str(directory))
    assert tree_digest(recorded) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("env", ["Acrobot-v1", "Pendulum-v1"])
def test_batches_recorded_on_another_env(env, recorded, tmp_path, capsys):
    config = {"input": str(recorded), "train_batch_size": 40, "sgd_minibatch_size": 20}
    code, err = run_cli(
        capsys, "train", "--run", "BC", "--env", env, "--config", json.dumps(config),
        "--local-dir", str(tmp_path), "-q",
    )  # fmt: skip
    assert_usage_error(
        code, err, f"env {env!r} observes", "made to observe Box(4,) and act in Discrete(2)",
        "give the env they were recorded on",
    )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_policy_evaluated_on_another_env(trial, capsys):
    code, err = run_cli(
        capsys,
        "evaluate",
        str(trial / "checkpoint_000001"),
        "--env",
        "Acrobot-v1",
        "--episodes",
        "1",
    )
    assert_usage_error(code, err, "env 'Acrobot-v1' observes Box(6,)", "play it on the env it")


# -- env modules that fail to import ----------------------------------------------------
@pytest.mark.parametrize(
    "source, message",
    [
        (
            "raise RuntimeError('no licence server\\nat all')\n",
            "RuntimeError: no licence server at all",
        ),
        ("def step(:\n", "SyntaxError: invalid syntax"),
        ("import hpcrl_no_such_dependency\n", "No module named 'hpcrl_no_such_dependency'"),
        ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
    ],
)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_env_module_that_fails_to_import(
    command, source, message, trial, tmp_path, monkeypatch, capsys
):
    module = f"fuzz_env_{abs(hash((command, source))) % 10**8}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = f"{module}:Broken-v0"
    if command == "train":
        args = ["train", "--run", "PG", "--env", env, "--local-dir", str(tmp_path / "out")]
    else:
        args = ["evaluate", str(trial / "checkpoint_000001"), "--env", env]
    code, err = run_cli(capsys, *args)
    assert_usage_error(code, err, f"cannot import module {module!r} for env {env!r}", message)
    assert module not in sys.modules
