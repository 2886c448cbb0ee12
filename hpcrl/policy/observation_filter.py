"""Observation filters: RLlib's ``observation_filter`` config key.

Every policy holds one (``Policy.observation_filter``), made from its config:

- ``"NoFilter"`` (the default): observations pass unchanged, at no cost.
- ``"MeanStdFilter"`` (and ``"ConcurrentMeanStdFilter"``, the same here: RLlib's
  concurrent variant differs only in locking): the running mean and variance
  of every observation the policy's rollout workers see; each observation is
  normalised to ``clip((x - mean) / std, -10, 10)`` (float32) with statistics
  that include it. The rollout worker's sampler applies it, vectorised over the
  worker's envs, before the policy acts, so a batch's ``obs`` and ``new_obs``
  hold filtered observations, as in RLlib.

What is filtered: a Box observation element by element, in its shape; a Dict
or Tuple observation as its flat preprocessed vector (which the batch then
holds), except an ``"action_mask"`` entry, kept as it is. Image observations of
an integer dtype (uint8 frames) and Discrete or MultiDiscrete observations are
refused with an error: frames stay uint8 from env to model (``VisionNetwork``
scales them), and a one-hot vector needs no normalising.

Statistics are kept with Welford's algorithm and merged with Chan et al.'s
parallel form (count, mean, M2), so merging the statistics of several blocks
gives those of all their rows. Each filter keeps two sets: ``running`` (what it
normalises with) and ``buffer`` (the rows seen since the last
``pop_update()``): each iteration the driver merges every worker's buffer
into its own filter (one reduction, see ``WorkerSet.sync_filters``) and sends
the merged statistics back, which each worker takes with its newer rows on
top (``sync``).

Example:
    >>> from gymnasium.spaces import Box
    >>> f = make_observation_filter("MeanStdFilter", Box(-10, 10, (2,)))
    >>> f(np.array([[1.0, 2.0], [3.0, 6.0]])).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
    >>> f.running.count, f.running.mean.tolist(), f.running.var.tolist()
    (2, [2.0, 4.0], [1.0, 4.0])
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

FILTER_NAMES = ("NoFilter", "MeanStdFilter", "ConcurrentMeanStdFilter")
# Normalised observations are clipped to [-CLIP, CLIP] (ARS and SB3's VecNormalize).
CLIP = 10.0
# Variances below this are taken as this (a constant entry is not divided by 0).
MIN_VARIANCE = 1e-8
ACTION_MASK_KEY = "action_mask"


def check_filter_name(name: Any) -> None:
    """Raise ValueError unless ``name`` is a known observation filter.

    Example:
        >>> check_filter_name("MeanStdFilter")
        >>> check_filter_name("MeanStd")
        Traceback (most recent call last):
        ...
        ValueError: observation_filter must be 'NoFilter', 'MeanStdFilter' or 'ConcurrentMeanStdFilter', got 'MeanStd'
    """  # noqa: E501
    if name not in FILTER_NAMES:
        raise ValueError(
            f"observation_filter must be 'NoFilter', 'MeanStdFilter' or "
            f"'ConcurrentMeanStdFilter', got {name!r}"
        )


def chan_merge(
    count_a: float, mean_a: np.ndarray, m2_a: np.ndarray,
    count_b: float, mean_b: np.ndarray, m2_b: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:  # fmt: skip
    """Count, mean and M2 of two blocks of rows together (Chan, Golub and LeVeque
    1979): ``M2 = M2_a + M2_b + delta^2 * n_a * n_b / n``. A block of count 0 is
    the identity: the other comes back unchanged."""
    if count_b == 0:
        return count_a, mean_a, m2_a
    if count_a == 0:
        return count_b, np.array(mean_b, dtype=np.float64), np.array(m2_b, dtype=np.float64)
    total = count_a + count_b
    diff = mean_b - mean_a
    mean = mean_a + diff * (count_b / total)
    m2 = m2_a + m2_b + diff * diff * (count_a * count_b / total)
    return total, mean, m2


class RunningMeanStd:
    """Count, mean and M2 (sum of squared deviations) of rows of ``size`` numbers.

    ``merge`` adds another block's statistics (``of(rows)``, or another
    ``get_state()``); merging the same blocks in the same order gives the same
    numbers on every process (ES and ARS rely on it).

    Example:
        >>> stats = RunningMeanStd(2)
        >>> stats.merge(RunningMeanStd.of(np.array([[1.0, 2.0], [3.0, 6.0]])))
        >>> stats.mean.tolist(), stats.std.tolist()
        ([2.0, 4.0], [1.0, 2.0])
    """

    def __init__(self, size: int) -> None:
        self.count = 0
        self.mean = np.zeros(size, dtype=np.float64)
        self.m2 = np.zeros(size, dtype=np.float64)

    @classmethod
    def of(cls, rows: np.ndarray) -> dict[str, Any]:
        """The statistics of a block of rows ``[n, size]``."""
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        mean = rows.mean(axis=0) if len(rows) else np.zeros(rows.shape[1])
        return {"count": len(rows), "mean": mean, "m2": ((rows - mean) ** 2).sum(axis=0)}

    def merge(self, delta: dict[str, Any]) -> None:
        """Add the rows ``delta`` (``{"count", "mean", "m2"}``) describes."""
        self.merge_moments(int(delta["count"]), delta["mean"], delta["m2"])

    def merge_moments(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Add ``count`` rows of mean ``mean`` and sum of squared deviations ``m2``."""
        total, self.mean, self.m2 = chan_merge(self.count, self.mean, self.m2, count, mean, m2)
        self.count = int(total)

    @property
    def var(self) -> np.ndarray:
        """The variance of the rows seen (``M2 / count``, as ``numpy.var``; 0 before any)."""
        return self.m2 / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        """The standard deviation observations are divided by: ones before two rows,
        then ``sqrt(max(var, MIN_VARIANCE))``."""
        if self.count < 2:
            return np.ones_like(self.mean)
        return np.sqrt(np.maximum(self.m2 / self.count, MIN_VARIANCE))

    def normalize(self, rows: np.ndarray) -> np.ndarray:
        """``clip((rows - mean) / std, -CLIP, CLIP)`` as float32."""
        out = rows - self.mean
        out /= self.std
        # minimum and maximum in place: several times faster than np.clip on small rows
        np.minimum(out, CLIP, out=out)
        np.maximum(out, -CLIP, out=out)
        return out.astype(np.float32)

    def to_array(self) -> np.ndarray:
        """``[count, mean..., m2...]``: the form a reduction combines (``WelfordMerge``)."""
        return np.concatenate([[float(self.count)], self.mean, self.m2])

    @staticmethod
    def from_array(block: np.ndarray) -> dict[str, Any]:
        """The ``{"count", "mean", "m2"}`` of a ``to_array()`` block."""
        size = (len(block) - 1) // 2
        return {"count": int(block[0]), "mean": block[1 : 1 + size], "m2": block[1 + size :]}

    def get_state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.copy(), "m2": self.m2.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        if mean.shape != self.mean.shape:
            raise ValueError(
                f"observation statistics of {mean.size} numbers per observation do not fit "
                f"a filter of {self.mean.size}: the policy's observation space differs from "
                "the one they were gathered on"
            )
        self.count = int(state["count"])
        self.mean = mean.copy()
        self.m2 = np.asarray(state["m2"], dtype=np.float64).copy()


class WelfordMerge:
    """The reduction of observation-filter updates: ``merge(a, b)`` of two arrays that
    each hold one ``RunningMeanStd.to_array()`` block per filter (of ``sizes[i]``
    numbers per observation), back to back. Associative and commutative (up to
    float rounding); ``identity()`` (all zeros: count 0) is its neutral element.
    A pure function of its arguments, so a backend can run it anywhere (an MPI
    ``Reduce`` runs it on the ranks of its tree).

    Example:
        >>> merge = WelfordMerge([1])
        >>> a = RunningMeanStd(1); a.merge(RunningMeanStd.of(np.array([[1.0], [3.0]])))
        >>> b = RunningMeanStd(1); b.merge(RunningMeanStd.of(np.array([[5.0]])))
        >>> merge(a.to_array(), b.to_array()).tolist()  # count, mean, M2 of 1, 3, 5
        [3.0, 3.0, 8.0]
        >>> merge(merge.identity(), b.to_array()).tolist()
        [1.0, 5.0, 0.0]
    """

    def __init__(self, sizes: list[int] | tuple[int, ...]) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        self.length = sum(1 + 2 * s for s in self.sizes)

    def identity(self) -> np.ndarray:
        return np.zeros(self.length, dtype=np.float64)

    def blocks(self, array: np.ndarray) -> list[np.ndarray]:
        """The filters' blocks of ``array`` (views)."""
        out, start = [], 0
        for size in self.sizes:
            out.append(array[start : start + 1 + 2 * size])
            start += 1 + 2 * size
        return out

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(self.length, dtype=np.float64)
        for block_a, block_b, block_out in zip(self.blocks(a), self.blocks(b), self.blocks(out)):
            size = (len(block_out) - 1) // 2
            count, mean, m2 = chan_merge(
                block_a[0], block_a[1 : 1 + size], block_a[1 + size :],
                block_b[0], block_b[1 : 1 + size], block_b[1 + size :],
            )  # fmt: skip
            block_out[0], block_out[1 : 1 + size], block_out[1 + size :] = count, mean, m2
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WelfordMerge) and other.sizes == self.sizes

    def __hash__(self) -> int:
        return hash(self.sizes)


class NoFilter:
    """Observations pass unchanged (``active`` is False: samplers skip it)."""

    name = "NoFilter"
    active = False

    def __call__(self, obs_batch: Any, update: bool = True) -> Any:
        return obs_batch

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(
                "the state holds observation-filter statistics but this policy's "
                "observation_filter is 'NoFilter': build it with the observation_filter it "
                "was trained with"
            )


class MeanStdFilter:
    """Normalises observations by the running mean and standard deviation of all the
    observations seen (see the module docstring for what is filtered).

    Args:
        space: the policy's observation space.
        name: ``"MeanStdFilter"`` or ``"ConcurrentMeanStdFilter"`` (recorded only).

    Attributes:
        running: the statistics observations are normalised with.
        buffer: the statistics of the observations seen since the last ``pop_update()``.
        size: numbers per observation (the flat preprocessed size).
    """

    active = True

    def __init__(self, space: gym.Space, name: str = "MeanStdFilter") -> None:
        self.name = name
        self._preprocessor: Any = None
        self._raw_columns: np.ndarray | None = None
        if isinstance(space, gym.spaces.Box):
            _refuse_integer_images(space, name)
            self.size = int(np.prod(space.shape, dtype=np.int64))
            self.shape: tuple[int, ...] = tuple(space.shape)
        elif isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple, gym.spaces.MultiBinary)):
            # Imported here: hpcrl.models imports torch, which `import hpcrl` must not.
            from hpcrl.models.preprocessors import get_preprocessor

            self._preprocessor = get_preprocessor(space)
            self.size = self._preprocessor.size
            self.shape = (self.size,)
            self._raw_columns = _action_mask_columns(space)
        else:
            raise ValueError(
                f"observation_filter {name!r} normalises Box, Dict, Tuple and MultiBinary "
                f"observations; this policy's are {space} (a one-hot vector needs no "
                "normalising): set observation_filter to 'NoFilter'"
            )
        self.running = RunningMeanStd(self.size)
        self.buffer = RunningMeanStd(self.size)
        # Popped by the driver but not yet confirmed by a sync (empty between syncs).
        self._unconfirmed = RunningMeanStd(self.size)

    def rows(self, obs_batch: Any) -> np.ndarray:
        """A batch of observations as float64 rows ``[n, size]`` (flattened)."""
        if self._preprocessor is not None:
            obs_batch = self._preprocessor.transform(obs_batch)
        return np.asarray(obs_batch, dtype=np.float64).reshape(-1, self.size)

    def __call__(self, obs_batch: Any, update: bool = True) -> np.ndarray:
        """The normalised batch (float32, in the observation's shape; Dict and Tuple
        observations flat). ``update``: count the batch in the statistics first."""
        rows = self.rows(obs_batch)
        count = len(rows)
        if update and count:
            # The batch's moments, then Chan's merge into both sets (np.add.reduce: a
            # fraction of rows.mean's overhead, which dominates on a few envs' rows).
            mean = np.add.reduce(rows, axis=0) / count
            deviations = rows - mean
            m2 = np.add.reduce(deviations * deviations, axis=0)
            self.running.merge_moments(count, mean, m2)
            self.buffer.merge_moments(count, mean, m2)
        out = self.running.normalize(rows)
        if self._raw_columns is not None:
            out[:, self._raw_columns] = rows[:, self._raw_columns]
        return out.reshape(len(rows), *self.shape)

    def pop_update(self) -> np.ndarray:
        """The statistics of the observations seen since the last ``sync``, as a
        ``to_array()`` block; the buffer starts afresh. Until the next ``sync`` they
        are handed over again with any later ones (a reduction that failed on another
        worker is asked again without losing them)."""
        self._unconfirmed.merge(self.buffer.get_state())
        self.buffer = RunningMeanStd(self.size)
        return self._unconfirmed.to_array()

    def merge_update(self, block: np.ndarray) -> None:
        """Add other workers' observations (a ``pop_update()`` block, or several merged)
        to the running statistics."""
        self.running.merge(RunningMeanStd.from_array(block))

    def sync(self, running: dict[str, Any]) -> None:
        """Take the driver's merged statistics, plus the observations seen here since
        the last ``pop_update()`` (which the driver has not got yet)."""
        self.running.set_state(running)
        self.running.merge(self.buffer.get_state())
        self._unconfirmed = RunningMeanStd(self.size)

    def get_state(self) -> dict[str, Any]:
        return {"running": self.running.get_state(), "buffer": self.buffer.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if not state:
            raise ValueError(
                f"this policy's observation_filter is {self.name!r} but the state holds no "
                "filter statistics: build it with the observation_filter it was trained with"
            )
        self.running.set_state(state["running"])
        self.buffer.set_state(state["buffer"])


ObservationFilter = NoFilter | MeanStdFilter


def make_observation_filter(name: str, space: gym.Space) -> ObservationFilter:
    """The filter ``name`` (see ``FILTER_NAMES``) for observations of ``space``.

    Raises:
        ValueError: an unknown name, or a space the filter does not normalise.
    """
    check_filter_name(name)
    if name == "NoFilter":
        return NoFilter()
    return MeanStdFilter(space, name)


def without_filter_state(policy_state: dict[str, Any]) -> dict[str, Any]:
    """A policy's state without its observation filter: for copies between processes
    that must leave each side's filter alone (learners, DD-PPO's workers)."""
    return {key: value for key, value in policy_state.items() if key != "observation_filter"}


def _refuse_integer_images(space: gym.spaces.Box, name: str) -> None:
    if len(space.shape) == 3 and np.issubdtype(space.dtype, np.integer):
        raise ValueError(
            f"observation_filter {name!r} would turn the {space.dtype} image observations "
            f"{space} into float32 frames (4x the memory in batches, messages and replay "
            "buffers); the vision network scales frames itself: set observation_filter to "
            "'NoFilter'"
        )


def _action_mask_columns(space: gym.Space) -> np.ndarray | None:
    """The flat columns of a Dict observation's ``"action_mask"`` (left unfiltered)."""
    if not isinstance(space, gym.spaces.Dict) or ACTION_MASK_KEY not in space.spaces:
        return None
    from hpcrl.models.preprocessors import get_preprocessor

    start = 0
    for key, sub in space.spaces.items():
        size = get_preprocessor(sub).size
        if key == ACTION_MASK_KEY:
            return np.arange(start, start + size)
        start += size
    return None
