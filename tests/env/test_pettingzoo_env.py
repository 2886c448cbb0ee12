"""The PettingZoo adapters on real PettingZoo envs.

The classic games (tic-tac-toe, connect four, rock-paper-scissors) need
pygame; the generated-agents envs that ship in ``pettingzoo.test`` need only
pettingzoo and add and remove agents mid-episode. Rewards are checked against
PettingZoo's own count: ``env.last()`` summed over ``env.agent_iter()`` with
the same seed and the same moves.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest

from hpcrl.env.multi_agent_env import ALL_AGENTS, MultiAgentEnv
from hpcrl.env.pettingzoo_env import (
    AECPettingZooEnv,
    ParallelPettingZooEnv,
    is_pettingzoo_env,
    require_pettingzoo,
    wrap_pettingzoo,
)


def tictactoe():
    return pytest.importorskip("pettingzoo.classic.tictactoe.tictactoe").env()


def connect_four():
    return pytest.importorskip("pettingzoo.classic.connect_four.connect_four").env()


def rps_aec():
    return pytest.importorskip("pettingzoo.classic.rps.rps").env(max_cycles=5)


def generated_aec():
    return pytest.importorskip("pettingzoo.test.example_envs.generated_agents_env_v0").env()


def generated_parallel(**kwargs):
    module = pytest.importorskip("pettingzoo.test.example_envs.generated_agents_parallel_v0")
    return module.parallel_env(**kwargs)


def legal_action(rng, observation, space):
    """A random action, among the legal ones where the observation has a mask."""
    if isinstance(observation, dict) and "action_mask" in observation:
        return int(rng.choice(np.flatnonzero(observation["action_mask"])))
    return int(rng.integers(space.n))


def pettingzoo_returns(env, seed, action_seed):
    """Each agent's episode return as PettingZoo counts it, with the moves
    ``run_aec_episode`` makes for the same seeds."""
    rng = np.random.default_rng(action_seed)
    env.reset(seed=seed)
    returns = defaultdict(float)
    for agent in env.agent_iter():
        observation, reward, terminated, truncated, _ = env.last()
        returns[agent] += reward
        done = terminated or truncated
        env.step(None if done else legal_action(rng, observation, env.action_space(agent)))
    return dict(returns)


def run_aec_episode(env, seed, action_seed):
    """One episode through the adapter, checking the turn-based contract on
    every step; returns the steps and each agent's summed rewards."""
    rng = np.random.default_rng(action_seed)
    obs, infos = env.reset(seed=seed)
    assert len(obs) == 1 and infos.keys() == obs.keys()
    steps, returns, finished = [], defaultdict(float), set()
    while True:
        (agent,) = [a for a in obs if a not in finished]
        assert env.get_observation_space(agent).contains(obs[agent])
        action = legal_action(rng, obs[agent], env.get_action_space(agent))
        obs, rewards, terminateds, truncateds, infos = env.step({agent: action})
        steps.append((obs, rewards, terminateds, truncateds))
        for a, reward in rewards.items():
            returns[a] += reward
        assert infos.keys() == obs.keys()
        assert terminateds.keys() == truncateds.keys() == obs.keys() | {ALL_AGENTS}
        assert not finished & obs.keys(), "an agent came back after it finished"
        done = {a for a in obs if terminateds[a] or truncateds[a]}
        finished |= done
        if terminateds[ALL_AGENTS] or truncateds[ALL_AGENTS]:
            assert terminateds[ALL_AGENTS] != truncateds[ALL_AGENTS]
            assert done == obs.keys() and not env.env.agents
            return steps, dict(returns), finished
        assert len(obs.keys() - done) == 1, "exactly one agent acts next"


@pytest.mark.parametrize(
    "make_env, episodes", [(tictactoe, 60), (connect_four, 20)], ids=["tictactoe", "connect_four"]
)
def test_board_games_one_agent_a_turn_and_zero_sum_rewards(make_env, episodes):
    env = AECPettingZooEnv(make_env())
    players = set(env.possible_agents)
    outcomes = set()
    for episode in range(episodes):
        steps, returns, finished = run_aec_episode(env, seed=episode, action_seed=episode)
        for obs, _, _, _ in steps[:-1]:
            assert len(obs) == 1
        last_obs, last_rewards, terminateds, truncateds = steps[-1]
        # The game ends for both players at once: each gets its final board
        # and a terminated flag, and the winner's move brings both rewards.
        assert last_obs.keys() == finished == players
        assert all(terminateds.values()) and not any(truncateds.values())
        assert "action_mask" in next(iter(last_obs.values()))
        assert sorted(returns.values()) in ([-1.0, 1.0], [0.0, 0.0])
        assert sorted(last_rewards.values()) == sorted(returns.values())
        assert returns == pettingzoo_returns(make_env(), seed=episode, action_seed=episode)
        outcomes.add(tuple(sorted(returns.values())))
    assert (-1.0, 1.0) in outcomes


def test_time_limit_truncates_every_agent_and_the_episode():
    env = AECPettingZooEnv(rps_aec())
    for episode in range(5):
        steps, returns, finished = run_aec_episode(env, seed=episode, action_seed=episode)
        assert len(steps) == 10  # 5 rounds of two moves
        _, _, terminateds, truncateds = steps[-1]
        assert truncateds == {"player_0": True, "player_1": True, ALL_AGENTS: True}
        assert not terminateds[ALL_AGENTS] and finished == {"player_0", "player_1"}
        assert returns["player_0"] == -returns["player_1"]
        assert returns == pettingzoo_returns(rps_aec(), seed=episode, action_seed=episode)


def test_agents_join_and_leave_mid_episode():
    env = AECPettingZooEnv(generated_aec())
    assert env.possible_agents == []  # the env makes its agents as it goes
    for episode in range(3):
        steps, returns, finished = run_aec_episode(env, seed=episode, action_seed=episode)
        many = [obs for obs, _, terminateds, _ in steps[:-1] if len(obs) > 1]
        assert many, "some agents finish while the others play on"
        assert len(finished) > 5  # more agents finished than the 5 it starts with
        assert sum(returns.values()) == len(steps)  # one reward of 1 per move
        assert returns == pettingzoo_returns(generated_aec(), seed=episode, action_seed=episode)


def test_seed_reproduces_an_episode():
    def summary(seed):
        steps, returns, _ = run_aec_episode(AECPettingZooEnv(generated_aec()), seed, 0)
        # Observations are left out: the env samples those of agent types it
        # adds mid-episode from spaces it never seeds.
        return [(list(obs), rewards, te, tr) for obs, rewards, te, tr in steps], returns

    assert summary(seed=7) == summary(seed=7)
    assert summary(seed=7) != summary(seed=8)


def test_aec_step_takes_one_action_for_the_agent_to_act():
    env = AECPettingZooEnv(tictactoe())
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="needs one action, for 'player_1'"):
        env.step({"player_2": 0})
    with pytest.raises(ValueError, match="got actions for \\['player_1', 'player_2'\\]"):
        env.step({"player_1": 0, "player_2": 1})
    for square in [0, 3, 1, 4, 2]:
        obs, *_ = env.step({next(iter(obs)): square})
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({"player_1": 5})


def test_parallel_episodes_end_together_at_the_time_limit():
    rps = pytest.importorskip("pettingzoo.classic.rps.rps")
    env = ParallelPettingZooEnv(rps.parallel_env(max_cycles=4))
    assert env.possible_agents == env.get_agent_ids() == ["player_0", "player_1"]
    assert env.get_observation_space("player_1") == env.env.observation_space("player_1")
    rng = np.random.default_rng(0)
    for episode in range(5):
        obs, infos = env.reset(seed=episode)
        assert obs.keys() == infos.keys() == {"player_0", "player_1"}
        for step in range(4):
            actions = {a: legal_action(rng, obs[a], env.get_action_space(a)) for a in obs}
            obs, rewards, terminateds, truncateds, infos = env.step(actions)
            last = step == 3
            assert obs.keys() == rewards.keys() == infos.keys() == {"player_0", "player_1"}
            assert truncateds == {"player_0": last, "player_1": last, ALL_AGENTS: last}
            assert not any(terminateds.values())
            assert sum(rewards.values()) == 0 and all(type(r) is float for r in rewards.values())
            assert all(env.get_observation_space(a).contains(o) for a, o in obs.items())


def test_parallel_agents_that_leave_do_not_come_back():
    env = ParallelPettingZooEnv(generated_parallel())
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=1)
    left, seen = set(), set(obs)
    for _ in range(300):
        actions = {a: legal_action(rng, obs[a], env.get_action_space(a)) for a in obs}
        obs, rewards, terminateds, truncateds, infos = env.step(actions)
        assert not left & (obs.keys() | rewards.keys() | terminateds.keys())
        assert not terminateds[ALL_AGENTS] and not truncateds[ALL_AGENTS]
        assert all(env.get_observation_space(a).contains(o) for a, o in obs.items())
        gone = {a for a in obs if terminateds.get(a) or truncateds.get(a)}
        assert set(env.env.agents) == obs.keys() - gone
        left |= gone
        seen |= obs.keys()
        obs = {a: o for a, o in obs.items() if a not in gone}
    assert left and len(seen) > 10  # agents joined and left


def test_parallel_episode_cut_short_for_everyone_is_truncated():
    env = ParallelPettingZooEnv(generated_parallel(max_cycles=0))
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        _, _, terminateds, truncateds, _ = env.step(dict.fromkeys(obs, 0))
        assert truncateds == {**dict.fromkeys(obs, True), ALL_AGENTS: True}
        assert not any(terminateds.values())


def test_is_pettingzoo_env():
    assert not is_pettingzoo_env(gym.make("CartPole-v1"))
    assert not is_pettingzoo_env(object())
    aec, parallel = generated_aec(), generated_parallel()
    assert is_pettingzoo_env(aec) and is_pettingzoo_env(parallel)
    assert not is_pettingzoo_env(AECPettingZooEnv(aec))


def test_is_pettingzoo_env_imports_no_pettingzoo():
    code = (
        "import sys, gymnasium as gym\n"
        "from hpcrl.env.pettingzoo_env import is_pettingzoo_env\n"
        "assert not is_pettingzoo_env(gym.make('CartPole-v1'))\n"
        "assert 'pettingzoo' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wrap_pettingzoo_picks_the_adapter():
    aec, parallel = generated_aec(), generated_parallel()
    assert type(wrap_pettingzoo(aec)) is AECPettingZooEnv
    assert type(wrap_pettingzoo(parallel)) is ParallelPettingZooEnv
    adapted = ParallelPettingZooEnv(parallel)
    assert wrap_pettingzoo(adapted) is adapted and isinstance(adapted, MultiAgentEnv)
    with pytest.raises(TypeError, match="got CartPoleEnv"):
        wrap_pettingzoo(gym.make("CartPole-v1").unwrapped)
    with pytest.raises(TypeError, match="got a PettingZoo aec env; use AECPettingZooEnv"):
        ParallelPettingZooEnv(aec)
    with pytest.raises(TypeError, match="use ParallelPettingZooEnv"):
        AECPettingZooEnv(parallel)


def test_missing_pettingzoo_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pettingzoo", None)  # makes `import pettingzoo` fail
    with pytest.raises(ImportError, match=r'pip install "hpcrl\[pettingzoo\]"'):
        require_pettingzoo()
