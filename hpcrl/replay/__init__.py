"""Replay buffers: uniform and prioritised rings of numpy columns, per policy.

- ``ReplayBuffer``: uniform sampling with replacement.
- ``PrioritizedReplayBuffer``: proportional prioritised replay on sum/min
  segment trees (``SumSegmentTree``, ``MinSegmentTree``).
- ``MultiAgentReplayBuffer``: one of either per policy id.

Every buffer saves to plain values and numpy arrays (``get_state``) for HDF5
checkpoints and continues exactly after ``set_state``.
"""

from __future__ import annotations

from hpcrl.replay.multi_agent_replay_buffer import MultiAgentReplayBuffer
from hpcrl.replay.replay_buffer import (
    BATCH_INDEXES,
    WEIGHTS,
    PrioritizedReplayBuffer,
    ReplayBuffer,
)
from hpcrl.replay.segment_tree import MinSegmentTree, SumSegmentTree

__all__ = [
    "BATCH_INDEXES",
    "WEIGHTS",
    "MinSegmentTree",
    "MultiAgentReplayBuffer",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "SumSegmentTree",
]
