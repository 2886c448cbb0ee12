"""Policy: the framework-agnostic numerical core of an agent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.policy.observation_filter import make_observation_filter
from hpcrl.policy.sample_batch import SampleBatch

TensorStructType = Any
ModelGradients = list


class Policy:
    """Computes actions, postprocesses trajectories, learns from batches.

    Subclass it directly for a policy in any framework (or none, e.g. a
    scripted or random policy): implement ``compute_actions`` and, if it
    learns, ``compute_gradients``/``apply_gradients`` (or ``learn_on_batch``)
    and ``get_weights``/``set_weights``. ``TorchPolicy`` implements all of it
    for torch models. A policy that does not learn but runs in a Trainer
    overrides ``learn_on_batch`` to return ``{}`` (the default asks for
    gradients and says the policy does not learn).

    Every batch argument is a batch over environments: ``compute_actions`` is
    called once per vector step for all envs of a worker.

    ``observation_filter`` (``config["observation_filter"]``, see
    ``hpcrl.policy.observation_filter``) normalises the env's observations:
    rollout workers apply it (updating it) before ``compute_actions``, which,
    like the loss, sees filtered observations, as sample batches hold them.
    ``compute_single_action`` takes an env's raw observation and applies it
    (frozen, not updated), as ``evaluate_policy`` does; it is part of the state.

    Example:
        >>> class RandomPolicy(Policy):
        ...     def compute_actions(self, obs_batch, state_batches=None, **kw):
        ...         n = len(obs_batch)
        ...         return np.array([self.action_space.sample() for _ in range(n)]), [], {}
    """

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: dict[str, Any]
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config
        self.global_timestep = 0
        self.observation_filter = make_observation_filter(
            config.get("observation_filter", "NoFilter"), observation_space
        )
        seed = config.get("seed")
        self.np_random = np.random.default_rng(seed)
        if seed is not None:
            self.action_space.seed(int(seed))

    # -- acting ----------------------------------------------------------
    def compute_actions(
        self,
        obs_batch: np.ndarray | list,
        state_batches: list[np.ndarray] | None = None,
        prev_action_batch: np.ndarray | None = None,
        prev_reward_batch: np.ndarray | None = None,
        info_batch: list[dict] | None = None,
        episodes: list[Any] | None = None,
        explore: bool | None = None,
        timestep: int | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        """Actions for a batch of observations.

        Returns:
            ``(actions, state_outs, extra_info)``: actions [B, ...]; one array
            [B, ...] per recurrent state tensor; extra outputs (each [B, ...])
            that the rollout worker stores as batch columns of the same name.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute_actions")

    def compute_actions_from_input_dict(
        self,
        input_dict: dict[str, Any],
        explore: bool | None = None,
        timestep: int | None = None,
        episodes: list[Any] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        """``compute_actions`` with its inputs taken from a dict of columns."""
        state_batches = [
            input_dict[key]
            for key in sorted(
                (k for k in input_dict if k.startswith("state_in_")),
                key=lambda k: int(k.rsplit("_", 1)[1]),
            )
        ]
        return self.compute_actions(
            input_dict[SampleBatch.OBS],
            state_batches,
            prev_action_batch=input_dict.get(SampleBatch.PREV_ACTIONS),
            prev_reward_batch=input_dict.get(SampleBatch.PREV_REWARDS),
            info_batch=input_dict.get(SampleBatch.INFOS),
            episodes=episodes,
            explore=explore,
            timestep=timestep,
            **kwargs,
        )

    def compute_single_action(
        self,
        obs: Any,
        state: list[np.ndarray] | None = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
        info: dict | None = None,
        explore: bool | None = None,
        timestep: int | None = None,
        **kwargs: Any,
    ) -> tuple[Any, list[np.ndarray], dict[str, Any]]:
        """One action for one raw observation of the env: ``compute_actions`` on a
        batch of one, filtered by ``observation_filter`` (frozen).

        Returns:
            ``(action, state_out, extra_info)`` without the batch dimension.
        """
        obs_batch = self.observation_filter(_batch_of_one(obs), update=False)
        state_batches = [np.asarray(s)[None] for s in (state or [])]
        actions, state_out, extra = self.compute_actions(
            obs_batch,
            state_batches,
            prev_action_batch=None if prev_action is None else np.asarray([prev_action]),
            prev_reward_batch=None if prev_reward is None else np.asarray([prev_reward]),
            info_batch=None if info is None else [info],
            explore=explore,
            timestep=timestep,
            **kwargs,
        )
        return (
            _first(actions),
            [s[0] for s in state_out],
            {k: v[0] for k, v in extra.items()},
        )

    def compute_log_likelihoods(
        self,
        actions: np.ndarray,
        obs_batch: np.ndarray,
        state_batches: list[np.ndarray] | None = None,
        prev_action_batch: np.ndarray | None = None,
        prev_reward_batch: np.ndarray | None = None,
    ) -> np.ndarray:
        """log pi(action | obs) for each row."""
        raise NotImplementedError(f"{type(self).__name__} has no action likelihoods")

    # -- trajectories and learning --------------------------------------
    def postprocess_trajectory(
        self,
        sample_batch: SampleBatch,
        other_agent_batches: dict[str, Any] | None = None,
        episode: Any = None,
    ) -> SampleBatch:
        """Add columns computed over whole trajectories (advantages, n-step...).

        ``sample_batch`` holds one or more trajectories back to back (runs of
        equal ``eps_id`` and ``agent_index``): a rollout worker hands over every
        trajectory of this policy in a fragment in one call so that
        postprocessing is vectorised. Use ``sample_batch.split_by_episode()`` to
        treat them one at a time.

        On a multi-agent env, ``other_agent_batches`` maps every agent id of the
        fragment to ``(policy_id, policy, SampleBatch of that agent's rows)``
        (rows of all its episodes in the fragment; match them to yours by
        ``eps_id`` and ``t``), e.g. for a centralised critic. ``episode`` is None:
        the call covers many episodes.
        """
        return sample_batch

    def loss(self, model: Any, dist_class: type, train_batch: SampleBatch) -> Any:
        """The loss to minimise on ``train_batch`` (framework tensor)."""
        raise NotImplementedError(f"{type(self).__name__} defines no loss")

    def load_batch(self, batch: SampleBatch) -> SampleBatch:
        """The batch in the form ``learn_on_batch`` works on fastest (e.g. tensors).

        Minibatch SGD loads a train batch once and passes minibatches of the
        loaded batch to ``learn_on_batch``. The default returns it unchanged.
        """
        return batch

    def learn_on_batch(self, samples: SampleBatch) -> dict[str, Any]:
        """One update on ``samples`` (as sampled, or loaded by ``load_batch``).

        Returns:
            ``{"learner_stats": {...}}`` plus per-row outputs of the loss (arrays of
            one value per row of ``samples``, e.g. TD errors), as ``TorchPolicy``
            returns it; a flat dict of stats also works for a policy with no
            per-row outputs.
        """
        gradients, info = self.compute_gradients(samples)
        self.apply_gradients(gradients)
        return info

    def compute_gradients(self, postprocessed_batch: SampleBatch) -> tuple[ModelGradients, dict]:
        """Gradients of the loss on the batch, as numpy arrays, and what
        ``learn_on_batch`` returns (``{"learner_stats": ...}`` and per-row outputs)."""
        raise NotImplementedError(f"{type(self).__name__} does not learn")

    def apply_gradients(self, gradients: ModelGradients) -> None:
        """Apply gradients from ``compute_gradients`` (possibly of another copy)."""
        raise NotImplementedError(f"{type(self).__name__} does not learn")

    def value_of_next_obs(self, batch: SampleBatch, rows: np.ndarray) -> np.ndarray:
        """The critic's value of ``new_obs`` at ``rows`` (for bootstrapping)."""
        raise NotImplementedError(f"{type(self).__name__} has no value function")

    # -- weights and state ----------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Model weights as numpy arrays (empty for a policy without weights)."""
        return {}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Set weights from ``get_weights`` of a policy of the same class."""
        if weights:
            raise ValueError(f"{type(self).__name__} has no weights; got {sorted(weights)}")

    def get_state(self, include_optimizer: bool = True) -> dict[str, Any]:
        """Everything needed to restore this policy: weights, counters, exploration,
        random generator states, and the optimizer's state unless ``include_optimizer``
        is false (a policy without an optimizer has none to leave out)."""
        state = {
            "weights": self.get_weights(),
            "global_timestep": self.global_timestep,
            "exploration": self.get_exploration_state(),
            "np_random": self.np_random.bit_generator.state,
        }
        space_rng = getattr(self.action_space, "_np_random", None)
        if space_rng is not None:  # seeded: action_space.sample() draws from it
            state["action_space_rng"] = space_rng.bit_generator.state
        if self.observation_filter.active:
            state["observation_filter"] = self.observation_filter.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()``; keys it lacks (e.g. "weights") are left as they are."""
        if "weights" in state:
            self.set_weights(state["weights"])
        self.global_timestep = state.get("global_timestep", self.global_timestep)
        if "np_random" in state:
            self.np_random.bit_generator.state = state["np_random"]
        if "action_space_rng" in state:
            self.action_space.np_random.bit_generator.state = state["action_space_rng"]
        if "observation_filter" in state:
            self.observation_filter.set_state(state["observation_filter"])

    def export_checkpoint(self, export_dir: str) -> str:
        """Write this policy (class, spaces, config, state) to ``export_dir`` as JSON and
        HDF5, without pickle; ``Policy.from_checkpoint`` loads it. Returns the directory."""
        from hpcrl.io.checkpoint import export_policy_checkpoint

        return export_policy_checkpoint(self, export_dir)

    @classmethod
    def from_checkpoint(
        cls, checkpoint_dir: str, policy_id: str | None = None, **config_overrides: Any
    ) -> Policy:
        """The policy exported to ``checkpoint_dir`` (``export_checkpoint``), or policy
        ``policy_id`` of a trainer checkpoint (``Trainer.save``).

        The class is this one when called on a subclass, else the recorded
        ``module:qualname`` (imported as a module is; nothing is unpickled).
        ``config_overrides`` replace recorded config keys (e.g. ``device``).
        """
        from hpcrl.io.checkpoint import load_policy_checkpoint

        policy_class = None if cls is Policy else cls
        return load_policy_checkpoint(checkpoint_dir, policy_class, policy_id, config_overrides)

    def get_initial_state(self) -> list[np.ndarray]:
        """Initial recurrent state for one agent (an empty list when not recurrent)."""
        return []

    def num_state_tensors(self) -> int:
        return len(self.get_initial_state())

    def is_recurrent(self) -> bool:
        return self.num_state_tensors() > 0

    def sequence_lengths(self, batch: SampleBatch) -> np.ndarray | None:
        """Lengths of the sequences a recurrent policy trains on in ``batch`` (in row
        order), which minibatches keep whole; None for a policy that trains on rows."""
        return None

    def get_exploration_state(self) -> dict[str, Any]:
        return {}

    def on_global_var_update(self, global_vars: dict[str, Any]) -> None:
        """Called with ``{"timestep": total sampled}`` after each training step."""
        self.global_timestep = int(global_vars.get("timestep", self.global_timestep))

    def apply(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(self, *args, **kwargs)``: run a function against this policy."""
        return func(self, *args, **kwargs)

    def export_model(self, export_dir: str) -> None:
        """Write the model in a form loadable without hpcrl."""
        raise NotImplementedError(f"{type(self).__name__} has no model to export")


def stack_observations(observations: list[Any]) -> Any:
    """One batch of several observations, nested as the space is: a dict of stacked
    arrays for Dict spaces, a tuple for Tuple spaces, else one stacked array.

    Example:
        >>> batch = stack_observations([{"a": np.zeros(2)}, {"a": np.ones(2)}])
        >>> batch["a"].shape
        (2, 2)
    """
    first = observations[0]
    if isinstance(first, dict):
        return {k: stack_observations([o[k] for o in observations]) for k in first}
    if isinstance(first, tuple):
        return tuple(stack_observations([o[i] for o in observations]) for i in range(len(first)))
    if isinstance(first, np.ndarray):
        return np.stack(observations)
    return np.asarray(observations)


def _batch_of_one(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: _batch_of_one(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_batch_of_one(v) for v in obs)
    return np.asarray(obs)[None]


def _first(actions: Any) -> Any:
    if isinstance(actions, dict):
        return {k: _first(v) for k, v in actions.items()}
    if isinstance(actions, tuple):
        return tuple(_first(v) for v in actions)
    return actions[0]
