"""IMPALA: importance-weighted actor-learner architecture with V-trace.

Espeholt et al. 2018. Rollout workers sample without pause and a learner
thread learns from their batches as they arrive (``AsyncSamplesOptimizer``),
so the batches are a little off-policy; V-trace corrects for that. The loss
on a train batch is RLlib's (sums over rows)::

    -sum(log pi(a|x) * pg_adv) + vf_loss_coeff * 0.5 * sum((V(x) - vs)^2)
        - entropy_coeff * sum(H(pi(.|x)))

with ``vs`` and ``pg_adv`` from ``hpcrl.evaluation.vtrace``: each trajectory
of the batch (its episode, cut at fragment ends) is one time-major sequence;
a terminated one ends at 0, a truncated or cut one is bootstrapped from the
value of its last next observation.

A resumed run continues from the saved weights, optimizer state and
counters, but not bit for bit: which worker's batch reaches the learner
first depends on timing.

Example:
    >>> with IMPALATrainer({"num_workers": 2, "train_batch_size": 100,
    ...                     "rollout_fragment_length": 50}, env="CartPole-v1") as trainer:
    ...     result = trainer.train()
    >>> result["info"]["num_learner_updates"] >= 1
    True
"""

from __future__ import annotations

from typing import Any

import torch

from hpcrl.algorithms.actor_critic import explained_variance
from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.vtrace import batch_layout, from_time_major, to_time_major, vtrace
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.learners.learner_group import uses_learner_group
from hpcrl.optimizers.async_samples_optimizer import AsyncSamplesOptimizer, ReplaySlots
from hpcrl.policy.adam import Adam
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.schedules import LearningRateSchedule

# The keys of the asynchronous architecture (AsyncSamplesOptimizer), shared with APPO.
ASYNC_DEFAULTS: dict[str, Any] = {
    "num_workers": 2,
    "rollout_fragment_length": 50,
    "train_batch_size": 500,
    # Seconds per train() call at least (RLlib's default for IMPALA).
    "min_iter_time_s": 10.0,
    # Sample calls queued per worker: it never waits for the driver to ask, and
    # cannot run ahead by more batches than this.
    "max_sample_requests_in_flight_per_worker": 2,
    # Learner updates between weights sent to a worker.
    "broadcast_interval": 1,
    # Train batches waiting for the learner, at most.
    "learner_queue_size": 16,
    # Seconds the learner may go without a batch before the run fails, naming the
    # workers that sent nothing.
    "learner_queue_timeout": 300.0,
    # Passes over each train batch, interleaved over a ring of minibatch_buffer_size.
    "num_sgd_iter": 1,
    "minibatch_buffer_size": 1,
    # Mean number of replayed train batches per new one (0: no replay), drawn
    # from the last replay_buffer_num_slots.
    "replay_proportion": 0.0,
    "replay_buffer_num_slots": 0,
}

# The learner keys IMPALA and APPO share (RLlib's defaults for both).
LEARNER_DEFAULTS: dict[str, Any] = {
    # V-trace truncation of the importance ratios for the value targets
    # (rho bar) and for the policy gradient; None: no truncation.
    "vtrace_clip_rho_threshold": 1.0,
    "vtrace_clip_pg_rho_threshold": 1.0,
    # "adam", or "rmsprop" with decay, momentum and epsilon below.
    "opt_type": "adam",
    "lr": 5e-4,
    # [[timestep, lr], ...]: the learning rate interpolated between these points of
    # sampled steps (None: lr throughout), as RLlib's Pong files decay it.
    "lr_schedule": None,
    "decay": 0.99,
    "momentum": 0.0,
    "epsilon": 0.1,
    "grad_clip": 40.0,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.01,
}

DEFAULT_CONFIG: dict[str, Any] = with_common_config({**ASYNC_DEFAULTS, **LEARNER_DEFAULTS})


def make_async_optimizer(workers: WorkerSet, config: dict[str, Any]) -> AsyncSamplesOptimizer:
    """The ``AsyncSamplesOptimizer`` from the config's ``ASYNC_DEFAULTS`` keys."""
    return AsyncSamplesOptimizer(
        workers,
        train_batch_size=config["train_batch_size"],
        max_sample_requests_in_flight_per_worker=config["max_sample_requests_in_flight_per_worker"],
        broadcast_interval=config["broadcast_interval"],
        learner_queue_size=config["learner_queue_size"],
        learner_queue_timeout=config["learner_queue_timeout"],
        num_sgd_iter=config["num_sgd_iter"],
        minibatch_buffer_size=config["minibatch_buffer_size"],
        replay_proportion=config["replay_proportion"],
        replay_buffer_num_slots=config["replay_buffer_num_slots"],
        seed=config["seed"],
        num_learners=config["num_learners"],
        num_gpus_per_learner=config["num_gpus_per_learner"],
        learner_backend=config["learner_backend"],
        learner_timeout_s=config["learner_timeout_s"],
    )


def validate_async_config(config: dict[str, Any]) -> None:
    """Raise ValueError for settings the asynchronous architecture cannot run."""
    if uses_learner_group(config) and config["minibatch_buffer_size"] != 1:
        raise ValueError(
            f"minibatch_buffer_size={config['minibatch_buffer_size']} needs the learner "
            f"thread; with data-parallel learners (num_learners={config['num_learners']}) "
            "each train batch is learned from num_sgd_iter times in one go: set "
            "minibatch_buffer_size to 1"
        )
    if config["batch_mode"] != "truncate_episodes":
        raise ValueError(
            f"IMPALA and APPO need batch_mode 'truncate_episodes' (fragments of a fixed "
            f"length), got {config['batch_mode']!r}"
        )
    if config["opt_type"] not in ("adam", "rmsprop"):
        raise ValueError(f"opt_type must be 'adam' or 'rmsprop', got {config['opt_type']!r}")
    ReplaySlots(config["replay_buffer_num_slots"], config["replay_proportion"])  # checks them


def vtrace_targets(
    policy, model, batch: SampleBatch, values: torch.Tensor, target_logp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace value targets and policy-gradient advantages for each row of ``batch``
    (flat, in its row order), with ``target_logp`` as the target policy's log
    probabilities of the sampled actions and ``values`` the critic's."""
    config = policy.config
    layout = batch_layout(batch)
    with torch.no_grad():
        # Bootstrap values: the critic at each trajectory's last next observation.
        model.from_next_obs(batch, layout.last.to(values.device))
        bootstrap = model.value_function()
        next_values = torch.cat([values[1:], values[-1:]]).detach().clone()
        next_values[layout.last.to(values.device)] = bootstrap
        terminated = batch[SampleBatch.TERMINATEDS].float()
        discounts = config["gamma"] * (1.0 - terminated)
        log_rhos = target_logp.detach() - batch[SampleBatch.ACTION_LOGP]
        returns = vtrace(
            *(
                to_time_major(column, layout)
                for column in (
                    log_rhos,
                    discounts,
                    batch[SampleBatch.REWARDS].float(),
                    values.detach(),
                    next_values,
                )
            ),
            clip_rho_threshold=config["vtrace_clip_rho_threshold"],
            clip_pg_rho_threshold=config["vtrace_clip_pg_rho_threshold"],
            mask=layout.mask.to(values.device),
        )
    return from_time_major(returns.vs, layout), from_time_major(returns.pg_advantages, layout)


def impala_loss(policy, model, dist_class, batch: SampleBatch) -> LossOutput:
    """V-trace actor-critic loss, summed over rows as RLlib's IMPALA."""
    config = policy.config
    logits, _ = model.from_batch(batch)
    values = model.value_function()
    dist = dist_class(logits, model)
    logp = dist.logp(batch[SampleBatch.ACTIONS])
    vs, pg_advantages = vtrace_targets(policy, model, batch, values, logp)
    policy_loss = -(logp * pg_advantages).sum()
    vf_loss = 0.5 * ((values - vs) ** 2).sum()
    entropy = dist.entropy().sum()
    total = policy_loss + config["vf_loss_coeff"] * vf_loss - config["entropy_coeff"] * entropy
    rows = logp.shape[0]
    return LossOutput(
        total,
        terms={
            "policy_loss": policy_loss / rows,
            "vf_loss": vf_loss / rows,
            "entropy": entropy / rows,
            "vf_explained_var": explained_variance(vs, values.detach()),
        },
    )


def make_optimizer(policy, config: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam, or RMSProp with ``decay``, ``momentum`` and ``epsilon`` (``opt_type``)."""
    if config["opt_type"] == "rmsprop":
        return torch.optim.RMSprop(
            policy.learned_parameters(),
            lr=config["lr"],
            alpha=config["decay"],
            momentum=config["momentum"],
            eps=config["epsilon"],
        )
    return Adam(policy.learned_parameters(), lr=config["lr"])


IMPALATorchPolicy = build_torch_policy(
    "IMPALATorchPolicy",
    loss_fn=impala_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    optimizer_fn=make_optimizer,
    mixins=[LearningRateSchedule],
)

IMPALATrainer = build_trainer(
    "IMPALA",
    IMPALATorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_async_optimizer,
    validate_config=validate_async_config,
)
