"""Dask backend overhead against bare Dask actor calls, in the same run on the same cluster.

    python benchmarks/dask_overhead.py

One synchronous round = broadcast ``--weights-kb`` of weights to two actors,
then gather a ``--batch-kb`` sample batch from each. It is timed two ways,
the rounds alternating so that both see the same machine load:

- bare: Dask actors of the same class (``client.submit(cls, actor=True)``);
  ``actor.set_weights(weights)`` on each, wait for both, then
  ``actor.sample()`` on each and wait for both, as a synchronous optimizer
  must (calls to one Dask actor are not ordered unless waited for);
- backend: ``DaskBackend.broadcast(actors, "set_weights", weights)`` then
  ``backend.get(backend.call(actors, "sample"))``, as ``SyncSamplesOptimizer``
  does.

Both run on one ``LocalCluster`` of four single-threaded worker processes
(two for each set of actors). Target: backend round <= 1.5x the bare round
(median over ``--rounds``).

``--with-scatter`` times a third way, the one the Dask docs suggest for
sending one object to many workers: ``client.scatter([weights],
broadcast=True)``, then each bare actor takes the weights from its worker's
memory, then the same gather. The backend does not broadcast that way; this
shows why.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import distributed
import numpy as np

from hpcrl.backends.dask import DaskBackend, start_local_cluster
from hpcrl.policy.sample_batch import SampleBatch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-kb", type=float, default=100.0)
    parser.add_argument("--batch-kb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--target", type=float, default=1.5)
    parser.add_argument("--with-scatter", action="store_true", help="also time client.scatter")
    return parser.parse_args()


class BatchActor:
    """Takes weights and hands back a ready batch of about ``kb`` kilobytes
    (CartPole-like columns: obs, new_obs, actions, rewards, terminateds)."""

    def __init__(self, kb: float) -> None:
        rows = int(kb * 1024 // (4 * 4 + 4 * 4 + 8 + 4 + 1))
        self.batch = SampleBatch(
            {
                "obs": np.full((rows, 4), 0.5, np.float32),
                "new_obs": np.full((rows, 4), 0.25, np.float32),
                "actions": np.arange(rows) % 2,
                "rewards": np.ones(rows, np.float32),
                "terminateds": np.zeros(rows, bool),
            }
        )
        self.weights = None

    def set_weights(self, weights: dict) -> None:
        self.weights = weights

    def set_weights_from(self, key: str) -> None:
        """Take the weights scattered to this Dask worker under ``key``."""
        self.weights = distributed.get_worker().data[key]

    def sample(self) -> SampleBatch:
        return self.batch


def alternate(rounds: dict[str, Callable[[], None]], count: int, warmup: int) -> dict[str, float]:
    """Median seconds of each round function, run in turn ``count`` times after ``warmup``."""
    for _ in range(warmup):
        for fn in rounds.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in rounds}
    for _ in range(count):
        for name, fn in rounds.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    args = parse_args()
    cluster = start_local_cluster(4)
    client = distributed.Client(cluster, direct_to_workers=True)
    bare_workers = sorted(client.nthreads())[:2]
    bare = [
        client.submit(
            BatchActor, args.batch_kb, actor=True, workers=[w], allow_other_workers=False
        ).result()
        for w in bare_workers
    ]
    backend = DaskBackend(cluster.scheduler_address, verbose=False)
    actors = backend.spawn(BatchActor, args.batch_kb, count=2)
    weights = {"default_policy": {"w": np.ones(int(args.weights_kb * 1024 // 4), np.float32)}}

    def bare_round() -> None:
        for future in [actor.set_weights(weights) for actor in bare]:
            future.result()
        for future in [actor.sample() for actor in bare]:
            future.result()

    def backend_round() -> None:
        backend.broadcast(actors, "set_weights", weights)
        backend.get(backend.call(actors, "sample"))

    def scatter_round() -> None:
        [scattered] = client.scatter([weights], workers=bare_workers, broadcast=True, hash=False)
        for future in [actor.set_weights_from(scattered.key) for actor in bare]:
            future.result()
        scattered.release()
        for future in [actor.sample() for actor in bare]:
            future.result()

    rounds = {"bare": bare_round, "backend": backend_round}
    if args.with_scatter:
        rounds["scatter"] = scatter_round
    medians = alternate(rounds, args.rounds, args.warmup)
    ratio = medians["backend"] / medians["bare"]
    print(
        f"one round: broadcast {args.weights_kb:g} KB, gather {args.batch_kb:g} KB from each of "
        f"2 actors; median of {args.rounds} rounds (alternating)"
    )
    print(f"  bare Dask actor calls : {medians['bare'] * 1e6:8.1f} us")
    print(f"  hpcrl Dask backend    : {medians['backend'] * 1e6:8.1f} us")
    verdict = "PASS" if ratio <= args.target else "FAIL"
    print(f"  ratio {ratio:.2f} (target <= {args.target:g}) -> {verdict}")
    if args.with_scatter:
        print(
            f"  bare, weights by client.scatter(broadcast=True): "
            f"{medians['scatter'] * 1e6:8.1f} us ({medians['scatter'] / medians['bare']:.2f}x bare)"
        )
    backend.shutdown()
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
