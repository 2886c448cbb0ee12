"""Advantage estimation over one or many trajectories at once.

A batch from ``RolloutWorker.sample()`` holds every trajectory fragment the
worker collected, back to back (a trajectory is a run of rows with one
``eps_id``). The functions here treat all of them in one vectorised pass: the
rows are laid out as a [time, trajectory] array and the backward recursion runs
once over time, not once per trajectory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hpcrl.policy.sample_batch import SampleBatch

if TYPE_CHECKING:
    from hpcrl.policy.policy import Policy


class Postprocessing:
    """Names of the columns written by postprocessing."""

    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"


def discount_cumsum(
    x: np.ndarray,
    gamma: float,
    bounds: np.ndarray | None = None,
    tail: np.ndarray | float = 0.0,
) -> np.ndarray:
    """``y[t] = x[t] + gamma * y[t+1]`` within each trajectory.

    Args:
        x: values per row, trajectories back to back.
        gamma: discount factor.
        bounds: start row of each trajectory followed by ``len(x)`` (see
            ``SampleBatch.trajectory_bounds``); one trajectory when omitted.
        tail: the value ``y[end]`` just past the end of each trajectory (scalar
            or one per trajectory).

    Returns:
        float32 array shaped like ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if bounds is None:
        bounds = np.array([0, n])
    lengths = np.diff(bounds)
    num = len(lengths)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    tail = np.broadcast_to(np.asarray(tail, dtype=np.float64), (num,))
    trajectory = np.repeat(np.arange(num), lengths)
    # Steps from the end of the row's trajectory: 0 for its last row.
    from_end = np.repeat(bounds[1:], lengths) - 1 - np.arange(n)
    grid = np.zeros((int(lengths.max()), num))
    grid[from_end, trajectory] = x
    acc = tail.copy()
    for i in range(grid.shape[0]):
        acc = grid[i] + gamma * acc
        grid[i] = acc
    return grid[from_end, trajectory].astype(np.float32)


def compute_advantages(
    batch: SampleBatch,
    last_r: float | np.ndarray,
    gamma: float = 0.9,
    lambda_: float = 1.0,
    use_gae: bool = True,
    use_critic: bool = True,
) -> SampleBatch:
    """Add ``advantages`` and ``value_targets`` columns to ``batch``.

    Args:
        batch: rows of one or more trajectories (runs of equal ``eps_id``; a
            batch without that column is one trajectory). Needs ``rewards``,
            and ``vf_preds`` when ``use_critic``.
        last_r: the value of the state after each trajectory's last row: 0
            where it ended by termination, the critic's estimate where it was
            cut (truncation, or end of the fragment). A scalar or one per
            trajectory.
        gamma: discount factor.
        lambda_: GAE parameter (only with ``use_gae``).
        use_gae: generalised advantage estimation (Schulman et al. 2015).
        use_critic: subtract the critic's ``vf_preds`` from the returns when
            not using GAE; without a critic the advantages are the returns.

    Returns:
        The same batch, with the two columns added (float32).
    """
    if use_gae and not use_critic:
        raise ValueError("use_gae=True needs a critic; pass use_critic=True or use_gae=False")
    bounds = batch.trajectory_bounds()
    num = len(bounds) - 1
    last_r = np.broadcast_to(np.asarray(last_r, dtype=np.float64), (num,))
    rewards = batch[SampleBatch.REWARDS].astype(np.float64)
    if use_gae:
        vf = batch[SampleBatch.VF_PREDS].astype(np.float64)
        next_vf = np.empty_like(vf)
        next_vf[:-1] = vf[1:]
        next_vf[bounds[1:] - 1] = last_r
        deltas = rewards + gamma * next_vf - vf
        advantages = discount_cumsum(deltas, gamma * lambda_, bounds)
        value_targets = (advantages + vf).astype(np.float32)
    elif use_critic:
        returns = discount_cumsum(rewards, gamma, bounds, last_r)
        advantages = returns - batch[SampleBatch.VF_PREDS].astype(np.float32)
        value_targets = returns
    else:
        advantages = discount_cumsum(rewards, gamma, bounds, last_r)
        value_targets = np.zeros_like(advantages)
    batch[Postprocessing.ADVANTAGES] = advantages.astype(np.float32)
    batch[Postprocessing.VALUE_TARGETS] = value_targets.astype(np.float32)
    return batch


def bootstrap_values(policy: Policy, batch: SampleBatch) -> np.ndarray:
    """``last_r`` for every trajectory of ``batch``: 0 if terminated, else V(next obs).

    The critic is evaluated once, on the final ``new_obs`` of every trajectory
    that did not terminate (truncated by a time limit or cut at the end of the
    fragment), so truncation bootstraps from the true final observation.
    """
    bounds = batch.trajectory_bounds()
    last_rows = bounds[1:] - 1
    last_r = np.zeros(len(last_rows), dtype=np.float32)
    if batch.count == 0:
        return last_r
    open_ended = ~batch[SampleBatch.TERMINATEDS][last_rows].astype(bool)
    if open_ended.any():
        last_r[open_ended] = policy.value_of_next_obs(batch, last_rows[open_ended])
    return last_r


def compute_gae_for_sample_batch(
    policy: Policy,
    sample_batch: SampleBatch,
    other_agent_batches: dict[str, Any] | None = None,
    episode: Any = None,
) -> SampleBatch:
    """Postprocess function for actor-critic policies: GAE (or returns) from the config.

    Uses ``policy.config`` keys ``gamma``, ``lambda``, ``use_gae`` and ``use_critic``.
    """
    config = policy.config
    use_critic = config.get("use_critic", True)
    last_r = bootstrap_values(policy, sample_batch) if use_critic else 0.0
    return compute_advantages(
        sample_batch,
        last_r,
        gamma=config["gamma"],
        lambda_=config.get("lambda", 1.0),
        use_gae=config.get("use_gae", True),
        use_critic=use_critic,
    )
