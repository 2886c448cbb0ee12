"""Recurrent models and the sequences they train on.

Rollouts store each row's recurrent state (``state_in_N``: the state the policy acted
from, ``state_out_N``: the state after the row). For training, a batch is cut into
sequences: a new sequence starts at every episode start, wherever the rows of one
trajectory stop being consecutive (a fragment's end, another agent's rows) and every
``max_seq_len`` rows. Each sequence starts from its first row's stored ``state_in``.

Rows stay flat in batches, minibatches and every loss: a recurrent model pads its
sequences to ``[num_sequences, max_len, ...]`` inside ``forward`` (``add_time_dimension``)
and returns its outputs unpadded (``remove_time_dimension``), so padded steps never
reach a loss term or a statistic. This is DESIGN.md's "pad, then mask padding out of
every loss term", with the masking done once, at the model's output, instead of in
every algorithm's loss: the losses of PG, A2C, A3C, PPO and IMPALA/APPO serve feed-forward
and recurrent models unchanged, and per-row outputs keep the batch's row order.
Minibatches are made of whole sequences (``hpcrl.policy.sgd.plan_minibatches``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from hpcrl.models.fcnet import _init_linear
from hpcrl.models.torch_model import TorchModel
from hpcrl.policy.sample_batch import SampleBatch

# A per-row column of tensor batches of recurrent policies: the sequence each row is in.
SEQ_ID = "seq_id"

RNN_CELLS = ("lstm", "gru")


def sequence_ids(batch: SampleBatch, max_seq_len: int) -> np.ndarray:
    """The sequence of each row of ``batch``: 0, 0, 1, 1, 1, 2... in row order.

    A sequence starts at the first row, where ``eps_id`` or ``agent_index`` changes,
    where ``t`` is not one more than the row before, and after ``max_seq_len`` rows.

    Raises:
        ValueError: If the batch has no ``eps_id`` column or ``max_seq_len`` < 1.

    Example:
        >>> batch = SampleBatch({"eps_id": [7, 7, 7, 7, 8, 8], "t": [0, 1, 2, 3, 5, 6]})
        >>> sequence_ids(batch, max_seq_len=3).tolist()
        [0, 0, 0, 1, 2, 2]
    """
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    if SampleBatch.EPS_ID not in batch:
        raise ValueError(
            "a recurrent policy trains on sequences, which need the batch's 'eps_id' column "
            f"(and 't'); this batch has only {sorted(batch)}"
        )
    eps_id = np.asarray(batch[SampleBatch.EPS_ID])
    count = len(eps_id)
    new = np.ones(count, dtype=bool)
    if count > 1:
        same = eps_id[1:] == eps_id[:-1]
        for key in (SampleBatch.AGENT_INDEX, SampleBatch.ENV_ID):
            if key in batch:
                column = np.asarray(batch[key])
                same &= column[1:] == column[:-1]
        if SampleBatch.T in batch:
            t = np.asarray(batch[SampleBatch.T])
            same &= t[1:] == t[:-1] + 1
        new[1:] = ~same
    run_start = np.flatnonzero(new)
    position = np.arange(count) - run_start[np.cumsum(new) - 1]
    new |= position % max_seq_len == 0
    return np.cumsum(new) - 1


def sequence_lengths(batch: SampleBatch, max_seq_len: int) -> np.ndarray:
    """Lengths of the sequences of ``batch`` in row order (see :func:`sequence_ids`).

    Example:
        >>> sequence_lengths(SampleBatch({"eps_id": [1, 1, 1, 2]}), 2).tolist()
        [2, 1, 1]
    """
    ids = sequence_ids(batch, max_seq_len)
    return np.bincount(ids) if len(ids) else np.zeros(0, dtype=np.int64)


def chop_into_sequences(
    columns: dict[str, np.ndarray], seq_lens: np.ndarray, max_len: int | None = None
) -> dict[str, np.ndarray]:
    """Each column of flat rows as ``[num_sequences, max_len, ...]``, zero-padded; the
    padded view of a batch that a recurrent model works on (numpy, for inspection).

    Example:
        >>> out = chop_into_sequences({"x": np.arange(5)}, np.array([2, 3]))
        >>> out["x"].tolist()
        [[0, 1, 0], [2, 3, 4]]
    """
    seq_lens = np.asarray(seq_lens, dtype=np.int64)
    max_len = int(max_len or (seq_lens.max() if len(seq_lens) else 0))
    positions = _padded_positions_np(seq_lens, max_len)
    out = {}
    for key, column in columns.items():
        column = np.asarray(column)
        padded = np.zeros((len(seq_lens) * max_len, *column.shape[1:]), dtype=column.dtype)
        padded[positions] = column
        out[key] = padded.reshape(len(seq_lens), max_len, *column.shape[1:])
    return out


def _padded_positions_np(seq_lens: np.ndarray, max_len: int) -> np.ndarray:
    starts = np.cumsum(seq_lens) - seq_lens
    seq_of_row = np.repeat(np.arange(len(seq_lens)), seq_lens)
    return seq_of_row * max_len + np.arange(int(seq_lens.sum())) - starts[seq_of_row]


def padded_positions(seq_lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """For each flat row, its index in the flattened ``[num_sequences, max_len]`` view."""
    starts = torch.cumsum(seq_lens, 0) - seq_lens
    seq_of_row = torch.repeat_interleave(
        torch.arange(len(seq_lens), device=seq_lens.device), seq_lens
    )
    rows = torch.arange(len(seq_of_row), device=seq_lens.device)
    return seq_of_row * max_len + rows - starts[seq_of_row]


def add_time_dimension(
    rows: torch.Tensor, seq_lens: torch.Tensor, max_len: int | None = None
) -> torch.Tensor:
    """Flat rows ``[B, ...]`` as zero-padded sequences ``[len(seq_lens), max_len, ...]``.

    Example:
        >>> add_time_dimension(torch.arange(3.0)[:, None], torch.tensor([1, 2]))[..., 0]
        tensor([[0., 0.],
                [1., 2.]])
    """
    max_len = int(max_len or int(seq_lens.max()))
    padded = rows.new_zeros((len(seq_lens) * max_len, *rows.shape[1:]))
    padded[padded_positions(seq_lens, max_len)] = rows
    return padded.reshape(len(seq_lens), max_len, *rows.shape[1:])


def remove_time_dimension(padded: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`add_time_dimension`: the real steps as flat rows."""
    max_len = padded.shape[1]
    flat = padded.reshape(padded.shape[0] * max_len, *padded.shape[2:])
    return flat[padded_positions(seq_lens, max_len)]


def batch_sequences(batch: SampleBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first row of each sequence, sequence lengths)`` of a tensor batch that has a
    ``seq_id`` column: runs of equal ``seq_id`` whose ``t`` goes up by one. A minibatch
    that cut a sequence only starts more of them; each starts from its stored state."""
    seq_id = batch[SEQ_ID]
    count = len(seq_id)
    new = torch.ones(count, dtype=torch.bool, device=seq_id.device)
    if count > 1:
        same = seq_id[1:] == seq_id[:-1]
        if SampleBatch.T in batch:
            t = batch[SampleBatch.T]
            same &= t[1:] == t[:-1] + 1
        new[1:] = ~same
    starts = torch.nonzero(new).squeeze(1)
    ends = torch.cat([starts[1:], torch.tensor([count], device=starts.device)])
    return starts, ends - starts


class RecurrentNetwork(TorchModel):
    """Base class of custom recurrent models that work on padded sequences.

    Subclasses implement :meth:`forward_rnn` and :meth:`get_initial_state` (plus
    :meth:`value_function`); :meth:`forward` pads the flat rows into sequences and
    unpads the outputs. During acting (``seq_lens`` None) every row is a sequence of
    length one. A custom model may instead subclass ``TorchModel`` and take flat rows,
    one state per sequence and ``seq_lens`` in its own ``forward``.

    Example:
        >>> class Tiny(RecurrentNetwork):
        ...     def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        ...         super().__init__(obs_space, action_space, num_outputs, model_config, name)
        ...         self.rnn = nn.GRU(obs_space.shape[0], 8, batch_first=True)
        ...         self.out = nn.Linear(8, num_outputs)
        ...     def get_initial_state(self):
        ...         return [np.zeros(8, np.float32)]
        ...     def forward_rnn(self, inputs, state, seq_lens):
        ...         out, h = self.rnn(inputs, state[0][None])
        ...         return self.out(out), [h[0]]
        >>> model = Tiny(spaces.Box(-1, 1, (3,)), spaces.Discrete(2), 2, {}, "m")
        >>> logits, state = model({"obs": torch.zeros(5, 3)}, [torch.zeros(2, 8)],
        ...                       torch.tensor([2, 3]))
        >>> logits.shape, state[0].shape
        (torch.Size([5, 2]), torch.Size([2, 8]))
    """

    def forward(
        self,
        input_dict: dict[str, torch.Tensor],
        state: list[torch.Tensor],
        seq_lens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        obs = input_dict["obs"]
        inputs = obs.reshape(obs.shape[0], -1).float()
        if seq_lens is None:
            outputs, state_out = self.forward_rnn(inputs[:, None], state, None)
            return outputs[:, 0], state_out
        padded = add_time_dimension(inputs, seq_lens)
        outputs, state_out = self.forward_rnn(padded, state, seq_lens)
        return remove_time_dimension(outputs, seq_lens), state_out

    def forward_rnn(
        self, inputs: torch.Tensor, state: list[torch.Tensor], seq_lens: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``inputs [N, T, features]`` (zero-padded past each sequence's length) and one
        state per sequence -> ``(outputs [N, T, num_outputs], state_out)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_rnn()")


class RecurrentWrapper(TorchModel):
    """``use_lstm``: an LSTM (or GRU) between any model's features and the heads.

    The inner model (the catalog's choice for the observation, built with no outputs)
    gives features; with ``lstm_use_prev_action`` the previous action (one-hot for
    discrete spaces) and with ``lstm_use_prev_reward`` the previous reward are appended;
    a ``rnn_cell`` ("lstm" or "gru") of ``lstm_cell_size`` units follows, then the action
    head and the value head. Sequences are run packed, so each one's final state is
    exact.

    Example:
        >>> from hpcrl.models.fcnet import FullyConnectedNetwork
        >>> obs, act = spaces.Box(-1, 1, (3,)), spaces.Discrete(2)
        >>> inner = FullyConnectedNetwork(obs, act, None, {"fcnet_hiddens": [16]}, "m")
        >>> model = RecurrentWrapper(inner, 2, {"lstm_cell_size": 8, "rnn_cell": "lstm"})
        >>> [s.shape for s in model.get_initial_state()]
        [(8,), (8,)]
    """

    def __init__(self, inner: TorchModel, num_outputs: int | None, model_config: dict[str, Any]):
        super().__init__(inner.obs_space, inner.action_space, num_outputs, model_config, inner.name)
        features = inner.num_outputs
        if not isinstance(features, int) or features <= 0:
            raise ValueError(
                f"use_lstm wraps a model built with num_outputs=None, which must then set "
                f"num_outputs to its feature size; {type(inner).__name__} left it {features!r}"
            )
        self.inner = inner
        self.cell_type = str(model_config.get("rnn_cell", "lstm")).lower()
        if self.cell_type not in RNN_CELLS:
            raise ValueError(f"rnn_cell={self.cell_type!r}; expected one of {RNN_CELLS}")
        self.cell_size = int(model_config.get("lstm_cell_size", 256))
        if self.cell_size < 1:
            raise ValueError(f"lstm_cell_size must be >= 1, got {self.cell_size}")
        self.use_prev_action = bool(model_config.get("lstm_use_prev_action", False))
        self.use_prev_reward = bool(model_config.get("lstm_use_prev_reward", False))
        self.action_size = _action_encoding_size(inner.action_space)
        in_size = (
            features
            + (self.action_size if self.use_prev_action else 0)
            + (1 if self.use_prev_reward else 0)
        )
        cell = nn.LSTM if self.cell_type == "lstm" else nn.GRU
        self.rnn = cell(in_size, self.cell_size, batch_first=True)
        if num_outputs:
            self.logits: nn.Linear | None = _init_linear(
                nn.Linear(self.cell_size, num_outputs), gain=0.01
            )
        else:
            self.logits = None
            self.num_outputs = self.cell_size
        self.value_head = _init_linear(nn.Linear(self.cell_size, 1), gain=1.0)
        self._outputs: torch.Tensor | None = None

    def get_initial_state(self) -> list[np.ndarray]:
        zeros = np.zeros(self.cell_size, dtype=np.float32)
        return [zeros, zeros.copy()] if self.cell_type == "lstm" else [zeros]

    def forward(
        self,
        input_dict: dict[str, torch.Tensor],
        state: list[torch.Tensor],
        seq_lens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features, _ = self.inner(input_dict, [], None)
        parts = [features]
        if self.use_prev_action:
            parts.append(self._encode_actions(_required(input_dict, SampleBatch.PREV_ACTIONS)))
        if self.use_prev_reward:
            rewards = _required(input_dict, SampleBatch.PREV_REWARDS)
            parts.append(rewards.float().reshape(-1, 1))
        inputs = torch.cat(parts, dim=1) if len(parts) > 1 else features
        hidden = tuple(s[None] for s in state) if self.cell_type == "lstm" else state[0][None]
        if seq_lens is None or bool((seq_lens == 1).all()):
            out, hidden_out = self.rnn(inputs[:, None], hidden)
            outputs = out[:, 0]
        else:
            padded = add_time_dimension(inputs, seq_lens)
            packed = nn.utils.rnn.pack_padded_sequence(
                padded, seq_lens.cpu(), batch_first=True, enforce_sorted=False
            )
            out, hidden_out = self.rnn(packed, hidden)
            out, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=padded.shape[1]
            )
            outputs = remove_time_dimension(out, seq_lens)
        self._outputs = outputs
        state_out = [h[0] for h in hidden_out] if self.cell_type == "lstm" else [hidden_out[0]]
        return (outputs if self.logits is None else self.logits(outputs)), state_out

    def value_function(self) -> torch.Tensor:
        if self._outputs is None:
            raise RuntimeError("value_function() called before forward()")
        return self.value_head(self._outputs).squeeze(-1)

    def _encode_actions(self, actions: torch.Tensor) -> torch.Tensor:
        space = self.inner.action_space
        if isinstance(space, spaces.Discrete):
            return nn.functional.one_hot(actions.long().reshape(-1), int(space.n)).float()
        if isinstance(space, spaces.MultiDiscrete):
            actions = actions.long().reshape(len(actions), -1)
            return torch.cat(
                [
                    nn.functional.one_hot(actions[:, i], int(n)).float()
                    for i, n in enumerate(np.asarray(space.nvec).reshape(-1))
                ],
                dim=1,
            )
        return actions.float().reshape(len(actions), -1)


def _action_encoding_size(space: spaces.Space) -> int:
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    if isinstance(space, spaces.Box):
        return int(math.prod(space.shape))
    raise ValueError(f"lstm_use_prev_action does not support the action space {space}")


def _required(input_dict: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in input_dict:
        raise ValueError(
            f"the model uses {key!r} (lstm_use_prev_action / lstm_use_prev_reward) but the "
            "input has none; batches from this version's samplers carry it"
        )
    return input_dict[key]
