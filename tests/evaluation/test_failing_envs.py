"""A sub-env that raises (or hangs) in step or reset: the error that names it by
default; with recreate_failed_envs, the copy rebuilt, its episode dropped, the
restart counted; env_step_timeout_s; single- and multi-agent."""

from __future__ import annotations

import copy
import threading
import time
import uuid

import numpy as np
import pytest
from flaky_env import LENGTH, FlakyEnv, FlakyTeam

from hpcrl.algorithms.pg import PGTorchPolicy, PGTrainer
from hpcrl.algorithms.trainer import RESULT_KEYS
from hpcrl.env.failures import EnvError
from hpcrl.env.guarded_vector_env import GuardedVectorEnv
from hpcrl.env.registry import register_env
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.policy.sample_batch import SampleBatch

register_env("flaky", FlakyEnv)
register_env("flaky_team", FlakyTeam)


def worker(env="flaky", env_config=None, **config):
    base = {
        "num_envs_per_worker": 3,
        "rollout_fragment_length": 30,
        "seed": 1,
        "model": {"fcnet_hiddens": [8]},
        "vectorization_mode": "sync",
        # A name of its own: each test counts its copies' instances afresh.
        "env_config": {"run": uuid.uuid4().hex, **(env_config or {})},
    }
    return RolloutWorker(env, PGTorchPolicy, {**base, **config})


def episodes_of_copy(batch: SampleBatch, copy: int) -> dict[tuple[int, int], int]:
    """(instance, episode) -> rows, of env copy ``copy``."""
    obs = batch[SampleBatch.OBS][batch[SampleBatch.ENV_ID] == copy]
    keys, counts = np.unique(obs[:, 1:].astype(int), axis=0, return_counts=True)
    return {tuple(k): int(n) for k, n in zip(keys.tolist(), counts)}


@pytest.mark.parametrize("env", ["flaky", "flaky_team"])
def test_a_step_error_names_the_worker_sub_env_env_and_step(env):
    w = worker(env)
    with pytest.raises(EnvError) as caught:
        w.sample()
    message = str(caught.value)
    assert message.startswith(
        f"rollout worker 0: sub-env 1 of env '{env}' raised RuntimeError('flaky env: step "
        "number 16 fails') in step() after 5 steps of its episode; set recreate_failed_envs: "
        "true"
    )
    # the env's own traceback, down to the line that raised
    assert "--- the env's traceback ---" in message and "in tick" in message
    assert message.rstrip().endswith("RuntimeError: flaky env: step number 16 fails")
    error = caught.value
    assert (error.worker_index, error.sub_env_index, error.method) == (0, 1, "step")


def test_a_reset_error_is_named_as_one():
    # the copy's second reset is the autoreset after its first episode
    w = worker(env_config={"fail_in": "reset", "fail_at": 2})
    with pytest.raises(EnvError, match=r"sub-env 1 of env 'flaky' raised .* in reset\(\);"):
        w.sample()


@pytest.mark.parametrize("batch_mode", ["truncate_episodes", "complete_episodes"])
def test_a_rebuilt_copy_drops_its_episode_and_sampling_goes_on(batch_mode):
    w = worker(recreate_failed_envs=True, batch_mode=batch_mode)
    assert isinstance(w.env, GuardedVectorEnv)
    batch = w.sample()
    # copy 1: its first instance's first episode whole, its second (failed at t=5)
    # gone; then the rebuilt instance's episodes
    rows = episodes_of_copy(batch, 1)
    assert rows[(1, 1)] == LENGTH and (1, 2) not in rows and rows[(2, 1)] == LENGTH
    # copy 0 (which sampled more while copy 1 made up its dropped rows): whole
    # episodes, but for the last one, which a fragment may cut
    assert all(n == LENGTH for n in list(episodes_of_copy(batch, 0).values())[:-1])
    # every row is a real transition of one episode, t counting up from 0
    for trajectory in batch.split_by_episode():
        np.testing.assert_array_equal(trajectory["t"], np.arange(trajectory.count))
        np.testing.assert_array_equal(trajectory["obs"][1:], trajectory["new_obs"][:-1])
    metrics = w.get_metrics()
    assert metrics["num_env_restarts"] == 1 and len(metrics["episode_returns"]) >= 6
    # returns of completed episodes only: the dropped one would be 5
    assert set(metrics["episode_returns"]) == {float(LENGTH)}
    assert set(metrics["episode_lengths"]) == {LENGTH}
    w.sample()
    assert w.get_metrics()["num_env_restarts"] == 0


def test_a_copy_failing_in_reset_is_rebuilt_and_its_finished_episode_kept():
    w = worker(env_config={"fail_in": "reset", "fail_at": 2}, recreate_failed_envs=True)
    batch = w.sample()
    rows = episodes_of_copy(batch, 1)
    assert rows[(1, 1)] == LENGTH and rows[(2, 1)] == LENGTH
    metrics = w.get_metrics()
    assert metrics["num_env_restarts"] == 1
    assert set(metrics["episode_returns"]) == {float(LENGTH)}


def test_a_copy_that_fails_again_after_each_rebuild_stops_the_worker():
    config = {"fail_in": "reset", "fail_at": 1, "failing_instances": 99}
    w = worker(env_config=config, recreate_failed_envs=True)
    with pytest.raises(EnvError, match="each of the 3 times it was rebuilt .* fix the env"):
        w.sample()


def test_restarts_are_counted_in_the_training_results():
    assert "num_env_restarts" in RESULT_KEYS
    trainer = PGTrainer(
        {
            "num_workers": 0,
            "num_envs_per_worker": 3,
            "rollout_fragment_length": 30,
            "train_batch_size": 90,
            "model": {"fcnet_hiddens": [8]},
            "env_config": {"run": uuid.uuid4().hex},
            "recreate_failed_envs": True,
        },
        env="flaky",
    )
    try:
        first, second = trainer.train(), trainer.train()
    finally:
        trainer.stop()
    assert first["num_env_restarts"] == second["num_env_restarts"] == 1
    assert first["episode_reward_mean"] == first["episode_reward_min"] == LENGTH


def test_a_step_past_the_timeout_is_reported_with_where_the_env_hung():
    w = worker(env_config={"hang": "sleep", "sleep_s": 3.0}, env_step_timeout_s=0.2)
    start = time.monotonic()
    with pytest.raises(EnvError) as caught:
        w.sample()
    assert time.monotonic() - start < 2.0
    message = str(caught.value)
    assert message.startswith(
        "rollout worker 0: sub-env 1 of env 'flaky' took longer than env_step_timeout_s=0.2s "
        "in step() after 5 steps of its episode;"
    )
    assert "--- where the env was when it was given up ---" in message
    assert "time.sleep(self.sleep_s)" in message


def test_a_copy_past_the_timeout_is_rebuilt_and_its_thread_stopped():
    before = _stepping_threads()  # other tests' threads, still asleep in their envs
    w = worker(env_config={"hang": "spin"}, env_step_timeout_s=0.2, recreate_failed_envs=True)
    batch = w.sample()
    rows = episodes_of_copy(batch, 1)
    assert (1, 2) not in rows and rows[(2, 1)] == LENGTH
    assert w.get_metrics()["num_env_restarts"] == 1
    # the thread given up on was spinning in Python: the exception sent to it ends it,
    # leaving the one that steps the copies now
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and len(_stepping_threads() - before) > 1:
        time.sleep(0.05)
    assert len(_stepping_threads() - before) == 1
    w.stop()


def _stepping_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "hpcrl-env-steps" and t.is_alive()}


def test_multi_agent_copy_rebuilt_drops_its_episode():
    w = worker("flaky_team", recreate_failed_envs=True, batch_mode="complete_episodes")
    batch = w.sample().policy_batches["default_policy"]
    rows = episodes_of_copy(batch, 1)
    # two agents: two rows per step
    assert rows[(1, 1)] == 2 * LENGTH and (1, 2) not in rows and rows[(2, 1)] == 2 * LENGTH
    metrics = w.get_metrics()
    assert metrics["num_env_restarts"] == 1
    assert set(metrics["episode_returns"]) == {2.0 * LENGTH}


def test_multi_agent_timeout_is_reported():
    w = worker("flaky_team", env_config={"hang": "sleep"}, env_step_timeout_s=0.2)
    with pytest.raises(EnvError, match="sub-env 1 of env 'flaky_team' took longer"):
        w.sample()


def test_a_guarded_worker_resumes_exactly():
    config = {
        "num_envs_per_worker": 3,
        "rollout_fragment_length": 20,
        "seed": 3,
        "model": {"fcnet_hiddens": [8]},
        "recreate_failed_envs": True,
        "env_step_timeout_s": 5.0,
    }
    first = RolloutWorker("CartPole-v1", PGTorchPolicy, config)
    first.sample()
    second = RolloutWorker("CartPole-v1", PGTorchPolicy, config)
    # the guarded env's snapshot is exact (a deep copy: the state holds live arrays)
    second.set_state(copy.deepcopy(first.get_state()))
    a, b = first.sample(), second.sample()
    for key in (SampleBatch.OBS, SampleBatch.ACTIONS, SampleBatch.EPS_ID):
        np.testing.assert_array_equal(a[key], b[key])
    first.stop()
    second.stop()


def test_rllib_key_for_rebuilding_sub_envs_is_read():
    from hpcrl.algorithms.config import COMMON_CONFIG, merge_config

    config = merge_config(COMMON_CONFIG, {"restart_failed_sub_environments": True})
    assert config["recreate_failed_envs"] is True


def test_vector_envs_that_step_their_copies_together_are_refused():
    with pytest.raises(ValueError, match="vectorization_mode='vector_entry_point' steps all"):
        RolloutWorker(
            "CartPole-v1",
            PGTorchPolicy,
            {"vectorization_mode": "vector_entry_point", "recreate_failed_envs": True},
        )
    # "auto" makes CartPole's copies one by one instead of its batched implementation
    w = RolloutWorker("CartPole-v1", PGTorchPolicy, {"env_step_timeout_s": 5.0})
    assert isinstance(w.env, GuardedVectorEnv)
    w.stop()


@pytest.mark.parametrize("value", [0, -1.0, "10", True])
def test_a_bad_timeout_is_refused(value):
    with pytest.raises(ValueError, match="'env_step_timeout_s' must be a number of seconds > 0"):
        worker(env_step_timeout_s=value)
