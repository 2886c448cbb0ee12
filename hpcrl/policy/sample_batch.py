"""SampleBatch: a dict of equal-length numpy columns, and MultiAgentBatch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_POLICY_ID = "default_policy"


class SampleBatch(dict):
    """A batch of experience: a dict of numpy columns with one row per step.

    Columns have equal length along axis 0. Standard column names are class
    attributes (``SampleBatch.OBS``, ``SampleBatch.REWARDS``...). ``dones`` is
    derived: ``terminateds | truncateds``.

    Rows of one trajectory are contiguous and share one ``eps_id``; a batch
    from ``RolloutWorker.sample()`` holds many trajectories back to back.

    Example:
        >>> batch = SampleBatch({"obs": np.zeros((3, 4)), "rewards": np.ones(3)})
        >>> len(batch), batch[1:]["rewards"].tolist()
        (3, [1.0, 1.0])
    """

    OBS = "obs"
    NEXT_OBS = "new_obs"
    ACTIONS = "actions"
    REWARDS = "rewards"
    PREV_ACTIONS = "prev_actions"
    PREV_REWARDS = "prev_rewards"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"
    DONES = "dones"
    INFOS = "infos"
    T = "t"
    EPS_ID = "eps_id"
    ENV_ID = "env_id"
    AGENT_INDEX = "agent_index"
    ACTION_LOGP = "action_logp"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    VF_PREDS = "vf_preds"
    SEQ_LENS = "seq_lens"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, value in list(self.items()):
            if key == self.DONES:
                raise ValueError(
                    "'dones' is derived from 'terminateds' and 'truncateds'; "
                    "set those two columns instead"
                )
            if not isinstance(value, np.ndarray):
                super().__setitem__(key, _to_column(value))
        lengths = {k: len(v) for k, v in self.items() if k != self.SEQ_LENS}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"SampleBatch columns must have equal length; got {lengths}")

    # -- size and access -------------------------------------------------
    @property
    def count(self) -> int:
        """Number of rows."""
        for key, value in self.items():
            if key != self.SEQ_LENS:
                return len(value)
        return 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key == self.DONES and not dict.__contains__(self, self.DONES):
                return self._dones()
            return dict.__getitem__(self, key)
        if isinstance(key, slice):
            return self.slice(key.start or 0, key.stop if key.stop is not None else self.count)
        raise TypeError(f"SampleBatch index must be a column name or a slice, got {key!r}")

    def __setitem__(self, key: str, value: Any) -> None:
        if key == self.DONES:
            raise ValueError("'dones' is derived; set 'terminateds' and 'truncateds' instead")
        value = value if isinstance(value, np.ndarray) else _to_column(value)
        if self and key != self.SEQ_LENS and len(value) != self.count:
            raise ValueError(
                f"column {key!r} has length {len(value)} but the batch has {self.count} rows"
            )
        dict.__setitem__(self, key, value)

    def __contains__(self, key: object) -> bool:
        if key == self.DONES:
            return dict.__contains__(self, self.TERMINATEDS) or dict.__contains__(
                self, self.TRUNCATEDS
            )
        return dict.__contains__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - derived 'dones'

    def _dones(self) -> np.ndarray:
        terminated = dict.get(self, self.TERMINATEDS)
        truncated = dict.get(self, self.TRUNCATEDS)
        if terminated is None and truncated is None:
            raise KeyError("'dones' needs a 'terminateds' or 'truncateds' column")
        if terminated is None:
            return truncated.astype(bool)
        if truncated is None:
            return terminated.astype(bool)
        return np.logical_or(terminated, truncated)

    def __reduce__(self) -> tuple:
        # Rebuild from the columns directly: unpickling skips the per-column checks
        # of __setitem__ (the batch was consistent when pickled).
        return (_rebuild_sample_batch, (dict(self),))

    def copy(self) -> SampleBatch:
        """A deep copy of every column."""
        return SampleBatch({k: v.copy() for k, v in self.items()})

    # -- slicing and reordering ------------------------------------------
    def slice(self, start: int, end: int) -> SampleBatch:
        """Rows ``start:end`` as views of the columns (sequence lengths dropped)."""
        return SampleBatch({k: v[start:end] for k, v in self.items() if k != self.SEQ_LENS})

    def take(self, indices: np.ndarray) -> SampleBatch:
        """The rows at ``indices``, in that order (copies)."""
        return SampleBatch({k: v[indices] for k, v in self.items() if k != self.SEQ_LENS})

    def shuffle(self, rng: np.random.Generator | None = None) -> SampleBatch:
        """A copy with rows in a random order drawn from ``rng``."""
        rng = rng if rng is not None else np.random.default_rng()
        return self.take(rng.permutation(self.count))

    def minibatches(
        self, size: int, rng: np.random.Generator | None = None, drop_last: bool = False
    ) -> Iterator[SampleBatch]:
        """Yield minibatches of ``size`` rows, shuffled first when ``rng`` is given."""
        if size <= 0:
            raise ValueError(f"minibatch size must be positive, got {size}")
        order = rng.permutation(self.count) if rng is not None else np.arange(self.count)
        for start in range(0, self.count, size):
            idx = order[start : start + size]
            if drop_last and len(idx) < size:
                return
            yield self.take(idx)

    def trajectory_bounds(self) -> np.ndarray:
        """Start row of each trajectory (runs of equal ``eps_id`` and, where the batch
        has it, equal ``agent_index``: two agents of one episode sharing a policy are
        two trajectories), plus ``count`` at the end. A batch without ``eps_id`` is one
        trajectory."""
        if self.count == 0:
            return np.zeros(1, dtype=np.int64)
        if self.EPS_ID not in self:
            return np.array([0, self.count], dtype=np.int64)
        eps = self._id_column(self.EPS_ID)
        changed = eps[1:] != eps[:-1]
        if self.AGENT_INDEX in self:
            agents = self._id_column(self.AGENT_INDEX)
            changed |= agents[1:] != agents[:-1]
        starts = np.flatnonzero(changed) + 1
        return np.concatenate(([0], starts, [self.count])).astype(np.int64)

    def _id_column(self, key: str) -> np.ndarray:
        """An id column (``eps_id``, ``agent_index``) as a numpy array."""
        return self[key]

    def split_by_episode(self) -> list[SampleBatch]:
        """One batch per trajectory (see ``trajectory_bounds``)."""
        bounds = self.trajectory_bounds()
        return [self.slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    # -- summaries -------------------------------------------------------
    def column_summary(self, key: str) -> str:
        value = self[key]
        if value.dtype == object:
            return f"np.ndarray({value.shape}, dtype=object)"
        if value.size == 0:
            return f"np.ndarray({value.shape}, dtype={value.dtype})"
        numeric = value.astype(np.float64) if value.dtype == bool else value
        return (
            f"np.ndarray({value.shape}, dtype={value.dtype}, min={_fmt(numeric.min())}, "
            f"max={_fmt(numeric.max())}, mean={_fmt(numeric.mean())})"
        )

    def __repr__(self) -> str:
        lines = [f"SampleBatch({self.count} rows):"]
        lines += [f"    {key!r}: {self.column_summary(key)}," for key in self]
        return "\n".join(lines)

    __str__ = __repr__

    def size_bytes(self) -> int:
        return int(sum(v.nbytes for v in self.values()))


def _rebuild_sample_batch(columns: dict[str, Any]) -> SampleBatch:
    batch = SampleBatch.__new__(SampleBatch)
    dict.update(batch, columns)
    return batch


def _fmt(x: Any) -> str:
    return f"{float(x):.4g}"


def _to_column(value: Any) -> np.ndarray:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        column = np.empty(len(value), dtype=object)
        column[:] = value
        return column
    return np.asarray(value)


def concat_samples(batches: Sequence[SampleBatch | MultiAgentBatch]) -> Any:
    """Concatenate batches row-wise; every batch must have the same columns.

    ``MultiAgentBatch`` inputs are concatenated per policy id.
    """
    batches = [b for b in batches if b is not None]
    if not batches:
        return SampleBatch()
    if any(isinstance(b, MultiAgentBatch) for b in batches):
        return MultiAgentBatch.concat_samples(batches)
    batches = [b for b in batches if b.count > 0] or batches[:1]
    keys = list(batches[0].keys())
    for i, batch in enumerate(batches[1:], start=1):
        if set(batch.keys()) != set(keys):
            missing = set(keys) ^ set(batch.keys())
            raise ValueError(
                f"cannot concatenate: batch {i} differs from batch 0 in columns {sorted(missing)}"
            )
    return SampleBatch({k: np.concatenate([b[k] for b in batches]) for k in keys})


class MultiAgentBatch:
    """Per-policy SampleBatches plus the number of environment steps they span.

    Example:
        >>> b = SampleBatch({"obs": np.zeros((2, 3))})
        >>> MultiAgentBatch({"p0": b, "p1": b}, env_steps=2).agent_steps()
        4
    """

    def __init__(self, policy_batches: Mapping[str, SampleBatch], env_steps: int) -> None:
        self.policy_batches = dict(policy_batches)
        self.count = int(env_steps)

    def env_steps(self) -> int:
        return self.count

    def agent_steps(self) -> int:
        return sum(b.count for b in self.policy_batches.values())

    def __len__(self) -> int:
        return self.count

    @staticmethod
    def wrap_as_needed(
        policy_batches: Mapping[str, SampleBatch], env_steps: int
    ) -> SampleBatch | MultiAgentBatch:
        """A plain SampleBatch when there is only the default policy."""
        if len(policy_batches) == 1 and DEFAULT_POLICY_ID in policy_batches:
            return policy_batches[DEFAULT_POLICY_ID]
        return MultiAgentBatch(policy_batches, env_steps)

    @staticmethod
    def concat_samples(batches: Sequence[SampleBatch | MultiAgentBatch]) -> MultiAgentBatch:
        per_policy: dict[str, list[SampleBatch]] = {}
        env_steps = 0
        for batch in batches:
            if isinstance(batch, SampleBatch):
                batch = MultiAgentBatch({DEFAULT_POLICY_ID: batch}, batch.count)
            for pid, b in batch.policy_batches.items():
                per_policy.setdefault(pid, []).append(b)
            env_steps += batch.count
        return MultiAgentBatch(
            {pid: concat_samples(bs) for pid, bs in per_policy.items()}, env_steps
        )

    def __repr__(self) -> str:
        parts = [f"MultiAgentBatch({self.count} env steps):"]
        for pid, batch in self.policy_batches.items():
            parts.append(f"  {pid!r}: " + repr(batch).replace("\n", "\n  "))
        return "\n".join(parts)
