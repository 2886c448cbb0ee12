"""RolloutWorker: steps a vector of envs with a policy and returns SampleBatches."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.env.registry import EnvContext, make_vector_env
from hpcrl.evaluation.fragment_buffer import FragmentBuffer
from hpcrl.evaluation.metrics import EpisodeStats
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID, SampleBatch

BATCH_MODES = ("truncate_episodes", "complete_episodes")


class _NoInfo(dict):
    """The info of a row whose env returned none: an empty dict that cannot be
    changed, so one instance is shared by every such row (and pickles)."""

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("this row has no env info; the empty info dict is read-only")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _read_only


_NO_INFO = _NoInfo()

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
}


class RolloutWorker:
    """Owns a vector of envs and a policy; ``sample()`` returns experience.

    One ``sample()`` holds at least ``rollout_fragment_length`` steps of each
    of the ``num_envs_per_worker`` envs (``truncate_episodes``: episodes are
    cut at the fragment's end and bootstrapped), or at least that many steps
    per env in whole episodes (``complete_episodes``). Every vector step runs
    one batched ``compute_actions`` for all envs.

    gymnasium's vector envs spend one step of an env on its reset after an
    episode ends (next-step autoreset); that step is not a transition. In
    ``truncate_episodes`` mode the worker steps until every env has a full
    fragment, so an env that reset less often returns a few more rows (one
    per reset of the slowest env). Nothing is held over to the next
    ``sample()``: every row was sampled with the weights of this call.
    ``complete_episodes`` holds the unfinished episodes over, as it must.

    The batch is postprocessed (``policy.postprocess_trajectory``) once, over
    all its trajectories, before it is returned.

    With ``config["output"] = DIR`` every batch ``sample()`` returns is also
    appended to this worker's own HDF5 file in ``DIR`` (``hpcrl.io.BatchWriter``).
    With ``config["input"]`` (a directory or list of such files) the worker
    has no env: ``sample()`` returns the next recorded batch of its share
    (``hpcrl.io.BatchReader``), postprocessed by this worker's policy, and the
    spaces come from the files.

    ``get_state()``/``set_state()`` carry everything a checkpoint needs to
    continue sampling exactly: episode ids, counters, running episode
    returns, held-over rows, the env's state (``hpcrl.io.env_state``) and the
    policies' state.

    Args:
        env: gymnasium id, name given to ``register_env``, or a creator
            ``f(env_config) -> Env | VectorEnv`` (None with ``config["input"]``).
        policy: a ``Policy`` subclass, built with this worker's spaces and ``config``.
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
        env: str | Callable[..., Any],
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
        self._reader = None
        self.env = None
        if self.config["input"]:
            from hpcrl.io.batch_reader import BatchReader

            self._reader = BatchReader(
                self.config["input"], worker_index=worker_index, num_workers=num_workers
            )
            self.observation_space, self.action_space = _recorded_spaces(self._reader)
        else:
            context = EnvContext(self.config["env_config"], worker_index, 0, num_workers)
            self.env = make_vector_env(
                env, self.num_envs, context, self.config["vectorization_mode"]
            )
            self.observation_space = self.env.single_observation_space
            self.action_space = self.env.single_action_space
        policy_config = {**self.config, "seed": self.seed, "worker_index": worker_index}
        self.policy_map: dict[str, Policy] = {
            DEFAULT_POLICY_ID: policy(self.observation_space, self.action_space, policy_config)
        }
        self._started = False
        self._buffer = FragmentBuffer(self.num_envs, self.fragment_length + 8)
        self._episodes = EpisodeStats(self.num_envs)
        self._next_eps_id = (worker_index << 40) + 1
        self._steps_sampled = 0
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

    # -- sampling --------------------------------------------------------
    def sample(self) -> SampleBatch:
        """Collect one fragment of experience, postprocessed (or read the next
        recorded batch, with ``config["input"]``)."""
        policy = self.policy_map[DEFAULT_POLICY_ID]
        if self._reader is not None:
            return self._read_input(policy)
        if not self._started:
            self._start_episodes(policy, self.seed)
        target = self.fragment_length
        complete = self._complete
        if complete:
            while self._completed_rows < target * self.num_envs:
                self._step(policy)
        else:
            # A step adds at most one row per env: take the steps the emptiest env
            # surely needs, then count again.
            while (missing := target - int(self._rows_per_env.min())) > 0:
                for _ in range(missing):
                    self._step(policy)
                self._rows_per_env = self._buffer.valid[: self._buffer.size].sum(axis=0)
        emit = self._rows_to_emit(complete)
        columns = self._buffer.take(emit)
        self._rows_per_env = self._buffer.valid[: self._buffer.size].sum(axis=0)
        self._completed_rows = 0
        batch = SampleBatch(columns)
        batch[SampleBatch.AGENT_INDEX] = np.zeros(batch.count, dtype=np.int64)
        self._steps_sampled += batch.count
        batch = policy.postprocess_trajectory(batch)
        if self._writer is not None:
            self._writer.write(batch)
        return batch

    def _read_input(self, policy: Policy) -> SampleBatch:
        batch = self._reader.next()
        if not isinstance(batch, SampleBatch):
            raise ValueError(
                f"the input holds {type(batch).__name__}es; a RolloutWorker reads SampleBatches "
                "(files written by single-policy workers)"
            )
        self._steps_sampled += batch.count
        return policy.postprocess_trajectory(batch)

    def _start_episodes(self, policy: Policy, seed: int | None = None) -> None:
        obs, _ = self.env.reset(seed=seed)
        n = self.num_envs
        self._obs = obs
        self._state = [
            np.repeat(np.asarray(s)[None], n, axis=0) for s in policy.get_initial_state()
        ]
        self._initial_state = [np.asarray(s) for s in policy.get_initial_state()]
        self._eps_id = self._new_eps_ids(n)
        self._t = np.zeros(n, dtype=np.int64)
        self._resetting = np.zeros(n, dtype=bool)
        self._rows_per_env = np.zeros(n, dtype=np.int64)
        self._completed_rows = 0
        self._since_done = np.zeros(n, dtype=np.int64)
        self._env_ids = np.arange(n, dtype=np.int64)
        self._no_infos = np.full(n, _NO_INFO, dtype=object)
        self._no_infos.flags.writeable = False
        self._any_resetting = False
        if isinstance(self.action_space, gym.spaces.Box) and self.config.get("clip_actions", True):
            self._clip = (self.action_space.low, self.action_space.high)
        else:
            self._clip = None
        self._started = True

    def _step(self, policy: Policy) -> None:
        actions, state_out, extra = policy.compute_actions(
            self._obs, self._state, timestep=self._steps_sampled
        )
        env_actions = actions if self._clip is None else np.clip(actions, *self._clip)
        next_obs, rewards, terminated, truncated, infos = self.env.step(env_actions)
        valid = ~self._resetting
        step = {
            SampleBatch.OBS: self._obs,
            SampleBatch.ACTIONS: actions,
            SampleBatch.REWARDS: rewards,
            SampleBatch.TERMINATEDS: terminated,
            SampleBatch.TRUNCATEDS: truncated,
            SampleBatch.NEXT_OBS: next_obs,
            SampleBatch.T: self._t,
            SampleBatch.EPS_ID: self._eps_id,
            SampleBatch.ENV_ID: self._env_ids,
            SampleBatch.INFOS: self._split_infos(infos),
        }
        for i, (s_in, s_out) in enumerate(zip(self._state, state_out)):
            step[f"state_in_{i}"] = s_in
            step[f"state_out_{i}"] = s_out
        step.update(extra)
        self._buffer.add(step, valid)

        done = (terminated | truncated) & valid
        self._episodes.step(rewards, valid, done)
        any_done = bool(done.any())
        if self._complete:
            self._since_done += valid
            if any_done:
                self._completed_rows += int(self._since_done[done].sum())
                self._since_done[done] = 0

        # Envs that were resetting this step start a new episode from next_obs.
        # The buffer holds copies, so _t and _eps_id can change in place.
        self._obs = next_obs
        self._state = list(state_out)
        self._t += 1
        if self._any_resetting:
            started = self._resetting
            self._t[started] = 0
            self._eps_id[started] = self._new_eps_ids(int(started.sum()))
            for s, init in zip(self._state, self._initial_state):
                s[started] = init
        self._resetting = done
        self._any_resetting = any_done

    def _rows_to_emit(self, complete: bool) -> np.ndarray:
        valid = self._buffer.valid[: self._buffer.size]
        if not complete:
            return valid
        dones = (
            self._buffer.columns[SampleBatch.TERMINATEDS][: self._buffer.size]
            | (self._buffer.columns[SampleBatch.TRUNCATEDS][: self._buffer.size])
        )
        ended = dones & valid
        # Per env, emit every row up to and including its last episode end.
        steps = np.arange(len(valid))[:, None]
        last_end = np.where(ended, steps, -1).max(axis=0)
        return valid & (steps <= last_end[None, :])

    def _split_infos(self, infos: dict[str, Any]) -> np.ndarray:
        if not infos:
            return self._no_infos
        rows = self._no_infos.copy()
        for key, values in infos.items():
            if key.startswith("_"):
                continue
            present = infos.get(f"_{key}", np.ones(self.num_envs, dtype=bool))
            for i in np.flatnonzero(present):
                if rows[i] is _NO_INFO:
                    rows[i] = {}
                rows[i][key] = values[i]
        return rows

    def _new_eps_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_eps_id, self._next_eps_id + n, dtype=np.int64)
        self._next_eps_id += n
        return ids

    # -- learning and weights -------------------------------------------
    def learn_on_batch(self, samples: SampleBatch) -> dict[str, Any]:
        return self.policy_map[DEFAULT_POLICY_ID].learn_on_batch(samples)

    def compute_gradients(self, samples: SampleBatch) -> tuple[list, dict[str, Any]]:
        return self.policy_map[DEFAULT_POLICY_ID].compute_gradients(samples)

    def apply_gradients(self, gradients: list) -> None:
        self.policy_map[DEFAULT_POLICY_ID].apply_gradients(gradients)

    def sample_and_compute_gradients(self) -> tuple[list, dict[str, Any], int]:
        """Sample a fragment and return (gradients, learner stats, number of rows)."""
        batch = self.sample()
        gradients, info = self.compute_gradients(batch)
        return gradients, info, batch.count

    def get_weights(self) -> dict[str, dict[str, np.ndarray]]:
        return {pid: p.get_weights() for pid, p in self.policy_map.items()}

    def set_weights(
        self,
        weights: dict[str, dict[str, np.ndarray]],
        global_vars: dict[str, Any] | None = None,
    ) -> None:
        for pid, w in weights.items():
            self.policy_map[pid].set_weights(w)
        if global_vars:
            self.set_global_vars(global_vars)

    def set_global_vars(self, global_vars: dict[str, Any]) -> None:
        for policy in self.policy_map.values():
            policy.on_global_var_update(global_vars)

    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Policy:
        return self.policy_map[policy_id]

    def foreach_policy(self, func: Callable[..., Any], **kwargs: Any) -> list[Any]:
        """``func(policy, policy_id, **kwargs)`` for each policy."""
        return [func(policy, pid, **kwargs) for pid, policy in self.policy_map.items()]

    def apply(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(self, *args, **kwargs)`` on this worker."""
        return func(self, *args, **kwargs)

    def get_metrics(self) -> dict[str, Any]:
        """Episodes completed since the last call: returns, lengths; and steps sampled."""
        returns, lengths = self._episodes.pop_completed()
        return {
            "episode_returns": returns,
            "episode_lengths": lengths,
            "worker_index": self.worker_index,
        }

    def ping(self) -> int:
        return self.worker_index

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
        state: dict[str, Any] = {
            "steps_sampled": self._steps_sampled,
            "next_eps_id": self._next_eps_id,
            "started": self._started,
        }
        if policy_state != "none":
            state["policies"] = {
                pid: _policy_state(policy, policy_state) for pid, policy in self.policy_map.items()
            }
        if self._reader is not None:
            state["input"] = self._reader.get_state()
        if self._started:
            from hpcrl.io.env_state import snapshot_env

            state["sampler"] = self._sampler_state()
            state["env"] = snapshot_env(self.env)
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
        if self._reader is not None and "input" in state:
            self._reader.set_state(state["input"])
        self._started = False
        if not state["started"]:
            return
        from hpcrl.io.env_state import restore_env

        policy = self.policy_map[DEFAULT_POLICY_ID]
        self._start_episodes(policy, self.seed)
        if restore_env(self.env, state["env"]):
            self._set_sampler_state(state["sampler"])
            self._next_eps_id = int(state["next_eps_id"])
            return
        warnings.warn(
            f"rollout worker {self.worker_index}: the env state was not restored "
            f"({state['env'].get('reason', 'the env is built differently')}); its episodes "
            "start afresh",
            stacklevel=2,
        )
        self._next_eps_id = int(state["next_eps_id"])
        fresh_seed = None if self.seed is None else self.seed + self._steps_sampled
        self._start_episodes(policy, fresh_seed)

    def _sampler_state(self) -> dict[str, Any]:
        return {
            "obs": self._obs,
            "state": list(self._state),
            "eps_id": self._eps_id,
            "t": self._t,
            "resetting": self._resetting,
            "any_resetting": self._any_resetting,
            "rows_per_env": self._rows_per_env,
            "completed_rows": self._completed_rows,
            "since_done": self._since_done,
            "episodes": self._episodes.get_state(),
            "buffer": self._buffer.get_state(),
        }

    def _set_sampler_state(self, sampler: dict[str, Any]) -> None:
        self._obs = sampler["obs"]
        self._state = list(sampler["state"])
        self._eps_id = sampler["eps_id"]
        self._t = sampler["t"]
        self._resetting = sampler["resetting"]
        self._any_resetting = bool(sampler["any_resetting"])
        self._rows_per_env = sampler["rows_per_env"]
        self._completed_rows = int(sampler["completed_rows"])
        self._since_done = sampler["since_done"]
        self._episodes.set_state(sampler["episodes"])
        self._buffer.set_state(sampler["buffer"])

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.close()
        if self.env is not None:
            self.env.close()


def _recorded_spaces(reader: Any) -> tuple[gym.Space, gym.Space]:
    spaces = reader.spaces()
    if DEFAULT_POLICY_ID not in spaces:
        raise ValueError(
            f"the input files {reader.files[:3]} record no spaces for policy "
            f"{DEFAULT_POLICY_ID!r} (found {sorted(spaces)}); record them with config['output']"
        )
    return spaces[DEFAULT_POLICY_ID]


def _policy_state(policy: Policy, which: str) -> dict[str, Any]:
    if which == "no_weights":
        state = policy.get_state(include_optimizer=False)
        state.pop("weights", None)
        return state
    return policy.get_state()
