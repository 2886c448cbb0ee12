"""Sampling several copies of a multi-agent env with a map of policies.

Each step groups the agents that have an observation, over every env copy,
by the policy they are mapped to, and runs one batched ``compute_actions``
per policy. The rows of a step are stored as one block per policy; the
values that arrive later (rewards, the next observation, how the agent's
episode ended) are written by row number into per-policy arrays, so no
per-agent Python object holds a trajectory.

A row (one action of one agent) is complete when its agent is observed
again (its next observation is the observation it next acts on) or its
episode ends for it. Rows still waiting for their agent's next observation
(in a turn-based game, an agent that moved and waits for the others) are
held over to the next ``sample()``, as are, with ``complete_episodes``, all
rows of unfinished episodes.

Rewards go to the agent's last action: a reward given to an agent is added
to the row of its most recent action, so rewards that arrive on other
agents' turns are not lost. With ``clip_rewards`` each reward is clipped as
it arrives, in the rows only: the episode returns keep the env's own.

Observation filters: a policy's filter (unless ``NoFilter``) normalises the
observations its agents act on, one call per policy and step over all of
them, and each final observation of an agent's episode, before they are
stored; each counts once in its statistics. A fragment cut while an agent
waits to act stores its next observation filtered without counting it: it
counts when the agent acts on it in the next fragment.

A failing env copy (``hpcrl.env.failures``) stops sampling with an ``EnvError``
naming it; with a ``GuardedEnvs`` that rebuilds failing copies
(``recreate_failed_envs``) the episode the copy was playing is dropped, as the
single-agent sampler drops it (see ``hpcrl.evaluation.sampler``): its returns
are not counted and its rows still held here are discarded; the rebuilt copy
starts a new episode at once. (The env steps it took still count in the
``env_steps`` of a ``truncate_episodes`` batch: they were sampled.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.env.failures import CallFailure, EnvCall, FailurePolicy, GuardedEnvs
from hpcrl.env.multi_agent_env import ALL_AGENTS, MultiAgentEnv
from hpcrl.evaluation.reward_clipping import RewardClip
from hpcrl.evaluation.sampler import NO_INFO
from hpcrl.policy.policy import Policy, stack_observations
from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch

PolicyMappingFn = Callable[..., str]


class Episode:
    """What a policy mapping function learns about the episode of an agent.

    Attributes:
        episode_id: the episode's id (the ``eps_id`` of its rows).
        env_index: which env copy of the worker runs it.
        length: env steps taken so far.
        worker: the RolloutWorker sampling it.
    """

    __slots__ = ("episode_id", "env_index", "length", "worker")

    def __init__(self, episode_id: int, env_index: int, worker: Any) -> None:
        self.episode_id = episode_id
        self.env_index = env_index
        self.length = 0
        self.worker = worker


class _Agent:
    """One agent of one running episode."""

    __slots__ = (
        "pid",
        "index",
        "row",
        "t",
        "state",
        "episode_return",
        "prev_action",
        "prev_reward",
    )

    def __init__(self, pid: str, index: int, state: list[np.ndarray]) -> None:
        self.pid = pid
        self.index = index
        self.row = -1  # its last action's row in the policy's store, while open
        self.t = 0
        self.state = state
        self.episode_return = 0.0
        # For recurrent policies: its last action (None before the first) and the
        # (clipped) reward it got for it.
        self.prev_action: Any = None
        self.prev_reward = 0.0


class _PolicyRows:
    """Rows of one policy since the last emission: column blocks plus per-row arrays."""

    def __init__(self, flatten: Callable[[Any], np.ndarray] | None) -> None:
        self.flatten = flatten
        self.blocks: list[dict[str, np.ndarray]] = []
        self.count = 0
        self._grow_to(256)
        self.final_obs: dict[int, Any] = {}
        self.infos: dict[int, dict] = {}

    def _grow_to(self, capacity: int) -> None:
        old = getattr(self, "rewards", None)
        self.capacity = capacity
        fields = (
            ("rewards", np.float64, 0.0),
            ("terminated", bool, False),
            ("truncated", bool, False),
            ("closed", bool, False),
            ("dropped", bool, False),
            ("next_row", np.int64, -1),
        )
        for name, dtype, fill in fields:
            array = np.full(capacity, fill, dtype=dtype)
            if old is not None:
                array[: self.count] = getattr(self, name)[: self.count]
            setattr(self, name, array)

    def add_block(self, block: dict[str, np.ndarray], n: int) -> int:
        """Store ``n`` rows; returns the first row's number."""
        first = self.count
        if first + n > self.capacity:
            self._grow_to(max(2 * self.capacity, first + n))
        self.blocks.append(block)
        self.count += n
        return first

    def close(self, row: int, obs: Any, terminated: bool, truncated: bool) -> None:
        """End ``row``'s transition with ``obs`` as its next observation (None: its own)."""
        self.closed[row] = True
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        self.final_obs[row] = None if obs is None else obs

    def drop_episode(self, episode_id: int) -> None:
        """Discard the rows of episode ``episode_id`` at the next ``take``."""
        if self.count:
            eps = np.concatenate([b[SampleBatch.EPS_ID] for b in self.blocks])
            self.dropped[: self.count] |= eps == episode_id

    def take(self, emit: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The columns of the rows where ``emit`` is set, with ``new_obs``, rewards and
        flags; the other rows stay, but for dropped ones. Returns (columns, new row
        number of each old row, -1 for rows emitted or dropped)."""
        n = self.count
        emit = emit[:n] & ~self.dropped[:n]
        keys = self.blocks[0].keys()
        columns = {k: np.concatenate([b[k] for b in self.blocks]) for k in keys}
        obs = columns[SampleBatch.OBS]
        next_row = self.next_row[:n]
        source = np.where(next_row >= 0, next_row, np.arange(n))
        new_obs = obs[source]
        for row, final in self.final_obs.items():
            if final is not None:
                new_obs[row] = self.flatten(final) if self.flatten else final
        columns[SampleBatch.NEXT_OBS] = new_obs
        columns[SampleBatch.REWARDS] = self.rewards[:n].astype(np.float32)
        columns[SampleBatch.TERMINATEDS] = self.terminated[:n].copy()
        columns[SampleBatch.TRUNCATEDS] = self.truncated[:n].copy()
        infos = np.full(n, NO_INFO, dtype=object)
        for row, info in self.infos.items():
            infos[row] = info
        columns[SampleBatch.INFOS] = infos
        rows = np.flatnonzero(emit)
        out = {k: v[rows] for k, v in columns.items()}
        keep = np.flatnonzero(~emit & ~self.dropped[:n])
        renumber = np.full(n, -1, dtype=np.int64)
        renumber[keep] = np.arange(len(keep))
        self._keep(columns, keep, renumber)
        return out, renumber

    def _keep(self, columns: dict[str, np.ndarray], keep: np.ndarray, renumber: np.ndarray) -> None:
        derived = (SampleBatch.NEXT_OBS, SampleBatch.REWARDS, SampleBatch.TERMINATEDS)
        derived += (SampleBatch.TRUNCATEDS, SampleBatch.INFOS)
        arrays = {
            name: getattr(self, name)[keep].copy()
            for name in ("rewards", "terminated", "truncated", "closed", "dropped", "next_row")
        }
        final_obs = {int(renumber[r]): o for r, o in self.final_obs.items() if renumber[r] >= 0}
        infos = {int(renumber[r]): i for r, i in self.infos.items() if renumber[r] >= 0}
        self.blocks = []
        self.count = 0
        self._grow_to(max(256, len(keep)))
        if len(keep):
            self.add_block({k: v[keep] for k, v in columns.items() if k not in derived}, len(keep))
            for name, values in arrays.items():
                getattr(self, name)[: len(keep)] = values
            linked = self.next_row[: len(keep)] >= 0
            self.next_row[: len(keep)][linked] = renumber[self.next_row[: len(keep)][linked]]
        self.final_obs = final_obs
        self.infos = infos

    def get_state(self) -> dict[str, Any]:
        n = self.count
        keys = self.blocks[0].keys() if self.blocks else ()
        return {
            "columns": {k: np.concatenate([b[k] for b in self.blocks]) for k in keys},
            "arrays": {
                name: getattr(self, name)[:n].copy()
                for name in ("rewards", "terminated", "truncated", "closed", "dropped", "next_row")
            },
            "final_rows": np.array(sorted(self.final_obs), dtype=np.int64),
            "final_obs": [self.final_obs[r] for r in sorted(self.final_obs)],
            "info_rows": np.array(sorted(self.infos), dtype=np.int64),
            "infos": [self.infos[r] for r in sorted(self.infos)],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        n = len(state["arrays"]["rewards"])
        self.blocks = []
        self.count = 0
        self._grow_to(max(256, n))
        if n:
            self.add_block(dict(state["columns"]), n)
            for name, values in state["arrays"].items():
                getattr(self, name)[:n] = values
        self.final_obs = {int(r): o for r, o in zip(state["final_rows"], state["final_obs"])}
        self.infos = {int(r): i for r, i in zip(state["info_rows"], state["infos"])}


class MultiAgentSampler:
    """Steps ``envs`` (MultiAgentEnvs) with the policies of ``policy_map``.

    Args:
        envs: the env copies of the worker.
        policy_map: policy id -> Policy.
        mapping_fn: ``f(agent_id, episode, worker, **kwargs) -> policy id``
            (or ``f(agent_id)``), called once per agent and episode.
        worker: the RolloutWorker (handed to the mapping function).
        fragment_length: steps per env copy in one ``sample()``.
        complete_episodes: emit whole episodes only.
        count_steps_by: "env_steps" or "agent_steps" (what ``fragment_length`` counts).
        seed: seed of the first reset of env copy ``i`` is ``seed + i``.
        clip_actions: clip Box actions to their bounds before stepping.
        first_episode_id: ``eps_id`` of the first episode; later ones count up.
        clip_rewards: clips the rewards of the rows (``reward_clipper``); the episode
            returns keep the env's own. None: no clipping.
        update_filter: count the observations in the policies' observation filters
            (False: normalise with them as they are, e.g. to evaluate).
        failures: names the worker and env in an ``EnvError``.
        guard: calls the env copies (``envs``, the same list) with each one's failure
            caught, rebuilding failing ones or raising; None: the copies are called
            directly and a failure is an ``EnvError``.
    """

    def __init__(
        self,
        envs: list[MultiAgentEnv],
        policy_map: dict[str, Policy],
        mapping_fn: PolicyMappingFn,
        worker: Any,
        fragment_length: int,
        complete_episodes: bool,
        count_steps_by: str,
        seed: int | None,
        clip_actions: bool,
        first_episode_id: int,
        clip_rewards: RewardClip | None = None,
        update_filter: bool = True,
        *,
        failures: FailurePolicy | None = None,
        guard: GuardedEnvs | None = None,
    ) -> None:
        self.envs = envs
        self._failures = failures or FailurePolicy()
        self._guard = guard
        self.policy_map = policy_map
        self.worker = worker
        self.fragment_length = fragment_length
        self.complete_episodes = complete_episodes
        self.count_agent_steps = count_steps_by == "agent_steps"
        self.seed = seed
        self.next_episode_id = first_episode_id
        self._map = mapping_caller(mapping_fn)
        self._clip = clip_actions
        self._clip_rewards = clip_rewards
        self._agent_ids: dict[Any, int] = {}
        self._checked: set[tuple[Any, str]] = set()
        self._rows = {
            pid: _PolicyRows(_flattener(p.observation_space)) for pid, p in policy_map.items()
        }
        self._recurrent = {pid: p.is_recurrent() for pid, p in policy_map.items()}
        self._filters = {
            pid: p.observation_filter
            for pid, p in policy_map.items()
            if p.observation_filter.active
        }
        self._update_filter = update_filter
        self.started = False
        self._completed_returns: list[float] = []
        self._completed_lengths: list[int] = []
        self._completed_policy_returns: dict[str, list[float]] = {pid: [] for pid in policy_map}
        self._finished_episodes: set[int] = set()
        self._completed_steps = 0
        self.steps_sampled = 0
        self.agent_steps_sampled = 0
        self._pending_env_steps = 0
        self._finished_env_steps = 0

    # -- episodes --------------------------------------------------------
    def start(self, seed: int | None = None, update_filter: bool | None = None) -> None:
        """Reset every env copy (copy ``i`` with ``seed + i``) and start fresh episodes.
        (``update_filter`` is ``VectorEnvSampler.start``'s: nothing to do here, where
        observations are filtered when the agents act on them.)"""
        n = len(self.envs)
        self._obs: list[dict[Any, Any]] = [{} for _ in range(n)]
        self._agents: list[dict[Any, _Agent]] = [{} for _ in range(n)]
        self._episodes: list[Episode] = [None] * n  # type: ignore[list-item]
        self._returns = np.zeros(n)
        for e in range(n):
            self._reset(e, None if seed is None else seed + e)
        self.started = True

    def _reset(self, e: int, seed: int | None) -> None:
        if self._guard is not None:
            [(obs, _)], _ = self._guard.call([EnvCall(e, "reset", kwargs={"seed": seed})])
        else:
            try:
                obs, _ = self.envs[e].reset(seed=seed)
            except Exception as err:
                raise self._failures.error(e, "reset", CallFailure.of(err)) from None
        self._begin_episode(e, obs)

    def _begin_episode(self, e: int, obs: dict) -> None:
        self._obs[e] = dict(obs)
        self._agents[e] = {}
        self._episodes[e] = Episode(self.next_episode_id, e, self.worker)
        self.next_episode_id += 1
        self._returns[e] = 0.0

    def _new_agent(self, e: int, agent_id: Any) -> _Agent:
        pid = self._map(agent_id, self._episodes[e], self.worker)
        policy = self.policy_map.get(pid) if isinstance(pid, str) else None
        if policy is None:
            raise ValueError(
                f"policy_mapping_fn returned {pid!r} for agent {agent_id!r}; valid policy ids "
                f"are {sorted(self.policy_map)}"
            )
        if (agent_id, pid) not in self._checked:
            check_agent_spaces(self.envs[e], agent_id, pid, policy)
            self._checked.add((agent_id, pid))
        index = self._agent_ids.setdefault(agent_id, len(self._agent_ids))
        state = [np.asarray(s) for s in policy.get_initial_state()]
        agent = _Agent(pid, index, state)
        self._agents[e][agent_id] = agent
        return agent

    # -- sampling --------------------------------------------------------
    def sample(self) -> MultiAgentBatch:
        """One fragment of every env copy, as per-policy SampleBatches (not postprocessed)."""
        if not self.started:
            self.start(self.seed)
        target = self.fragment_length * len(self.envs)
        if self.complete_episodes:
            while self._completed_steps < target:
                self._step()
            self._completed_steps = 0
        else:
            counted = 0
            while counted < target:
                counted += self._step()
            self._cut_fragment()
        return self._emit()

    def _step(self) -> int:
        """One step of every env copy; returns the steps counted (env or agent steps)."""
        groups: dict[str, list[tuple[int, Any, _Agent, Any]]] = {}
        for e, obs_dict in enumerate(self._obs):
            agents = self._agents[e]
            for agent_id, ob in obs_dict.items():
                agent = agents.get(agent_id) or self._new_agent(e, agent_id)
                entries = groups.get(agent.pid)
                if entries is None:
                    groups[agent.pid] = entries = []
                entries.append((e, agent_id, agent, ob))
        actions: list[dict[Any, Any]] = [{} for _ in self.envs]
        acted = 0
        for pid, entries in groups.items():
            acted += len(entries)
            self._act(pid, entries, actions)
        self.agent_steps_sampled += acted
        self.steps_sampled += len(self.envs)
        self._pending_env_steps += len(self.envs)
        if self._guard is not None:
            self._step_guarded(actions)
        else:
            for e, env in enumerate(self.envs):
                try:
                    outcome = env.step(actions[e])
                except Exception as err:
                    failure, steps = CallFailure.of(err), self._episodes[e].length
                    raise self._failures.error(e, "step", failure, steps=steps) from None
                self._record(e, *outcome)
        return acted if self.count_agent_steps else len(self.envs)

    def _step_guarded(self, actions: list[dict[Any, Any]]) -> None:
        calls = [
            EnvCall(e, "step", (actions[e],), None, self._episodes[e].length)
            for e in range(len(self.envs))
        ]
        outcomes, rebuilt = self._guard.call(calls)
        for e, outcome in enumerate(outcomes):
            if rebuilt is not None and rebuilt[e]:
                self._drop_episode(e)
                obs, _ = outcome
                self._begin_episode(e, obs)
            else:
                self._record(e, *outcome)

    def _drop_episode(self, e: int) -> None:
        """Forget env copy ``e``'s running episode: its rows, returns and length."""
        episode_id = self._episodes[e].episode_id
        for pid in {agent.pid for agent in self._agents[e].values()}:
            self._rows[pid].drop_episode(episode_id)

    def _act(self, pid: str, entries: list, actions: list[dict[Any, Any]]) -> None:
        policy = self.policy_map[pid]
        store = self._rows[pid]
        n = len(entries)
        obs_batch = stack_observations([entry[3] for entry in entries])
        obs_filter = self._filters.get(pid)
        if obs_filter is not None:
            obs_batch = obs_filter(obs_batch, update=self._update_filter)
        state_in = []
        prev_actions = prev_rewards = None
        if self._recurrent[pid]:
            state_in = [np.stack(s) for s in zip(*(entry[2].state for entry in entries))]
            space = policy.action_space
            none = np.zeros(space.shape, dtype=space.dtype)
            prev_actions = np.stack(
                [none if a.prev_action is None else a.prev_action for _, _, a, _ in entries]
            )
            prev_rewards = np.fromiter((a.prev_reward for _, _, a, _ in entries), np.float32, n)
        out_actions, state_out, extra = policy.compute_actions(
            obs_batch,
            state_in,
            prev_action_batch=prev_actions,
            prev_reward_batch=prev_rewards,
            timestep=self.worker.global_timestep,
        )
        out_actions = _as_action_array(out_actions, n, pid)
        block = {
            SampleBatch.OBS: store.flatten(obs_batch) if store.flatten else obs_batch,
            SampleBatch.ACTIONS: out_actions,
            SampleBatch.EPS_ID: np.fromiter(
                (self._episodes[e].episode_id for e, *_ in entries), np.int64, n
            ),
            SampleBatch.ENV_ID: np.fromiter((e for e, *_ in entries), np.int64, n),
            SampleBatch.AGENT_INDEX: np.fromiter((a.index for _, _, a, _ in entries), np.int64, n),
            SampleBatch.T: np.fromiter((a.t for _, _, a, _ in entries), np.int64, n),
        }
        for key, value in extra.items():
            block[key] = np.asarray(value)
        for i, (s_in, s_out) in enumerate(zip(state_in, state_out)):
            block[f"state_in_{i}"] = s_in
            block[f"state_out_{i}"] = np.asarray(s_out)
        if prev_actions is not None:
            block[SampleBatch.PREV_ACTIONS] = prev_actions
            block[SampleBatch.PREV_REWARDS] = prev_rewards
        first = store.add_block(block, n)
        env_actions = out_actions
        space = policy.action_space
        if self._clip and isinstance(space, gym.spaces.Box):
            env_actions = np.clip(out_actions, space.low, space.high)
        previous, current = [], []
        for i, (e, agent_id, agent, _) in enumerate(entries):
            actions[e][agent_id] = env_actions[i]
            if agent.row >= 0:
                previous.append(agent.row)
                current.append(first + i)
            agent.row = first + i
            agent.t += 1
        if previous:
            store.next_row[previous] = current
            store.closed[previous] = True
        if state_in:
            for i, (_, _, agent, _) in enumerate(entries):
                agent.state = [s[i] for s in state_out]
                agent.prev_action = out_actions[i]
                agent.prev_reward = 0.0

    def _record(
        self,
        e: int,
        obs: dict,
        rewards: dict,
        terminateds: dict,
        truncateds: dict,
        infos: dict,
    ) -> None:
        agents = self._agents[e]
        episode = self._episodes[e]
        episode.length += 1
        for agent_id, reward in rewards.items():
            agent = agents.get(agent_id)
            if agent is None:
                continue
            self._returns[e] += reward
            agent.episode_return += reward
            if agent.row >= 0:
                clip = self._clip_rewards
                learned = reward if clip is None else clip(reward)
                self._rows[agent.pid].rewards[agent.row] += learned
                agent.prev_reward += learned
        if infos:
            for agent_id, info in infos.items():
                agent = agents.get(agent_id)
                if agent is not None and agent.row >= 0 and info:
                    self._rows[agent.pid].infos[agent.row] = info
        all_terminated = bool(terminateds.get(ALL_AGENTS, False))
        all_truncated = bool(truncateds.get(ALL_AGENTS, False))
        next_obs = {}
        for agent_id, ob in obs.items():
            terminated = bool(terminateds.get(agent_id, False))
            truncated = bool(truncateds.get(agent_id, False))
            if terminated or truncated:
                self._end_agent(e, agent_id, ob, terminated, truncated)
            else:
                next_obs[agent_id] = ob
        # Agents that ended without a final observation.
        for flags in (terminateds, truncateds):
            for agent_id, flag in flags.items():
                if flag and agent_id != ALL_AGENTS and agent_id not in obs:
                    terminated = bool(terminateds.get(agent_id, False))
                    self._end_agent(e, agent_id, None, terminated, not terminated)
        if all_terminated or all_truncated:
            for agent_id in list(agents):
                agent = agents[agent_id]
                if agent.row >= 0:
                    self._end_agent(
                        e, agent_id, next_obs.get(agent_id), all_terminated, not all_terminated
                    )
            self._end_episode(e)
            self._reset(e, None)
        else:
            self._obs[e] = next_obs

    def _end_agent(self, e: int, agent_id: Any, ob: Any, terminated: bool, truncated: bool) -> None:
        agent = self._agents[e].get(agent_id)
        if agent is None or agent.row < 0:
            return
        ob = self._filtered_one(agent.pid, ob, self._update_filter)
        self._rows[agent.pid].close(agent.row, ob, terminated, truncated)
        agent.row = -2  # done: it will not act again in this episode

    def _end_episode(self, e: int) -> None:
        episode = self._episodes[e]
        self._completed_returns.append(float(self._returns[e]))
        self._completed_lengths.append(episode.length)
        agents = self._agents[e]
        for agent in agents.values():
            self._completed_policy_returns[agent.pid].append(agent.episode_return)
        self._finished_episodes.add(episode.episode_id)
        self._finished_env_steps += episode.length
        if self.count_agent_steps:
            self._completed_steps += sum(agent.t for agent in agents.values())
        else:
            self._completed_steps += episode.length

    def _cut_fragment(self) -> None:
        """Close the open rows of agents that are observed and about to act: their next
        observation is the one they wait with (the episode goes on: bootstrapped)."""
        for e, obs_dict in enumerate(self._obs):
            agents = self._agents[e]
            for agent_id, ob in obs_dict.items():
                agent = agents.get(agent_id)
                if agent is not None and agent.row >= 0:
                    ob = self._filtered_one(agent.pid, ob, update=False)
                    self._rows[agent.pid].close(agent.row, ob, False, False)

    def _filtered_one(self, pid: str, ob: Any, update: bool) -> Any:
        """One observation through the policy's filter (as is without one, or None)."""
        obs_filter = self._filters.get(pid)
        if obs_filter is None or ob is None:
            return ob
        return obs_filter(stack_observations([ob]), update=update)[0]

    def _emit(self) -> MultiAgentBatch:
        batches = {}
        finished = self._finished_episodes
        for pid, store in self._rows.items():
            if store.count == 0:
                continue
            emit = store.closed[: store.count].copy()
            if self.complete_episodes:
                eps = np.concatenate([b[SampleBatch.EPS_ID] for b in store.blocks])
                emit &= np.isin(eps, np.fromiter(finished, np.int64, len(finished)))
            columns, renumber = store.take(emit)
            for agents in self._agents:
                for agent in agents.values():
                    if agent.pid == pid and agent.row >= 0:
                        agent.row = int(renumber[agent.row])
            if len(columns[SampleBatch.OBS]):
                order = np.lexsort((columns[SampleBatch.AGENT_INDEX], columns[SampleBatch.EPS_ID]))
                batches[pid] = SampleBatch({k: v[order] for k, v in columns.items()})
        if self.complete_episodes:
            self._finished_episodes = set()
            env_steps = self._finished_env_steps
        else:
            env_steps = self._pending_env_steps
        self._finished_env_steps = self._pending_env_steps = 0
        return MultiAgentBatch(batches, env_steps)

    # -- state for checkpoints -------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Running episodes, their agents, held-over rows and unreported metrics."""
        envs = []
        for e in range(len(self.envs)):
            agents = self._agents[e]
            envs.append(
                {
                    "obs_agents": list(self._obs[e]),
                    "obs": list(self._obs[e].values()),
                    "agent_ids": list(agents),
                    "agents": [
                        {
                            "pid": a.pid,
                            "index": a.index,
                            "row": a.row,
                            "t": a.t,
                            "state": list(a.state),
                            "episode_return": a.episode_return,
                            "prev_action": a.prev_action,
                            "prev_reward": a.prev_reward,
                        }
                        for a in agents.values()
                    ],
                    "episode_id": self._episodes[e].episode_id,
                    "length": self._episodes[e].length,
                    "return": float(self._returns[e]),
                }
            )
        return {
            "envs": envs,
            "agent_index": self.agent_ids(),
            "rows": {pid: store.get_state() for pid, store in self._rows.items()},
            "completed_returns": list(self._completed_returns),
            "completed_lengths": list(self._completed_lengths),
            "completed_policy_returns": {
                pid: list(v) for pid, v in self._completed_policy_returns.items()
            },
            "finished_episodes": sorted(self._finished_episodes),
            "counters": [
                self._completed_steps,
                self.steps_sampled,
                self.agent_steps_sampled,
                self._pending_env_steps,
                self._finished_env_steps,
                self.next_episode_id,
            ],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()`` into a started sampler over restored env copies."""
        for e, saved in enumerate(state["envs"]):
            self._obs[e] = dict(zip(saved["obs_agents"], saved["obs"]))
            agents = {}
            for agent_id, a in zip(saved["agent_ids"], saved["agents"]):
                agent = _Agent(a["pid"], int(a["index"]), [np.asarray(x) for x in a["state"]])
                agent.row, agent.t = int(a["row"]), int(a["t"])
                agent.episode_return = float(a["episode_return"])
                agent.prev_action = a.get("prev_action")
                agent.prev_reward = float(a.get("prev_reward", 0.0))
                agents[agent_id] = agent
            self._agents[e] = agents
            episode = Episode(int(saved["episode_id"]), e, self.worker)
            episode.length = int(saved["length"])
            self._episodes[e] = episode
            self._returns[e] = float(saved["return"])
        self._agent_ids = {agent_id: i for i, agent_id in enumerate(state["agent_index"])}
        for pid, rows in state["rows"].items():
            self._rows[pid].set_state(rows)
        self._completed_returns = [float(r) for r in state["completed_returns"]]
        self._completed_lengths = [int(n) for n in state["completed_lengths"]]
        self._completed_policy_returns = {
            pid: [float(r) for r in state["completed_policy_returns"].get(pid, [])]
            for pid in self.policy_map
        }
        self._finished_episodes = {int(i) for i in state["finished_episodes"]}
        (
            self._completed_steps,
            self.steps_sampled,
            self.agent_steps_sampled,
            self._pending_env_steps,
            self._finished_env_steps,
            self.next_episode_id,
        ) = (int(c) for c in state["counters"])

    def pop_env_restarts(self) -> int:
        """Env copies rebuilt since the last call (``recreate_failed_envs``)."""
        return 0 if self._guard is None else self._guard.pop_restarts()

    def agent_ids(self) -> list[Any]:
        """Agent ids in ``agent_index`` order."""
        return sorted(self._agent_ids, key=self._agent_ids.__getitem__)

    def pop_metrics(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Returns (summed over agents), lengths (env steps) and per-policy agent returns
        of the episodes completed since the last call."""
        returns = np.array(self._completed_returns, dtype=np.float64)
        lengths = np.array(self._completed_lengths, dtype=np.int64)
        per_policy = {
            pid: np.array(values, dtype=np.float64)
            for pid, values in self._completed_policy_returns.items()
            if values
        }
        self._completed_returns = []
        self._completed_lengths = []
        self._completed_policy_returns = {pid: [] for pid in self.policy_map}
        return returns, lengths, per_policy


class OtherAgentBatches(Mapping):
    """``postprocess_trajectory``'s ``other_agent_batches`` for a multi-agent fragment:
    agent id -> ``(policy_id, policy, SampleBatch of that agent's rows)``, built on
    first access. The rows are those of every episode of the fragment, back to back;
    match them to your rows by ``eps_id`` and ``t``."""

    def __init__(
        self, batches: dict[str, SampleBatch], policy_map: dict[str, Policy], agent_ids: list
    ) -> None:
        self._batches = batches
        self._policy_map = policy_map
        self._agent_ids = agent_ids
        self._where: dict[Any, str] | None = None
        self._cache: dict[Any, tuple[str, Policy, SampleBatch]] = {}

    def _locate(self) -> dict[Any, str]:
        if self._where is None:
            self._where = {}
            for pid, batch in self._batches.items():
                for index in np.unique(batch[SampleBatch.AGENT_INDEX]):
                    self._where[self._agent_ids[int(index)]] = pid
        return self._where

    def __getitem__(self, agent_id: Any) -> tuple[str, Policy, SampleBatch]:
        if agent_id not in self._cache:
            pid = self._locate()[agent_id]
            batch = self._batches[pid]
            index = self._agent_ids.index(agent_id)
            rows = np.flatnonzero(batch[SampleBatch.AGENT_INDEX] == index)
            self._cache[agent_id] = (pid, self._policy_map[pid], batch.take(rows))
        return self._cache[agent_id]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._locate())

    def __len__(self) -> int:
        return len(self._locate())


def check_agent_spaces(env: Any, agent_id: Any, pid: str, policy: Policy) -> None:
    """Raise ValueError when the env declares spaces for ``agent_id`` that differ from
    those of the policy it is mapped to."""
    for kind in ("observation", "action"):
        try:
            env_space = getattr(env, f"get_{kind}_space")(agent_id)
        except (KeyError, ValueError):
            continue  # the env does not declare this agent's space
        policy_space = getattr(policy, f"{kind}_space")
        if env_space != policy_space:
            raise ValueError(
                f"agent {agent_id!r} is mapped to policy {pid!r}, whose {kind} space is "
                f"{policy_space} but the env gives the agent {env_space}; map the agent to a "
                "policy with matching spaces, or leave the policy's spaces as None in "
                "config['multiagent']['policies'] to take them from the env"
            )


def mapping_caller(fn: PolicyMappingFn) -> Callable[[Any, Episode, Any], str]:
    """``fn`` called as RLlib calls it: ``fn(agent_id, episode, worker)``, or with the
    agent id alone when that is all it takes."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return lambda agent_id, episode, worker: fn(agent_id, episode, worker)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_more = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
    if len(positional) == 1 and not takes_more:
        return lambda agent_id, episode, worker: fn(agent_id)
    if len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return lambda agent_id, episode, worker: fn(agent_id, episode, worker)
    return lambda agent_id, episode, worker: fn(agent_id, episode, worker=worker)


def _flattener(space: gym.Space) -> Callable[[Any], np.ndarray] | None:
    """For Dict and Tuple observations: a function storing a batch (or one observation)
    flat, as the policy's preprocessor flattens it; None for array observations."""
    if not isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        return None
    from hpcrl.models.preprocessors import get_preprocessor

    preprocessor = get_preprocessor(space)

    def flatten(obs: Any) -> np.ndarray:
        # Already flat: a batch, or one observation flattened by an observation filter.
        if (
            isinstance(obs, np.ndarray)
            and obs.ndim in (1, 2)
            and obs.shape[-1] == preprocessor.size
        ):
            return obs
        if isinstance(obs, (dict, tuple)) and not _is_batch(obs, space):
            return preprocessor.transform([obs])[0]
        return preprocessor.transform(obs)

    return flatten


def _is_batch(obs: Any, space: gym.Space) -> bool:
    first = next(iter(obs.values())) if isinstance(obs, dict) else obs[0]
    sub = next(iter(space.spaces.values())) if isinstance(space, gym.spaces.Dict) else space[0]
    if isinstance(first, (dict, tuple)):
        return _is_batch(first, sub)
    return np.ndim(first) > len(sub.shape or ())


def _as_action_array(actions: Any, n: int, pid: str) -> np.ndarray:
    """Actions as an array of ``n`` rows (a from-scratch policy may return a list)."""
    actions = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
    if len(actions) != n:
        raise ValueError(
            f"policy {pid!r} returned {len(actions)} actions for {n} observations; "
            "compute_actions must return one action per row of obs_batch"
        )
    return actions
