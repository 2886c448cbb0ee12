"""Sampling a gymnasium vector env with one policy: one batched forward pass per step.

gymnasium's vector envs spend one step of an env on its reset after an
episode ends (next-step autoreset); that step is not a transition. A vector
env that declares another autoreset mode is refused. In
``truncate_episodes`` mode the sampler steps until every env has a full
fragment, so an env that reset less often returns a few more rows (one per
reset of the slowest env). Nothing is held over to the next ``sample()``:
every row was sampled with the weights of this call. ``complete_episodes``
holds the unfinished episodes over, as it must.

Every observation the envs return (at reset and after each step) goes through
the policy's observation filter once, for all envs together, before the
policy sees it; the batch's ``obs`` and ``new_obs`` hold the filtered ones. A
``NoFilter`` is skipped.

A sub-env that fails (``hpcrl.env.failures``) stops sampling with an
``EnvError`` naming it, or, in a ``GuardedVectorEnv`` with
``recreate_failed_envs``, is rebuilt: the episode it was playing is dropped.
Its return is not counted, and its rows still held here are discarded rather
than cut off as truncated: the rows before the failure are real transitions,
but whatever went wrong may have started before the exception, and a learner
must not bootstrap from, or replay, a state the env could not go on from.
(Rows of that episode returned by an earlier ``sample()`` in
``truncate_episodes`` mode were cut there as any fragment is.) The rebuilt
copy starts a new episode on the next step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.env.failures import CallFailure, EnvError, FailurePolicy, failed_sub_env
from hpcrl.env.guarded_vector_env import GuardedVectorEnv
from hpcrl.evaluation.fragment_buffer import FragmentBuffer
from hpcrl.evaluation.metrics import EpisodeStats
from hpcrl.evaluation.reward_clipping import RewardClip
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch


class _NoInfo(dict):
    """The info of a row whose env returned none: an empty dict that cannot be
    changed, so one instance is shared by every such row (and pickles)."""

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("this row has no env info; the empty info dict is read-only")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _read_only


NO_INFO = _NoInfo()


def check_next_step_autoreset(env: gym.vector.VectorEnv) -> None:
    """Raise ValueError when ``env`` declares an autoreset mode other than next-step (the
    only one gymnasium 1.0 has, and the default since)."""
    mode = env.metadata.get("autoreset_mode")
    if mode is not None and getattr(mode, "value", mode) != "NextStep":
        raise ValueError(
            f"the vector env {type(env).__name__} resets its envs in autoreset mode {mode!r}; "
            "hpcrl's sampler needs next-step autoreset (gymnasium's default): make it with "
            "autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP"
        )


class VectorEnvSampler:
    """Steps ``env`` (a gymnasium VectorEnv) with ``policy``; ``sample()`` returns one
    fragment of every env, not postprocessed.

    Args:
        env: the vector env.
        policy: the policy acting for every env.
        fragment_length: steps per env in one ``sample()``.
        complete_episodes: emit whole episodes only.
        seed: seed of the first reset (None: random).
        clip_actions: clip Box actions to the space's bounds before stepping.
        first_episode_id: ``eps_id`` of the first episode; later ones count up.
        clip_rewards: clips the rewards of the batch (``reward_clipper``); the episode
            metrics keep the env's own. None: no clipping.
        update_filter: count the observations in the policy's observation filter
            (False: normalise with it as it is, e.g. to evaluate).
        failures: names the worker and env in an ``EnvError`` (a ``GuardedVectorEnv``
            holds its own, which decides whether failing copies are rebuilt).
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        policy: Policy,
        fragment_length: int,
        complete_episodes: bool,
        seed: int | None,
        clip_actions: bool,
        first_episode_id: int,
        clip_rewards: RewardClip | None = None,
        update_filter: bool = True,
        failures: FailurePolicy | None = None,
    ) -> None:
        check_next_step_autoreset(env)
        self.env = env
        self._failures = failures or FailurePolicy()
        self._guarded = isinstance(env, GuardedVectorEnv)
        self.policy = policy
        self.num_envs = env.num_envs
        self.fragment_length = fragment_length
        self.complete_episodes = complete_episodes
        self.seed = seed
        self.next_episode_id = first_episode_id
        self.steps_sampled = 0
        self.started = False
        self.episodes = EpisodeStats(self.num_envs)
        self._buffer = FragmentBuffer(self.num_envs, fragment_length + 8)
        space = env.single_action_space
        self._clip = (
            (space.low, space.high) if clip_actions and isinstance(space, gym.spaces.Box) else None
        )
        self._clip_rewards = clip_rewards
        obs_filter = policy.observation_filter
        self._filter = obs_filter if obs_filter.active else None
        self._update_filter = update_filter

    def sample(self) -> SampleBatch:
        if not self.started:
            self.start(self.seed)
        target = self.fragment_length
        if self.complete_episodes:
            while self._completed_rows < target * self.num_envs:
                self._step()
        else:
            # A step adds at most one row per env: take the steps the emptiest env
            # surely needs, then count again.
            while (missing := target - int(self._rows_per_env.min())) > 0:
                for _ in range(missing):
                    self._step()
                self._rows_per_env = self._buffer.valid[: self._buffer.size].sum(axis=0)
        emit = self._rows_to_emit()
        columns = self._buffer.take(emit)
        self._rows_per_env = self._buffer.valid[: self._buffer.size].sum(axis=0)
        self._completed_rows = 0
        batch = SampleBatch(columns)
        batch[SampleBatch.AGENT_INDEX] = np.zeros(batch.count, dtype=np.int64)
        self.steps_sampled += batch.count
        return batch

    def start(self, seed: int | None = None, update_filter: bool | None = None) -> None:
        """Reset every env and start fresh episodes. ``update_filter=False``: the
        observations of this reset do not count in the observation filter (a restore
        replaces them)."""
        try:
            obs, _ = self.env.reset(seed=seed)
        except EnvError:
            raise
        except Exception as err:
            raise self._env_error(err, "reset", None) from None
        if self._filter is not None:
            update = self._update_filter if update_filter is None else update_filter
            obs = self._filter(obs, update=update)
        n = self.num_envs
        initial = [np.asarray(s) for s in self.policy.get_initial_state()]
        self._obs = obs
        self._state = [np.repeat(s[None], n, axis=0) for s in initial]
        self._initial_state = initial
        self._eps_id = self._new_eps_ids(n)
        self._t = np.zeros(n, dtype=np.int64)
        self._resetting = np.zeros(n, dtype=bool)
        self._rows_per_env = np.zeros(n, dtype=np.int64)
        self._completed_rows = 0
        self._since_done = np.zeros(n, dtype=np.int64)
        self._env_ids = np.arange(n, dtype=np.int64)
        self._no_infos = np.full(n, NO_INFO, dtype=object)
        self._no_infos.flags.writeable = False
        self._any_resetting = False
        # A recurrent policy also sees the previous action and reward (zero at an
        # episode's start); they are stored as the rows' prev_actions / prev_rewards.
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        if self.policy.is_recurrent():
            space = self.env.single_action_space
            self._prev = (
                np.zeros((n, *space.shape), dtype=space.dtype),
                np.zeros(n, dtype=np.float32),
            )
        self.started = True

    def _step(self) -> None:
        prev = self._prev
        actions, state_out, extra = self.policy.compute_actions(
            self._obs,
            self._state,
            prev_action_batch=None if prev is None else prev[0],
            prev_reward_batch=None if prev is None else prev[1],
            timestep=self.steps_sampled,
        )
        if not isinstance(actions, np.ndarray):
            actions = np.asarray(actions)  # a from-scratch policy may return a list
        env_actions = actions if self._clip is None else np.clip(actions, *self._clip)
        try:
            next_obs, env_rewards, terminated, truncated, infos = self.env.step(env_actions)
        except EnvError:
            raise
        except Exception as err:
            raise self._env_error(err, "step", self._t) from None
        if self._filter is not None:
            next_obs = self._filter(next_obs, update=self._update_filter)
        # The policy learns from the clipped rewards; the metrics count the env's own.
        rewards = env_rewards if self._clip_rewards is None else self._clip_rewards(env_rewards)
        valid = ~self._resetting
        # Copies rebuilt in this step (a GuardedVectorEnv): no transition; the episode
        # a copy was playing (unless it was only starting one) is dropped.
        failed = self.env.failed if self._guarded and self.env.any_failed else None
        if failed is not None:
            valid = valid & ~failed
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
        if prev is not None:
            step[SampleBatch.PREV_ACTIONS], step[SampleBatch.PREV_REWARDS] = prev
        step.update(extra)
        self._buffer.add(step, valid)

        done = (terminated | truncated) & valid
        self.episodes.step(env_rewards, valid, done)
        any_done = bool(done.any())
        if self.complete_episodes:
            self._since_done += valid
            if any_done:
                self._completed_rows += int(self._since_done[done].sum())
                self._since_done[done] = 0

        if failed is not None:
            self._drop_episodes(failed & ~self._resetting)

        # Envs that were resetting this step, or rebuilt in it, start a new episode
        # from next_obs. The buffer holds copies, so _t and _eps_id can change in place.
        self._obs = next_obs
        self._state = list(state_out)
        self._t += 1
        if self._any_resetting or failed is not None:
            started = self._resetting if failed is None else self._resetting | failed
            self._t[started] = 0
            self._eps_id[started] = self._new_eps_ids(int(started.sum()))
            for s, init in zip(self._state, self._initial_state):
                s[started] = init
        if prev is not None:
            self._prev = (np.array(actions), np.asarray(rewards, dtype=np.float32).copy())
            self._prev[0][self._resetting] = 0
            self._prev[1][self._resetting] = 0.0
            if failed is not None:
                self._prev[0][failed] = 0
                self._prev[1][failed] = 0.0
        self._resetting = done
        self._any_resetting = any_done

    def _drop_episodes(self, envs: np.ndarray) -> None:
        """Forget the running episodes of ``envs`` (a mask): their rows held in the
        buffer, their return and length so far."""
        self._buffer.invalidate(SampleBatch.EPS_ID, envs, self._eps_id)
        self.episodes.drop(envs)
        self._since_done[envs] = 0

    def _env_error(self, err: Exception, method: str, steps: np.ndarray | None) -> EnvError:
        """The ``EnvError`` for ``err``, raised by ``self.env`` (not a GuardedVectorEnv)."""
        index, env_traceback = failed_sub_env(self.env, err)
        if index is not None and method == "step" and self._resetting[index]:
            method = "reset"  # its autoreset
        count = None if index is None or steps is None else int(steps[index])
        which = None
        if index is None:
            which = (
                f"a sub-env ({type(self.env).__name__} steps its {self.num_envs} copies "
                "together and does not say which one failed)"
            )
        failure = CallFailure.of(err, env_traceback)
        return self._failures.error(index, method, failure, steps=count, which=which)

    def pop_env_restarts(self) -> int:
        """Copies rebuilt since the last call (``recreate_failed_envs``)."""
        return self.env.pop_restarts() if self._guarded else 0

    def _rows_to_emit(self) -> np.ndarray:
        valid = self._buffer.valid[: self._buffer.size]
        if not self.complete_episodes:
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
                if rows[i] is NO_INFO:
                    rows[i] = {}
                rows[i][key] = values[i]
        return rows

    def _new_eps_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_episode_id, self.next_episode_id + n, dtype=np.int64)
        self.next_episode_id += n
        return ids

    def get_state(self) -> dict[str, Any]:
        """Running episodes and held-over rows (the env's own state is the worker's)."""
        return {
            "obs": self._obs,
            "state": list(self._state),
            "eps_id": self._eps_id,
            "t": self._t,
            "resetting": self._resetting,
            "any_resetting": self._any_resetting,
            "prev": None if self._prev is None else list(self._prev),
            "rows_per_env": self._rows_per_env,
            "completed_rows": self._completed_rows,
            "since_done": self._since_done,
            "episodes": self.episodes.get_state(),
            "buffer": self._buffer.get_state(),
        }

    def set_state(self, sampler: dict[str, Any]) -> None:
        self._obs = sampler["obs"]
        self._state = list(sampler["state"])
        self._eps_id = sampler["eps_id"]
        self._t = sampler["t"]
        self._resetting = sampler["resetting"]
        self._any_resetting = bool(sampler["any_resetting"])
        prev = sampler.get("prev")
        self._prev = None if prev is None else (np.asarray(prev[0]), np.asarray(prev[1]))
        self._rows_per_env = sampler["rows_per_env"]
        self._completed_rows = int(sampler["completed_rows"])
        self._since_done = sampler["since_done"]
        self.episodes.set_state(sampler["episodes"])
        self._buffer.set_state(sampler["buffer"])
