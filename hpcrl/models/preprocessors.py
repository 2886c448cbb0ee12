"""Preprocessors: turn batches of observations into flat float32 arrays (images aside).

A preprocessor is chosen once per observation space with :func:`get_preprocessor` and then
applied to whole batches (one call per environment step for all sub-environments of a
worker), so every transform is vectorised over the batch dimension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

SUPPORTED_SPACES = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Tuple", "Dict")


class Preprocessor:
    """Base class: maps a batch of observations of ``space`` to ``[B, size]`` float32.

    Attributes:
        space: The observation space this preprocessor was built for.
        shape: The flat output shape of one observation, ``(size,)``.
        size: The number of floats one observation becomes.

    Example:
        >>> from gymnasium.spaces import Discrete
        >>> p = get_preprocessor(Discrete(3))
        >>> p.transform([0, 2]).tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """

    def __init__(self, space: spaces.Space, size: int) -> None:
        self.space = space
        self.size = int(size)
        self.shape: tuple[int, ...] = (self.size,)

    def transform(self, obs_batch: Any) -> np.ndarray:
        """Flattens a batch of observations.

        Args:
            obs_batch: A batch of observations (an array whose first axis is the batch, or a
                list of observations; a tuple of arrays for Tuple spaces and a dict of arrays
                for Dict spaces).

        Returns:
            A float32 array of shape ``[B, size]``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement transform")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(space={self.space}, size={self.size})"


class BoxPreprocessor(Preprocessor):
    """Flattens each Box observation to ``prod(shape)`` floats."""

    def __init__(self, space: spaces.Box) -> None:
        super().__init__(space, int(np.prod(space.shape, dtype=np.int64)))

    def transform(self, obs_batch: Any) -> np.ndarray:
        return np.asarray(obs_batch, dtype=np.float32).reshape(-1, self.size)


class ImagePreprocessor(Preprocessor):
    """Keeps image observations (a rank-3 Box) as they are: shape and dtype.

    A uint8 frame stays uint8 through sample batches, messages, files, replay buffers
    and into the model, which scales it (``VisionNetwork``); flattening it to float32
    here would cost 4x the memory and traffic. Inside a Tuple or Dict an image is
    flattened like any Box.

    Example:
        >>> p = get_preprocessor(spaces.Box(0, 255, (4, 84, 84), np.uint8))
        >>> out = p.transform(np.zeros((2, 4, 84, 84), np.uint8))
        >>> out.shape, out.dtype, p.shape
        ((2, 4, 84, 84), dtype('uint8'), (4, 84, 84))
    """

    def __init__(self, space: spaces.Box) -> None:
        super().__init__(space, int(np.prod(space.shape, dtype=np.int64)))
        self.shape = tuple(int(s) for s in space.shape)
        self.dtype = space.dtype

    def transform(self, obs_batch: Any) -> np.ndarray:
        return np.asarray(obs_batch, dtype=self.dtype).reshape(-1, *self.shape)


class MultiBinaryPreprocessor(BoxPreprocessor):
    """Flattens each MultiBinary observation to ``prod(shape)`` floats of 0 or 1."""


class DiscretePreprocessor(Preprocessor):
    """One-hot encodes Discrete observations (``start`` maps to index 0)."""

    def __init__(self, space: spaces.Discrete) -> None:
        super().__init__(space, int(space.n))
        self.start = int(space.start)

    def transform(self, obs_batch: Any) -> np.ndarray:
        indices = np.asarray(obs_batch, dtype=np.int64).reshape(-1) - self.start
        _check_range(indices, np.int64(self.size), self.space)
        out = np.zeros((len(indices), self.size), dtype=np.float32)
        out[np.arange(len(indices)), indices] = 1.0
        return out


class MultiDiscretePreprocessor(Preprocessor):
    """Concatenates one one-hot vector per MultiDiscrete component."""

    def __init__(self, space: spaces.MultiDiscrete) -> None:
        self.nvec = np.asarray(space.nvec, dtype=np.int64).reshape(-1)
        self.start = np.asarray(space.start, dtype=np.int64).reshape(-1)
        super().__init__(space, int(self.nvec.sum()))
        # Column where the one-hot block of each component begins.
        self.offsets = np.concatenate([[0], np.cumsum(self.nvec)[:-1]]).astype(np.int64)

    def transform(self, obs_batch: Any) -> np.ndarray:
        values = np.asarray(obs_batch, dtype=np.int64).reshape(-1, len(self.nvec)) - self.start
        _check_range(values, self.nvec, self.space)
        out = np.zeros((len(values), self.size), dtype=np.float32)
        out[np.arange(len(values))[:, None], self.offsets + values] = 1.0
        return out


class TuplePreprocessor(Preprocessor):
    """Flattens each Tuple component and concatenates them in order."""

    def __init__(self, space: spaces.Tuple) -> None:
        self.children = [_flat_preprocessor(s) for s in space.spaces]
        super().__init__(space, sum(c.size for c in self.children))

    def transform(self, obs_batch: Any) -> np.ndarray:
        if _is_flat(obs_batch, self.size):
            return obs_batch
        if not isinstance(obs_batch, tuple):
            # A list of per-observation tuples: regroup into one batch per component.
            obs_batch = tuple(zip(*obs_batch))
        if len(obs_batch) != len(self.children):
            raise ValueError(
                f"expected {len(self.children)} components for {self.space}, got {len(obs_batch)}"
            )
        return _concat([c.transform(o) for c, o in zip(self.children, obs_batch)], self.size)


class DictPreprocessor(Preprocessor):
    """Flattens each Dict entry (in the space's key order) and concatenates them."""

    def __init__(self, space: spaces.Dict) -> None:
        self.children = {key: _flat_preprocessor(s) for key, s in space.spaces.items()}
        super().__init__(space, sum(c.size for c in self.children.values()))

    def transform(self, obs_batch: Any) -> np.ndarray:
        if _is_flat(obs_batch, self.size):
            return obs_batch
        if not isinstance(obs_batch, Mapping):
            # A list of per-observation dicts: regroup into one batch per key.
            obs_batch = {key: [obs[key] for obs in obs_batch] for key in self.children}
        missing = [key for key in self.children if key not in obs_batch]
        if missing:
            raise ValueError(f"observation batch for {self.space} lacks keys {missing}")
        parts = [c.transform(obs_batch[key]) for key, c in self.children.items()]
        return _concat(parts, self.size)


def get_preprocessor(space: spaces.Space) -> Preprocessor:
    """Returns the preprocessor that flattens observations of ``space``.

    Args:
        space: A gymnasium observation space.

    Returns:
        A :class:`Preprocessor` whose ``transform`` maps a batch to ``[B, size]`` float32,
        except for images (a rank-3 Box), kept ``[B, *shape]`` in their dtype
        (:class:`ImagePreprocessor`).

    Raises:
        ValueError: If the space type is not supported.
    """
    if isinstance(space, spaces.Box) and len(space.shape) == 3:
        return ImagePreprocessor(space)
    return _flat_preprocessor(space)


def _flat_preprocessor(space: spaces.Space) -> Preprocessor:
    if isinstance(space, spaces.Box):
        return BoxPreprocessor(space)
    if isinstance(space, spaces.Discrete):
        return DiscretePreprocessor(space)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiDiscretePreprocessor(space)
    if isinstance(space, spaces.MultiBinary):
        return MultiBinaryPreprocessor(space)
    if isinstance(space, spaces.Tuple):
        return TuplePreprocessor(space)
    if isinstance(space, spaces.Dict):
        return DictPreprocessor(space)
    raise ValueError(
        f"no preprocessor for observation space {space!r}; "
        f"supported spaces: {', '.join(SUPPORTED_SPACES)}"
    )


def _is_flat(obs_batch: Any, size: int) -> bool:
    """A batch of Dict or Tuple observations already flattened by this preprocessor:
    sample batches store them so (one float32 column), and loading a batch for
    learning passes them through."""
    return (
        isinstance(obs_batch, np.ndarray)
        and obs_batch.dtype == np.float32
        and obs_batch.ndim == 2
        and obs_batch.shape[1] == size
    )


def _check_range(values: np.ndarray, upper: np.ndarray, space: spaces.Space) -> None:
    """Raises ValueError if any shifted value lies outside ``[0, upper)``."""
    if values.size and ((values < 0).any() or (values >= upper).any()):
        raise ValueError(f"observation out of range for {space}: {values.tolist()[:8]}")


def _concat(parts: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Concatenates flattened components along the feature axis."""
    lengths = {len(p) for p in parts}
    if len(lengths) > 1:
        raise ValueError(f"components have different batch sizes: {sorted(lengths)}")
    if not parts:
        return np.zeros((0, size), dtype=np.float32)
    return np.concatenate(parts, axis=1)
