"""RolloutWorker: steps a vector of envs with a policy and returns SampleBatches."""

from __future__ import annotations

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

    Args:
        env: gymnasium id, name given to ``register_env``, or a creator
            ``f(env_config) -> Env | VectorEnv``.
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
        context = EnvContext(self.config["env_config"], worker_index, 0, num_workers)
        self.env = make_vector_env(env, self.num_envs, context, self.config["vectorization_mode"])
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

    # -- sampling --------------------------------------------------------
    def sample(self) -> SampleBatch:
        """Collect one fragment of experience, postprocessed."""
        policy = self.policy_map[DEFAULT_POLICY_ID]
        if not self._started:
            self._start_episodes(policy)
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
        return policy.postprocess_trajectory(batch)

    def _start_episodes(self, policy: Policy) -> None:
        obs, _ = self.env.reset(seed=self.seed)
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

    def stop(self) -> None:
        self.env.close()
