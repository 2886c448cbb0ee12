"""Search spaces: grid values and random domains anywhere in a config, and the
variants (trial configs) they generate.

A config may hold, at any depth of its dicts and lists:

- ``grid_search([a, b])`` (the dict ``{"grid_search": [a, b]}``, also in YAML): every
  value is tried, and several grids give their cartesian product;
- a random domain, drawn afresh for every trial: ``choice``, ``uniform``,
  ``loguniform``, ``randint``;
- ``sample_from(fn)``: ``fn(spec)`` is called per trial with ``spec.config`` the
  trial's config, its grid values and random draws already in place.

``num_samples`` repeats the whole grid; each repetition draws its own random values.

Example:
    >>> space = {"lr": grid_search([0.01, 0.1]), "gamma": uniform(0.9, 0.99),
    ...          "model": {"fcnet_hiddens": grid_search([[16], [64]])}}
    >>> variants = generate_variants(space, num_samples=2, seed=0)
    >>> len(variants)
    8
    >>> variants[1].tag
    '1_lr=0.01,gamma=0.9682,fcnet_hiddens=[64]'
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

GRID_KEY = "grid_search"
# A place in a config: the keys (dict keys and list indices) leading to it.
Path = tuple[Any, ...]


class Domain:
    """A random value drawn for every trial."""

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def perturb(self, value: Any, rng: random.Random) -> Any:
        """A value near ``value`` (population-based training's explore step):
        ``value`` times 0.8 or 1.2, kept inside the domain."""
        raise NotImplementedError


@dataclass(frozen=True)
class Choice(Domain):
    """One of ``categories``, each as likely."""

    categories: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.categories)

    def perturb(self, value: Any, rng: random.Random) -> Any:
        """The category before or after ``value`` (a random one when ``value`` is none)."""
        if value not in self.categories:
            return self.sample(rng)
        index = self.categories.index(value) + rng.choice((-1, 1))
        return self.categories[min(max(index, 0), len(self.categories) - 1)]


@dataclass(frozen=True)
class Uniform(Domain):
    """A float uniform in ``[low, high)``."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def perturb(self, value: Any, rng: random.Random) -> float:
        return min(max(value * rng.choice((0.8, 1.2)), self.low), self.high)


@dataclass(frozen=True)
class LogUniform(Domain):
    """A float whose logarithm is uniform: ``low`` to ``high`` (both > 0)."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))

    def perturb(self, value: Any, rng: random.Random) -> float:
        return min(max(value * rng.choice((0.8, 1.2)), self.low), self.high)


@dataclass(frozen=True)
class RandInt(Domain):
    """An int in ``[low, high)`` (``high`` excluded, as ``range``), each as likely."""

    low: int
    high: int

    def sample(self, rng: random.Random) -> int:
        return rng.randrange(self.low, self.high)

    def perturb(self, value: Any, rng: random.Random) -> int:
        return min(max(int(round(value * rng.choice((0.8, 1.2)))), self.low), self.high - 1)


@dataclass(frozen=True)
class SampleFrom(Domain):
    """``fn(spec)`` per trial; ``spec.config`` is the trial's config with every grid
    value and other random draw resolved (attribute access works: ``spec.config.lr``)."""

    fn: Callable[[Any], Any]

    def sample(self, rng: random.Random) -> Any:
        raise TypeError("sample_from is resolved with the trial's config: use generate_variants")

    def perturb(self, value: Any, rng: random.Random) -> Any:
        raise TypeError("sample_from has no neighbourhood to perturb in; use resampling")


def grid_search(values: Sequence[Any]) -> dict[str, list[Any]]:
    """Try every value (the same as writing ``{"grid_search": values}``)."""
    values = list(values)
    if not values:
        raise ValueError("grid_search needs at least one value, got []")
    return {GRID_KEY: values}


def choice(categories: Sequence[Any]) -> Choice:
    """One of ``categories`` at random per trial."""
    categories = tuple(categories)
    if not categories:
        raise ValueError("choice needs at least one category, got []")
    return Choice(categories)


def uniform(low: float, high: float) -> Uniform:
    """A float uniform in ``[low, high)`` per trial."""
    if not low < high:
        raise ValueError(f"uniform needs low < high, got low={low}, high={high}")
    return Uniform(float(low), float(high))


def loguniform(low: float, high: float) -> LogUniform:
    """A float log-uniform between ``low`` and ``high`` per trial (e.g. learning rates)."""
    if not 0 < low < high:
        raise ValueError(f"loguniform needs 0 < low < high, got low={low}, high={high}")
    return LogUniform(float(low), float(high))


def randint(low: int, high: int) -> RandInt:
    """An int in ``[low, high)`` per trial (``high`` excluded)."""
    if not int(low) < int(high):
        raise ValueError(f"randint needs low < high (high is excluded), got {low}, {high}")
    return RandInt(int(low), int(high))


def sample_from(fn: Callable[[Any], Any]) -> SampleFrom:
    """``fn(spec)`` per trial, with ``spec.config`` the trial's resolved config.

    Example:
        >>> [v.config for v in generate_variants(
        ...     {"a": grid_search([1, 2]), "b": sample_from(lambda spec: spec.config.a * 10)})]
        [{'a': 1, 'b': 10}, {'a': 2, 'b': 20}]
    """
    if not callable(fn):
        raise TypeError(f"sample_from needs a function of spec, got {fn!r}")
    return SampleFrom(fn)


def is_grid(value: Any) -> bool:
    """Whether ``value`` is a grid (``{"grid_search": [...]}``)."""
    return (
        isinstance(value, dict)
        and len(value) == 1
        and GRID_KEY in value
        and isinstance(value[GRID_KEY], (list, tuple))
    )


def find_spaces(config: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """``(path, space)`` of every grid and domain in ``config``, depth first in key
    order (the values of a grid are not searched: they are resolved first)."""
    if is_grid(config) or isinstance(config, Domain):
        yield path, config
    elif isinstance(config, dict):
        for key, value in config.items():
            yield from find_spaces(value, (*path, key))
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from find_spaces(value, (*path, index))


def has_spaces(config: Any) -> bool:
    """Whether ``config`` holds any grid or random domain."""
    return next(find_spaces(config), None) is not None


def get_path(config: Any, path: Path) -> Any:
    for key in path:
        config = config[key]
    return config


def set_path(config: Any, path: Path, value: Any) -> Any:
    """``config`` with the value at ``path`` replaced; the dicts and lists on the way
    are copied, nothing else is (classes, env creators stay the same objects)."""
    if not path:
        return value
    copy = dict(config) if isinstance(config, dict) else list(config)
    copy[path[0]] = set_path(config[path[0]], path[1:], value)
    return copy


@dataclass
class Variant:
    """One trial's config (every space resolved) and its experiment tag."""

    config: dict[str, Any]
    tag: str


def generate_variants(
    config: dict[str, Any], num_samples: int = 1, seed: int | None = None
) -> list[Variant]:
    """Every grid point of ``config``, ``num_samples`` times over, with the random
    domains drawn per variant (from ``random.Random(seed)``).

    Variants come sample by sample: the whole grid, then the whole grid again.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    rng = random.Random(seed)
    points = list(_grid_points(config))
    variants = []
    for _ in range(num_samples):
        for point in points:
            resolved = resolve_domains(point, rng)
            variants.append(Variant(resolved, variant_tag(len(variants), config, resolved)))
    return variants


def count_variants(config: dict[str, Any], num_samples: int = 1) -> int:
    """How many variants ``generate_variants`` gives (without calling ``sample_from``)."""
    return num_samples * sum(1 for _ in _grid_points(config))


def _grid_points(config: Any) -> Iterator[Any]:
    """``config`` with every grid replaced by each combination of its values in
    turn (grids inside grid values are expanded too); domains stay."""
    grids = [(path, space) for path, space in find_spaces(config) if is_grid(space)]
    if not grids:
        yield config
        return
    for values in itertools.product(*(space[GRID_KEY] for _, space in grids)):
        point = config
        for (path, _), value in zip(grids, values):
            point = set_path(point, path, value)
        yield from _grid_points(point)


def resolve_domains(config: Any, rng: random.Random) -> Any:
    """``config`` (without grids) with every domain drawn, ``sample_from`` last."""
    spaces = list(find_spaces(config))
    for path, space in spaces:
        if is_grid(space):
            raise ValueError(f"grid_search at {_path_text(path)} is left: expand grids first")
        if not isinstance(space, SampleFrom):
            config = set_path(config, path, space.sample(rng))
    for path, space in spaces:
        if isinstance(space, SampleFrom):
            config = set_path(config, path, space.fn(_Spec(config)))
    return config


def variant_tag(index: int, space: Any, config: Any) -> str:
    """``"<index>_key=value,..."``: the values ``config`` has where ``space`` has a
    grid or a domain (named by their last key; the full path where two clash)."""
    paths = [path for path, _ in find_spaces(space)]
    names = [str(path[-1]) if path else "config" for path in paths]
    parts = []
    for path, name in zip(paths, names):
        if names.count(name) > 1:
            name = _path_text(path)
        try:
            value = get_path(config, path)
        except (KeyError, IndexError, TypeError):
            continue
        parts.append(f"{name}={format_value(value)}")
    return f"{index}_{','.join(parts)}" if parts else str(index)


def searched_values(space: Any, config: Any) -> dict[str, Any]:
    """``{"a/b": value}``: the value ``config`` has at each searched place of ``space``."""
    values = {}
    for path, _ in find_spaces(space):
        try:
            values[_path_text(path)] = get_path(config, path)
        except (KeyError, IndexError, TypeError):
            continue
    return values


def format_value(value: Any) -> str:
    """A short text for a tag or a table cell: floats with 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (str, int, bool)) or value is None:
        return str(value)
    try:
        text = json.dumps(value, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path_text(path: Path) -> str:
    return "/".join(str(key) for key in path)


class _AttributeDict(dict):
    """A dict whose keys are also attributes (``spec.config.lr``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(f"the config has no key {name!r}") from None
        return _AttributeDict(value) if isinstance(value, dict) else value


class _Spec:
    """What ``sample_from`` functions receive: ``spec.config``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = _AttributeDict(config)
