"""DDPG and TD3: a deterministic actor and Q critics learned from replayed experience.

DDPG (Lillicrap et al. 2016): a deterministic actor ``pi(s)`` (tanh, scaled
to the Box bounds) climbs the critic ``Q(s, pi(s))``; the critic regresses on
``r + gamma * Q'(s', pi'(s'))`` from Polyak-averaged target copies of both;
exploration adds Ornstein-Uhlenbeck (or Gaussian) noise. TD3 (Fujimoto et
al. 2018) is DDPG with three changes, each a config key: two critics and the
min of their targets (``twin_q``), clipped noise on the target action
(``smooth_target_policy``, ``target_noise``, ``target_noise_clip``) and one
actor update per ``policy_delay`` critic updates. As in RLlib, ``TD3Trainer``
is ``DDPGTrainer`` with other defaults.

Inside, actions are in ``[-1, 1]`` (the actor's tanh output); they are scaled
to the Box only on the way to the env, and replayed actions are scaled back.
So every noise scale is in units of the Box's half-range ``(high - low) / 2``
(Fujimoto's ``noise * max_action``): ``stddev``, ``target_noise`` and
``target_noise_clip``; ``ou_base_scale`` multiplies ``high - low``, as in RLlib.

The framework's one optimizer and one loss per step: ``policy.model`` holds
the actor and the critics, so gradient clipping, ``compute_gradients`` /
``apply_gradients`` and data-parallel gradient reduction cover every trained
parameter, but only the actor's weights are shipped to rollout workers
(``get_weights``); the critics' go into the policy's state. The optimizer is
Adam with a parameter group per learning rate (``actor_lr``, ``critic_lr``).
The loss is the critic loss plus, on actor steps, the actor loss, whose
critic forward pass uses detached critic parameters: each loss only reaches
its own parameters. On the other steps the actor gets no gradient at all
(``grad`` None), which hpcrl's Adam skips, moments included, so the actor
stays bit-identical. Targets follow the optimizer's ``update_target()``
calls (every sampling round with ``target_network_update_freq`` 0).

Example:
    >>> config = {"learning_starts": 100, "timesteps_per_iteration": 200, "seed": 0,
    ...           "actor_hiddens": [16], "critic_hiddens": [16],
    ...           "exploration_config": {"random_timesteps": 100}}
    >>> with TD3Trainer(config, env="Pendulum-v1") as trainer:
    ...     result = trainer.train()
    >>> result["timesteps_total"], result["info"]["num_steps_trained"]
    (200, 10100)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.dqn import (
    REPLAY_DEFAULTS,
    make_replay_optimizer,
    postprocess_n_step,
)
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.n_step import N_STEPS
from hpcrl.models import TorchModel, get_preprocessor
from hpcrl.models.catalog import check_feed_forward
from hpcrl.models.fcnet import _activation_class, _mlp
from hpcrl.optimizers.sync_replay_optimizer import TD_ERROR
from hpcrl.policy.adam import GroupedAdam
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.schedules import PiecewiseSchedule
from hpcrl.policy.torch_policy import clip_grad_norm, to_numpy, to_torch
from hpcrl.replay import WEIGHTS

GAUSSIAN = "GaussianNoise"
ORNSTEIN_UHLENBECK = "OrnsteinUhlenbeckNoise"

# Every key of each exploration type, with RLlib's defaults. Before
# ``random_timesteps`` exploring actions, actions are uniform over the Box; then
# the noise is multiplied by a scale going linearly from ``initial_scale`` to
# ``final_scale`` over the next ``scale_timesteps``.
NOISE_DEFAULTS: dict[str, dict[str, Any]] = {
    GAUSSIAN: {
        "type": GAUSSIAN,
        "random_timesteps": 1000,
        # Standard deviation, in half-ranges of the Box.
        "stddev": 0.1,
        "initial_scale": 1.0,
        "final_scale": 0.02,
        "scale_timesteps": 10_000,
    },
    ORNSTEIN_UHLENBECK: {
        "type": ORNSTEIN_UHLENBECK,
        "random_timesteps": 1000,
        # x += -ou_theta * x + ou_sigma * N(0, 1); noise = ou_base_scale * x * (high - low).
        "ou_theta": 0.15,
        "ou_sigma": 0.2,
        "ou_base_scale": 0.1,
        "initial_scale": 1.0,
        "final_scale": 0.02,
        "scale_timesteps": 10_000,
    },
}

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        # --- model ---
        # Hidden layers and activation of the actor (obs -> action).
        "actor_hiddens": [400, 300],
        "actor_hidden_activation": "relu",
        # Hidden layers and activation of each critic ((obs, action) -> Q).
        "critic_hiddens": [400, 300],
        "critic_hidden_activation": "relu",
        # --- TD3's changes (Fujimoto et al. 2018) ---
        # Two critics; the target is the min of their target copies.
        "twin_q": False,
        # Critic updates per actor update.
        "policy_delay": 1,
        # Clipped Gaussian noise on the target action (target policy smoothing),
        # in half-ranges of the Box.
        "smooth_target_policy": False,
        "target_noise": 0.2,
        "target_noise_clip": 0.5,
        # n-step returns (1: one-step TD targets).
        "n_step": 1,
        # --- exploration: "GaussianNoise" or "OrnsteinUhlenbeckNoise", keys in
        # NOISE_DEFAULTS (keys left out take the defaults of that type) ---
        "exploration_config": dict(NOISE_DEFAULTS[ORNSTEIN_UHLENBECK]),
        # --- replay (the keys of DQN's SyncReplayOptimizer, REPLAY_DEFAULTS) ---
        **REPLAY_DEFAULTS,
        "prioritized_replay": True,
        # --- learning ---
        # Adam learning rates of the actor and of the critics (the common "lr" is not used).
        "actor_lr": 1e-3,
        "critic_lr": 1e-3,
        # Huber loss of the TD error instead of half its square.
        "use_huber": False,
        "huber_threshold": 1.0,
        # L2 penalty (l2_reg * |w|^2 / 2) on the weights, not the biases, of each network.
        "l2_reg": 1e-6,
        # Sampled steps between target updates (0: every sampling round).
        "target_network_update_freq": 0,
        # target = tau * online + (1 - tau) * target.
        "tau": 0.002,
        # Clip the gradient norm of the actor and of the critics, each (None: no clipping).
        "grad_clip": None,
        "train_batch_size": 256,
        "rollout_fragment_length": 1,
        "timesteps_per_iteration": 1000,
    }
)

TD3_CONFIG: dict[str, Any] = {
    **DEFAULT_CONFIG,
    "twin_q": True,
    "policy_delay": 2,
    "smooth_target_policy": True,
    "exploration_config": {
        **NOISE_DEFAULTS[GAUSSIAN],
        "random_timesteps": 10_000,
        "final_scale": 1.0,
        "scale_timesteps": 1,
    },
    "buffer_size": 1_000_000,
    "prioritized_replay": False,
    "learning_starts": 10_000,
    "train_batch_size": 100,
    "tau": 5e-3,
    "l2_reg": 0.0,
}


class ActorCriticModel(TorchModel):
    """The actor and the critic(s) of DDPG and TD3, on flattened observations.

    ``forward`` gives the deterministic action in the Box's units;
    ``squashed_action`` the same in ``[-1, 1]``, which is what the critics
    take (``q_values``). Only ``actor`` is shipped to rollout workers.

    Example:
        >>> model = ActorCriticModel(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (1,)),
        ...                          {**TD3_CONFIG, "actor_hiddens": [8], "critic_hiddens": [8]})
        >>> obs = torch.zeros(5, 3)
        >>> actions, _ = model({"obs": obs}, [], None)
        >>> q1, q2 = model.q_values(obs, model.squashed_action(obs))
        >>> actions.shape, q1.shape, len(model.critics)
        (torch.Size([5, 1]), torch.Size([5]), 2)
    """

    def __init__(
        self, obs_space: gym.Space, action_space: gym.spaces.Box, config: dict[str, Any]
    ) -> None:
        num_actions = int(np.prod(action_space.shape))
        super().__init__(obs_space, action_space, num_actions, {}, "actor_critic")
        obs_size = get_preprocessor(obs_space).size
        self.actor = _head(
            obs_size, config["actor_hiddens"], config["actor_hidden_activation"], num_actions
        )
        self.actor.append(nn.Tanh())
        self.critics = nn.ModuleList(
            _head(
                obs_size + num_actions,
                config["critic_hiddens"],
                config["critic_hidden_activation"],
                1,
            )
            for _ in range(2 if config["twin_q"] else 1)
        )
        low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_range", high - low, persistent=False)

    def forward(self, input_dict, state, seq_lens):
        return self.to_env(self.squashed_action(input_dict[SampleBatch.OBS])), state

    def squashed_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor's action in ``[-1, 1]``, ``[B, num_actions]``."""
        return self.actor(obs.float().reshape(obs.shape[0], -1))

    def q_values(self, obs: torch.Tensor, squashed_actions: torch.Tensor) -> list[torch.Tensor]:
        """Each critic's ``Q(obs, action)``, ``[B]`` each."""
        inputs = self._critic_inputs(obs, squashed_actions)
        return [critic(inputs).squeeze(-1) for critic in self.critics]

    def q_value_for_actor(self, obs: torch.Tensor, squashed_actions: torch.Tensor) -> torch.Tensor:
        """The first critic's ``Q(obs, action)`` as a function of the action only: its
        parameters enter detached, so a loss on it sends no gradient to the critic."""
        critic = self.critics[0]
        frozen = {name: p.detach() for name, p in critic.named_parameters()}
        inputs = self._critic_inputs(obs, squashed_actions)
        return functional_call(critic, frozen, (inputs,)).squeeze(-1)

    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        """Actions in ``[-1, 1]`` scaled to the Box."""
        return self.action_low + (squashed + 1.0) * 0.5 * self.action_range

    def to_squashed(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions of the Box scaled to ``[-1, 1]``."""
        return (actions - self.action_low) / self.action_range * 2.0 - 1.0

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.actor.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critics.parameters())

    def value_function(self) -> torch.Tensor:
        raise NotImplementedError("DDPG's critics value (obs, action): use q_values")

    def _critic_inputs(self, obs: torch.Tensor, squashed_actions: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs.float().reshape(obs.shape[0], -1), squashed_actions], dim=1)


def _head(in_size: int, hiddens: Sequence[int], activation: str, out_size: int) -> nn.Sequential:
    """An MLP (fcnet's hidden layers) with a linear output layer of torch's default init."""
    hiddens = [int(h) for h in hiddens]
    last = hiddens[-1] if hiddens else in_size
    return nn.Sequential(
        *_mlp(in_size, hiddens, _activation_class(activation)), nn.Linear(last, out_size)
    )


def make_actor_critic(
    policy, obs_space: gym.Space, action_space: gym.Space, config: dict[str, Any]
) -> ActorCriticModel:
    """``make_model``: the actor and critics (``policy.model``) and their target copy."""
    check_feed_forward(config["model"], "DDPG and TD3")
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(
            f"DDPG and TD3 need a continuous (Box) action space, got {action_space}; for "
            "this space use DQN, SAC or PPO"
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(
            f"DDPG and TD3 scale a tanh output to the action bounds, which must be finite; "
            f"got {action_space}: rescale the env's actions to finite bounds "
            "(e.g. gymnasium.wrappers.RescaleAction)"
        )
    model = ActorCriticModel(obs_space, action_space, config)
    policy.target_model = ActorCriticModel(obs_space, action_space, config)
    policy.target_model.load_state_dict(model.state_dict())
    for parameter in policy.target_model.parameters():
        parameter.requires_grad_(False)
    return model


def deterministic_action_with_noise(policy, model, input_dict, state, explore=None, timestep=None):
    """``action_sampler_fn``: the actor's action; while exploring, uniform random actions
    for the first ``random_timesteps``, then the actor's plus noise, within the bounds."""
    squashed = model.squashed_action(input_dict[SampleBatch.OBS])
    if explore:
        squashed = policy.exploration_noise(squashed)
    return model.to_env(squashed), None, state


def actor_critic_loss(policy, model, dist_class, batch: SampleBatch) -> LossOutput:
    """Critic loss (TD error of each critic against the shared target) plus, every
    ``policy_delay``-th learner step, the actor loss ``-Q1(s, pi(s)).mean()``."""
    config = policy.config
    obs = batch[SampleBatch.OBS]
    q_values = model.q_values(obs, model.to_squashed(batch[SampleBatch.ACTIONS]))
    with torch.no_grad():
        target = td_target(policy, batch)
    td_errors = [q - target for q in q_values]
    if config["use_huber"]:
        threshold = config["huber_threshold"]
        errors = sum(
            nn.functional.huber_loss(td, torch.zeros_like(td), delta=threshold, reduction="none")
            for td in td_errors
        )
    else:
        errors = sum(0.5 * td.square() for td in td_errors)
    weights = batch[WEIGHTS] if WEIGHTS in batch else torch.ones_like(errors)
    critic_loss = (weights * errors).mean() + _l2_penalty(model.critics, config["l2_reg"])

    policy.learner_steps += 1
    total = critic_loss
    if policy.learner_steps % config["policy_delay"] == 0:
        q_policy = model.q_value_for_actor(obs, model.squashed_action(obs))
        actor_loss = -q_policy.mean() + _l2_penalty(model.actor, config["l2_reg"])
        total = critic_loss + actor_loss
        policy.last_actor_loss = float(actor_loss.detach())
    q_selected = q_values[0].detach()
    return LossOutput(
        total,
        terms={
            "critic_loss": critic_loss.detach(),
            # the actor loss of the latest actor update (TD3: not every step's)
            "actor_loss": policy.last_actor_loss,
            "mean_q": q_selected.mean(),
            "min_q": q_selected.min(),
            "max_q": q_selected.max(),
            "mean_td_error": td_errors[0].detach().abs().mean(),
        },
        per_row={TD_ERROR: td_errors[0].detach()},
    )


def td_target(policy, batch: SampleBatch) -> torch.Tensor:
    """``r + gamma ** n_steps * (1 - terminated) * Q'(s', a')``: ``a'`` the target actor's
    action (plus clipped noise with ``smooth_target_policy``), ``Q'`` the target
    critic (the min of both with ``twin_q``)."""
    config = policy.config
    target_model = policy.target_model
    next_obs = batch[SampleBatch.NEXT_OBS]
    next_actions = target_model.squashed_action(next_obs)
    if config["smooth_target_policy"] and config["target_noise"] > 0:
        noise = torch.randn(
            next_actions.shape, generator=policy.torch_generator, device=next_actions.device
        )
        clip = config["target_noise_clip"]
        noise = (noise * config["target_noise"]).clamp(-clip, clip)
        next_actions = (next_actions + noise).clamp(-1.0, 1.0)
    q_next = torch.stack(target_model.q_values(next_obs, next_actions)).min(dim=0).values
    steps = batch[N_STEPS].float() if N_STEPS in batch else 1.0
    not_terminated = 1.0 - batch[SampleBatch.TERMINATEDS].float()
    return batch[SampleBatch.REWARDS].float() + config["gamma"] ** steps * not_terminated * q_next


def _l2_penalty(module: nn.Module, l2_reg: float) -> torch.Tensor | float:
    """``l2_reg * |w|^2 / 2`` over the weights (not the biases) of ``module``."""
    if not l2_reg:
        return 0.0
    weights = [p for name, p in module.named_parameters() if not name.endswith("bias")]
    return 0.5 * l2_reg * sum(w.square().sum() for w in weights)


def make_optimizer(policy, config: dict[str, Any]) -> GroupedAdam:
    """``optimizer_fn``: Adam with ``actor_lr`` for the actor, ``critic_lr`` for the critics."""
    return GroupedAdam(
        [
            (policy.model.actor_parameters(), config["actor_lr"]),
            (policy.model.critic_parameters(), config["critic_lr"]),
        ]
    )


def clip_gradients(policy, optimizer: GroupedAdam, loss: torch.Tensor) -> dict[str, Any]:
    """``extra_grad_process_fn``: clip the actor's and the critics' gradient norms,
    each to ``grad_clip`` (as RLlib clips per optimizer)."""
    if not policy.config.get("grad_clip"):
        return {}
    norms = {}
    for name, params in (
        ("actor_gnorm", policy.model.actor_parameters()),
        ("critic_gnorm", policy.model.critic_parameters()),
    ):
        # the actor has no gradient on the steps it waits: norm 0
        norms[name] = clip_grad_norm(list(params), policy.config["grad_clip"])
    return norms


class ActorCriticMixin:
    """Targets, exploration noise, actor-only weights and the learner's state.

    ``get_weights``/``set_weights`` carry the actor only (what rollout workers
    need); ``get_state`` adds the critics, the target networks, the count of
    learner steps (which steps move the actor), the count of exploring
    actions (``random_timesteps`` and the noise scale) and the
    Ornstein-Uhlenbeck state of each env, so a checkpoint continues exactly.
    """

    def update_target(self, tau: float | None = None) -> None:
        """target = tau * online + (1 - tau) * target (``config["tau"]`` by default)."""
        tau = self.config["tau"] if tau is None else tau
        with torch.no_grad():
            # target + tau * (online - target), all parameters in one kernel per dtype
            torch._foreach_lerp_(self.target_parameters, self.online_parameters, tau)

    def exploration_noise(self, squashed: torch.Tensor) -> torch.Tensor:
        """Exploring actions in ``[-1, 1]`` for the actor's ``squashed`` ones."""
        settings = self.exploration
        timestep = max(self.exploration_timestep, self.global_timestep)
        self.exploration_timestep += squashed.shape[0]
        generator = self.torch_generator
        if timestep < settings["random_timesteps"]:
            uniform = torch.rand(squashed.shape, generator=generator, device=squashed.device)
            return uniform * 2.0 - 1.0
        scale = self.noise_scale.value(timestep)
        gaussian = torch.randn(squashed.shape, generator=generator, device=squashed.device)
        if settings["type"] == GAUSSIAN:
            noise = scale * settings["stddev"] * gaussian
        else:
            if self.ou_state is None or self.ou_state.shape != squashed.shape:
                # one process per env row (a batch of another size starts afresh)
                self.ou_state = torch.zeros_like(squashed)
            self.ou_state += -settings["ou_theta"] * self.ou_state + settings["ou_sigma"] * gaussian
            # RLlib's ou_base_scale * x * (high - low), in half-ranges: times 2
            noise = scale * settings["ou_base_scale"] * 2.0 * self.ou_state
        return (squashed + noise).clamp(-1.0, 1.0)

    def get_exploration_state(self) -> dict[str, Any]:
        timestep = max(self.exploration_timestep, self.global_timestep)
        return {
            "exploration_timestep": self.exploration_timestep,
            "cur_scale": self.noise_scale.value(timestep),
            "random": timestep < self.exploration["random_timesteps"],
        }

    def set_lr(self, lr: float) -> None:
        """Kept as ``cur_lr`` only: the learning rates are ``actor_lr`` and ``critic_lr``,
        each in its parameter group, and the optimizer's state restores them."""
        self.cur_lr = lr

    def get_weights(self) -> dict[str, np.ndarray]:
        return {
            k: v.detach().cpu().numpy().copy()
            for k, v in self.model.state_dict().items()
            if k.startswith("actor.")
        }

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        expected = {k for k in self.model.state_dict() if k.startswith("actor.")}
        if set(weights) != expected:
            raise ValueError(
                f"weights do not match the actor: missing {sorted(expected - set(weights))}, "
                f"unexpected {sorted(set(weights) - expected)}"
            )
        self.model.load_state_dict(to_torch(weights), strict=False)

    def get_state(self, include_optimizer: bool = True) -> dict[str, Any]:
        state = super().get_state(include_optimizer)
        state["critic_weights"] = to_numpy(
            {k: v for k, v in self.model.state_dict().items() if not k.startswith("actor.")}
        )
        state["target_weights"] = to_numpy(self.target_model.state_dict())
        state["learner_steps"] = self.learner_steps
        state["last_actor_loss"] = self.last_actor_loss
        state["exploration_timestep"] = self.exploration_timestep
        # no rows: no Ornstein-Uhlenbeck process started yet
        ou_state = self.ou_state if self.ou_state is not None else torch.zeros(0)
        state["ou_state"] = ou_state.cpu().numpy().copy()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if "critic_weights" in state:
            self.model.load_state_dict(to_torch(state["critic_weights"]), strict=False)
        if "target_weights" in state:
            self.target_model.load_state_dict(to_torch(state["target_weights"]))
        self.learner_steps = int(state.get("learner_steps", self.learner_steps))
        self.last_actor_loss = float(state.get("last_actor_loss", self.last_actor_loss))
        self.exploration_timestep = int(
            state.get("exploration_timestep", self.exploration_timestep)
        )
        if "ou_state" in state:
            ou_state = np.array(state["ou_state"], dtype=np.float32)
            self.ou_state = torch.as_tensor(ou_state, device=self.device) if ou_state.size else None


def resolve_exploration(given: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """The full exploration settings: ``given`` over the algorithm's ``default`` when
    of its type, else over the defaults of the given type (``NOISE_DEFAULTS``)."""
    kind = given.get("type", default["type"])
    if kind not in NOISE_DEFAULTS:
        raise ValueError(
            f"unknown exploration_config type {kind!r}; DDPG and TD3 take "
            f"{' or '.join(repr(k) for k in NOISE_DEFAULTS)}"
        )
    unknown = set(given) - set(NOISE_DEFAULTS[kind])
    if unknown:
        raise ValueError(
            f"unknown exploration_config keys {sorted(unknown)} for {kind}; it takes "
            f"{sorted(NOISE_DEFAULTS[kind])}"
        )
    base = default if kind == default["type"] else NOISE_DEFAULTS[kind]
    return {**NOISE_DEFAULTS[kind], **base, **given}


def setup_actor_critic(policy, obs_space, action_space, config) -> None:
    """``before_loss_init``: targets on the policy's device, counters, exploration."""
    policy.target_model.to(policy.device)
    policy.online_parameters = list(policy.model.parameters())
    policy.target_parameters = list(policy.target_model.parameters())
    policy.learner_steps = 0
    policy.last_actor_loss = float("nan")
    policy.exploration_timestep = 0
    policy.ou_state = None
    policy.exploration = resolve_exploration(
        config["exploration_config"], policy.get_default_config()["exploration_config"]
    )
    start = policy.exploration["random_timesteps"]
    policy.noise_scale = PiecewiseSchedule(
        [
            [start, policy.exploration["initial_scale"]],
            [
                start + max(1, policy.exploration["scale_timesteps"]),
                policy.exploration["final_scale"],
            ],
        ]
    )


DDPGTorchPolicy = build_torch_policy(
    "DDPGTorchPolicy",
    loss_fn=actor_critic_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    postprocess_fn=postprocess_n_step,
    extra_grad_process_fn=clip_gradients,
    optimizer_fn=make_optimizer,
    make_model=make_actor_critic,
    action_sampler_fn=deterministic_action_with_noise,
    before_loss_init=setup_actor_critic,
    mixins=[ActorCriticMixin],
)

TD3TorchPolicy = DDPGTorchPolicy.with_updates(
    name="TD3TorchPolicy", get_default_config=lambda: TD3_CONFIG
)


def config_validator(defaults: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """``validate_config`` of the trainer with ``defaults``."""

    def validate_config(config: dict[str, Any]) -> None:
        resolve_exploration(config["exploration_config"], defaults["exploration_config"])

    return validate_config


DDPGTrainer = build_trainer(
    "DDPG",
    DDPGTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_replay_optimizer,
    validate_config=config_validator(DEFAULT_CONFIG),
)

TD3Trainer = DDPGTrainer.with_updates(
    name="TD3",
    default_policy=TD3TorchPolicy,
    default_config=TD3_CONFIG,
    validate_config=config_validator(TD3_CONFIG),
)
