"""Recurrent models: sequences cut by hand, padding that changes nothing, state across
fragments, whole-sequence minibatches, custom recurrent models."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from hpcrl.algorithms.ppo import PPOTorchPolicy, PPOTrainer
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.models import ModelCatalog
from hpcrl.models.recurrent import (
    SEQ_ID,
    RecurrentNetwork,
    RecurrentWrapper,
    add_time_dimension,
    chop_into_sequences,
    remove_time_dimension,
    sequence_ids,
    sequence_lengths,
)
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.sgd import plan_minibatches, shard_sizes

OBS = gym.spaces.Box(-1, 1, (3,), np.float32)
ACT = gym.spaces.Discrete(2)


def test_sequences_cut_at_episode_fragment_agent_and_max_len_worked_by_hand():
    batch = SampleBatch(
        {
            # episode 1: t 0..4 then (a later fragment) t 7..8; episode 2: two agents.
            "eps_id": [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2],
            "t": [0, 1, 2, 3, 4, 7, 8, 0, 1, 0, 1],
            "agent_index": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        }
    )
    assert sequence_ids(batch, max_seq_len=3).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert sequence_lengths(batch, 3).tolist() == [3, 2, 2, 2, 2]
    assert sequence_lengths(batch, 20).tolist() == [5, 2, 2, 2]
    assert sequence_lengths(batch, 1).tolist() == [1] * 11


def test_chop_into_sequences_pads_with_zeros_by_hand():
    out = chop_into_sequences(
        {"obs": np.arange(1, 6), "state": np.arange(10).reshape(5, 2)}, np.array([3, 1, 1]), 4
    )
    assert out["obs"].tolist() == [[1, 2, 3, 0], [4, 0, 0, 0], [5, 0, 0, 0]]
    assert out["state"].shape == (3, 4, 2)
    rows = torch.arange(5.0)[:, None]
    padded = add_time_dimension(rows, torch.tensor([3, 1, 1]), 4)
    assert padded[..., 0].tolist() == [[0, 1, 2, 0], [3, 0, 0, 0], [4, 0, 0, 0]]
    assert remove_time_dimension(padded, torch.tensor([3, 1, 1])).equal(rows)


def _wrapper(cell="lstm", **extra) -> RecurrentWrapper:
    config = {"use_lstm": True, "lstm_cell_size": 8, "fcnet_hiddens": [16], "rnn_cell": cell}
    return ModelCatalog.get_model(OBS, ACT, 2, {**config, **extra})


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_rows_change_neither_the_loss_nor_its_gradient(cell):
    """The loss over sequences run together (padded to the longest) equals the loss of
    each sequence run alone (no padding at all), and so do the gradients."""
    torch.manual_seed(0)
    model = _wrapper(cell)
    seq_lens = torch.tensor([5, 1, 3, 2])
    obs = torch.randn(int(seq_lens.sum()), 3)
    state = [torch.randn(4, 8) for _ in model.get_initial_state()]
    targets = torch.randn(len(obs), 2)

    def loss_and_grads(chunks):
        model.zero_grad()
        total = 0.0
        for rows, lens, states in chunks:
            out, _ = model({"obs": obs[rows]}, states, lens)
            value = model.value_function()
            total = total + ((out - targets[rows]) ** 2).sum() + (value**2).sum()
        total.backward()
        return float(total.detach()), [p.grad.clone() for p in model.parameters()]

    together = loss_and_grads([(slice(None), seq_lens, state)])
    starts = torch.cumsum(seq_lens, 0) - seq_lens
    alone = loss_and_grads(
        [
            (slice(int(s), int(s + n)), n[None], [x[i : i + 1] for x in state])
            for i, (s, n) in enumerate(zip(starts, seq_lens))
        ]
    )
    assert together[0] == pytest.approx(alone[0], rel=1e-5)
    for a, b in zip(together[1], alone[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_training_forward_equals_acting_step_by_step():
    """from_batch over a sampled batch gives the action inputs the rollout computed."""
    config = {
        "num_envs_per_worker": 3,
        "rollout_fragment_length": 30,
        "seed": 0,
        "model": {
            "use_lstm": True,
            "lstm_cell_size": 8,
            "fcnet_hiddens": [8],
            "max_seq_len": 7,
            "lstm_use_prev_action": True,
            "lstm_use_prev_reward": True,
        },
    }
    worker = RolloutWorker("CartPole-v1", PPOTorchPolicy, config)
    batch = worker.sample()
    policy = worker.get_policy()
    tensors = policy.load_batch(batch)
    assert SEQ_ID in tensors and max(policy.sequence_lengths(batch)) == 7
    policy.model.eval()
    with torch.no_grad():
        outputs, _ = policy.model.from_batch(tensors)
    np.testing.assert_allclose(outputs.numpy(), batch["action_dist_inputs"], atol=1e-5)


def test_state_and_previous_action_carry_across_fragments():
    config = {
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 10,
        "seed": 1,
        "model": {
            "use_lstm": True,
            "lstm_cell_size": 4,
            "fcnet_hiddens": [8],
            "lstm_use_prev_action": True,
        },
    }
    worker = RolloutWorker("CartPole-v1", PPOTorchPolicy, config)
    first, second = worker.sample(), worker.sample()
    initial = worker.get_policy().get_initial_state()[0]
    carried = 0
    for env in range(2):
        before = np.flatnonzero(first["env_id"] == env)[-1]
        after = np.flatnonzero(second["env_id"] == env)[0]
        if first["eps_id"][before] == second["eps_id"][after] and not first["dones"][before]:
            carried += 1
            np.testing.assert_array_equal(second["state_in_0"][after], first["state_out_0"][before])
            assert second["prev_actions"][after] == first["actions"][before]
            assert not np.allclose(second["state_in_0"][after], initial)
    assert carried >= 1
    # Episode starts begin from the initial state and no previous action.
    starts = np.flatnonzero(second["t"] == 0)
    assert len(starts) and np.all(second["state_in_0"][starts] == initial)
    assert np.all(second["prev_actions"][starts] == 0)


def test_minibatches_and_learner_shards_hold_whole_sequences():
    lens = np.array([4, 2, 5, 1, 3, 5])
    sizes = shard_sizes(int(lens.sum()), 2, lens)
    assert sizes == [11, 9]  # the sequence end nearest the even split (10)
    plan = plan_minibatches(sizes, 2, 5, np.random.default_rng(0), seq_lens=lens)
    shard_lens = [lens[:3], lens[3:]]
    for k in range(2):
        starts = set((np.cumsum(shard_lens[k]) - shard_lens[k]).tolist())
        for epoch in plan[k]:
            assert sorted(np.concatenate(epoch).tolist()) == list(range(sizes[k]))
            for rows in epoch:
                # Every minibatch is sequences laid end to end, each in time order.
                pieces = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
                assert all(int(p[0]) in starts for p in pieces)
    with pytest.raises(ValueError, match="3 sequences cannot be split over 4 learners"):
        shard_sizes(10, 4, [4, 4, 2])


class TinyLSTM(RecurrentNetwork):
    """A custom recurrent model: get_initial_state, forward_rnn and value_function."""

    def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        self.rnn = torch.nn.LSTM(int(np.prod(obs_space.shape)), 8, batch_first=True)
        self.pi = torch.nn.Linear(8, num_outputs)
        self.vf = torch.nn.Linear(8, 1)

    def get_initial_state(self):
        return [np.zeros(8, np.float32), np.zeros(8, np.float32)]

    def forward_rnn(self, inputs, state, seq_lens):
        out, (h, c) = self.rnn(inputs, (state[0][None], state[1][None]))
        self._values = self.vf(out)[..., 0]
        self._seq_lens = seq_lens
        return self.pi(out), [h[0], c[0]]

    def value_function(self):
        if self._seq_lens is None:
            return self._values[:, 0]
        return remove_time_dimension(self._values[..., None], self._seq_lens)[:, 0]


def test_a_custom_recurrent_model_trains_through_the_catalog():
    ModelCatalog.register_custom_model("tiny_lstm", TinyLSTM)
    trainer = PPOTrainer(
        config={
            "env": "CartPole-v1",
            "num_workers": 0,
            "num_envs_per_worker": 4,
            "rollout_fragment_length": 32,
            "train_batch_size": 128,
            "sgd_minibatch_size": 32,
            "num_sgd_iter": 2,
            "seed": 0,
            "model": {"custom_model": "tiny_lstm", "max_seq_len": 8},
        }
    )
    try:
        policy = trainer.get_policy()
        assert policy.recurrent
        before = policy.get_weights()
        result = trainer.train()
        assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
        after = policy.get_weights()
        assert any(not np.array_equal(before[k], after[k]) for k in before)
        action, state, _ = trainer.compute_single_action(
            np.zeros(4, np.float32), state=policy.get_initial_state()
        )
        assert action in (0, 1) and [s.shape for s in state] == [(8,), (8,)]
    finally:
        trainer.stop()


def test_bad_recurrent_configs_name_the_fix():
    with pytest.raises(ValueError, match="recurrent already; drop use_lstm"):
        ModelCatalog.register_custom_model("tiny_lstm", TinyLSTM)
        ModelCatalog.get_model(OBS, ACT, 2, {"custom_model": "tiny_lstm", "use_lstm": True})
    with pytest.raises(ValueError, match="rnn_cell='rnn'"):
        _wrapper("rnn")
    model = _wrapper(lstm_use_prev_action=True)
    with pytest.raises(ValueError, match="'prev_actions'"):
        model({"obs": torch.zeros(2, 3)}, [torch.zeros(2, 8)] * 2, None)
    with pytest.raises(ValueError, match="need the batch's 'eps_id' column"):
        sequence_ids(SampleBatch({"obs": np.zeros((2, 3))}), 4)
