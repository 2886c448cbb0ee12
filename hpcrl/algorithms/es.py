"""Evolution strategies (Salimans et al. 2017) and augmented random search (Mania
et al. 2018): the shared noise table and the two updates.

Both perturb a flat parameter vector ``theta`` with antithetic pairs
``theta +/- noise_stdev * eps_i``, where each ``eps_i`` is a slice of a table
of Gaussian noise that every process builds from the same seed, so a
perturbation travels as one integer (its index in the table), never as
parameters. From the returns of the pairs:

- ES: ``g = sum_i (c(r+_i) - c(r-_i)) eps_i / n`` with ``c`` the centred ranks
  of all ``2n`` returns (fitness shaping), then an Adam step on
  ``-g + l2_coeff * theta`` (RLlib's form: ``noise_stdev`` is folded into the
  step size).
- ARS (V1, and V2 with observation normalisation): keep the ``b`` pairs with
  the largest ``max(r+, r-)``, then
  ``theta += stepsize / (b * sigma_R) * sum_k (r+_k - r-_k) eps_k`` with
  ``sigma_R`` the standard deviation of those ``2b`` returns.

Every process applies the same update from everyone's (index, returns)
pairs, so parameters are not sent after the first iteration (see
``ESOptimizer``). Observations are normalised by the policy's observation
filter (``observation_filter: MeanStdFilter``, ARS V2; ``hpcrl.policy.
observation_filter``), frozen during an iteration and updated between
iterations by every process alike, from every process's statistics.
Checkpoints hold the parameters, the filter and ES's Adam state; the noise
table is rebuilt from ``noise_seed``.

Example:
    >>> with ARSTrainer({"num_rollouts": 4, "rollouts_used": 2, "seed": 0,
    ...                  "noise_size": 100_000}, env="CartPole-v1") as trainer:
    ...     result = trainer.train()
    >>> result["info"]["iteration"]
    1
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcrl.algorithms.config import Interval, with_common_config
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer
from hpcrl.policy.observation_filter import RunningMeanStd
from hpcrl.policy.policy_template import build_torch_policy


class SharedNoiseTable:
    """``size`` float32 standard normals drawn from ``seed``: the same on every
    process that builds it with the same arguments, so only indices are sent.

    Example:
        >>> a, b = SharedNoiseTable(seed=1, size=1000), SharedNoiseTable(seed=1, size=1000)
        >>> index = a.sample_index(np.random.default_rng(0), dim=10)
        >>> bool(np.array_equal(a.get(index, 10), b.get(index, 10)))
        True
    """

    def __init__(self, seed: int, size: int) -> None:
        if size < 1:
            raise ValueError(f"noise_size must be >= 1, got {size}")
        self.seed = seed
        self.noise = np.random.default_rng(seed).standard_normal(size, dtype=np.float32)

    def get(self, index: int, dim: int) -> np.ndarray:
        """The ``dim`` numbers from ``index`` on (a view)."""
        return self.noise[index : index + dim]

    def sample_index(self, rng: np.random.Generator, dim: int) -> int:
        """A random start with ``dim`` numbers after it."""
        if dim > len(self.noise):
            raise ValueError(
                f"the policy has {dim} parameters but noise_size is {len(self.noise)}: set "
                f"noise_size to at least {dim} (many times more, so perturbations differ)"
            )
        return int(rng.integers(0, len(self.noise) - dim + 1))


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """The ranks of ``values`` (any shape) scaled to [-0.5, 0.5], in their shape.

    Example:
        >>> centered_ranks(np.array([[3.0, -1.0], [10.0, 2.0]])).tolist()
        [[0.16666666666666663, -0.5], [0.5, -0.16666666666666669]]
    """
    flat = values.ravel()
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[flat.argsort(kind="stable")] = np.arange(flat.size)
    if flat.size > 1:
        ranks = ranks / (flat.size - 1) - 0.5
    else:
        ranks[:] = 0.0
    return ranks.reshape(values.shape)


def _weighted_noise(
    table: SharedNoiseTable, indices: np.ndarray, weights: np.ndarray, dim: int
) -> np.ndarray:
    total = np.zeros(dim, dtype=np.float64)
    for index, weight in zip(indices, weights):
        total += weight * table.get(int(index), dim)
    return total


def es_gradient(
    table: SharedNoiseTable, indices: np.ndarray, returns: np.ndarray, dim: int
) -> np.ndarray:
    """ES's estimate of the gradient of the expected return: ``returns`` is
    ``[n, 2]`` (the return with ``+eps_i``, then with ``-eps_i``), ranks centred
    over all ``2n``."""
    shaped = centered_ranks(np.asarray(returns, dtype=np.float64))
    weights = shaped[:, 0] - shaped[:, 1]
    return _weighted_noise(table, indices, weights, dim) / len(indices)


def ars_step(
    table: SharedNoiseTable,
    indices: np.ndarray,
    returns: np.ndarray,
    dim: int,
    num_top: int,
    stepsize: float,
) -> np.ndarray:
    """ARS's change of ``theta``: the ``num_top`` pairs with the largest
    ``max(r+, r-)``, each difference weighted by ``stepsize / (b * sigma_R)``."""
    returns = np.asarray(returns, dtype=np.float64)
    if not 1 <= num_top <= len(returns):
        raise ValueError(
            f"rollouts_used must be between 1 and the {len(returns)} pairs evaluated, got {num_top}"
        )
    top = np.argsort(-returns.max(axis=1), kind="stable")[:num_top]
    used = returns[top]
    sigma = used.std()
    if sigma == 0:  # every return alike: no direction is better
        return np.zeros(dim)
    weights = (used[:, 0] - used[:, 1]) * stepsize / (num_top * sigma)
    return _weighted_noise(table, np.asarray(indices)[top], weights, dim)


class FlatAdam:
    """Adam on a flat parameter vector (numpy), as ES's step (Salimans et al.)."""

    def __init__(self, size: int, stepsize: float, beta1: float = 0.9, beta2: float = 0.999):
        self.stepsize, self.beta1, self.beta2, self.epsilon = stepsize, beta1, beta2, 1e-8
        self.m = np.zeros(size, dtype=np.float64)
        self.v = np.zeros(size, dtype=np.float64)
        self.t = 0

    def step(self, gradient: np.ndarray) -> np.ndarray:
        """The change of the parameters for ``gradient`` (of a loss: the step descends)."""
        self.t += 1
        a = self.stepsize * np.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        self.m = self.beta1 * self.m + (1 - self.beta1) * gradient
        self.v = self.beta2 * self.v + (1 - self.beta2) * gradient * gradient
        return -a * self.m / (np.sqrt(self.v) + self.epsilon)

    def get_state(self) -> dict[str, Any]:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": self.t}

    def set_state(self, state: dict[str, Any]) -> None:
        self.m = np.asarray(state["m"], dtype=np.float64).copy()
        self.v = np.asarray(state["v"], dtype=np.float64).copy()
        self.t = int(state["t"])


# -- the policy ---------------------------------------------------------------
class ESPolicyMixin:
    """A policy whose parameters move as one flat vector; its state holds the step's
    optimizer too. Its observation filter is updated by ``apply_update``, not by
    acting."""

    def flat_size(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def get_flat(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.nn.utils.parameters_to_vector(self.model.parameters()).cpu().numpy()

    def set_flat(self, flat: np.ndarray) -> None:
        import torch

        vector = torch.as_tensor(np.asarray(flat, dtype=np.float32), device=self.device)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(vector, self.model.parameters())

    def get_state(self, include_optimizer: bool = True) -> dict[str, Any]:
        state = super().get_state(include_optimizer)
        state["flat_adam"] = self.flat_adam.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if "obs_stats" in state and self.observation_filter.active:
            # A checkpoint written before the statistics became the policy's filter.
            self.observation_filter.running.set_state(state["obs_stats"])
        if "flat_adam" in state:
            self.flat_adam.set_state(state["flat_adam"])


def setup_es(policy, obs_space, action_space, config) -> None:
    """``before_loss_init``: the step's Adam."""
    policy.flat_adam = FlatAdam(policy.flat_size(), config.get("stepsize", 0.01))
    policy._noise_table = None


def noise_table(policy) -> SharedNoiseTable:
    """The policy's noise table, built on first use from the config's seed."""
    if policy._noise_table is None:
        config = policy.config
        policy._noise_table = SharedNoiseTable(config["noise_seed"], config["noise_size"])
    return policy._noise_table


def no_gradient_loss(policy, model, dist_class, batch):
    raise ValueError(
        "ES and ARS do not learn by gradient descent on sample batches: train them with "
        "their trainers (ESTrainer, ARSTrainer)"
    )


# -- one iteration, on every process --------------------------------------
def _single_env(worker: Any) -> Any:
    """The worker's env for whole episodes (one copy, made on first use)."""
    env = getattr(worker, "_es_env", None)
    if env is None:
        import gymnasium as gym

        from hpcrl.env.atari import atari_preprocessing_options, is_atari_env_id, make_atari_env
        from hpcrl.env.registry import EnvContext, resolve_env_creator

        config = worker.config
        # The creator the worker got: a Dask worker may not have run the driver's
        # register_env calls, so the name alone may be unknown there.
        creator = resolve_env_creator(worker.env_creator or config["env"])
        context = EnvContext(config["env_config"], worker.worker_index, 0, worker.num_workers)
        if is_atari_env_id(creator):
            env = make_atari_env(
                creator,
                config["env_config"],
                config["preprocessor_pref"],
                atari_preprocessing_options(config),
            )
        elif isinstance(creator, str):
            env = gym.make(creator, **config["env_config"])
        else:
            env = creator(context)
        from hpcrl.env.action_normalization import normalize_env_actions

        env = normalize_env_actions(env, bool(config.get("normalize_actions", False)))
        worker._es_env = env
    return env


def _episode(policy: Any, env: Any, seed: int) -> tuple[float, int, list[np.ndarray]]:
    """One episode with the policy's current parameters: return, length, and the
    observations as the filter counts them (none without a filter)."""
    import gymnasium as gym

    obs_filter = policy.observation_filter
    obs, _ = env.reset(seed=seed)
    seen, total, steps = [], 0.0, 0
    box = isinstance(env.action_space, gym.spaces.Box)
    while True:
        batch = np.asarray(obs)[None]
        if obs_filter.active:
            seen.append(obs_filter.rows(batch))
            batch = obs_filter(batch, update=False)
        actions, _, _ = policy.compute_actions(batch, explore=False)
        action = actions[0]
        if box:
            action = np.clip(action, env.action_space.low, env.action_space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        steps += 1
        if terminated or truncated:
            return total, steps, seen


def perturbed_rollouts(
    worker: Any, iteration: int, min_pairs: int, min_steps: int
) -> dict[str, Any]:
    """This process's share of an iteration: antithetic pairs of episodes until
    ``min_pairs`` pairs and ``min_steps`` steps; with probability ``eval_prob``
    before each pair, an episode with the unperturbed parameters (what the
    results report). Returns small arrays only (indices, returns, lengths) and
    the observation statistics of this share."""
    policy = worker.get_policy()
    config = policy.config
    table = noise_table(policy)
    theta = policy.get_flat().astype(np.float64)
    dim = theta.size
    rng = np.random.default_rng([config["noise_seed"], worker.worker_index, iteration])
    indices, returns, lengths, evals, eval_lengths, observations = [], [], [], [], [], []
    env = _single_env(worker)
    steps = 0
    try:
        while len(indices) < min_pairs or steps < min_steps:
            if rng.random() < config["eval_prob"]:
                policy.set_flat(theta)
                total, length, _ = _episode(policy, env, int(rng.integers(2**31)))
                evals.append(total)
                eval_lengths.append(length)
            index = table.sample_index(rng, dim)
            noise = config["noise_stdev"] * table.get(index, dim)
            pair, pair_lengths = [], []
            for sign in (1.0, -1.0):
                policy.set_flat(theta + sign * noise)
                total, length, seen = _episode(policy, env, int(rng.integers(2**31)))
                pair.append(total)
                pair_lengths.append(length)
                observations += seen
                steps += length
            indices.append(index)
            returns.append(pair)
            lengths.append(pair_lengths)
    finally:
        policy.set_flat(theta)
    obs_delta = RunningMeanStd.of(np.concatenate(observations)) if observations else None
    return {
        "indices": np.asarray(indices, dtype=np.int64),
        "returns": np.asarray(returns, dtype=np.float64).reshape(-1, 2),
        "lengths": np.asarray(lengths, dtype=np.int64).reshape(-1, 2),
        "eval_returns": np.asarray(evals, dtype=np.float64),
        "eval_lengths": np.asarray(eval_lengths, dtype=np.int64),
        "obs_delta": obs_delta,
    }


def apply_update(worker: Any, shares: list[dict[str, Any]]) -> dict[str, float]:
    """The same update on every process from every process's share, in share order:
    ES's or ARS's step of the parameters, then the observation statistics.
    Returns a few numbers for the learner stats."""
    policy = worker.get_policy()
    config = policy.config
    table = noise_table(policy)
    indices = np.concatenate([s["indices"] for s in shares])
    returns = np.concatenate([s["returns"] for s in shares])
    theta = policy.get_flat().astype(np.float64)
    if len(indices) == 0:
        return {}
    if "rollouts_used" in config:  # ARS
        used = min(config["rollouts_used"], len(indices))
        step = ars_step(table, indices, returns, theta.size, used, config["stepsize"])
    else:
        gradient = es_gradient(table, indices, returns, theta.size)
        step = policy.flat_adam.step(-gradient + config["l2_coeff"] * theta)
    policy.set_flat(theta + step)
    for share in shares:
        if share["obs_delta"] is not None:
            policy.observation_filter.running.merge(share["obs_delta"])
    return {
        "update_ratio": float(np.linalg.norm(step) / max(np.linalg.norm(theta), 1e-12)),
        "weights_norm": float(np.linalg.norm(theta + step)),
        "pairs": float(len(indices)),
    }


def flat_state(worker: Any) -> np.ndarray:
    """The policy's flat parameters (for checking that every process holds the same)."""
    return worker.get_policy().get_flat()


def _set_policy_state(worker: Any, state: dict[str, Any]) -> None:
    worker.get_policy().set_state(state)


# -- the optimizer and the trainers ---------------------------------------------
class ESOptimizer(PolicyOptimizer):
    """One ES or ARS iteration per ``step()``, through the backend interface.

    Each remote worker (or, with none, the driver's own) runs its share of the
    antithetic pairs (``perturbed_rollouts``) and returns only noise indices,
    returns, lengths and observation statistics: a few numbers per episode.
    Every worker, and the driver, then applies the same update from all the
    shares (``apply_update``), so parameters never travel after the first
    step (which gives every worker the driver's, once). Every process holds
    bit-identical parameters after every iteration.

    The exchange is ``Backend.allgather``: under MPI one ``allgather`` over the
    ranks, after which each worker rank updates itself, the driver rank
    (which holds the parameters for checkpoints and evaluation) taking part
    like any other. On Dask, where a worker can be lost and re-created, the
    shares go to the driver and back call by call instead, so that a lost
    worker is re-created from the driver's state, which is every worker's,
    and runs its share again.
    """

    def __init__(self, workers: WorkerSet, min_pairs: int, min_steps: int = 0) -> None:
        super().__init__(workers)
        if min_pairs < 1:
            raise ValueError(
                f"at least one pair of episodes per iteration is needed, got {min_pairs}"
            )
        self.min_pairs = min_pairs
        self.min_steps = min_steps
        self.iteration = 0
        self._sync_due = True
        self._eval_returns: list[np.ndarray] = []
        self._eval_lengths: list[np.ndarray] = []
        self.exchange_bytes_per_worker = 0
        self.learner_stats: dict[str, Any] = {}

    def step(self) -> dict[str, Any]:
        local = self.workers.local_worker()
        remote = self.workers.remote_workers()
        backend = self.backend
        if self._sync_due and remote:
            state = local.get_policy().get_state(include_optimizer=False)
            self.workers.call_remote("apply", _set_policy_state, state)
        self._sync_due = False
        share_count = max(1, len(remote))
        pairs = -(-self.min_pairs // share_count)
        steps = -(-self.min_steps // share_count)
        relayed = bool(remote) and backend.loses_actors
        with self._timed("rollouts"):
            if not remote:
                shares = [perturbed_rollouts(local, self.iteration, pairs, steps)]
            elif relayed:
                # A worker lost here is re-created with the driver's whole state and
                # runs its share again: the same pairs, seeded by worker and iteration.
                args = (perturbed_rollouts, self.iteration, pairs, steps)
                shares = self.workers.gather_remote(
                    backend.call(remote, "apply", *args),
                    again=("apply", args, {}),
                    restore=self._restore,
                )
            else:  # every worker applies the update as soon as it has every share
                shares = backend.allgather(
                    remote, "apply", perturbed_rollouts, self.iteration, pairs, steps,
                    then=("apply", (apply_update,)),
                )  # fmt: skip
        self.exchange_bytes_per_worker = max(_nbytes(share) for share in shares)
        with self._timed("update"):
            calls = backend.call(remote, "apply", apply_update, shares) if relayed else []
            stats = apply_update(local, shares)
            # A worker lost in its update is re-created with the driver's state, which
            # already holds this update: nothing to call again.
            if relayed:
                self.workers.gather_remote(calls, restore=self._restore)
        self.iteration += 1
        sampled = int(sum(s["lengths"].sum() + s["eval_lengths"].sum() for s in shares))
        self.num_steps_sampled += sampled
        self.num_steps_trained += sampled
        for share in shares:
            self._eval_returns.append(share["eval_returns"])
            self._eval_lengths.append(share["eval_lengths"])
        self.learner_stats = {"default_policy": stats}
        return {"default_policy": {"learner_stats": stats}}

    def _restore(self, actor: Any) -> None:
        """A re-created worker gets the driver's whole policy state: its parameters,
        and also the Adam moments and observation statistics that every process
        updates alike (the weights alone would let it drift from the others)."""
        state = self.workers.local_worker().get_policy().get_state()
        self.backend.get(self.backend.call([actor], "apply", _set_policy_state, state))

    def pop_metrics(self) -> dict[str, Any]:
        """The unperturbed evaluation episodes since the last call (what the results
        report), in ``RolloutWorker.get_metrics``' form."""
        returns = np.concatenate(self._eval_returns) if self._eval_returns else np.zeros(0)
        lengths = np.concatenate(self._eval_lengths) if self._eval_lengths else np.zeros(0, int)
        self._eval_returns, self._eval_lengths = [], []
        return {"episode_returns": returns, "episode_lengths": lengths, "policy_returns": {},
                "worker_index": 0}  # fmt: skip

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "iteration": self.iteration,
            "exchange_bytes_per_worker": self.exchange_bytes_per_worker,
            # how the shares were exchanged: Backend.allgather (one collective under
            # MPI), or call by call through the driver (Dask)
            "exchange": "relayed" if self.backend.loses_actors else "allgather",
            "learner": self.learner_stats,
        }

    def save(self) -> dict[str, Any]:
        return {**super().save(), "es_iteration": self.iteration}

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        self.iteration = int(data["es_iteration"])
        self._sync_due = True  # the workers get the restored parameters and statistics


def _nbytes(share: dict[str, Any]) -> int:
    """Bytes of a share's arrays: what a worker sends per iteration."""
    total = 0
    for value in share.values():
        if isinstance(value, dict):
            total += _nbytes(value)
        elif isinstance(value, np.ndarray):
            total += value.nbytes
        else:
            total += 8
    return total


class ESTrainerMixin:
    """Results report the optimizer's unperturbed evaluation episodes. Every process
    updates its observation filter alike (``apply_update``): the trainer's merge of
    the workers' filters has nothing to do."""

    sync_observation_filters = False
    # train_batch_size is the least env steps per iteration; 0: episodes_per_batch alone.
    config_ranges = {"train_batch_size": Interval(0)}

    def _collect_worker_metrics(self) -> list[dict[str, Any]]:
        return [self.optimizer.pop_metrics()]


# Shared by ES and ARS (RLlib's defaults, except noise_size; see below).
_COMMON_KEYS: dict[str, Any] = {
    # Antithetic perturbations: theta +/- noise_stdev * eps.
    "noise_stdev": 0.02,
    # Gaussian numbers in the table every process builds from noise_seed. RLlib
    # has 250,000,000 (1 GB per process, seconds to draw); 25,000,000 (100 MB)
    # leaves millions of distinct perturbations for policies of thousands of
    # parameters.
    "noise_size": 25_000_000,
    "noise_seed": 123,
    # Probability, before each pair, of an episode with the unperturbed parameters:
    # the episodes the results report.
    "eval_prob": 0.03,
    # MeanStdFilter: observations normalised by running statistics that every
    # process updates identically (ARS V2); NoFilter (ARS V1).
    "observation_filter": "MeanStdFilter",
    "num_envs_per_worker": 1,
    "rollout_fragment_length": 1,
    "timesteps_per_iteration": 0,
    "model": {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"},
}

ES_CONFIG: dict[str, Any] = with_common_config(
    {
        **_COMMON_KEYS,
        "eval_prob": 0.003,
        # Episodes (two per pair) and env steps per iteration, at least, over all workers.
        "episodes_per_batch": 1000,
        "train_batch_size": 10_000,
        # Adam's step size and the L2 coefficient of ES's update.
        "stepsize": 0.01,
        "l2_coeff": 0.005,
    }
)

ARS_CONFIG: dict[str, Any] = with_common_config(
    {
        **_COMMON_KEYS,
        # Pairs per iteration over all workers, and how many of the best are used (b).
        "num_rollouts": 32,
        "rollouts_used": 32,
        # alpha of ARS's step.
        "stepsize": 0.01,
    }
)


def validate_es_config(config: dict[str, Any]) -> None:
    if config["episodes_per_batch"] < 2:
        raise ValueError(
            f"episodes_per_batch must be >= 2 (one antithetic pair), got "
            f"{config['episodes_per_batch']}"
        )


def validate_ars_config(config: dict[str, Any]) -> None:
    if not 1 <= config["rollouts_used"] <= config["num_rollouts"]:
        raise ValueError(
            f"rollouts_used must be between 1 and num_rollouts ({config['num_rollouts']}), "
            f"got {config['rollouts_used']}"
        )


def make_es_optimizer(workers: WorkerSet, config: dict[str, Any]) -> ESOptimizer:
    return ESOptimizer(workers, -(-config["episodes_per_batch"] // 2), config["train_batch_size"])


def make_ars_optimizer(workers: WorkerSet, config: dict[str, Any]) -> ESOptimizer:
    return ESOptimizer(workers, config["num_rollouts"])


ESTorchPolicy = build_torch_policy(
    "ESTorchPolicy",
    loss_fn=no_gradient_loss,
    get_default_config=lambda: ES_CONFIG,
    before_loss_init=setup_es,
    mixins=[ESPolicyMixin],
)

ARSTorchPolicy = ESTorchPolicy.with_updates(
    name="ARSTorchPolicy", get_default_config=lambda: ARS_CONFIG
)

ESTrainer = build_trainer(
    "ES",
    ESTorchPolicy,
    default_config=ES_CONFIG,
    make_policy_optimizer=make_es_optimizer,
    validate_config=validate_es_config,
    mixins=[ESTrainerMixin],
)

ARSTrainer = build_trainer(
    "ARS",
    ARSTorchPolicy,
    default_config=ARS_CONFIG,
    make_policy_optimizer=make_ars_optimizer,
    validate_config=validate_ars_config,
    mixins=[ESTrainerMixin],
)
