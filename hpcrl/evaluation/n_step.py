"""N-step transitions over one or many trajectories at once.

Like ``postprocessing.py`` for GAE, this works on a whole batch from
``RolloutWorker.sample()`` in one vectorised pass: every row looks up to
``n_step`` rows ahead within its own trajectory (a run of equal ``eps_id`` and
``agent_index``), with one loop over the look-ahead, not one per trajectory.
"""

from __future__ import annotations

import numpy as np

from hpcrl.policy.sample_batch import SampleBatch

N_STEPS = "n_steps"
"""Column written by ``compute_n_step``: how many rewards each row sums."""

_REQUIRED = (
    SampleBatch.REWARDS,
    SampleBatch.NEXT_OBS,
    SampleBatch.TERMINATEDS,
    SampleBatch.TRUNCATEDS,
)


def compute_n_step(batch: SampleBatch, n_step: int, gamma: float) -> SampleBatch:
    """Turn every row into an n-step transition, within its trajectory.

    For row ``i`` of a trajectory whose last row in the batch is ``E``, with
    ``k = min(n_step, E - i + 1)``: ``rewards[i]`` becomes
    ``sum_{j<k} gamma**j * rewards[i+j]``, and ``new_obs``, ``terminateds`` and
    ``truncateds`` are taken from row ``i+k-1``; the new column ``n_steps``
    holds ``k``. A learner then bootstraps with
    ``gamma**n_steps * (1 - terminateds) * Q(new_obs)``: a termination (always
    a trajectory's last row) stops the sum and the bootstrap, while a
    truncation or the end of a fragment bootstraps from the last real next
    observation, discounted by the number of steps actually summed.

    Args:
        batch: rows of one or more trajectories back to back (see
            ``SampleBatch.trajectory_bounds``; a batch without ``eps_id`` is
            one trajectory). Needs ``rewards``, ``new_obs``, ``terminateds``
            and ``truncateds``; other columns are left untouched.
        n_step: how many steps to look ahead, at least 1 (1 keeps the one-step
            transitions and only adds ``n_steps``).
        gamma: discount factor.

    Returns:
        The same batch, those four columns replaced (``rewards`` as float32)
        and an int64 ``n_steps`` column added.

    Example:
        >>> batch = SampleBatch({
        ...     "obs": np.arange(3), "new_obs": np.arange(1, 4),
        ...     "rewards": np.ones(3), "terminateds": [False, False, True],
        ...     "truncateds": np.zeros(3, dtype=bool)})
        >>> batch = compute_n_step(batch, n_step=2, gamma=0.5)
        >>> batch["rewards"].tolist(), batch["new_obs"].tolist(), batch["n_steps"].tolist()
        ([1.5, 1.5, 1.0], [2, 3, 3], [2, 2, 1])
        >>> batch["terminateds"].tolist()
        [False, True, True]
    """
    if isinstance(n_step, bool) or not isinstance(n_step, (int, np.integer)) or n_step < 1:
        raise ValueError(
            f"n_step must be an integer >= 1 (1 for one-step transitions), got {n_step!r}"
        )
    missing = [key for key in _REQUIRED if key not in batch]
    if missing:
        raise KeyError(f"compute_n_step needs columns {list(_REQUIRED)}; the batch lacks {missing}")
    bounds = batch.trajectory_bounds()
    rows = np.arange(batch.count)
    last_row = np.repeat(bounds[1:] - 1, np.diff(bounds))
    steps = np.minimum(n_step, last_row - rows + 1)

    rewards = batch[SampleBatch.REWARDS].astype(np.float64)
    summed = np.zeros(batch.count)
    for j in range(int(steps.max()) if batch.count else 0):
        ahead = np.flatnonzero(steps > j)
        summed[ahead] += gamma**j * rewards[ahead + j]

    end = rows + steps - 1
    batch[SampleBatch.REWARDS] = summed.astype(np.float32)
    for key in (SampleBatch.NEXT_OBS, SampleBatch.TERMINATEDS, SampleBatch.TRUNCATEDS):
        batch[key] = batch[key][end]
    batch[N_STEPS] = steps.astype(np.int64)
    return batch
