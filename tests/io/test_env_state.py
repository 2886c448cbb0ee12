"""Env state snapshots: a restored env continues exactly as the original."""

from __future__ import annotations

import copy
import io
import threading

import gymnasium as gym
import h5py
import numpy as np
import pytest

from hpcrl.io.env_state import restore_env, snapshot_env
from hpcrl.io.hdf5_tree import read_tree, write_tree


def through_hdf5(snapshot: dict) -> dict:
    with h5py.File(io.BytesIO(), "w") as f:
        write_tree(f, snapshot)
        return read_tree(f)


def steps(env, actions) -> list:
    return [copy.deepcopy(env.step(a)[:4]) for a in actions]


@pytest.mark.parametrize(
    "env_id, mode",
    [
        ("CartPole-v1", "vector_entry_point"),
        ("CartPole-v1", "sync"),
        ("Pendulum-v1", "sync"),
        ("Acrobot-v1", "sync"),
        ("FrozenLake-v1", "sync"),
        ("Blackjack-v1", "sync"),
    ],
)
def test_snapshot_restores_mid_episode_state(env_id, mode):
    env = gym.make_vec(env_id, num_envs=3, vectorization_mode=mode)
    env.reset(seed=3)
    env.action_space.seed(1)
    for _ in range(5):
        env.step(env.action_space.sample())
    snapshot = through_hdf5(snapshot_env(env))
    assert snapshot["exact"], snapshot.get("reason")
    actions = [env.action_space.sample() for _ in range(200)]  # crosses episode ends
    expected = steps(env, actions)
    fresh = gym.make_vec(env_id, num_envs=3, vectorization_mode=mode)
    fresh.reset(seed=99)
    assert restore_env(fresh, snapshot)
    for a, b in zip(expected, steps(fresh, actions)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


class CounterEnv(gym.Env):
    """An env with its own get_state/set_state."""

    observation_space = gym.spaces.Box(0, 1e6, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, env_config=None):
        self.count = 0
        self.lock = threading.Lock()  # not storable, but the env saves itself

    def reset(self, *, seed=None, options=None):
        return np.array([self.count], np.float32), {}

    def step(self, action):
        self.count += 1 + int(action)
        return np.array([self.count], np.float32), 1.0, self.count > 50, False, {}

    def get_state(self):
        return {"count": self.count}

    def set_state(self, state):
        self.count = state["count"]


def test_envs_with_their_own_get_and_set_state():
    env = gym.vector.SyncVectorEnv([CounterEnv, CounterEnv])
    env.reset()
    env.step(np.array([1, 0]))
    snapshot = through_hdf5(snapshot_env(env))
    assert snapshot["exact"]
    fresh = gym.vector.SyncVectorEnv([CounterEnv, CounterEnv])
    fresh.reset()
    assert restore_env(fresh, snapshot)
    assert [e.count for e in fresh.envs] == [2, 1]


def test_unstorable_state_and_other_builds_are_refused():
    class Locked(CounterEnv):
        get_state = set_state = None

    env = gym.vector.SyncVectorEnv([Locked])
    env.reset()
    snapshot = snapshot_env(env)
    assert snapshot == {
        "exact": False,
        "reason": "SyncVectorEnv.envs[0].lock holds a _thread.lock",
    }
    assert not restore_env(env, snapshot)
    two = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    two.reset(seed=0)
    three = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    three.reset(seed=1)
    before = [e.unwrapped.state.copy() for e in three.envs]
    assert not restore_env(three, snapshot_env(two))  # built differently: left unchanged
    assert all((e.unwrapped.state == s).all() for e, s in zip(three.envs, before))


def test_a_vector_env_built_from_a_generator_of_env_fns():
    """gymnasium 1.2's ``make_vec`` keeps the (spent) generator it built the copies
    from as ``env_fns``: construction input, which the snapshot leaves out."""

    def build():
        return gym.vector.SyncVectorEnv(
            lambda: gym.make("CartPole-v1")
            for _ in range(2)  # a generator, not a list
        )

    env = build()
    env.reset(seed=5)
    env.step(np.array([0, 1]))
    snapshot = through_hdf5(snapshot_env(env))
    assert snapshot["exact"], snapshot.get("reason")
    actions = [np.array([i % 2, 1 - i % 2]) for i in range(30)]
    expected = steps(env, actions)
    fresh = build()
    fresh.reset(seed=6)
    assert restore_env(fresh, snapshot)
    for a, b in zip(expected, steps(fresh, actions)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
