"""Policy optimizers: communication strategies between rollout workers and learners."""

from __future__ import annotations

from hpcrl.optimizers.async_gradients_optimizer import (
    AsyncGradientsOptimizer,
    GradientStaleness,
)
from hpcrl.optimizers.async_samples_optimizer import AsyncSamplesOptimizer, SampleStream
from hpcrl.optimizers.data_parallel_optimizer import DataParallelOptimizer
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer, collect_samples
from hpcrl.optimizers.sync_samples_optimizer import SyncSamplesOptimizer

__all__ = [
    "AsyncGradientsOptimizer",
    "AsyncSamplesOptimizer",
    "DataParallelOptimizer",
    "GradientStaleness",
    "PolicyOptimizer",
    "SampleStream",
    "SyncSamplesOptimizer",
    "collect_samples",
]
