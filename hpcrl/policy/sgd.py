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


def shard_sizes(count: int, num_learners: int) -> list[int]:
    """Rows of each learner's contiguous shard of a ``count``-row batch.

    Example:
        >>> shard_sizes(10, 3)
        [4, 3, 3]
    """
    return [len(part) for part in np.array_split(np.arange(count), num_learners)]


def plan_minibatches(
    sizes: Sequence[int], num_sgd_iter: int, sgd_minibatch_size: int, rng: np.random.Generator
) -> list[list[list[np.ndarray]]]:
    """Each learner's minibatches: ``plan[k][epoch][j]`` are rows of shard ``k``.

    Global minibatch ``j`` of an epoch is the union of the learners' ``j``-th
    parts. There are ``total // sgd_minibatch_size`` of them per epoch (one,
    the whole batch, when ``sgd_minibatch_size`` is 0 or covers the batch);
    each learner shuffles its shard every epoch and cuts it into that many
    near-equal parts, so every row is used once per epoch.

    Example:
        >>> plan = plan_minibatches([4, 4], 1, 4, np.random.default_rng(0))
        >>> [[len(part) for part in plan[k][0]] for k in range(2)]
        [[2, 2], [2, 2]]

    Raises:
        ValueError: a learner's shard has fewer rows than there are minibatches.
    """
    total = sum(sizes)
    if sgd_minibatch_size <= 0 or sgd_minibatch_size >= total:
        num_minibatches = 1
    else:
        num_minibatches = total // sgd_minibatch_size
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
