"""Minibatch SGD: one routine for the driver's policy and for data-parallel learners.

``plan_minibatches`` decides which rows form each minibatch of each epoch
(per learner shard; one shard when the driver learns alone), and
``minibatch_sgd`` runs a plan on a policy. A data-parallel learner runs the
same routine on its shard with a gradient all-reduce after each backward
pass, so one learner over a batch and K learners over its shards do the same
arithmetic (up to the order of float sums).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hpcrl.policy.loss_output import LEARNER_STATS_KEY
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch


def minibatch_sgd(
    policy: Policy,
    batch: SampleBatch,
    epochs: Sequence[Sequence[np.ndarray]],
    reduce_gradients: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Run ``learn_on_batch`` on ``batch`` for every minibatch of a plan:
    ``epochs[e][j]`` are the rows of minibatch ``j`` of epoch ``e``.

    The batch is loaded once (``policy.load_batch``). ``reduce_gradients(parameters,
    rows)``, a data-parallel learner's all-reduce, runs after every backward pass
    (``TorchPolicy.learn_on_batch``) with the minibatch's number of rows.

    Returns:
        ``{"learner_stats": stats averaged over the last epoch's minibatches
        (weighted by rows)}`` plus each per-row output of the loss as one array
        over the rows of ``batch``, in its row order, from the last epoch.

    Example:
        >>> import gymnasium as gym
        >>> from hpcrl.algorithms.pg import PGTorchPolicy
        >>> policy = PGTorchPolicy(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), {})
        >>> batch = SampleBatch({"obs": np.zeros((8, 3), np.float32),
        ...                      "actions": np.zeros(8, np.int64),
        ...                      "advantages": np.ones(8, np.float32)})
        >>> plan = plan_minibatches([8], 2, 4, np.random.default_rng(0))[0]
        >>> sorted(minibatch_sgd(policy, batch, plan)["learner_stats"])
        ['cur_lr', 'policy_loss', 'total_loss']
    """
    loaded = policy.load_batch(batch)
    stats: list[dict[str, Any]] = []
    weights: list[int] = []
    per_row: dict[str, np.ndarray] = {}
    for epoch, minibatches in enumerate(epochs):
        last = epoch == len(epochs) - 1
        for rows in minibatches:
            whole = len(rows) == batch.count
            kwargs = {}
            if reduce_gradients is not None:
                kwargs["reduce_gradients"] = functools.partial(reduce_gradients, rows=len(rows))
            # A minibatch of every row is the loaded batch itself (a mean loss does
            # not depend on the row order), which saves a gather.
            result = policy.learn_on_batch(loaded if whole else loaded.take(rows), **kwargs)
            if not last:
                continue
            # A policy whose learn_on_batch returns a flat dict reports stats only.
            has_outputs = LEARNER_STATS_KEY in result
            stats.append(result[LEARNER_STATS_KEY] if has_outputs else result)
            weights.append(len(rows))
            for key, values in result.items() if has_outputs else ():
                if key == LEARNER_STATS_KEY:
                    continue
                values = np.asarray(values)
                if key not in per_row:
                    per_row[key] = np.zeros((batch.count, *values.shape[1:]), values.dtype)
                per_row[key][np.arange(batch.count) if whole else rows] = values
    return {LEARNER_STATS_KEY: mean_stats(stats, weights), **per_row}


def shard_sizes(count: int, num_learners: int, seq_lens: Any = None) -> list[int]:
    """Rows of each learner's contiguous shard of a ``count``-row batch.

    With ``seq_lens`` (a recurrent policy's sequences, in row order) each shard ends
    at the end of a sequence, the one nearest the even split.

    Example:
        >>> shard_sizes(10, 3)
        [4, 3, 3]
        >>> shard_sizes(10, 2, seq_lens=[4, 4, 2])
        [4, 6]

    Raises:
        ValueError: fewer sequences than learners.
    """
    if seq_lens is None:
        return [len(part) for part in np.array_split(np.arange(count), num_learners)]
    seq_lens = np.asarray(seq_lens, dtype=np.int64)
    if len(seq_lens) < num_learners:
        raise ValueError(
            f"a train batch of {len(seq_lens)} sequences cannot be split over "
            f"{num_learners} learners; use more rows per batch or fewer learners"
        )
    bounds = [0, *(int(end) for end in np.cumsum(seq_lens)[_cuts(seq_lens, num_learners) - 1])]
    return [b - a for a, b in zip(bounds, [*bounds[1:], int(count)])]


def _cuts(seq_lens: np.ndarray, parts: int) -> np.ndarray:
    """Where to cut a run of sequences into ``parts`` non-empty groups of near-equal
    rows: the indices of the first sequence of groups 1..parts-1."""
    ends = np.cumsum(seq_lens)
    cuts = np.zeros(parts - 1, dtype=np.int64)
    previous = 0
    for k in range(1, parts):
        target = ends[-1] * k / parts
        # The sequence end nearest the target that leaves every group a sequence.
        low, high = previous + 1, len(seq_lens) - (parts - k)
        previous = cuts[k - 1] = int(np.clip(np.argmin(np.abs(ends - target)) + 1, low, high))
    return cuts


def plan_minibatches(
    sizes: Sequence[int],
    num_sgd_iter: int,
    sgd_minibatch_size: int,
    rng: np.random.Generator,
    seq_lens: Any = None,
) -> list[list[list[np.ndarray]]]:
    """Each learner's minibatches: ``plan[k][epoch][j]`` are rows of shard ``k``.

    Global minibatch ``j`` of an epoch is the union of the learners' ``j``-th
    parts. There are ``total // sgd_minibatch_size`` of them per epoch (one,
    the whole batch, when ``sgd_minibatch_size`` is 0 or covers the batch);
    each learner shuffles its shard every epoch and cuts it into that many
    near-equal parts, so every row is used once per epoch.

    With ``seq_lens`` (a recurrent policy's sequences over the whole batch, in row
    order, each inside one shard: see ``shard_sizes``) whole sequences are shuffled
    and grouped instead, each keeping its rows in order, and there are at most as
    many minibatches as the smallest shard has sequences.

    Example:
        >>> plan = plan_minibatches([4, 4], 1, 4, np.random.default_rng(0))
        >>> [[len(part) for part in plan[k][0]] for k in range(2)]
        [[2, 2], [2, 2]]
        >>> plan = plan_minibatches([6], 1, 3, np.random.default_rng(0), seq_lens=[2, 3, 1])
        >>> [rows.tolist() for rows in plan[0][0]]  # sequences [0, 1], [2, 3, 4], [5]
        [[5, 0, 1], [2, 3, 4]]

    Raises:
        ValueError: a learner's shard has fewer rows than there are minibatches.
    """
    total = sum(sizes)
    if sgd_minibatch_size <= 0 or sgd_minibatch_size >= total:
        num_minibatches = 1
    else:
        num_minibatches = total // sgd_minibatch_size
    if seq_lens is not None:
        return plan_sequence_minibatches(sizes, num_sgd_iter, num_minibatches, rng, seq_lens)
    if min(sizes) < num_minibatches:
        raise ValueError(
            f"a train batch of {total} rows over {len(sizes)} learners leaves a learner "
            f"{min(sizes)} rows for {num_minibatches} minibatches of {sgd_minibatch_size}; "
            f"make sgd_minibatch_size at least {len(sizes)} (num_learners) or use fewer learners"
        )
    return [
        [np.array_split(rng.permutation(size), num_minibatches) for _ in range(num_sgd_iter)]
        for size in sizes
    ]


def plan_sequence_minibatches(
    sizes: Sequence[int],
    num_sgd_iter: int,
    num_minibatches: int,
    rng: np.random.Generator,
    seq_lens: Any,
) -> list[list[list[np.ndarray]]]:
    """``plan_minibatches`` for a recurrent policy: ``num_minibatches`` (at most the
    smallest shard's number of sequences) groups of whole, shuffled sequences."""
    seq_lens = np.asarray(seq_lens, dtype=np.int64)
    ends = np.cumsum(seq_lens)
    shard_ends = np.cumsum(sizes)
    if int(seq_lens.sum()) != int(shard_ends[-1]) or not np.isin(shard_ends, ends).all():
        raise ValueError(
            f"sequences {seq_lens.tolist()[:8]}... do not fit shards {list(sizes)}: each "
            "shard must hold whole sequences (use shard_sizes(count, k, seq_lens))"
        )
    shard_of_seq = np.searchsorted(shard_ends, ends, side="left")
    shards = []
    for k in range(len(sizes)):
        lens = seq_lens[shard_of_seq == k]
        shards.append((lens, np.cumsum(lens) - lens))
    num_minibatches = max(1, min(num_minibatches, *(len(lens) for lens, _ in shards)))
    plan = []
    for lens, starts in shards:
        epochs = []
        for _ in range(num_sgd_iter):
            order = rng.permutation(len(lens))
            groups = np.split(order, _cuts(lens[order], num_minibatches))
            epochs.append([_rows_of(starts[group], lens[group]) for group in groups])
        plan.append(epochs)
    return plan


def _rows_of(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The rows of sequences starting at ``starts`` with ``lens``, one after another."""
    if not len(lens):
        return np.zeros(0, dtype=np.int64)
    offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    return np.repeat(starts, lens) + offsets


def global_minibatch_order(
    plan: Sequence[Sequence[Sequence[np.ndarray]]], sizes: Sequence[int]
) -> list[list[np.ndarray]]:
    """The plan as one learner over the whole batch would run it: ``[epoch][j]`` rows.

    Example:
        >>> plan = [[[np.array([1, 0])]], [[np.array([0])]]]
        >>> global_minibatch_order(plan, [2, 1])
        [[array([1, 0, 2])]]
    """
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    epochs = len(plan[0])
    return [
        [
            np.concatenate([offset + plan[k][e][j] for k, offset in enumerate(offsets)])
            for j in range(len(plan[0][e]))
        ]
        for e in range(epochs)
    ]


def standardize_fields(batch: SampleBatch, fields: tuple[str, ...] | list[str]) -> SampleBatch:
    """Scale each named column to zero mean and unit variance, in place."""
    for field in fields:
        value = batch[field]
        batch[field] = ((value - value.mean()) / max(1e-4, float(value.std()))).astype(value.dtype)
    return batch


def mean_stats(stats: Sequence[dict[str, Any]], weights: Sequence[float]) -> dict[str, float]:
    """Weighted mean of each numeric stat (``weights``: e.g. rows per minibatch).

    Example:
        >>> mean_stats([{"loss": 1.0, "name": "x"}, {"loss": 4.0}], [1, 2])
        {'loss': 3.0}
    """
    if len(stats) == 1:  # one minibatch: its stats as they are (counts stay ints)
        return {
            key: value
            for key, value in stats[0].items()
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        }
    totals: dict[str, float] = defaultdict(float)
    weight_sums: dict[str, float] = defaultdict(float)
    for entry, weight in zip(stats, weights):
        for key, value in entry.items():
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                totals[key] += float(value) * weight
                weight_sums[key] += weight
    return {key: totals[key] / weight_sums[key] for key in totals if weight_sums[key] > 0}
