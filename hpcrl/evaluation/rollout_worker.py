"""RolloutWorker: steps a vector of envs with a policy and returns SampleBatches."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.env.action_normalization import normalize_vector_actions
from hpcrl.env.atari import atari_preprocessing_options, uses_deepmind_preprocessing
from hpcrl.env.failures import FailurePolicy, GuardedEnvs
from hpcrl.env.registry import EnvContext, make_multi_agent_copy, make_worker_envs
from hpcrl.evaluation.multi_agent_sampler import (
    Episode,
    MultiAgentSampler,
    OtherAgentBatches,
    mapping_caller,
)
from hpcrl.evaluation.policy_specs import (
    PolicySpec,
    check_multiagent_config,
    default_policy_mapping_fn,
    resolve_policy_specs,
)
from hpcrl.evaluation.reward_clipping import reward_clipper
from hpcrl.evaluation.sampler import VectorEnvSampler
from hpcrl.policy.observation_filter import MeanStdFilter, WelfordMerge
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch

BATCH_MODES = ("truncate_episodes", "complete_episodes")


# Keys of the trainer config a RolloutWorker reads, with their defaults.
WORKER_DEFAULTS: dict[str, Any] = {
    "num_envs_per_worker": 1,
    "rollout_fragment_length": 200,
    "batch_mode": "truncate_episodes",
    "env_config": {},
    "vectorization_mode": "auto",
    "seed": None,
    "input": None,
    "output": None,
    "output_compress": None,
    "clip_actions": True,
    "normalize_actions": False,
    "clip_rewards": None,
    "preprocessor_pref": "deepmind",
    "atari_preprocessing": {},
    "multiagent": {},
    "recreate_failed_envs": False,
    "env_step_timeout_s": None,
}


class RolloutWorker:
    """Owns copies of an env and a map of policies; ``sample()`` returns experience.

    One ``sample()`` holds at least ``rollout_fragment_length`` steps of each
    of the ``num_envs_per_worker`` env copies (``truncate_episodes``: episodes
    are cut at the fragment's end and bootstrapped), or at least that many
    steps per copy in whole episodes (``complete_episodes``).

    - A gymnasium env is stepped as one vector env with one policy
      (``hpcrl.evaluation.sampler``): one batched ``compute_actions`` per
      step for all copies; ``sample()`` returns a ``SampleBatch``.
    - A multi-agent env (``hpcrl.env.MultiAgentEnv``, or a PettingZoo Parallel
      or AEC env) is stepped with the policy map of ``config["multiagent"]``
      (``hpcrl.evaluation.multi_agent_sampler``): each step runs one batched
      ``compute_actions`` per policy over all agents mapped to it in all
      copies; ``sample()`` returns a ``MultiAgentBatch``.

    The batch is postprocessed before it is returned: each policy's
    ``postprocess_trajectory`` once over all its trajectories of the fragment
    (with ``other_agent_batches``, the rows of every agent of the fragment,
    for a multi-agent env). The batch's rewards are clipped as
    ``config["clip_rewards"]`` says (``hpcrl.evaluation.reward_clipping``); the
    episode metrics (``get_metrics()``) keep the env's own.

    With ``config["output"] = DIR`` every batch ``sample()`` returns is also
    appended to this worker's own HDF5 file in ``DIR`` (``hpcrl.io.BatchWriter``).
    With ``config["input"]`` (a directory or list of such files) the worker
    has no env: ``sample()`` returns the next recorded batch of its share
    (``hpcrl.io.BatchReader``), postprocessed by this worker's policies, and
    the spaces come from the files.

    A sub-env that raises in ``step`` or ``reset`` (or, with
    ``env_step_timeout_s``, takes longer) stops ``sample()`` with an ``EnvError``
    naming this worker, the sub-env, the env and the step; with
    ``recreate_failed_envs`` it is rebuilt, its episode dropped, and sampling goes
    on (``hpcrl.env.failures``; ``get_metrics()`` counts ``num_env_restarts``).

    ``get_state()``/``set_state()`` carry everything a checkpoint needs to
    continue sampling exactly: episode ids, counters, running episode
    returns, held-over rows, the env's state (``hpcrl.io.env_state``) and the
    policies' state (their observation filters included).

    Each policy's observation filter (``config["observation_filter"]``) is
    applied by the sampler and counts what it sees;
    ``update_observation_filters = False`` makes it normalise without counting
    (evaluation). ``pop_filter_updates`` and ``sync_filters`` are the driver's
    side of merging the workers' filters (``WorkerSet.sync_filters``).

    Args:
        env: gymnasium id, name given to ``register_env``, a PettingZoo module
            path, or a creator ``f(env_config)`` returning a gymnasium Env or
            VectorEnv, a MultiAgentEnv or a PettingZoo env (None with ``config["input"]``).
        policy: the default ``Policy`` subclass (for policies whose class the
            ``multiagent`` config leaves as None), built with this worker's
            spaces and ``config``.
        config: the trainer config (``WORKER_DEFAULTS`` keys plus the policy's).
        worker_index: 0 for the driver's local worker, 1..N for remote ones;
            seeds are offset by it.
        num_workers: number of remote workers in the set.
        num_envs: overrides ``num_envs_per_worker``.

    Example:
        >>> from hpcrl.algorithms.pg import PGTorchPolicy
        >>> worker = RolloutWorker("CartPole-v1", PGTorchPolicy,
        ...                        {"num_envs_per_worker": 8, "rollout_fragment_length": 10})
        >>> worker.sample().count >= 80
        True
    """

    def __init__(
        self,
        env: str | Callable[..., Any] | None,
        policy: type[Policy],
        config: dict[str, Any],
        worker_index: int = 0,
        num_workers: int = 0,
        num_envs: int | None = None,
    ) -> None:
        self.config = {**WORKER_DEFAULTS, **config}
        self.worker_index = worker_index
        self.num_workers = num_workers
        if self.config["batch_mode"] not in BATCH_MODES:
            raise ValueError(
                f"batch_mode={self.config['batch_mode']!r}; expected one of {BATCH_MODES}"
            )
        self._complete = self.config["batch_mode"] == "complete_episodes"
        self.fragment_length = int(self.config["rollout_fragment_length"])
        if self.fragment_length < 1:
            raise ValueError(f"rollout_fragment_length must be >= 1, got {self.fragment_length}")
        self.num_envs = int(num_envs or self.config["num_envs_per_worker"])
        seed = self.config["seed"]
        self.seed = None if seed is None else int(seed) + 1000 * worker_index
        # The config keeps the multiagent settings as given (a "module:function" string
        # stays a string in checkpoints); the worker uses them resolved.
        multiagent = check_multiagent_config(self.config["multiagent"])
        self.policy_mapping_fn = multiagent["policy_mapping_fn"] or default_policy_mapping_fn
        self.count_steps_by = multiagent["count_steps_by"]
        self.global_timestep = 0
        self._clip_rewards = reward_clipper(
            self.config["clip_rewards"],
            clip_by_default=uses_deepmind_preprocessing(env, self.config["preprocessor_pref"]),
        )
        self._reader = None
        # What the worker was given to make its envs (ES makes one more from it).
        self.env_creator = env
        self.env: Any = None
        self.multi_agent = False
        self.failures = FailurePolicy.from_config(self.config, worker_index, env)
        self._env_guard: GuardedEnvs | None = None
        if self.config["input"]:
            from hpcrl.io.batch_reader import BatchReader

            self._reader = BatchReader(
                self.config["input"], worker_index=worker_index, num_workers=num_workers
            )
            recorded = self._reader.spaces()
            specs = multiagent["policies"] or {pid: PolicySpec() for pid in recorded}
            specs = resolve_policy_specs(specs, policy, recorded.get)
        else:
            context = EnvContext(self.config["env_config"], worker_index, 0, num_workers)
            self.env = make_worker_envs(
                env,
                self.num_envs,
                context,
                self.config["vectorization_mode"],
                preprocessor_pref=self.config["preprocessor_pref"],
                atari_preprocessing=atari_preprocessing_options(self.config),
                failures=self.failures,
            )
            self.env = normalize_vector_actions(self.env, self.config["normalize_actions"])
            self.multi_agent = isinstance(self.env, list)
            if self.multi_agent and self.failures.guarded:
                rebuild = functools.partial(make_multi_agent_copy, env, context)
                self._env_guard = GuardedEnvs(self.env, rebuild, self.failures)
            specs = self._policy_specs(multiagent["policies"], policy)
        self.policy_map: dict[str, Policy] = {}
        for i, (pid, spec) in enumerate(specs.items()):
            policy_seed = None if self.seed is None else self.seed + i
            policy_config = {
                **self.config,
                **spec.config,
                "seed": policy_seed,
                # Remote workers only act: on the CPU, whatever device learns.
                **({"device": "cpu"} if worker_index > 0 else {}),
                "worker_index": worker_index,
                "num_workers": num_workers,
            }
            self.policy_map[pid] = spec.policy_class(
                spec.observation_space, spec.action_space, policy_config
            )
        to_train = multiagent["policies_to_train"]
        self.policies_to_train: list[str] = list(self.policy_map) if to_train is None else to_train
        self._next_eps_id = (worker_index << 40) + 1
        self._steps_sampled = 0
        self._sampler: Any = None
        # Whether sampling counts observations in the policies' filters (set before
        # the first sample()).
        self.update_observation_filters = True
        self._writer = None
        if self.config["output"]:
            from hpcrl.io.batch_writer import BatchWriter

            self._writer = BatchWriter(
                self.config["output"],
                worker_index=worker_index,
                compress=self.config["output_compress"],
                config=self.config,
                spaces={
                    pid: (p.observation_space, p.action_space) for pid, p in self.policy_map.items()
                },
            )

    def _policy_specs(self, policies: dict[str, PolicySpec], default: type[Policy]) -> dict:
        """The policy specs with spaces: from the gymnasium env's single spaces, or from
        the agents of the multi-agent env mapped to each policy."""
        if not self.multi_agent:
            if len(policies) > 1:
                raise ValueError(
                    f"config['multiagent']['policies'] names {len(policies)} policies "
                    f"({sorted(policies)}) but the env is a single-agent gymnasium env; use a "
                    "MultiAgentEnv or a PettingZoo env for several policies"
                )
            spaces = (self.env.single_observation_space, self.env.single_action_space)
            return resolve_policy_specs(
                policies or {DEFAULT_POLICY_ID: PolicySpec()}, default, lambda pid: spaces
            )
        env = self.env[0]
        probe = Episode(0, 0, self)
        mapped: dict[str, list[Any]] = {}
        for agent_id in env.get_agent_ids():
            mapped.setdefault(self._map_agent(agent_id, probe), []).append(agent_id)

        def agent_spaces(pid: str) -> tuple[gym.Space, gym.Space] | None:
            agents = mapped.get(pid)
            if not agents:
                shared = (env.observation_space, env.action_space)
                if any(s is None or _keyed_by_agent(s, env) for s in shared):
                    return None
                return shared
            found = {
                agent: (env.get_observation_space(agent), env.get_action_space(agent))
                for agent in agents
            }
            first = next(iter(found.values()))
            for agent, spaces in found.items():
                if spaces != first:
                    raise ValueError(
                        f"agents {agents[0]!r} and {agent!r} are both mapped to policy {pid!r} "
                        f"but have different spaces ({first} and {spaces}); map them to "
                        "different policies or give the policy its spaces"
                    )
            return first

        return resolve_policy_specs(
            policies or {DEFAULT_POLICY_ID: PolicySpec()}, default, agent_spaces
        )

    def _map_agent(self, agent_id: Any, episode: Episode) -> str:
        return mapping_caller(self.policy_mapping_fn)(agent_id, episode, self)

    # -- sampling --------------------------------------------------------
    def sample(self) -> SampleBatch | MultiAgentBatch:
        """Collect one fragment of experience, postprocessed (or read the next
        recorded batch, with ``config["input"]``)."""
        if self._reader is not None:
            return self._read_input()
        sampler = self._sampler or self._make_sampler()
        if self.multi_agent:
            batch = self._postprocess_multi_agent(sampler.sample())
            self._steps_sampled += batch.env_steps()
        else:
            batch = sampler.sample()
            self._steps_sampled += batch.count
            [(pid, policy)] = self.policy_map.items()
            batch = policy.postprocess_trajectory(batch)
            if pid != DEFAULT_POLICY_ID:
                batch = MultiAgentBatch({pid: batch}, batch.count)
        if self._writer is not None:
            self._writer.write(batch)
        return batch

    def _make_sampler(self, seed: int | None = None) -> Any:
        seed = self.seed if seed is None else seed
        if self.multi_agent:
            self._sampler = MultiAgentSampler(
                self.env,
                self.policy_map,
                self.policy_mapping_fn,
                self,
                self.fragment_length,
                self._complete,
                self.count_steps_by,
                seed,
                bool(self.config["clip_actions"]),
                self._next_eps_id,
                self._clip_rewards,
                self.update_observation_filters,
                failures=self.failures,
                guard=self._env_guard,
            )
        else:
            [policy] = self.policy_map.values()
            self._sampler = VectorEnvSampler(
                self.env,
                policy,
                self.fragment_length,
                self._complete,
                seed,
                bool(self.config["clip_actions"]),
                self._next_eps_id,
                self._clip_rewards,
                self.update_observation_filters,
                failures=self.failures,
            )
        self._sampler.steps_sampled = self._steps_sampled
        return self._sampler

    def _postprocess_multi_agent(self, batch: MultiAgentBatch) -> MultiAgentBatch:
        # DESIGN.md has each agent's trajectory postprocessed on its own. Here each
        # policy postprocesses all its trajectories of the fragment in one call, as a
        # single-agent worker does: with A2C, 64 copies x 4 agents and 2 policies, a
        # call per agent and episode took 160 ms against 2 ms, a third of a 460 ms
        # sample(). The other agents' rows are at hand (built on first access), to be
        # matched by eps_id and t.
        batches = batch.policy_batches
        others = OtherAgentBatches(batches, self.policy_map, self._sampler.agent_ids())
        out = {
            pid: self.policy_map[pid].postprocess_trajectory(b, others, None)
            for pid, b in batches.items()
        }
        return MultiAgentBatch(out, batch.env_steps())

    def _read_input(self) -> SampleBatch | MultiAgentBatch:
        batch = self._reader.next()
        if isinstance(batch, MultiAgentBatch):
            self._steps_sampled += batch.env_steps()
            return MultiAgentBatch(
                {
                    pid: self.policy_map[pid].postprocess_trajectory(b)
                    for pid, b in batch.policy_batches.items()
                    if pid in self.policy_map
                },
                batch.env_steps(),
            )
        self._steps_sampled += batch.count
        [policy] = self.policy_map.values()
        return policy.postprocess_trajectory(batch)

    # -- learning and weights -------------------------------------------
    def learn_on_batch(self, samples: SampleBatch | MultiAgentBatch) -> dict[str, Any]:
        """Learn on the rows of every trainable policy; ``{policy_id: learn result}``
        (a ``SampleBatch`` is the default policy's)."""
        return {
            pid: self.policy_map[pid].learn_on_batch(batch)
            for pid, batch in self.trainable_batches(samples).items()
        }

    def compute_gradients(
        self, samples: SampleBatch | MultiAgentBatch
    ) -> tuple[dict[str, list], dict[str, Any]]:
        """``({policy_id: gradients}, {policy_id: learn result})`` for every trainable
        policy with rows in ``samples``."""
        gradients, results = {}, {}
        for pid, batch in self.trainable_batches(samples).items():
            gradients[pid], results[pid] = self.policy_map[pid].compute_gradients(batch)
        return gradients, results

    def apply_gradients(self, gradients: dict[str, list]) -> None:
        """Apply ``{policy_id: gradients}`` (from ``compute_gradients``)."""
        for pid, grads in gradients.items():
            self.policy_map[pid].apply_gradients(grads)

    def trainable_batches(self, samples: SampleBatch | MultiAgentBatch) -> dict[str, SampleBatch]:
        """The rows of ``samples`` per policy in ``policies_to_train`` (a ``SampleBatch``
        belongs to the default policy)."""
        policy_batches = as_policy_batches(samples)
        return {
            pid: batch
            for pid, batch in policy_batches.items()
            if pid in self.policies_to_train and batch.count > 0
        }

    def sample_with_priorities(
        self,
    ) -> tuple[SampleBatch | MultiAgentBatch, dict[str, np.ndarray]]:
        """Sample a fragment and compute its rows' first replay priorities: per trainable
        policy, ``|td_error|`` of its loss's per-row outputs (``compute_per_row``),
        with the weights this worker holds (Ape-X's ``worker_side_prioritization``)."""
        batch = self.sample()
        priorities = {}
        for pid, rows in self.trainable_batches(batch).items():
            per_row = self.policy_map[pid].compute_per_row(rows)
            if "td_error" not in per_row:
                raise ValueError(
                    f"worker_side_prioritization needs the loss of policy {pid!r} to return a "
                    f"per-row 'td_error' (LossOutput.per_row); it returned {sorted(per_row)}"
                )
            priorities[pid] = np.abs(per_row["td_error"])
        return batch, priorities

    def sample_and_compute_gradients(self) -> tuple[dict[str, list], dict[str, Any], int]:
        """Sample a fragment and return (gradients, learn results, steps sampled)."""
        batch = self.sample()
        gradients, info = self.compute_gradients(batch)
        return gradients, info, count_steps(batch, self.count_steps_by)

    def get_weights(self, policies: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """``{policy_id: weights}`` of every policy (or of ``policies``)."""
        pids = self.policy_map if policies is None else policies
        return {pid: self.policy_map[pid].get_weights() for pid in pids}

    def set_weights(
        self,
        weights: dict[str, dict[str, np.ndarray]],
        global_vars: dict[str, Any] | None = None,
    ) -> None:
        for pid, w in weights.items():
            self.get_policy(pid).set_weights(w)
        if global_vars:
            self.set_global_vars(global_vars)

    def set_global_vars(self, global_vars: dict[str, Any]) -> None:
        self.global_timestep = int(global_vars.get("timestep", self.global_timestep))
        for policy in self.policy_map.values():
            policy.on_global_var_update(global_vars)

    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Policy:
        """The policy ``policy_id`` (the only one, when the worker has one policy and
        ``policy_id`` is left as ``"default_policy"``)."""
        policy = self.policy_map.get(policy_id)
        if policy is None:
            if policy_id == DEFAULT_POLICY_ID and len(self.policy_map) == 1:
                return next(iter(self.policy_map.values()))
            raise KeyError(
                f"this worker has no policy {policy_id!r}; its policies are "
                f"{sorted(self.policy_map)}"
            )
        return policy

    def foreach_policy(self, func: Callable[..., Any], **kwargs: Any) -> list[Any]:
        """``func(policy, policy_id, **kwargs)`` for each policy."""
        return [func(policy, pid, **kwargs) for pid, policy in self.policy_map.items()]

    def foreach_trainable_policy(self, func: Callable[..., Any], **kwargs: Any) -> list[Any]:
        """``func(policy, policy_id, **kwargs)`` for each policy in ``policies_to_train``."""
        return [func(self.policy_map[pid], pid, **kwargs) for pid in self.policies_to_train]

    def apply(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(self, *args, **kwargs)`` on this worker."""
        return func(self, *args, **kwargs)

    def get_metrics(self) -> dict[str, Any]:
        """Episodes completed since the last call: returns (summed over agents),
        lengths, and per policy the returns of the agents it played; and the sub-envs
        rebuilt after a failure since the last call (``num_env_restarts``)."""
        sampler = self._sampler
        restarts = 0 if sampler is None else sampler.pop_env_restarts()
        if sampler is None:
            returns, lengths, per_policy = np.zeros(0), np.zeros(0, dtype=np.int64), {}
        elif self.multi_agent:
            returns, lengths, per_policy = sampler.pop_metrics()
        else:
            returns, lengths = sampler.episodes.pop_completed()
            per_policy = {}
        return {
            "episode_returns": returns,
            "episode_lengths": lengths,
            "policy_returns": per_policy,
            "num_env_restarts": restarts,
            "worker_index": self.worker_index,
        }

    def ping(self) -> int:
        return self.worker_index

    # -- observation filters ---------------------------------------------
    def filter_layout(self) -> WelfordMerge:
        """How ``pop_filter_updates`` lays out this worker's filters (the policies'
        that filter, in policy-map order), as the reduction that merges two such arrays."""
        return WelfordMerge([f.size for f in self._active_filters().values()])

    def pop_filter_updates(self) -> np.ndarray:
        """The statistics of the observations each filter saw since the last call, one
        block per filter (``filter_layout()``); the filters' buffers start afresh."""
        updates = [f.pop_update() for f in self._active_filters().values()]
        return np.concatenate(updates) if updates else np.zeros(0)

    def merge_filter_updates(self, updates: np.ndarray) -> None:
        """Add other workers' observations (``pop_filter_updates()`` arrays, merged) to
        this worker's filters."""
        filters = self._active_filters().values()
        for obs_filter, block in zip(filters, self.filter_layout().blocks(updates)):
            obs_filter.merge_update(block)

    def get_filter_states(self) -> dict[str, dict[str, Any]]:
        """Each filter's running statistics, by policy id: what ``sync_filters`` takes."""
        return {pid: f.running.get_state() for pid, f in self._active_filters().items()}

    def sync_filters(self, states: dict[str, dict[str, Any]]) -> None:
        """Take the driver's merged statistics, keeping on top the observations seen
        since the last ``pop_filter_updates()``."""
        filters = self._active_filters()
        for pid, running in states.items():
            filters[pid].sync(running)

    def _active_filters(self) -> dict[str, MeanStdFilter]:
        return {
            pid: policy.observation_filter
            for pid, policy in self.policy_map.items()
            if policy.observation_filter.active
        }

    # -- state for checkpoints -------------------------------------------
    def get_state(self, policy_state: str = "full") -> dict[str, Any]:
        """What a checkpoint needs to continue this worker's sampling exactly.

        Args:
            policy_state: "full" (each policy's ``get_state()``), "no_weights"
                (without weights and optimizer state: a remote worker's, which
                gets the driver's weights before it samples again) or "none".
        """
        if policy_state not in ("full", "no_weights", "none"):
            raise ValueError(
                f"policy_state={policy_state!r}; expected 'full', 'no_weights' or 'none'"
            )
        sampler = self._sampler
        started = sampler is not None and sampler.started
        state: dict[str, Any] = {
            "steps_sampled": self._steps_sampled,
            "next_eps_id": sampler.next_episode_id if sampler is not None else self._next_eps_id,
            "global_timestep": self.global_timestep,
            "started": started,
        }
        if policy_state != "none":
            state["policies"] = {
                pid: _policy_state(policy, policy_state) for pid, policy in self.policy_map.items()
            }
        if self._reader is not None:
            state["input"] = self._reader.get_state()
        if started:
            from hpcrl.io.env_state import snapshot_env

            state["sampler"] = sampler.get_state()
            state["env"] = snapshot_env(_EnvCopies(self.env) if self.multi_agent else self.env)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()``; this worker must be built as the saved one was.

        The env continues its episodes exactly where ``hpcrl.io.env_state`` can
        snapshot it; otherwise (the state says why) it starts fresh episodes,
        seeded from the worker's seed and its step count.
        """
        for pid, policy_state in state.get("policies", {}).items():
            self.policy_map[pid].set_state(policy_state)
        self._steps_sampled = int(state["steps_sampled"])
        self._next_eps_id = int(state["next_eps_id"])
        self.global_timestep = int(state.get("global_timestep", self.global_timestep))
        if self._reader is not None and "input" in state:
            self._reader.set_state(state["input"])
        self._sampler = None
        if not state["started"]:
            return
        from hpcrl.io.env_state import restore_env

        sampler = self._make_sampler()
        # The restored policies' filters do not count this reset: its observations are
        # replaced by the saved ones, or counted by the fresh start below.
        sampler.start(self.seed, update_filter=False)
        env = _EnvCopies(self.env) if self.multi_agent else self.env
        if restore_env(env, state["env"]):
            sampler.set_state(state["sampler"])
            sampler.next_episode_id = self._next_eps_id
            return
        warnings.warn(
            f"rollout worker {self.worker_index}: the env state was not restored "
            f"({state['env'].get('reason', 'the env is built differently')}); its episodes "
            "start afresh",
            stacklevel=2,
        )
        fresh_seed = None if self.seed is None else self.seed + self._steps_sampled
        sampler = self._make_sampler(fresh_seed)
        sampler.next_episode_id = self._next_eps_id
        sampler.start(fresh_seed)

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.close()
        if self._env_guard is not None:
            self._env_guard.close()  # all but copies given up after a timeout
            return
        for env in self.env if isinstance(self.env, list) else [self.env]:
            if env is not None:
                env.close()


class _EnvCopies:
    """The env copies of a multi-agent worker, as one object to snapshot."""

    def __init__(self, envs: list[Any]) -> None:
        self.envs = envs


def as_policy_batches(samples: SampleBatch | MultiAgentBatch) -> dict[str, SampleBatch]:
    """``{policy_id: SampleBatch}`` of a batch (a ``SampleBatch`` is the default policy's)."""
    if isinstance(samples, MultiAgentBatch):
        return samples.policy_batches
    return {DEFAULT_POLICY_ID: samples}


def count_steps(samples: SampleBatch | MultiAgentBatch, count_steps_by: str) -> int:
    """Env steps, or agent steps (rows over all policies), in ``samples``."""
    if isinstance(samples, MultiAgentBatch):
        return samples.agent_steps() if count_steps_by == "agent_steps" else samples.env_steps()
    return samples.count


def _keyed_by_agent(space: gym.Space, env: Any) -> bool:
    agents = set(env.get_agent_ids())
    return isinstance(space, gym.spaces.Dict) and bool(agents) and set(space.spaces) <= agents


def _policy_state(policy: Policy, which: str) -> dict[str, Any]:
    if which == "no_weights":
        state = policy.get_state(include_optimizer=False)
        state.pop("weights", None)
        return state
    return policy.get_state()
