from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.backends.local import LocalBackend
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers import AsyncGradientsOptimizer, GradientStaleness

CONFIG = {"model": {"fcnet_hiddens": [16]}, "rollout_fragment_length": 10, "seed": 3}


# -- the pure bookkeeping --------------------------------------------------
def test_staleness_counts_updates_between_send_and_apply():
    s = GradientStaleness()
    assert [s.sent(w) for w in ("a", "b", "c")] == [0, 0, 0]
    assert s.applied("b") == 0  # nothing applied since b got weights
    assert s.sent("b") == 1
    assert s.applied("a") == 1  # b's update came in between
    assert s.applied("c") == 2
    assert s.applied("b") == 2  # a's and c's updates since b got version 1
    assert s.version == 4
    assert s.summary() == {"staleness_mean": 1.25, "staleness_max": 2, "num_gradients": 4}
    # the window resets after each summary
    assert s.summary() == {"staleness_mean": 0.0, "staleness_max": 0, "num_gradients": 0}


def test_one_worker_is_never_stale():
    s = GradientStaleness()
    for _ in range(5):
        s.sent(0)
        assert s.applied(0) == 0
    assert s.summary(reset=False)["staleness_max"] == 0
    assert s.summary()["num_gradients"] == 5


def test_round_robin_staleness_is_workers_minus_one():
    s = GradientStaleness()
    for w in range(4):
        s.sent(w)
    seen = []
    for _ in range(3):
        for w in s.next_to_apply(range(4)):
            seen.append(s.applied(w))
            s.sent(w)
    # the first round starts fresher; afterwards each gradient misses 3 updates
    assert seen[:4] == [0, 1, 2, 3] and set(seen[4:]) == {3}


def test_next_to_apply_orders_ready_workers_by_send_time():
    s = GradientStaleness()
    s.sent("x")
    s.sent("y")
    s.sent("z")
    s.applied("x")
    s.sent("x")
    assert s.next_to_apply(["x", "z", "y"]) == ["y", "z", "x"]
    assert s.next_to_apply([]) == []
    assert sorted(s.in_flight()) == ["x", "y", "z"]


def test_applied_without_sent_is_an_error():
    s = GradientStaleness()
    with pytest.raises(KeyError, match="no gradient in flight"):
        s.applied(7)


# -- the optimizer on the local backend -------------------------------------
def make_workers(num_workers=2, backend="local"):
    return WorkerSet(
        policy=A2CTorchPolicy,
        env_creator="CartPole-v1",
        num_workers=num_workers,
        config=CONFIG,
        backend=backend,
    )


def count_set_weights(workers):
    """Wrap each remote worker's set_weights with a counter; returns a reader."""

    def install(worker):
        worker.set_weights_calls = 0
        original = worker.set_weights

        def counting(*args, **kwargs):
            worker.set_weights_calls += 1
            return original(*args, **kwargs)

        worker.set_weights = counting

    backend = workers.backend
    backend.get(backend.call(workers.remote_workers(), "apply", install))
    return lambda: backend.get(
        backend.call(workers.remote_workers(), "apply", lambda w: w.set_weights_calls)
    )


def remote_weights(workers):
    backend = workers.backend
    return [
        w["default_policy"]
        for w in backend.get(backend.call(workers.remote_workers(), "get_weights"))
    ]


def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_step_counts_stats_and_weights():
    opt = AsyncGradientsOptimizer(make_workers(), grads_per_step=6)
    local = opt.workers.local_worker()
    before = local.get_weights()["default_policy"]
    fetches = opt.step()
    assert opt.num_steps_sampled == opt.num_steps_trained == 6 * 10
    assert {"vf_loss", "policy_loss", "entropy"} <= set(fetches["default_policy"]["learner_stats"])
    assert not same(before, local.get_weights()["default_policy"])
    stats = opt.stats()
    assert {"staleness_mean", "staleness_max", "learner", "num_steps_sampled"} <= set(stats)
    # two workers served in turn: after the first gradient each one misses one update
    assert stats["staleness_max"] == 1 and 0.5 < stats["staleness_mean"] <= 1
    opt.step()
    assert opt.num_steps_sampled == 120
    assert opt.stats()["staleness_mean"] == 1.0
    opt.stop()
    opt.workers.stop()


def test_only_the_worker_whose_gradient_was_applied_gets_weights():
    workers = make_workers()
    calls = count_set_weights(workers)
    opt = AsyncGradientsOptimizer(workers, grads_per_step=1)
    local = workers.local_worker()
    opt.step()  # initial sync to both, then worker 0's gradient is applied
    assert calls() == [2, 1]
    w0, w1 = remote_weights(workers)
    assert same(w0, local.get_weights()["default_policy"])
    assert not same(w1, local.get_weights()["default_policy"])
    opt.step()  # worker 1's gradient (the oldest in flight) is next
    assert calls() == [2, 2]
    w0, w1 = remote_weights(workers)
    assert same(w1, local.get_weights()["default_policy"]) and not same(w0, w1)
    opt.step()
    assert calls() == [3, 2]
    opt.stop()
    workers.stop()


class OneAtATimeBackend(LocalBackend):
    """Local actors, but ``wait`` reports only the most recently issued future as done."""

    only_last = True

    def wait(self, futures, num_returns=1, timeout=None):
        if not self.only_last:
            return super().wait(futures, num_returns, timeout)
        return [futures[-1]], list(futures[:-1])


def test_futures_not_reported_done_stay_in_flight_across_steps():
    backend = OneAtATimeBackend()
    workers = make_workers(backend=backend)
    calls = count_set_weights(workers)
    opt = AsyncGradientsOptimizer(workers, grads_per_step=3)
    opt.step()
    # only worker 1 is ever reported done: it gets every update, worker 0 waits
    assert calls() == [1, 4]
    assert opt.stats()["staleness_max"] == 0
    backend.only_last = False
    opt.step()
    # worker 0's gradient, computed on the first weights, is applied first and is
    # 3 updates old; then the two workers alternate (worker 1, worker 0)
    assert calls() == [3, 5]
    assert opt.stats()["staleness_max"] == 3
    assert opt.stats()["staleness_mean"] == pytest.approx(5 / 3)
    assert opt.num_steps_sampled == 60
    opt.stop()
    workers.stop()


def test_needs_a_remote_worker():
    workers = make_workers(num_workers=0)
    with pytest.raises(ValueError, match="A3C needs num_workers >= 1"):
        AsyncGradientsOptimizer(workers)
    with pytest.raises(ValueError, match="grads_per_step"):
        AsyncGradientsOptimizer(make_workers(num_workers=1), grads_per_step=0)
    workers.stop()


def test_make_builds_workers_and_optimizer():
    opt = AsyncGradientsOptimizer.make(
        "CartPole-v1", A2CTorchPolicy, num_workers=1, worker_config=CONFIG, grads_per_step=2
    )
    opt.step()
    assert opt.num_steps_sampled == 20
    assert opt.stats()["staleness_max"] == 0  # one worker: always fresh
    opt.stop()
    opt.workers.stop()
