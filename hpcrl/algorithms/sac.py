"""SAC: soft actor-critic, for continuous and discrete actions.

Haarnoja et al. 2018 ("Soft Actor-Critic Algorithms and Applications": twin Q
networks, Polyak-averaged target critics, the entropy coefficient alpha tuned
towards a target entropy) for Box actions, with a squashed (tanh) Gaussian
policy scaled to the Box's bounds; Christodoulou 2019 for Discrete actions, a
categorical policy whose expectations over actions are computed exactly.

The policy is built from ``build_torch_policy`` hooks, as DQN's is:
``make_model`` (the actor is the policy's ``model``, the one thing rollout
workers need; the critics, their target copies and ``log_alpha`` live on the
policy and in its state), ``action_distribution_fn`` (a ``SquashedGaussian``
or a ``Categorical`` over the actor's outputs, sampled with the policy's
generator while exploring, its mode otherwise), ``optimizer_fn`` (one Adam with
a parameter group each for the actor, the critics and alpha, at RLlib's
``optimization`` learning rates) and ``loss_fn``: one total loss, critic loss
+ actor loss + alpha loss, written so that each part reaches only its own
parameters (see ``sac_loss``). ``SyncReplayOptimizer`` samples, replays
(uniformly by default) and calls ``update_target()`` every
``target_network_update_freq`` sampled steps (every round with 0).

Example:
    >>> config = {"learning_starts": 64, "train_batch_size": 32,
    ...           "timesteps_per_iteration": 100, "seed": 0,
    ...           "policy_model_config": {"fcnet_hiddens": [16]},
    ...           "q_model_config": {"fcnet_hiddens": [16]}}
    >>> with SACTrainer(config, env="Pendulum-v1") as trainer:
    ...     result = trainer.train()
    >>> result["timesteps_total"], result["info"]["num_target_updates"] > 0
    (100, True)
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.dqn import (
    REPLAY_DEFAULTS,
    make_replay_optimizer,
    postprocess_n_step,
)
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.n_step import N_STEPS
from hpcrl.models import ActionDistribution, Categorical, TorchModel, get_preprocessor
from hpcrl.models.catalog import check_feed_forward
from hpcrl.models.fcnet import _activation_class, _mlp
from hpcrl.optimizers.sync_replay_optimizer import TD_ERROR
from hpcrl.policy.adam import GroupedAdam
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.torch_policy import clip_grad_norm, to_numpy, to_torch
from hpcrl.replay import WEIGHTS

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        # --- model ---
        # Two critics, each target the minimum of the two (Fujimoto et al. 2018).
        "twin_q": True,
        # The actor's MLP (RLlib's policy_model_config).
        "policy_model_config": {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
        # Each critic's MLP (RLlib's q_model_config).
        "q_model_config": {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
        # --- entropy ---
        # alpha at the start (its log is learned).
        "initial_alpha": 1.0,
        # Entropy alpha is tuned towards: a number, or "auto": -(action dimensions)
        # for Box actions, 0.98 * log(n) for Discrete(n) (RLlib's choice). With few
        # actions 0.98 * log(n) is close to the most entropy a policy can have, and
        # alpha may grow without bound (it does on CartPole): give a number there.
        "target_entropy": "auto",
        # --- learning ---
        # Learning rates of the actor, the critics and log(alpha) (parameter groups
        # of one Adam). Keys left out keep these defaults.
        "optimization": {
            "actor_learning_rate": 3e-4,
            "critic_learning_rate": 3e-4,
            "entropy_learning_rate": 3e-4,
        },
        # n-step returns (1: one-step TD targets).
        "n_step": 1,
        # Clip the gradient norm of each parameter group (actor, critics, alpha) to
        # this value (None: no clipping).
        "grad_clip": None,
        "train_batch_size": 256,
        "rollout_fragment_length": 1,
        "timesteps_per_iteration": 100,
        # --- replay (the keys of DQN's SyncReplayOptimizer, REPLAY_DEFAULTS) ---
        # (target critics: tau 5e-3, updated after every round of sampling)
        **REPLAY_DEFAULTS,
        "buffer_size": 1_000_000,
    }
)

# The actor's log standard deviation is clamped to this range (SB3's and RLlib's).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class SquashedGaussian(ActionDistribution):
    """tanh of a diagonal Gaussian, scaled from [-1, 1] to a Box's bounds.

    ``inputs`` are ``concat(mean, log_std)``, ``[B, 2d]``; actions are ``[B, d]``
    in the bounds of ``model.action_space`` (or of ``low`` and ``high``).
    Log-probabilities are densities of the squashed action in [-1, 1], before
    scaling to the bounds (as in RLlib and Stable-Baselines3), so that a target
    entropy of ``-d`` means the same for any bounds.

    Example:
        >>> space = gym.spaces.Box(-2.0, 2.0, (1,))
        >>> dist = SquashedGaussian(torch.zeros(3, 2), low=space.low, high=space.high)
        >>> dist.deterministic_sample()
        tensor([[0.],
                [0.],
                [0.]])
        >>> unit, logp = dist.rsample(torch.Generator().manual_seed(0))
        >>> bool((unit.abs() < 1).all()), logp.shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        model: Any = None,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
    ) -> None:
        super().__init__(inputs, model)
        if low is None or high is None:
            space = model.action_space
            low, high = space.low, space.high
        device = inputs.device
        self.low = torch.as_tensor(np.reshape(low, -1), dtype=inputs.dtype, device=device)
        self.high = torch.as_tensor(np.reshape(high, -1), dtype=inputs.dtype, device=device)
        self.mean, self.log_std = torch.chunk(inputs, 2, dim=-1)
        self._last_logp: torch.Tensor | None = None

    def rsample(self, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample in [-1, 1] and its log-density; both carry
        gradients to ``inputs``."""
        noise = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        pre_tanh = self.mean + self.log_std.exp() * noise
        # (pre_tanh - mean) / std is the noise itself.
        gaussian_logp = (-0.5 * noise * noise - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.tanh(pre_tanh), gaussian_logp - _log_tanh_jacobian(pre_tanh)

    def to_bounds(self, unit_actions: torch.Tensor) -> torch.Tensor:
        """Actions in [-1, 1] scaled to the Box's bounds."""
        return self.low + (unit_actions + 1.0) * 0.5 * (self.high - self.low)

    def to_unit(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions in the Box's bounds scaled to [-1, 1]."""
        actions = actions.reshape(self.mean.shape)
        return 2.0 * (actions - self.low) / (self.high - self.low) - 1.0

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        # Clamped so that a bound itself (tanh rounds to +-1 in float32) stays finite.
        unit = self.to_unit(actions).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        pre_tanh = torch.atanh(unit)
        z = (pre_tanh - self.mean) / self.log_std.exp()
        gaussian_logp = (-0.5 * z * z - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return gaussian_logp - _log_tanh_jacobian(pre_tanh)

    def sampled_action_logp(self) -> torch.Tensor:
        """``logp`` of the last sample, as computed when it was drawn (exact, where
        ``logp`` of an action at a bound is not)."""
        if self._last_logp is None:
            return super().sampled_action_logp()
        return self._last_logp

    @classmethod
    def required_model_output_shape(
        cls, action_space: gym.spaces.Space, model_config: dict[str, Any] | None
    ) -> int:
        return 2 * int(np.prod(action_space.shape, dtype=np.int64))

    def _sample(self, generator: torch.Generator | None) -> torch.Tensor:
        unit, logp = self.rsample(generator)
        self._last_logp = logp.detach()
        return self.to_bounds(unit.detach())

    def _deterministic_sample(self) -> torch.Tensor:
        self._last_logp = None
        return self.to_bounds(torch.tanh(self.mean.detach()))


def _log_tanh_jacobian(pre_tanh: torch.Tensor) -> torch.Tensor:
    """sum log(1 - tanh(x)^2) over the last axis, as 2 (log 2 - x - softplus(-2x)),
    which stays finite where tanh(x) rounds to +-1."""
    softplus = nn.functional.softplus(-2.0 * pre_tanh)
    return (2.0 * (math.log(2.0) - pre_tanh - softplus)).sum(-1)


class SACActorModel(TorchModel):
    """The actor: observations to a squashed Gaussian's ``concat(mean, log_std)``
    (Box actions; log_std clamped to [-20, 2]) or to logits (Discrete actions).

    Example:
        >>> actor = SACActorModel(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (1,)), 2,
        ...                       {"fcnet_hiddens": [8], "fcnet_activation": "relu"}, "actor")
        >>> actor({"obs": torch.zeros(5, 3)}, [], None)[0].shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        num_outputs: int,
        model_config: dict[str, Any],
        name: str,
    ) -> None:
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        hiddens = [int(h) for h in model_config["fcnet_hiddens"]]
        obs_size = get_preprocessor(obs_space).size
        self.hidden = _mlp(obs_size, hiddens, _activation_class(model_config["fcnet_activation"]))
        self.output = nn.Linear(hiddens[-1] if hiddens else obs_size, num_outputs)
        self.gaussian = isinstance(action_space, gym.spaces.Box)

    def forward(
        self,
        input_dict: dict[str, torch.Tensor],
        state: list[torch.Tensor],
        seq_lens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        obs = input_dict[SampleBatch.OBS]
        outputs = self.output(self.hidden(obs.float().reshape(obs.shape[0], -1)))
        if self.gaussian:
            mean, log_std = torch.chunk(outputs, 2, dim=-1)
            outputs = torch.cat([mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)], dim=-1)
        return outputs, state

    def value_function(self) -> torch.Tensor:
        raise NotImplementedError("SAC's actor has no value function; see policy.critics")


class SACCritic(nn.Module):
    """A soft Q network: ``Q(obs, action)`` ``[B]`` for Box actions (the action
    given in [-1, 1], concatenated to the observation), ``Q(obs, .)`` ``[B, n]``
    for Discrete(n) actions.

    Example:
        >>> critic = SACCritic(3, 1, 1, {"fcnet_hiddens": [8], "fcnet_activation": "relu"})
        >>> critic(torch.zeros(5, 3), torch.zeros(5, 1)).shape
        torch.Size([5])
    """

    def __init__(
        self, obs_size: int, action_size: int, num_outputs: int, model_config: dict[str, Any]
    ) -> None:
        super().__init__()
        hiddens = [int(h) for h in model_config["fcnet_hiddens"]]
        activation = _activation_class(model_config["fcnet_activation"])
        in_size = obs_size + action_size
        self.net = nn.Sequential(
            _mlp(in_size, hiddens, activation),
            nn.Linear(hiddens[-1] if hiddens else in_size, num_outputs),
        )
        self.continuous = action_size > 0

    def forward(self, obs: torch.Tensor, unit_actions: torch.Tensor | None = None) -> torch.Tensor:
        obs = obs.float().reshape(obs.shape[0], -1)
        if self.continuous:
            return self.net(torch.cat([obs, unit_actions], dim=-1)).squeeze(-1)
        return self.net(obs)


def make_sac_models(policy, obs_space: gym.Space, action_space: gym.Space, config) -> TorchModel:
    """``make_model``: the actor (``policy.model``); the critics and their targets
    (``policy.critics``, ``policy.target_critics``) on the policy."""
    check_feed_forward(config["model"], "SAC")
    if isinstance(action_space, gym.spaces.Box):
        if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
            raise ValueError(
                f"SAC squashes actions into the bounds of the Box action space, got {action_space} "
                "with infinite bounds; give the env finite action bounds"
            )
        action_size = int(np.prod(action_space.shape, dtype=np.int64))
        num_actor_outputs, num_q_outputs = 2 * action_size, 1
    elif isinstance(action_space, gym.spaces.Discrete):
        action_size, num_actor_outputs, num_q_outputs = 0, int(action_space.n), int(action_space.n)
    else:
        raise ValueError(
            f"SAC needs a Box or Discrete action space, got {action_space}; for this space "
            "use PPO, A2C or PG"
        )
    actor_config = {**DEFAULT_CONFIG["policy_model_config"], **config["policy_model_config"]}
    q_config = {**DEFAULT_CONFIG["q_model_config"], **config["q_model_config"]}
    actor = SACActorModel(obs_space, action_space, num_actor_outputs, actor_config, "actor")
    obs_size = get_preprocessor(obs_space).size
    policy.critics = nn.ModuleList(
        SACCritic(obs_size, action_size, num_q_outputs, q_config)
        for _ in range(2 if config["twin_q"] else 1)
    )
    policy.target_critics = copy.deepcopy(policy.critics)
    policy.target_critics.requires_grad_(False)
    return actor


def sac_action_distribution(
    policy, model, input_dict, state, seq_lens, explore=None, timestep=None
) -> tuple[torch.Tensor, type[ActionDistribution], list[torch.Tensor]]:
    """``action_distribution_fn``: the actor's outputs and the squashed Gaussian or
    categorical they parameterise (sampled while exploring, its mode otherwise)."""
    dist_inputs, state_out = model(input_dict, state, seq_lens)
    return dist_inputs, _distribution_class(policy.action_space), state_out


def _distribution_class(action_space: gym.Space) -> type[ActionDistribution]:
    return SquashedGaussian if isinstance(action_space, gym.spaces.Box) else Categorical


def sac_loss(policy, model, dist_class, batch: SampleBatch) -> LossOutput:
    """Critic loss + actor loss + alpha loss, each reaching only its own parameters.

    - critics: ``0.5 * mean(weights * (Q_i(s, a) - y)^2)`` summed over the
      critics, with ``y = r + gamma**n_steps * (1 - terminated) * (min_i
      Q_target_i(s', a') - alpha * log pi(a'|s'))``, ``a' ~ pi(s')``, computed
      without gradients;
    - actor: ``mean(alpha * log pi(a~|s) - min_i Q_i(s, a~))`` with ``a~`` a
      reparameterised sample; the critics run with their parameters' gradients
      off (``_without_parameter_gradients``), so the gradient reaches ``a~``
      and through it the actor, never the critics;
    - alpha: ``-mean(log_alpha * (log pi(a~|s) + target_entropy))`` with the
      log-probabilities detached; alpha itself is detached in the other two.

    Discrete actions (Christodoulou 2019) take expectations over the actions in
    place of samples, and the actor loss uses detached ``Q_i(s, .)``.
    """
    alpha = policy.log_alpha.exp().detach()
    if isinstance(policy.action_space, gym.spaces.Box):
        q_selected, target, actor_loss, alpha_loss, entropy = _continuous_losses(
            policy, model, batch, alpha
        )
    else:
        q_selected, target, actor_loss, alpha_loss, entropy = _discrete_losses(
            policy, model, batch, alpha
        )
    weights = batch[WEIGHTS] if WEIGHTS in batch else torch.ones_like(target)
    # The paper's squared error J_Q (as SB3 and CleanRL); RLlib's SAC uses a Huber loss.
    critic_loss = sum(0.5 * (weights * (q - target) ** 2).mean() for q in q_selected)
    td_error = torch.stack([(q - target).detach().abs() for q in q_selected]).mean(0)
    return LossOutput(
        critic_loss + actor_loss + alpha_loss,
        terms={
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "alpha_loss": alpha_loss,
            "alpha_value": alpha,
            "entropy": entropy,
            "target_entropy": policy.target_entropy,
            "mean_q": q_selected[0].mean(),
            "mean_td_error": td_error.mean(),
        },
        per_row={TD_ERROR: td_error},
    )


def _continuous_losses(policy, model, batch, alpha):
    """(Q_i(s, a) of each critic, target y, actor loss, alpha loss, entropy estimate)."""
    generator = policy.torch_generator
    inputs, _ = model({SampleBatch.OBS: batch[SampleBatch.OBS]}, [], None)
    dist = SquashedGaussian(inputs, model)
    actions, logp = dist.rsample(generator)
    with torch.no_grad():
        next_inputs, _ = model({SampleBatch.OBS: batch[SampleBatch.NEXT_OBS]}, [], None)
        next_actions, next_logp = SquashedGaussian(next_inputs, model).rsample(generator)
        next_obs = batch[SampleBatch.NEXT_OBS]
        q_next = _min(critic(next_obs, next_actions) for critic in policy.target_critics)
        target = _bootstrap(policy, batch, q_next - alpha * next_logp)
    obs = batch[SampleBatch.OBS]
    batch_actions = dist.to_unit(batch[SampleBatch.ACTIONS].float())
    q_selected = [critic(obs, batch_actions) for critic in policy.critics]
    with _without_parameter_gradients(policy.critics):
        q_policy = _min(critic(obs, actions) for critic in policy.critics)
    actor_loss = (alpha * logp - q_policy).mean()
    alpha_loss = -(policy.log_alpha * (logp.detach() + policy.target_entropy)).mean()
    return q_selected, target, actor_loss, alpha_loss, -logp.detach().mean()


def _discrete_losses(policy, model, batch, alpha):
    """As ``_continuous_losses``, with exact expectations over the actions."""
    logits, _ = model({SampleBatch.OBS: batch[SampleBatch.OBS]}, [], None)
    log_pi = torch.log_softmax(logits, dim=-1)
    pi = log_pi.exp()
    with torch.no_grad():
        next_logits, _ = model({SampleBatch.OBS: batch[SampleBatch.NEXT_OBS]}, [], None)
        next_log_pi = torch.log_softmax(next_logits, dim=-1)
        next_obs = batch[SampleBatch.NEXT_OBS]
        q_next = _min(critic(next_obs) for critic in policy.target_critics)
        next_value = (next_log_pi.exp() * (q_next - alpha * next_log_pi)).sum(-1)
        target = _bootstrap(policy, batch, next_value)
    q_all = [critic(batch[SampleBatch.OBS]) for critic in policy.critics]
    actions = batch[SampleBatch.ACTIONS].long().reshape(-1, 1)
    q_selected = [q.gather(1, actions).squeeze(1) for q in q_all]
    q_min = _min(q.detach() for q in q_all)
    actor_loss = (pi * (alpha * log_pi - q_min)).sum(-1).mean()
    entropy_gap = (log_pi + policy.target_entropy).detach()
    alpha_loss = -(pi.detach() * policy.log_alpha * entropy_gap).sum(-1).mean()
    return q_selected, target, actor_loss, alpha_loss, -(pi * log_pi).detach().sum(-1).mean()


def _bootstrap(policy, batch, next_value: torch.Tensor) -> torch.Tensor:
    """r + gamma**n_steps * (1 - terminated) * next_value."""
    steps = batch[N_STEPS].float() if N_STEPS in batch else 1.0
    discount = policy.config["gamma"] ** steps
    not_terminated = 1.0 - batch[SampleBatch.TERMINATEDS].float()
    return batch[SampleBatch.REWARDS].float() + discount * not_terminated * next_value


def _min(values: Iterable[torch.Tensor]) -> torch.Tensor:
    values = list(values)
    return values[0] if len(values) == 1 else torch.min(*values)


@contextlib.contextmanager
def _without_parameter_gradients(module: nn.Module) -> Iterator[None]:
    """Forward passes inside record no gradient for ``module``'s parameters;
    gradients still flow through the module to its inputs."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


def make_sac_optimizer(policy, config) -> GroupedAdam:
    """``optimizer_fn``: one Adam, a parameter group (and learning rate) each for
    the actor, the critics and log(alpha)."""
    rates = {**DEFAULT_CONFIG["optimization"], **config["optimization"]}
    return GroupedAdam(
        [
            (policy.model.parameters(), rates["actor_learning_rate"]),
            (policy.critics.parameters(), rates["critic_learning_rate"]),
            ([policy.log_alpha], rates["entropy_learning_rate"]),
        ]
    )


def setup_sac(policy, obs_space, action_space, config) -> None:
    """``before_loss_init``: critics on the policy's device, log(alpha), the target entropy."""
    policy.critics.to(policy.device)
    policy.target_critics.to(policy.device)
    policy.log_alpha = nn.Parameter(
        torch.tensor(math.log(config["initial_alpha"]), device=policy.device)
    )
    policy.target_entropy = resolve_target_entropy(config["target_entropy"], action_space)


def resolve_target_entropy(target_entropy: float | str, action_space: gym.Space) -> float:
    """The number ``target_entropy`` stands for: itself, or for "auto" ``-d`` with
    Box actions of ``d`` dimensions and ``0.98 * log(n)`` with Discrete(n).

    Example:
        >>> resolve_target_entropy("auto", gym.spaces.Box(-1, 1, (2, 3)))
        -6.0
        >>> round(resolve_target_entropy("auto", gym.spaces.Discrete(2)), 4)
        0.6793
    """
    if target_entropy == "auto":
        if isinstance(action_space, gym.spaces.Discrete):
            return 0.98 * math.log(int(action_space.n))
        return -float(np.prod(action_space.shape, dtype=np.int64))
    return float(target_entropy)


class SACMixin:
    """Target updates, the critics and alpha in the policy's state, and
    ``learned_parameters`` covering them all (the actor is ``model``, the critics
    and ``log_alpha`` are not), so clipping, all-reduces and gradients include them."""

    def update_target(self, tau: float | None = None) -> None:
        """target = tau * critic + (1 - tau) * target (``config["tau"]`` by default)."""
        tau = self.config["tau"] if tau is None else tau
        with torch.no_grad():
            for target, online in zip(self.target_critics.parameters(), self.critics.parameters()):
                target.mul_(1.0 - tau).add_(online, alpha=tau)

    def learned_parameters(self) -> list[nn.Parameter]:
        """Every parameter the optimizer updates: actor, critics, log(alpha)."""
        return [p for group in self._optimizer.param_groups for p in group["params"]]

    def get_state(self, include_optimizer: bool = True) -> dict[str, Any]:
        state = super().get_state(include_optimizer)
        state["critic_weights"] = to_numpy(self.critics.state_dict())
        state["target_critic_weights"] = to_numpy(self.target_critics.state_dict())
        state["log_alpha"] = self.log_alpha.detach().cpu().numpy().copy()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if "critic_weights" in state:
            self.critics.load_state_dict(to_torch(state["critic_weights"]))
        if "target_critic_weights" in state:
            self.target_critics.load_state_dict(to_torch(state["target_critic_weights"]))
        if "log_alpha" in state:
            with torch.no_grad():
                self.log_alpha.copy_(torch.as_tensor(state["log_alpha"]))

    def set_lr(self, lr: float) -> None:
        """Only records ``lr``: SAC's three learning rates (``optimization``) stay
        those of its parameter groups, which the optimizer's state restores."""
        self.cur_lr = lr

    def extra_grad_process(self, optimizer: Any, loss: torch.Tensor) -> dict[str, Any]:
        """Clips each parameter group's gradient norm to ``grad_clip`` (as RLlib does)."""
        if not self.config.get("grad_clip"):
            return {}
        info = {}
        for name, group in zip(("actor", "critic", "alpha"), optimizer.param_groups):
            info[f"{name}_grad_gnorm"] = clip_grad_norm(group["params"], self.config["grad_clip"])
        return info


SACTorchPolicy = build_torch_policy(
    "SACTorchPolicy",
    loss_fn=sac_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    postprocess_fn=postprocess_n_step,
    optimizer_fn=make_sac_optimizer,
    make_model=make_sac_models,
    action_distribution_fn=sac_action_distribution,
    before_loss_init=setup_sac,
    mixins=[SACMixin],
)


def validate_config(config: dict[str, Any]) -> None:
    for key in ("optimization", "policy_model_config", "q_model_config"):
        unknown = set(config[key]) - set(DEFAULT_CONFIG[key])
        if unknown:
            raise ValueError(
                f"unknown {key} keys {sorted(unknown)}; SAC's {key} takes "
                f"{sorted(DEFAULT_CONFIG[key])}"
            )
    target_entropy = config["target_entropy"]
    if target_entropy != "auto" and not isinstance(target_entropy, (int, float)):
        raise ValueError(f"target_entropy must be a number or 'auto', got {target_entropy!r}")


SACTrainer = build_trainer(
    "SAC",
    SACTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_replay_optimizer,
    validate_config=validate_config,
)
