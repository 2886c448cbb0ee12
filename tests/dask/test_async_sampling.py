"""AsyncSamplesOptimizer on a real Dask LocalCluster: back-pressure, a starved learner."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import gymnasium as gym
import pytest

from hpcrl.algorithms.impala import IMPALATorchPolicy
from hpcrl.env.registry import register_env
from hpcrl.optimizers.async_samples_optimizer import AsyncSamplesOptimizer

pytest.importorskip("distributed")

CONFIG = {"model": {"fcnet_hiddens": [16]}, "rollout_fragment_length": 25, "seed": 3}


class StuckCartPole(gym.Wrapper):
    """CartPole whose step waits until ``release_file`` exists (at most a minute)."""

    def __init__(self, context):
        super().__init__(gym.make("CartPole-v1"))
        self.release = Path(context["release_file"])

    def step(self, action):
        deadline = time.monotonic() + 60
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.env.step(action)


def test_starved_learner_names_the_silent_workers(dask_cluster, tmp_path):
    register_env("stuck_cartpole", StuckCartPole)
    release = tmp_path / "release"
    opt = AsyncSamplesOptimizer.make(
        "stuck_cartpole",
        IMPALATorchPolicy,
        num_workers=2,
        backend="dask",
        worker_config={
            **CONFIG,
            "dask_address": dask_cluster.scheduler_address,
            "env_config": {"release_file": str(release)},
        },
        train_batch_size=50,
        learner_queue_timeout=1.5,
    )
    start = time.monotonic()
    try:
        with pytest.raises(RuntimeError) as info:
            opt.step()
    finally:
        elapsed = time.monotonic() - start
        release.touch()  # let the workers' envs go on, so the cluster is free again
        opt.stop()
        opt.workers.stop()
    assert elapsed < 30
    message = str(info.value)
    assert "no batch reached the learner for 1.5s (learner_queue_timeout)" in message
    assert message.count("rollout worker") == 2, message


def test_back_pressure_on_dask_never_more_calls_in_flight_than_allowed(dask_cluster):
    opt = AsyncSamplesOptimizer.make(
        "CartPole-v1",
        IMPALATorchPolicy,
        num_workers=2,
        backend="dask",
        worker_config={**CONFIG, "dask_address": dask_cluster.scheduler_address},
        train_batch_size=100,
        max_sample_requests_in_flight_per_worker=3,
    )
    backend = opt.backend
    outstanding: Counter = Counter()
    peak: Counter = Counter()
    real_call, real_get = backend.call, backend.get
    owner = {}

    def call(actors, method, *args, **kwargs):
        futures = real_call(actors, method, *args, **kwargs)
        if method == "sample":
            for actor, future in zip(actors, futures):
                owner[id(future)] = actor
                outstanding[id(actor)] += 1
                peak[id(actor)] = max(peak[id(actor)], outstanding[id(actor)])
        return futures

    def get(futures):
        results = real_get(futures)
        for future in futures:
            actor = owner.pop(id(future), None)
            if actor is not None:
                outstanding[id(actor)] -= 1
        return results

    backend.call, backend.get = call, get
    try:
        while opt.num_learner_updates < 5:
            opt.step()
    finally:
        opt.stop()
        opt.workers.stop()
    assert len(peak) == 2 and max(peak.values()) == 3
