"""Observation filters (``observation_filter: MeanStdFilter``): the Welford merge against
hand-worked numbers, what the samplers store, the driver's merge for every optimizer
family against numpy's statistics of every observation seen, checkpoints, evaluation.

The same merge across 3 MPI ranks: tests/mpi/test_observation_filters_mpi.py; on Dask:
tests/dask/test_observation_filters_dask.py.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from observation_recorder import RecordingEnv, check_merged_filter, recorded_observations

from hpcrl.algorithms.pg import PGTorchPolicy, PGTrainer
from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.env.multi_agent_env import make_multi_agent
from hpcrl.env.registry import register_env
from hpcrl.evaluation.policy_evaluation import evaluate_policies, evaluate_policy
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.policy.observation_filter import (
    MeanStdFilter,
    RunningMeanStd,
    WelfordMerge,
    make_observation_filter,
)
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

register_env("recording_env", RecordingEnv)
BOX = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
SMALL = {
    "observation_filter": "MeanStdFilter",
    "model": {"fcnet_hiddens": [8]},
    "num_envs_per_worker": 2,
    "rollout_fragment_length": 20,
    "train_batch_size": 80,
    "vectorization_mode": "sync",
    "seed": 3,
}


# -- the statistics ------------------------------------------------------------
def test_chan_merge_of_two_blocks_by_hand():
    # [1, 3]: n 2, mean 2, M2 2; [5, 7, 9]: n 3, mean 7, M2 8. Together: delta 5,
    # mean 2 + 5 * 3/5 = 5, M2 = 2 + 8 + 25 * 2 * 3/5 = 40: the variance of 1..9 odd is 8.
    a, b = RunningMeanStd(1), RunningMeanStd(1)
    a.merge(RunningMeanStd.of(np.array([[1.0], [3.0]])))
    b.merge(RunningMeanStd.of(np.array([[5.0], [7.0], [9.0]])))
    assert (a.count, a.mean[0], a.m2[0], b.count, b.mean[0], b.m2[0]) == (2, 2, 2, 3, 7, 8)
    merged = WelfordMerge([1])(a.to_array(), b.to_array())
    assert merged.tolist() == [5.0, 5.0, 40.0]
    a.merge(b.get_state())
    assert (a.count, a.mean[0], a.var[0]) == (5, 5.0, 8.0)


def test_merging_blocks_in_any_order_gives_numpys_statistics_of_all_rows():
    rng = np.random.default_rng(0)
    merge = WelfordMerge([3, 1])  # two filters: 3 numbers, then 1
    parts = [rng.normal(5.0, [1.0, 50.0, 0.01, 2.0], size=(n, 4)) for n in (1, 7, 30, 0, 12)]

    def update(rows):
        blocks = [RunningMeanStd(3), RunningMeanStd(1)]
        for stats, columns in zip(blocks, (rows[:, :3], rows[:, 3:])):
            if len(rows):
                stats.merge(RunningMeanStd.of(columns))
        return np.concatenate([s.to_array() for s in blocks])

    updates = [update(rows) for rows in parts]
    forward, backward = merge.identity(), merge.identity()
    for u in updates:
        forward = merge(forward, u)
    for u in reversed(updates):
        backward = merge(u, backward)
    every = np.concatenate(parts)
    for result in (forward, backward):
        first, second = (RunningMeanStd.from_array(b) for b in merge.blocks(result))
        for block, columns in ((first, every[:, :3]), (second, every[:, 3:])):
            assert block["count"] == len(every)
            np.testing.assert_allclose(block["mean"], columns.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(block["m2"] / len(every), columns.var(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(merge(merge.identity(), updates[1]), updates[1])


def test_the_filter_normalizes_with_statistics_that_include_the_batch():
    obs_filter = make_observation_filter("MeanStdFilter", BOX)
    first = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
    np.testing.assert_array_equal(obs_filter(first), [[-1.0, -1.0], [1.0, 1.0]])
    rows = np.array([[5.0, 50.0]])
    out = obs_filter(rows)  # now 1, 3, 5 and 10, 30, 50
    assert out.dtype == np.float32 and out.shape == (1, 2)
    every = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])
    expected = (rows - every.mean(axis=0)) / every.std(axis=0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    before = obs_filter.get_state()
    obs_filter(np.array([[1e6, -1e6]]), update=False)  # frozen: far out, clipped to +-10
    assert obs_filter(np.array([[1e6, -1e6]]), update=False).tolist() == [[10.0, -10.0]]
    assert obs_filter.running.count == before["running"]["count"] == 3


def test_workers_keep_their_newer_rows_when_they_take_the_merged_statistics():
    # Two workers and a driver, by hand: what WorkerSet.sync_filters does.
    driver, one, two = (make_observation_filter("MeanStdFilter", BOX) for _ in range(3))
    rng = np.random.default_rng(1)
    seen = []
    for worker in (one, two):
        rows = rng.normal(size=(5, 2))
        worker(rows)
        seen.append(rows)
    update = WelfordMerge([2])(one.pop_update(), two.pop_update())
    late = rng.normal(size=(3, 2))  # worker one samples on while the driver merges
    one(late)
    driver.merge_update(update)
    for worker in (one, two):
        worker.sync(driver.running.get_state())
    every = np.concatenate(seen)
    np.testing.assert_allclose(two.running.mean, every.mean(axis=0), rtol=1e-12)
    with_late = np.concatenate([every, late])
    assert one.running.count == 13 and one.buffer.count == 3
    np.testing.assert_allclose(one.running.mean, with_late.mean(axis=0), rtol=1e-12)
    driver.merge_update(one.pop_update())  # next sync: the late rows reach the driver once
    assert driver.running.count == 13
    np.testing.assert_allclose(driver.running.var, with_late.var(axis=0), rtol=1e-10)


def test_an_update_the_driver_did_not_confirm_is_handed_over_again_once():
    # A reduction that failed on another worker (Dask lost it) is asked again.
    obs_filter = make_observation_filter("MeanStdFilter", BOX)
    obs_filter(np.ones((4, 2)))
    obs_filter.pop_update()  # lost on the way
    obs_filter(np.zeros((3, 2)))
    again = RunningMeanStd.from_array(obs_filter.pop_update())
    assert again["count"] == 7 and again["mean"].tolist() == [4 / 7, 4 / 7]
    obs_filter.sync(obs_filter.running.get_state())  # confirmed
    assert RunningMeanStd.from_array(obs_filter.pop_update())["count"] == 0
    assert obs_filter.running.count == 7


def test_unknown_names_and_spaces_it_does_not_normalise_are_clear_errors():
    with pytest.raises(ValueError, match="'NoFilter', 'MeanStdFilter' or 'ConcurrentMean"):
        PGTrainer({"observation_filter": "MeanStd"}, env="CartPole-v1")
    frames = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    with pytest.raises(ValueError, match="uint8 image observations .* 'NoFilter'"):
        make_observation_filter("MeanStdFilter", frames)
    with pytest.raises(ValueError, match=r"Discrete\(5\) .*set observation_filter to 'NoFilter'"):
        make_observation_filter("ConcurrentMeanStdFilter", gym.spaces.Discrete(5))
    float_images = gym.spaces.Box(0, 1, (8, 8, 3), np.float32)
    out = make_observation_filter("MeanStdFilter", float_images)(np.ones((2, 8, 8, 3)))
    assert out.shape == (2, 8, 8, 3)


def test_dict_observations_are_filtered_flat_and_the_action_mask_is_left_alone():
    space = gym.spaces.Dict(
        {
            "observation": gym.spaces.Box(-1000, 1000, (2,), np.float32),
            "action_mask": gym.spaces.MultiBinary(3),
        }
    )
    obs_filter = make_observation_filter("MeanStdFilter", space)
    batch = {
        "observation": np.array([[100.0, -5.0], [300.0, -7.0]], np.float32),
        "action_mask": np.array([[1, 0, 1], [0, 1, 1]], np.int8),
    }
    out = obs_filter(batch)
    # Dict keys in the space's order: action_mask (sorted first), then observation.
    assert out.dtype == np.float32 and out.shape == (2, 5)
    np.testing.assert_array_equal(out[:, :3], batch["action_mask"])
    np.testing.assert_allclose(out[:, 3:], [[-1.0, 1.0], [1.0, -1.0]], rtol=1e-6)


# -- what the samplers store -------------------------------------------------
def worker_on_recording_env(tmp_path, **config) -> RolloutWorker:
    config = {"num_envs_per_worker": 3, "rollout_fragment_length": 25, "seed": 5,
              "env_config": {"record_dir": str(tmp_path)}, **config}  # fmt: skip
    return RolloutWorker("recording_env", PGTorchPolicy, config)


def test_every_observation_is_counted_once_and_batches_hold_the_filtered_ones(tmp_path):
    worker = worker_on_recording_env(tmp_path, observation_filter="MeanStdFilter")
    batches = [worker.sample() for _ in range(3)]
    seen = recorded_observations(tmp_path)
    running = worker.get_policy().observation_filter.running
    assert running.count == len(seen)
    np.testing.assert_allclose(running.mean, seen.mean(axis=0), rtol=1e-9)
    for batch in batches:
        obs, new_obs = batch[SampleBatch.OBS], batch[SampleBatch.NEXT_OBS]
        assert obs.dtype == np.float32 and np.abs(obs).max() < 10  # raw: -300 +- 50
        # the next row of the same episode acts on exactly the stored new_obs
        same = (batch[SampleBatch.EPS_ID][1:] == batch[SampleBatch.EPS_ID][:-1]) & (
            batch[SampleBatch.T][1:] == batch[SampleBatch.T][:-1] + 1
        )
        np.testing.assert_array_equal(new_obs[:-1][same], obs[1:][same])
    worker.stop()


def test_a_frozen_filter_normalises_every_row_with_the_statistics_it_has(tmp_path):
    worker = worker_on_recording_env(tmp_path, observation_filter="MeanStdFilter")
    obs_filter = worker.get_policy().observation_filter
    preset = RunningMeanStd(3)
    preset.merge(RunningMeanStd.of(np.array([[4.0, -250.0, 0.0], [6.0, -350.0, 0.02]])))
    obs_filter.running.set_state(preset.get_state())
    worker.update_observation_filters = False
    batch = worker.sample()
    assert obs_filter.running.count == 2  # not updated
    expected = preset.normalize(recorded_observations(tmp_path))
    stored = np.concatenate([batch[SampleBatch.OBS], batch[SampleBatch.NEXT_OBS]])
    distance = np.abs(stored[:, None, :] - expected[None, :, :]).max(axis=2).min(axis=1)
    assert distance.max() < 1e-5  # every stored row is a recorded one, normalised
    worker.stop()


def test_no_filter_stores_the_envs_observations(tmp_path):
    worker = worker_on_recording_env(tmp_path)
    assert not worker.get_policy().observation_filter.active
    batch = worker.sample()
    seen = recorded_observations(tmp_path)
    assert np.isin(batch[SampleBatch.OBS][:, 1], seen[:, 1].astype(np.float32)).all()
    assert worker.pop_filter_updates().size == 0 and worker.get_filter_states() == {}
    worker.stop()


def test_multi_agent_policies_each_filter_their_own_agents(tmp_path):
    register_env("recording_pair", make_multi_agent(RecordingEnv))
    config = {
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 30,
        "batch_mode": "complete_episodes",
        "seed": 2,
        "env_config": {"num_agents": 2, "record_dir": str(tmp_path)},
        "multiagent": {
            "policies": {
                "filtered": (None, None, None, {"observation_filter": "MeanStdFilter"}),
                "raw": (None, None, None, {}),
            },
            "policy_mapping_fn": lambda agent_id, *args, **kwargs: ["filtered", "raw"][agent_id],
        },
    }
    worker = RolloutWorker("recording_pair", PGTorchPolicy, config)
    batches = worker.sample().policy_batches
    assert worker.filter_layout().sizes == (3,)  # only "filtered" has one
    running = worker.get_policy("filtered").observation_filter.running
    seen = recorded_observations(tmp_path)
    rows = batches["filtered"]
    # complete episodes: every row acted on an observation, and each ends on a final one
    ends = rows[SampleBatch.TERMINATEDS] | rows[SampleBatch.TRUNCATEDS]
    assert running.count >= rows.count + ends.sum()
    assert (
        np.abs(rows[SampleBatch.OBS]).max() <= 10 and np.abs(rows[SampleBatch.NEXT_OBS]).max() <= 10
    )
    raw = batches["raw"][SampleBatch.OBS]
    assert np.isin(raw[:, 1], seen[:, 1].astype(np.float32)).all()
    # evaluation plays copies of the policies, filters included
    mapping = config["multiagent"]["policy_mapping_fn"]
    metrics = evaluate_policies(worker.policy_map, "recording_pair", 2, policy_mapping_fn=mapping,
                                env_config={"num_agents": 2})  # fmt: skip
    assert len(metrics["episode_returns"]) == 2
    worker.stop()


# -- the driver's merge, per optimizer family --------------------------------
FAMILIES = {
    "PG": {},  # SyncSamplesOptimizer
    "A3C": {"grads_per_step": 4},  # AsyncGradientsOptimizer
    "IMPALA": {"min_iter_time_s": 0.0, "timesteps_per_iteration": 80},  # AsyncSamples
    "DQN": {"learning_starts": 40, "timesteps_per_iteration": 80, "buffer_size": 500},
    "APEX": {
        "learning_starts": 40,
        "timesteps_per_iteration": 80,
        "buffer_size": 1000,
        "num_replay_buffer_shards": 1,
        "min_iter_time_s": 0.0,
    },  # fmt: skip
    # (DD-PPO reads train_batch_size per worker: 20 steps x 2 envs)
    "DDPPO": {
        "num_workers": 1,
        "train_batch_size": 40,
        "sgd_minibatch_size": 20,
        "num_sgd_iter": 1,
    },
    "PPO-data-parallel": {"num_learners": 2, "sgd_minibatch_size": 40, "num_sgd_iter": 1},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_driver_merges_every_observation_every_worker_saw(family, tmp_path):
    algorithm = family.split("-")[0]
    config = {**SMALL, "num_workers": 2, "env_config": {"record_dir": str(tmp_path)}}
    config.update(FAMILIES[family])
    trainer = get_trainer_class(algorithm)(config, env="recording_env")
    try:
        for _ in range(2):
            trainer.train()
        # Asynchronous optimizers' workers sample on: stop them, then merge what they saw.
        trainer.optimizer.stop()
        trainer.workers.sync_filters()
        assert check_merged_filter(trainer, tmp_path) > 0
    finally:
        trainer.stop()


def test_es_updates_the_policys_filter_alike_on_every_process():
    from hpcrl.algorithms.es import ARSTrainer

    config = {"noise_size": 100_000, "model": {"fcnet_hiddens": [4]}, "seed": 0,
              "num_rollouts": 2, "rollouts_used": 2, "num_workers": 2}  # fmt: skip
    with ARSTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        trainer.train()
        driver = trainer.get_policy().observation_filter.get_state()
        workers = trainer.workers.call_remote("get_filter_states")
    assert driver["running"]["count"] > 0
    for states in workers:
        np.testing.assert_array_equal(states["default_policy"]["mean"], driver["running"]["mean"])


class FarOffBandit(gym.Env):
    """One-step episodes: the observation is 1000 +- 1; action 1 pays 1 when it is above
    1000, action 0 when below. Unfiltered, a tanh network sees only "about 1000"."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, env_config=None) -> None:
        self.obs = np.zeros(1, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.obs = np.array([1000.0 + self.np_random.normal()], np.float32)
        return self.obs, {}

    def step(self, action):
        return self.obs, float(int(action) == int(self.obs[0] > 1000.0)), True, False, {}


def test_ppo_learns_with_the_filter_what_it_cannot_without_and_evaluates_with_it():
    register_env("far_off_bandit", FarOffBandit)
    config = {"num_envs_per_worker": 8, "rollout_fragment_length": 32, "train_batch_size": 256,
              "sgd_minibatch_size": 64, "num_sgd_iter": 4, "lr": 3e-3, "seed": 0,
              "model": {"fcnet_hiddens": [16]}, "vectorization_mode": "sync"}  # fmt: skip
    rewards = {}
    for name in ("MeanStdFilter", "NoFilter"):
        with PPOTrainer({**config, "observation_filter": name}, env="far_off_bandit") as trainer:
            for _ in range(15):
                result = trainer.train()
            evaluation = trainer.evaluate()["evaluation"]
        rewards[name] = (result["episode_reward_mean"], evaluation["episode_reward_mean"])
    assert min(rewards["MeanStdFilter"]) >= 0.9, rewards  # 3,840 steps
    assert rewards["NoFilter"][0] <= 0.7, rewards


# -- checkpoints and playing -------------------------------------------------
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_restored_run_continues_with_exactly_the_filters_of_an_uninterrupted_one(
    num_workers, tmp_path
):
    config = {**SMALL, "num_workers": num_workers, "sgd_minibatch_size": 40, "num_sgd_iter": 1}

    def filters(trainer):
        remote = trainer.workers.call_remote("apply", lambda w: w.get_policy().get_state())
        states = [trainer.get_policy().get_state()] + remote
        return [s["observation_filter"] for s in states]

    with PPOTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
        saved = filters(trainer)
        trainer.train()
        straight = filters(trainer), trainer.get_weights()["default_policy"]
    with PPOTrainer(config, env="CartPole-v1") as trainer:
        trainer.restore(checkpoint)
        restored = filters(trainer)
        trainer.train()
        resumed = filters(trainer), trainer.get_weights()["default_policy"]
    for before, after in zip(saved + straight[0], restored + resumed[0]):
        for part in ("running", "buffer"):
            assert before[part]["count"] == after[part]["count"]
            np.testing.assert_array_equal(before[part]["mean"], after[part]["mean"])
            np.testing.assert_array_equal(before[part]["m2"], after[part]["m2"])
    for name, value in straight[1].items():
        np.testing.assert_array_equal(value, resumed[1][name], err_msg=name)


def test_from_checkpoint_and_evaluate_play_with_the_saved_filter_frozen(tmp_path, capsys):
    from hpcrl.cli import main

    config = {**SMALL, "num_workers": 1, "env_config": {"record_dir": str(tmp_path)}}
    with PGTrainer(config, env="recording_env") as trainer:
        trainer.train()
        checkpoint = trainer.save(str(tmp_path / "run"))
        trained = trainer.get_policy().observation_filter.get_state()
    policy = Policy.from_checkpoint(checkpoint)
    obs_filter = policy.observation_filter
    assert isinstance(obs_filter, MeanStdFilter) and obs_filter.running.count > 0
    for part in ("running", "buffer"):
        np.testing.assert_array_equal(obs_filter.get_state()[part]["mean"], trained[part]["mean"])

    acted_on = []
    compute_actions = policy.compute_actions

    def spy(obs_batch, *args, **kwargs):
        acted_on.append(obs_batch)
        return compute_actions(obs_batch, *args, **kwargs)

    policy.compute_actions = spy
    play_dir = tmp_path / "play"
    play_dir.mkdir()
    evaluate_policy(policy, "recording_env", 3, env_config={"record_dir": str(play_dir)}, seed=1)
    assert obs_filter.running.count == trained["running"]["count"]  # frozen
    # The first actions: on the three resets, normalised by the saved statistics.
    assert_same_rows(acted_on[0], obs_filter.running.normalize(first_rows(play_dir)))
    # One raw observation: filtered the same way, frozen.
    raw = recorded_observations(play_dir)[:1]
    action = policy.compute_single_action(raw[0], explore=False)[0]
    expected = compute_actions(obs_filter.running.normalize(raw), explore=False)[0][0]
    assert action == expected and obs_filter.running.count == trained["running"]["count"]

    assert main(["evaluate", checkpoint, "--episodes", "2"]) == 0
    assert "mean return" in capsys.readouterr().out


def first_rows(record_dir) -> np.ndarray:
    """The first observation each env recorded (its reset)."""
    from pathlib import Path

    return np.stack([np.fromfile(f, np.float64)[:3] for f in Path(record_dir).glob("obs-*")])


def assert_same_rows(a: np.ndarray, b: np.ndarray) -> None:
    """The rows of ``a`` and ``b`` are the same, in any order."""
    assert a.shape == b.shape, (a.shape, b.shape)
    distance = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)
    assert distance.min(axis=1).max() < 1e-5 and distance.min(axis=0).max() < 1e-5, distance
