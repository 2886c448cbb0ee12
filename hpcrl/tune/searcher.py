"""Search algorithms: what config the next trial gets.

``tune.run`` asks its searcher for a config whenever a trial slot is free and
tells it every result, so a model-based searcher (Optuna) can suggest from
what it has seen. The default, ``BasicVariantGenerator``, hands out the
variants of the search space (``hpcrl.tune.search``) in order.

Writing a searcher: subclass ``Searcher`` and implement ``suggest``; keep any
state needed to continue after ``resume=True`` in ``get_state``/``set_state``
(JSON values). The runner calls, in this order::

    set_search_properties(metric, mode, config, num_samples)   # once
    suggest(trial_id) -> config | None | FINISHED                # when a slot is free
    on_trial_result(trial_id, result)                            # every result
    on_trial_complete(trial_id, result, error)                   # once per trial

``suggest`` returns a config with every search space resolved, ``None`` to be
asked again later (e.g. waiting for results), or ``FINISHED`` when it will
suggest no more. A searcher other than the default suggests ``num_samples``
trials in all (``self.num_samples``), then ``FINISHED``.
"""

from __future__ import annotations

import random
from typing import Any

from hpcrl.tune.search import find_spaces, generate_variants, is_grid

# What suggest() returns when the searcher will suggest nothing more.
FINISHED = "FINISHED"


class Searcher:
    """Base class of search algorithms (see the module docstring for the protocol).

    Example:
        >>> class Halving(Searcher):
        ...     def suggest(self, trial_id):
        ...         if self.suggested >= self.num_samples:
        ...             return FINISHED
        ...         self.suggested += 1
        ...         return {"lr": 0.1 / 2**self.suggested}
        >>> searcher = Halving()
        >>> searcher.set_search_properties("loss", "min", {}, num_samples=1)
        >>> searcher.suggest("t0"), searcher.suggest("t1")
        ({'lr': 0.05}, 'FINISHED')
    """

    metric: str | None = None
    mode: str | None = None
    config: dict[str, Any] = {}
    num_samples: int = 1
    suggested: int = 0

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], num_samples: int
    ) -> None:
        """The experiment's metric and mode (``tune.run``'s), its config with search
        spaces, and how many trials to suggest."""
        self.metric = metric
        self.mode = mode
        self.config = config
        self.num_samples = num_samples

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The config of trial ``trial_id``; None: not now; ``FINISHED``: no more."""
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """A result of a trial this searcher suggested."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None, error: bool = False
    ) -> None:
        """The trial ended: ``result`` is its last result (None if it had none);
        ``error``: it failed beyond its retries."""

    def get_state(self) -> dict[str, Any]:
        """What ``set_state`` needs to continue after a resume (JSON values)."""
        return {"suggested": self.suggested}

    def set_state(self, state: dict[str, Any]) -> None:
        self.suggested = int(state.get("suggested", 0))


class BasicVariantGenerator(Searcher):
    """The default searcher: the variants of the search space in order, each grid
    point ``num_samples`` times, random domains drawn from ``seed``.

    The seed is kept in the experiment state, so a resumed experiment draws the
    same values for the trials it has not yet started.

    Args:
        seed: seed of the random draws (default: a random seed, recorded).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self._variants: list[dict[str, Any]] | None = None

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], num_samples: int
    ) -> None:
        super().set_search_properties(metric, mode, config, num_samples)
        self._variants = None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._variants is None:
            found = generate_variants(self.config, self.num_samples, self.seed)
            self._variants = [variant.config for variant in found]
        if self.suggested >= len(self._variants):
            return FINISHED
        self.suggested += 1
        return self._variants[self.suggested - 1]

    def get_state(self) -> dict[str, Any]:
        return {"suggested": self.suggested, "seed": self.seed}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.seed = int(state.get("seed", self.seed))
        self._variants = None


def check_searcher_config(searcher: Searcher, config: dict[str, Any]) -> None:
    """Only the default searcher expands grids: reject a grid given to another."""
    if isinstance(searcher, BasicVariantGenerator):
        return
    grids = ["/".join(map(str, path)) for path, space in find_spaces(config) if is_grid(space)]
    if grids:
        raise ValueError(
            f"grid_search at {grids[0]!r} needs the default searcher; {type(searcher).__name__} "
            "samples its own values: use choice([...]) there instead"
        )
