"""RLlib's YAML files as they stand: renamed keys, ignored keys, old env ids."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpcrl.algorithms.config import COMMON_CONFIG, merge_config
from hpcrl.algorithms.registry import ALGORITHMS, get_trainer_class
from hpcrl.algorithms.rllib_compat import (
    PER_LEARNER_KEYS,
    RENAMED_KEYS,
    from_rllib_stop,
    translate_rllib_config,
)
from hpcrl.cli import main
from hpcrl.env import registry
from hpcrl.env.registry import newest_gymnasium_id

RLLIB_YAML = Path(__file__).parent / "data" / "rllib_yaml"
NOTE = "RLlib config read for hpcrl"


def defaults_with(key: str) -> dict[str, Any]:
    """The defaults of the first algorithm that has ``key``."""
    for name in ALGORITHMS:
        defaults = get_trainer_class(name)._default_config
        if key in defaults:
            return defaults
    raise AssertionError(f"no algorithm has {key!r}")


def other_value(default: Any) -> Any:
    """A valid value of a key that differs from its default."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 + 0.125
    if isinstance(default, dict):
        return {"fcnet_hiddens": [16]}
    return 2  # None defaults here are counts (num_workers)


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hpcrl.algorithms.rllib_compat"]


@pytest.mark.parametrize("old, new", sorted({**RENAMED_KEYS, **PER_LEARNER_KEYS}.items()))
def test_each_renamed_key_gives_the_config_of_hpcrls_name(old, new, caplog):
    defaults = defaults_with(new)
    value = other_value(defaults[new])
    with caplog.at_level(logging.WARNING):
        assert merge_config(defaults, {old: value}) == merge_config(defaults, {new: value})
    assert notes(caplog) == [f"{NOTE}: renamed: {old} -> {new}"]


@pytest.mark.parametrize(
    "rllib, hpcrl",
    [
        ({"vf_share_layers": True}, {"model": {"vf_share_layers": True}}),
        (
            {"model": {"lstm_use_prev_action_reward": True}},
            {"model": {"lstm_use_prev_action": True, "lstm_use_prev_reward": True}},
        ),
        ({"model": {"custom_options": {"a": 1}}}, {"model": {"custom_model_config": {"a": 1}}}),
        ({"lr": [[0, 1e-3], [1000, 1e-4]]}, {"lr": 1e-3, "lr_schedule": [[0, 1e-3], [1000, 1e-4]]}),
        # Per learner in RLlib's new stack: hpcrl's keys count all learners.
        (
            {"num_learners": 2, "train_batch_size_per_learner": 256, "minibatch_size": 32},
            {"num_learners": 2, "train_batch_size": 512, "sgd_minibatch_size": 64},
        ),
    ],
)
def test_nested_and_scaled_renames_in_ppo(rllib, hpcrl):
    ppo = get_trainer_class("PPO")._default_config
    assert merge_config(ppo, rllib) == merge_config(ppo, hpcrl)


def test_replay_buffer_config_and_exploration_type_in_dqn():
    dqn = get_trainer_class("DQN")._default_config
    rllib = {
        "replay_buffer_config": {
            "type": "MultiAgentReplayBuffer",
            "capacity": 1000,
            "prioritized_replay_alpha": 0.5,
            "storage_unit": "timesteps",
        },
        "num_steps_sampled_before_learning_starts": 64,
        "exploration_config": {"type": "EpsilonGreedy", "epsilon_timesteps": 500},
    }
    hpcrl = {
        "prioritized_replay": False,
        "buffer_size": 1000,
        "prioritized_replay_alpha": 0.5,
        "learning_starts": 64,
        "exploration_config": {"epsilon_timesteps": 500},
    }
    assert merge_config(dqn, rllib) == merge_config(dqn, hpcrl)
    apex = get_trainer_class("APEX")._default_config
    per_worker = {"exploration_config": {"type": "PerWorkerEpsilonGreedy"}}
    assert merge_config(apex, per_worker)["per_worker_exploration"] is True


@pytest.mark.parametrize(
    "config, message",
    [
        ({"sample_batch_size": 50, "rollout_fragment_length": 100}, "disagree: 50 vs 100"),
        ({"num_env_runners": 2, "num_rollout_workers": 3}, "'num_rollout_workers' (RLlib's"),
        ({"vf_share_layers": True, "model": {"vf_share_layers": False}}, "disagree"),
    ],
)
def test_a_renamed_key_and_hpcrls_name_that_disagree_are_an_error(config, message):
    with pytest.raises(ValueError, match="give '.*' only") as error:
        merge_config(get_trainer_class("PPO")._default_config, config)
    assert message in str(error.value)


def test_same_value_under_both_names_is_accepted():
    ppo = get_trainer_class("PPO")._default_config
    config = merge_config(ppo, {"sample_batch_size": 50, "rollout_fragment_length": 50})
    assert config["rollout_fragment_length"] == 50


def test_ignored_keys_give_one_note_listing_them_all(caplog):
    config = {
        "framework": "torch",
        "num_gpus": 0,
        "num_cpus_per_worker": 1,
        "num_gpus_per_worker": 0,
        "log_level": "WARN",
        "eager_tracing": False,
        "simple_optimizer": True,
    }
    with caplog.at_level(logging.WARNING):
        merged = merge_config(get_trainer_class("PPO")._default_config, config)
    assert notes(caplog) == [
        f"{NOTE}: ignored (no meaning in hpcrl): framework, num_cpus_per_worker, "
        "num_gpus_per_worker, log_level, eager_tracing, simple_optimizer"
    ]
    assert merged["num_gpus"] == 0 and "framework" not in merged  # num_gpus is hpcrl's own


def test_hpcrl_config_gives_no_note(caplog):
    with caplog.at_level(logging.WARNING):
        merge_config(get_trainer_class("PPO")._default_config, {"lr": 1e-3, "num_gpus": 0})
    assert notes(caplog) == []


@pytest.mark.parametrize(
    "config", [{"framework": "tf"}, {"framework": "tf2"}, {"use_pytorch": False}, {"eager": True}]
)
def test_any_framework_is_ignored_with_the_note(config, caplog):
    """RLlib's tuned files say framework: tf ("works for both torch and tf"): hpcrl
    runs them on PyTorch as they stand."""
    with caplog.at_level(logging.WARNING):
        merged = merge_config(get_trainer_class("PPO")._default_config, config)
    assert not set(config) & set(merged)
    [note] = notes(caplog)
    assert f"ignored (no meaning in hpcrl): {next(iter(config))}" in note


def test_gpu_workers_are_an_error_but_for_ddppo_whose_workers_learn():
    with pytest.raises(ValueError, match="rollout workers act on the CPU.*num_gpus_per_worker"):
        merge_config(get_trainer_class("PPO")._default_config, {"num_gpus_per_worker": 1})
    merged = merge_config(get_trainer_class("DDPPO")._default_config, {"num_gpus_per_worker": 1})
    assert merged["num_gpus_per_worker"] == 1


@pytest.mark.parametrize("run, key", [("PPO", "noisy"), ("PPO", "lamda"), ("DQN", "num_atoms")])
def test_a_key_hpcrl_does_not_implement_is_still_an_error_naming_it(run, key):
    with pytest.raises(ValueError, match=f"unknown config key '{key}'"):
        merge_config(get_trainer_class(run)._default_config, {key: 1})


def test_keys_of_the_algorithms_defaults_are_never_translated():
    defaults = {"sample_batch_size": 1, "rollout_fragment_length": 2, "horizon": None}
    config, notes = translate_rllib_config({"sample_batch_size": 5, "horizon": 5}, defaults)
    assert config == {"sample_batch_size": 5, "horizon": 5} and notes == []


@pytest.mark.parametrize(
    "old, new",
    [
        ("Pendulum-v0", "Pendulum-v1"),
        ("LunarLander-v2", "LunarLander-v3"),
        ("BipedalWalker-v2", "BipedalWalker-v3"),
        ("HalfCheetah-v2", "HalfCheetah-v5"),  # registered by gymnasium, but only to raise
        ("FrozenLake-v0", "FrozenLake-v1"),
        ("CartPole-v0", None),  # gymnasium still has it
        ("CartPole-v9", None),  # no higher version: the unknown-env error names it
        ("MountainCarContinuous-v0", None),
        ("Acrobot-v1", None),
        ("PongNoFrameskip-v4", None),  # ale-py registers it
        ("no-such-env", None),
    ],
)
def test_newest_gymnasium_id(old, new):
    assert newest_gymnasium_id(old) == new


def test_old_env_id_is_upgraded_with_a_note_and_registered_names_are_not(caplog, monkeypatch):
    ppo = get_trainer_class("PPO")._default_config
    with caplog.at_level(logging.WARNING):
        assert merge_config(ppo, {"env": "Pendulum-v0"})["env"] == "Pendulum-v1"
    assert notes(caplog) == [
        f"{NOTE}: env 'Pendulum-v0' -> 'Pendulum-v1' (gymnasium's version of it)"
    ]
    monkeypatch.setitem(registry._ENV_CREATORS, "Pendulum-v0", lambda env_config: None)
    assert merge_config(ppo, {"env": "Pendulum-v0"})["env"] == "Pendulum-v0"


def test_rllib_stop_keys_are_read_as_hpcrls():
    stop = {"sampler_results/episode_reward_mean": -400, "timesteps_total": 400_000}
    assert from_rllib_stop(stop) == {"episode_reward_mean": -400, "timesteps_total": 400_000}
    with pytest.raises(ValueError, match="give it once"):
        from_rllib_stop({"env_runners/episode_return_mean": 1, "episode_reward_mean": 2})


def test_rllib_tuned_example_runs_as_it_stands(tmp_path):
    """RLlib's cartpole-appo.yaml, unchanged: framework: tf (ignored: hpcrl runs
    PyTorch), num_gpus: 0, CartPole-v0. (APPO's 10 s iterations shortened.)"""
    out = subprocess.run(
        [sys.executable, "-m", "hpcrl", "train", "-f", str(RLLIB_YAML / "cartpole-appo.yaml")]
        + ["--stop", '{"training_iteration": 1}', "--local-dir", str(tmp_path)]
        + ["--config", '{"min_iter_time_s": 1}'],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "done: stopped by " in out.stdout and "after 1 iterations" in out.stdout
    assert out.stderr.count(NOTE) == 1
    assert f"{NOTE}: ignored (no meaning in hpcrl): framework\n" in out.stderr


@pytest.mark.skipif(
    "observation_filter" not in COMMON_CONFIG, reason="observation_filter is not implemented yet"
)
@pytest.mark.parametrize(
    "name, override",
    [
        ("pendulum-ppo.yaml", []),
        ("pendulum-ppo-with-rl-module.yaml", []),
    ],
)
def test_rllib_pendulum_ppo_files_run_as_they_stand(name, override, tmp_path, caplog):
    """Pendulum-v0, MeanStdFilter, RLlib 2's sampler_results stop key and API switches."""
    args = ["train", "-f", str(RLLIB_YAML / name), "--stop", '{"training_iteration": 1}']
    with caplog.at_level(logging.WARNING):
        assert main([*args, *override, "--local-dir", str(tmp_path), "-q"]) == 0
    [config_note] = [note for note in notes(caplog) if note.startswith(NOTE)]
    assert "ignored (no meaning in hpcrl): framework" in config_note


@pytest.mark.parametrize(
    "name, notes_expected, steps",
    [
        # DD-PPO's 2 workers in child processes of the local backend
        ("cartpole-ddppo.yaml", [], 2 * 5 * 100),
        # train_batch_size: 2500 "per worker": 4 workers x 10 envs x 250 steps
        ("pendulum-ddppo.yaml", ["train_batch_size 2500 read as rows per worker"], 10_000),
        ("cartpole-es.yaml", [], None),
        ("cartpole-ars.yaml", ["renamed: sgd_stepsize -> stepsize"], None),
    ],
)
def test_rllib_collective_algorithm_files_run_as_they_stand(
    name, notes_expected, steps, tmp_path, caplog
):
    """RLlib's tuned DD-PPO, ES and ARS files, unchanged (one iteration each)."""
    args = ["train", "-f", str(RLLIB_YAML / name), "--stop", '{"training_iteration": 1}']
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--local-dir", str(tmp_path), "-q"]) == 0
    said = "\n".join(record.getMessage() for record in caplog.records)
    assert "ignored (no meaning in hpcrl): framework" in said
    for note in notes_expected:
        assert note in said, said
    [trial] = list(tmp_path.glob("*/*/result.json"))
    result = json.loads(trial.read_text().splitlines()[-1])
    assert result["training_iteration"] == 1
    if steps is not None:  # (a fragment may end a few rows late, at an episode's reset)
        assert steps <= result["timesteps_total"] < 1.05 * steps
