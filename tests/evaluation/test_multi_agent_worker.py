"""Rollout workers with a policy map on multi-agent envs: the dict API, agents joining
and leaving, turn-based play, the mapping function and its errors, metrics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from hpcrl.algorithms.pg import PGTorchPolicy
from hpcrl.env import MultiAgentEnv
from hpcrl.env.multi_agent_env import make_multi_agent
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch

OBS = gym.spaces.Box(-10, 100, (1,), np.float32)
ACT = gym.spaces.Discrete(2)


class JoinLeave(MultiAgentEnv):
    """Agent "a" acts at t = 0..4 and terminates at its 5th step; "b" at t = 0..7; "c"
    joins at t = 3. The episode is truncated after 8 steps. Observation: the env step
    times 10 plus the agent's number; reward: the action plus 0.5 for "c"."""

    possible_agents = ["a", "b", "c"]
    observation_space = OBS
    action_space = ACT

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {"a": self._ob("a"), "b": self._ob("b")}, {}

    def _ob(self, agent):
        return np.array([10 * self.t + "abc".index(agent)], np.float32)

    def step(self, action_dict):
        self.t += 1
        rewards = {a: float(act) + (0.5 if a == "c" else 0.0) for a, act in action_dict.items()}
        obs = {a: self._ob(a) for a in action_dict}
        terminateds = {"a": True} if self.t == 5 else {}
        if self.t == 3:
            obs["c"] = self._ob("c")
        over = self.t == 8
        terminateds["__all__"] = False
        return obs, rewards, terminateds, {"__all__": over}, {a: {"t": self.t} for a in obs}


class TurnBased(MultiAgentEnv):
    """Two players move in turns; six moves per game. A move's reward (1 for action 1)
    is given on the *other* player's next turn, and the last two at the end."""

    possible_agents = ["x", "o"]
    observation_space = OBS
    action_space = ACT

    def reset(self, *, seed=None, options=None):
        self.moves = 0
        self.pending = {}
        return {"x": np.array([0.0], np.float32)}, {}

    def step(self, action_dict):
        [(player, action)] = action_dict.items()
        self.moves += 1
        rewards = dict(self.pending)  # the previous mover's reward arrives now
        self.pending = {player: float(action)}
        if self.moves == 6:
            rewards.update(self.pending)
            ob = np.array([self.moves], np.float32)
            return {"x": ob, "o": ob}, rewards, {"__all__": True}, {"__all__": False}, {}
        other = "o" if player == "x" else "x"
        return (
            {other: np.array([self.moves], np.float32)},
            rewards,
            {"__all__": False},
            {"__all__": False},
            {},
        )


def worker_for(env_class, policies, mapping, **config):
    config = {
        "rollout_fragment_length": 8,
        "num_envs_per_worker": 1,
        "seed": 0,
        "model": {"fcnet_hiddens": [8]},
        "multiagent": {"policies": policies, "policy_mapping_fn": mapping},
        **config,
    }
    return RolloutWorker(lambda cfg: env_class(), PGTorchPolicy, config)


def rows_of(batch: SampleBatch, agent_index: int) -> SampleBatch:
    return batch.take(np.flatnonzero(batch[SampleBatch.AGENT_INDEX] == agent_index))


def test_agents_join_and_leave_and_each_row_links_to_its_next_observation():
    worker = worker_for(
        JoinLeave, {"p": None, "q": None}, lambda aid, ep, w, **kw: "q" if aid == "b" else "p"
    )
    batch = worker.sample()
    assert isinstance(batch, MultiAgentBatch) and batch.env_steps() == 8
    assert sorted(batch.policy_batches) == ["p", "q"]
    a, c = rows_of(batch.policy_batches["p"], 0), rows_of(batch.policy_batches["p"], 2)
    b = rows_of(batch.policy_batches["q"], 1)
    assert a[SampleBatch.T].tolist() == [0, 1, 2, 3, 4]
    assert b[SampleBatch.T].tolist() == list(range(8))
    assert c[SampleBatch.T].tolist() == [0, 1, 2, 3, 4]
    # a terminates at its 5th step; b and c are truncated with the episode
    assert a[SampleBatch.TERMINATEDS].tolist() == [False] * 4 + [True]
    assert b[SampleBatch.TRUNCATEDS].tolist() == [False] * 7 + [True]
    assert c[SampleBatch.TRUNCATEDS][-1] and not c[SampleBatch.TERMINATEDS].any()
    for rows, number, first in ((a, 0, 0), (b, 1, 0), (c, 2, 3)):
        steps = first + np.arange(rows.count)
        np.testing.assert_array_equal(rows[SampleBatch.OBS][:, 0], 10 * steps + number)
        np.testing.assert_array_equal(rows[SampleBatch.NEXT_OBS][:, 0], 10 * (steps + 1) + number)
        np.testing.assert_allclose(
            rows[SampleBatch.REWARDS], rows[SampleBatch.ACTIONS] + (0.5 if number == 2 else 0)
        )
        assert [info["t"] for info in rows[SampleBatch.INFOS]] == (steps + 1).tolist()
    # one episode for all three agents
    assert len(set(batch.policy_batches["p"][SampleBatch.EPS_ID])) == 1
    metrics = worker.get_metrics()
    rewards = np.concatenate([pb[SampleBatch.REWARDS] for pb in batch.policy_batches.values()])
    assert metrics["episode_returns"].tolist() == pytest.approx([rewards.sum()])
    assert metrics["episode_lengths"].tolist() == [8]
    assert sorted(metrics["policy_returns"]) == ["p", "q"]
    assert metrics["policy_returns"]["q"].tolist() == pytest.approx([b[SampleBatch.REWARDS].sum()])
    assert len(metrics["policy_returns"]["p"]) == 2  # agents a and c, each its own return
    worker.stop()


def test_turn_based_rewards_reach_the_move_that_earned_them():
    worker = worker_for(TurnBased, {"shared": None}, lambda aid, *args, **kw: "shared")
    batch = worker.sample()
    rows = batch.policy_batches["shared"]
    # 8 env steps: a whole game of 6 moves, and 2 moves of the next. x's move in the
    # second game is complete (x observes again, waiting to act: cut, bootstrapped);
    # o's move still waits for its reward and next observation and is held over.
    assert batch.env_steps() == 8 and rows.count == 7
    for index in (0, 1):
        moves = rows_of(rows, index)
        np.testing.assert_allclose(moves[SampleBatch.REWARDS], moves[SampleBatch.ACTIONS])
        assert moves[SampleBatch.TERMINATEDS].sum() == 1
    second = worker.sample().policy_batches["shared"]
    held = second.take(np.flatnonzero(second[SampleBatch.EPS_ID] == rows[SampleBatch.EPS_ID][-1]))
    # o's held move of the second game, then the rest of that game
    assert rows_of(held, 1)[SampleBatch.T].tolist()[0] == 0
    np.testing.assert_allclose(held[SampleBatch.REWARDS], held[SampleBatch.ACTIONS])
    worker.stop()


def test_complete_episodes_hold_unfinished_games_over():
    worker = worker_for(
        TurnBased, {"shared": None}, lambda aid: "shared", batch_mode="complete_episodes"
    )
    for _ in range(3):
        rows = worker.sample().policy_batches["shared"]
        assert rows.count % 6 == 0 and rows.count >= 8
        assert rows[SampleBatch.TERMINATEDS].sum() == 2 * rows.count // 6
        np.testing.assert_allclose(rows[SampleBatch.REWARDS], rows[SampleBatch.ACTIONS])
    worker.stop()


def test_one_forward_pass_per_policy_per_step_over_all_env_copies():
    calls = []

    class Counting(PGTorchPolicy):
        def compute_actions(self, obs_batch, *args, **kwargs):
            calls.append(len(obs_batch))
            return super().compute_actions(obs_batch, *args, **kwargs)

    env_class = make_multi_agent("CartPole-v1")
    worker = RolloutWorker(
        lambda cfg: env_class({"num_agents": 4}),
        Counting,
        {
            "num_envs_per_worker": 3,
            "rollout_fragment_length": 5,
            "seed": 0,
            "multiagent": {
                "policies": ["even", "odd"],
                "policy_mapping_fn": lambda aid, *a, **k: "even" if aid % 2 == 0 else "odd",
            },
        },
    )
    batch = worker.sample()
    # 5 steps, two policies, 3 copies x 2 agents each (no episode ends this early)
    assert calls == [6] * 10
    assert batch.agent_steps() == 60 and batch.env_steps() == 15
    worker.stop()


def test_mapping_function_errors_name_the_agent_and_the_valid_ids():
    worker = worker_for(
        JoinLeave, {"p": None}, lambda aid, *args, **kw: "nope" if aid == "b" else "p"
    )
    with pytest.raises(ValueError, match=r"returned 'nope' for agent 'b'.*\['p'\]"):
        worker.sample()
    worker.stop()


def test_spaces_that_do_not_match_the_agents_are_refused():
    wrong = gym.spaces.Box(-1, 1, (3,), np.float32)
    with pytest.raises(ValueError, match="agent 'a' is mapped to policy 'p'"):
        worker_for(JoinLeave, {"p": (None, wrong, ACT, {})}, lambda aid: "p").sample()


@pytest.mark.parametrize(
    ("multiagent", "message"),
    [
        ({"policies": {1: None}}, "policy id 1 is a int"),
        ({"policies": {"p": (None, None)}}, r"policies\['p'\] must be"),
        ({"policies": ["p"], "policies_to_train": ["q"]}, "policies_to_train names 'q'"),
        ({"count_steps_by": "steps"}, "count_steps_by='steps'"),
        ({"policy_mapping_fn": "no_such_module:fn"}, "cannot import module 'no_such_module'"),
        ({"polices": {}}, "did you mean 'policies'"),
    ],
)
def test_bad_multiagent_config_is_refused_when_the_trainer_is_made(multiagent, message):
    from hpcrl.algorithms.pg import PGTrainer

    with pytest.raises(ValueError, match=message):
        PGTrainer({"multiagent": multiagent}, env="CartPole-v1")


def test_mapping_function_as_a_module_path_string():
    worker = worker_for(
        JoinLeave,
        {"default_policy": None},
        "hpcrl.evaluation.policy_specs:default_policy_mapping_fn",
    )
    assert sorted(worker.sample().policy_batches) == ["default_policy"]
    worker.stop()


def test_scripted_policy_returning_a_list_of_actions():
    class Scripted(Policy):
        def compute_actions(self, obs_batch, state_batches=None, **kwargs):
            return [self.action_space.sample() for _ in obs_batch], [], {}

    worker = worker_for(JoinLeave, {"s": (Scripted, None, None, {})}, lambda aid: "s")
    rows = worker.sample().policy_batches["s"]
    assert rows[SampleBatch.ACTIONS].dtype.kind == "i" and rows.count == 5 + 8 + 5
    worker.stop()
    single = RolloutWorker("CartPole-v1", Scripted, {"rollout_fragment_length": 4})
    assert single.sample()[SampleBatch.ACTIONS].shape == (4,)
    single.stop()


def test_postprocessing_sees_the_other_agents_rows():
    seen = {}

    class CentralCritic(PGTorchPolicy):
        def postprocess_trajectory(self, batch, other_agent_batches=None, episode=None):
            # A centralised critic would join the other agents' rows by (eps_id, t).
            seen[batch[SampleBatch.AGENT_INDEX][0]] = {
                agent: (pid, rows.count) for agent, (pid, _, rows) in other_agent_batches.items()
            }
            return super().postprocess_trajectory(batch, other_agent_batches, episode)

    worker = worker_for(
        JoinLeave,
        {"p": (CentralCritic, None, None, {}), "q": (CentralCritic, None, None, {})},
        lambda aid: "q" if aid == "b" else "p",
    )
    worker.sample()
    assert seen[0] == {"a": ("p", 5), "b": ("q", 8), "c": ("p", 5)}
    worker.stop()


def test_agents_sharing_a_policy_are_separate_trajectories_in_postprocessing():
    from hpcrl.algorithms.a2c import A2CTorchPolicy

    env_class = make_multi_agent("CartPole-v1")
    worker = RolloutWorker(
        lambda cfg: env_class({"num_agents": 3}),
        A2CTorchPolicy,
        {"num_envs_per_worker": 2, "rollout_fragment_length": 30, "seed": 1},
    )
    batch = worker.sample().policy_batches["default_policy"]
    policy = worker.get_policy()
    pieces = batch.split_by_episode()
    # 2 copies x 3 agents at least, each one trajectory per episode it is in
    assert len(pieces) >= 6
    for piece in pieces:
        assert len(set(piece[SampleBatch.AGENT_INDEX])) == 1
        alone = SampleBatch(
            {k: v.copy() for k, v in piece.items() if k not in ("advantages", "value_targets")}
        )
        policy.postprocess_trajectory(alone)
        np.testing.assert_allclose(piece["advantages"], alone["advantages"], rtol=1e-5, atol=1e-5)
    worker.stop()
