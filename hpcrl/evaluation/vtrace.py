"""V-trace off-policy value targets and advantages, over padded sequences.

V-trace (Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL with
Importance Weighted Actor-Learner Architectures", section 4) corrects n-step
value targets for the lag between the behaviour policy ``mu`` that sampled a
fragment and the learner's policy ``pi``, with truncated importance weights.

Layout: ``vtrace`` works on time-major ``[T, S]`` tensors, ``S`` sequences
(trajectories) of at most ``T`` steps each. Sequences are right-padded: the
real steps of sequence ``s`` are ``t = 0 .. L_s - 1`` and ``mask[t, s]`` is
True exactly there. A sample batch stores its steps as flat rows, trajectories
back to back; ``sequence_layout`` (or ``batch_layout`` for a ``SampleBatch``)
says where each row goes, ``to_time_major`` lays rows out as ``[T, S, ...]``
and ``from_time_major`` brings per-step results back to flat rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from hpcrl.policy.sample_batch import SampleBatch


class VTraceReturns(NamedTuple):
    """What ``vtrace`` returns; both ``[T, S]``, 0 at padded steps."""

    vs: torch.Tensor
    """V-trace value targets, the critic's regression targets."""
    pg_advantages: torch.Tensor
    """Policy-gradient advantages, ``rho_t * (r_t + gamma_t * v_{t+1} - V(x_t))``."""


def vtrace(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    *,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    mask: torch.Tensor | None = None,
) -> VTraceReturns:
    """V-trace targets ``vs`` and policy-gradient advantages (IMPALA, eq. 1).

    With ``rho_t = exp(log_rhos_t)``, ``c_t = min(1, rho_t)`` and
    ``delta_t = min(clip_rho_threshold, rho_t) * (r_t + discounts_t * next_values_t - values_t)``,
    the targets follow ``vs_t - V_t = delta_t + discounts_t * c_t * (vs_{t+1} - V_{t+1})``
    backwards in time, with the correction past a sequence's last real step taken as 0.
    The advantages are ``min(clip_pg_rho_threshold, rho_t) * (r_t + discounts_t *
    vs_next_t - values_t)``, where ``vs_next_t`` is ``vs_{t+1}``, or ``next_values_t``
    at the last real step (the bootstrap).

    Args:
        log_rhos: ``log pi(a_t|x_t) - log mu(a_t|x_t)``, ``[T, S]``.
        discounts: ``gamma * (1 - terminated_t)``, ``[T, S]``.
        rewards: ``r_t``, ``[T, S]``.
        values: ``V(x_t)`` under the learner's critic, ``[T, S]``.
        next_values: ``V(x_{t+1})``, ``[T, S]``. Passed explicitly so that a
            sequence's last real step bootstraps from the value of its own next
            observation (cut by truncation or the end of the fragment); a
            termination's 0 discount removes it.
        clip_rho_threshold: clip on the weights of ``delta_t`` (the paper's
            ``rho bar``); None for no clip.
        clip_pg_rho_threshold: clip on the weights of the advantages; None
            for no clip.
        mask: bool ``[T, S]``, True at real steps, each sequence's real steps
            first and padding after; None when every step is real. Padded
            inputs may hold anything (even NaN): they reach no real output.

    Returns:
        ``VTraceReturns(vs, pg_advantages)``, detached, 0 at padded steps.

    Example:
        On-policy (``log_rhos = 0``) the targets are n-step returns: here
        ``1 + 0.5 * (1 + 0.5 * 4) = 2.5``, bootstrapping from ``V(x_2) = 4``.

        >>> zeros, ones = torch.zeros(2, 1), torch.ones(2, 1)
        >>> out = vtrace(zeros, 0.5 * ones, ones, zeros, torch.tensor([[0.0], [4.0]]))
        >>> out.vs.flatten().tolist(), out.pg_advantages.flatten().tolist()
        ([2.5, 3.0], [2.5, 3.0])
    """
    inputs = {
        "log_rhos": log_rhos,
        "discounts": discounts,
        "rewards": rewards,
        "values": values,
        "next_values": next_values,
    }
    shapes = {name: tuple(x.shape) for name, x in inputs.items()}
    if mask is not None:
        shapes["mask"] = tuple(mask.shape)
    if len(set(shapes.values())) > 1 or len(log_rhos.shape) != 2:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"vtrace inputs must all be 2-D [T, S] with one shape; got {listed}")
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    elif mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = real step), got dtype {mask.dtype}")
    if bool((mask[1:] & ~mask[:-1]).any()):
        raise ValueError(
            "mask must hold each sequence's real steps first and padding after; "
            "a real step follows a padded one"
        )

    with torch.no_grad():
        # Padding becomes a neutral step (rho = 1, discount 0, all zeros), so NaN
        # or garbage there cannot reach the real steps through the products.
        log_rhos, discounts, rewards, values, next_values = (
            torch.where(mask, x.detach(), torch.zeros_like(x)) for x in inputs.values()
        )
        rhos = torch.exp(log_rhos)
        clipped_rhos = rhos if clip_rho_threshold is None else rhos.clamp(max=clip_rho_threshold)
        cs = rhos.clamp(max=1.0)
        deltas = clipped_rhos * (rewards + discounts * next_values - values)

        # vs_t - V_t, backwards; past the last real step the correction is 0.
        corrections = torch.zeros_like(deltas)
        correction = torch.zeros_like(deltas[0])
        for t in range(deltas.shape[0] - 1, -1, -1):
            correction = torch.where(
                mask[t], deltas[t] + discounts[t] * cs[t] * correction, torch.zeros_like(correction)
            )
            corrections[t] = correction
        vs = values + corrections

        is_last = mask & ~torch.cat((mask[1:], torch.zeros_like(mask[:1])))
        vs_next = torch.where(is_last, next_values, torch.cat((vs[1:], torch.zeros_like(vs[:1]))))
        clipped_pg_rhos = (
            rhos if clip_pg_rho_threshold is None else rhos.clamp(max=clip_pg_rho_threshold)
        )
        pg_advantages = clipped_pg_rhos * (rewards + discounts * vs_next - values)
        pg_advantages = torch.where(mask, pg_advantages, torch.zeros_like(pg_advantages))
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


class Sequences(NamedTuple):
    """Where each flat row goes in a right-padded time-major ``[T, S]`` layout.

    Example:
        Two trajectories, rows ``0..2`` and ``3..4``:

        >>> layout = sequence_layout(starts=[0, 3], lengths=[3, 2])
        >>> layout.index.tolist(), layout.mask.tolist(), layout.last.tolist()
        ([[0, 3], [1, 4], [2, 0]], [[True, True], [True, True], [True, False]], [2, 4])
    """

    index: torch.Tensor
    """``[T, S]`` long: the flat row of step ``t`` of sequence ``s``; row 0 at padding."""
    mask: torch.Tensor
    """``[T, S]`` bool: True at real steps."""
    last: torch.Tensor
    """``[S]`` long: the flat row of each sequence's last real step."""


def sequence_layout(
    starts: np.ndarray | torch.Tensor | list[int],
    lengths: np.ndarray | torch.Tensor | list[int],
) -> Sequences:
    """The padded layout of flat rows split into runs ``[start, start + length)``.

    Args:
        starts: 1-D ints, the first row of each sequence.
        lengths: 1-D ints, each sequence's number of rows, at least 1. The runs
            must partition the rows ``0 .. N-1`` in order: ``starts`` is 0
            followed by the running sum of ``lengths``.

    Returns:
        ``Sequences`` with ``T = max(lengths)`` and ``S = len(lengths)``, on the CPU.
    """
    starts = torch.as_tensor(np.asarray(starts), dtype=torch.long)
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
    if starts.ndim != 1 or starts.shape != lengths.shape:
        raise ValueError(
            f"starts and lengths must be 1-D and of one length; got shapes "
            f"{tuple(starts.shape)} and {tuple(lengths.shape)}"
        )
    if bool((lengths < 1).any()):
        raise ValueError(f"every sequence needs at least one row; got lengths {lengths.tolist()}")
    expected = torch.cumsum(lengths, 0) - lengths
    if not torch.equal(starts, expected):
        raise ValueError(
            f"sequences must cover the rows back to back from row 0; got starts "
            f"{starts.tolist()} for lengths {lengths.tolist()}, expected starts {expected.tolist()}"
        )
    max_length = int(lengths.max()) if len(lengths) else 0
    steps = torch.arange(max_length)[:, None]
    mask = steps < lengths[None, :]
    index = torch.where(mask, starts[None, :] + steps, torch.zeros((), dtype=torch.long))
    return Sequences(index=index, mask=mask, last=starts + lengths - 1)


def batch_layout(batch: SampleBatch) -> Sequences:
    """The padded layout of a batch's trajectories (``SampleBatch.trajectory_bounds``).

    A batch without ``eps_id`` is one trajectory.

    Example:
        >>> batch = SampleBatch({"rewards": np.ones(3), "eps_id": [7, 7, 9]})
        >>> batch_layout(batch).index.tolist()
        [[0, 2], [1, 0]]
    """
    bounds = batch.trajectory_bounds()
    return sequence_layout(bounds[:-1], np.diff(bounds))


def to_time_major(rows: torch.Tensor, layout: Sequences) -> torch.Tensor:
    """Flat rows ``[N, ...]`` as padded sequences ``[T, S, ...]``, zero at padding.

    Example:
        >>> layout = sequence_layout([0, 3], [3, 2])
        >>> to_time_major(torch.tensor([1, 2, 3, 4, 5]), layout).tolist()
        [[1, 4], [2, 5], [3, 0]]
    """
    _check_rows(rows.shape[0], layout)
    padded = rows[layout.index.to(rows.device)]
    padded[~layout.mask.to(rows.device)] = 0
    return padded


def from_time_major(padded: torch.Tensor, layout: Sequences) -> torch.Tensor:
    """Padded sequences ``[T, S, ...]`` back to flat rows ``[N, ...]``, padding dropped.

    Example:
        >>> layout = sequence_layout([0, 3], [3, 2])
        >>> from_time_major(torch.tensor([[1, 4], [2, 5], [3, 0]]), layout).tolist()
        [1, 2, 3, 4, 5]
    """
    if tuple(padded.shape[:2]) != tuple(layout.mask.shape):
        raise ValueError(
            f"padded must start with the layout's [T, S] = {tuple(layout.mask.shape)}; "
            f"got shape {tuple(padded.shape)}"
        )
    # Sequence-major order is the flat order: sequences cover the rows back to back.
    return padded.transpose(0, 1)[layout.mask.T.to(padded.device)]


def _check_rows(num_rows: int, layout: Sequences) -> None:
    expected = int(layout.last[-1]) + 1 if len(layout.last) else 0
    if num_rows != expected:
        raise ValueError(f"the layout covers {expected} rows; got {num_rows}")
