"""DQN and SimpleQ: Q-learning from replayed experience with a target network.

Mnih et al. 2015 (DQN), with the Rainbow parts RLlib's DQN has by default:
double Q (van Hasselt et al. 2016), a dueling head (Wang et al. 2016),
n-step returns and prioritised replay (Schaul et al. 2016). ``SimpleQ`` is
the plain algorithm: one-step targets from the max of the target network,
no dueling, uniform replay.

The policy is built from ``build_torch_policy`` hooks, as the other
algorithms are: ``make_model`` (a Q network and its target copy),
``action_sampler_fn`` (greedy actions, epsilon-greedy while exploring, the
epsilon annealed linearly over sampled steps), ``extra_action_out_fn``
(``q_values``), the loss (Huber loss of the TD error, weighted by the
importance weights of prioritised replay) returning the per-row
``td_error`` that updates the priorities. ``SyncReplayOptimizer`` samples,
replays and updates the target network every ``target_network_update_freq``
steps (a Polyak average with ``tau`` < 1).

Example:
    >>> with DQNTrainer({"learning_starts": 100, "timesteps_per_iteration": 200},
    ...                 env="CartPole-v1") as trainer:
    ...     result = trainer.train()
    >>> result["timesteps_total"] >= 200, result["info"]["num_target_updates"] >= 0
    (True, True)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import nn

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.n_step import N_STEPS, compute_n_step
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.models import ModelCatalog, TorchModel
from hpcrl.models.catalog import check_feed_forward
from hpcrl.models.fcnet import _activation_class, _mlp
from hpcrl.optimizers.sync_replay_optimizer import TD_ERROR, SyncReplayOptimizer
from hpcrl.policy.adam import Adam
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.schedules import PiecewiseSchedule
from hpcrl.policy.target_network import TargetNetworkMixin
from hpcrl.replay import WEIGHTS

Q_VALUES = "q_values"

# The keys of make_replay_optimizer (SyncReplayOptimizer), shared by the replay
# algorithms (DQN, SimpleQ, SAC, TD3, DDPG), each of which may change the values.
REPLAY_DEFAULTS: dict[str, Any] = {
    # Rows each policy's replay buffer holds.
    "buffer_size": 50_000,
    # Prioritised replay (False: uniform).
    "prioritized_replay": False,
    "prioritized_replay_alpha": 0.6,
    "prioritized_replay_beta": 0.4,
    "final_prioritized_replay_beta": 0.4,
    "prioritized_replay_beta_annealing_timesteps": 20_000,
    "prioritized_replay_eps": 1e-6,
    # Steps sampled before learning starts.
    "learning_starts": 1500,
    # Rows trained per row sampled (None: one train batch per sampling round).
    "training_intensity": None,
    # Keep the replay buffers in checkpoints (exact resume; can be large).
    "store_buffer_in_checkpoints": True,
    # Sampled steps between target network updates (0: after every round).
    "target_network_update_freq": 0,
    # Target update: target = tau * online + (1 - tau) * target (1.0: a copy).
    "tau": 5e-3,
}

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        # --- model ---
        # Hidden layers of the Q head(s) on top of the model's trunk (fcnet_hiddens).
        "hiddens": [256],
        # Dueling head: Q = V + A - mean(A).
        "dueling": True,
        # Double Q: the online network picks the next action, the target network values it.
        "double_q": True,
        # n-step returns (1: one-step TD targets).
        "n_step": 1,
        # --- exploration ---
        # Epsilon-greedy: epsilon goes linearly from initial_epsilon to final_epsilon
        # over epsilon_timesteps sampled steps.
        "exploration_config": {
            "initial_epsilon": 1.0,
            "final_epsilon": 0.02,
            "epsilon_timesteps": 10_000,
        },
        # Ape-X's exploration (Horgan et al. 2018): remote worker i of N keeps
        # epsilon = 0.4 ** (1 + 7 * i / (N - 1)) (i = 0..N-1) all run, and the driver's
        # own worker acts greedily; exploration_config is then not used.
        "per_worker_exploration": False,
        # --- replay (REPLAY_DEFAULTS) ---
        **REPLAY_DEFAULTS,
        "prioritized_replay": True,
        "learning_starts": 1000,
        # --- learning ---
        "target_network_update_freq": 500,
        "tau": 1.0,
        "lr": 5e-4,
        "adam_epsilon": 1e-8,
        "grad_clip": 40.0,
        "train_batch_size": 32,
        "rollout_fragment_length": 4,
        "timesteps_per_iteration": 1000,
        "model": {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
    }
)


class QModel(nn.Module):
    """Q values from any catalog model's features: a (dueling) head on its trunk.

    ``forward(obs)`` gives ``[B, num_actions]`` Q values. The trunk is the
    catalog's model for the observation space (its last hidden layer, or a
    custom model's output) with ``hiddens`` layers on top of it.
    """

    def __init__(
        self, obs_space: gym.Space, action_space: gym.spaces.Discrete, config: dict[str, Any]
    ) -> None:
        super().__init__()
        self.trunk: TorchModel = ModelCatalog.get_model(
            obs_space, action_space, None, config["model"]
        )
        activation = _activation_class(config["model"].get("fcnet_activation", "relu"))
        features = int(self.trunk.num_outputs)
        hiddens = list(config["hiddens"])
        last = hiddens[-1] if hiddens else features
        num_actions = int(action_space.n)
        self.advantage = nn.Sequential(
            _mlp(features, hiddens, activation), nn.Linear(last, num_actions)
        )
        self.value = (
            nn.Sequential(_mlp(features, hiddens, activation), nn.Linear(last, 1))
            if config["dueling"]
            else None
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features, _ = self.trunk({SampleBatch.OBS: obs}, [], None)
        advantages = self.advantage(features)
        if self.value is None:
            return advantages
        return self.value(features) + advantages - advantages.mean(dim=1, keepdim=True)


class _TorchModelView(TorchModel):
    """The Q network as the policy's ``model``: forward returns Q values."""

    def __init__(self, q_model: QModel, obs_space: gym.Space, action_space: gym.Space) -> None:
        super().__init__(obs_space, action_space, int(action_space.n), {}, "q")
        self.q_model = q_model

    def forward(self, input_dict, state, seq_lens):
        return self.q_model(input_dict[SampleBatch.OBS]), state

    def value_function(self) -> torch.Tensor:
        raise NotImplementedError("a Q network has no separate value function")


def make_q_models(policy, obs_space: gym.Space, action_space: gym.Space, config) -> TorchModel:
    """``make_model``: the Q network (``policy.model``) and its target copy."""
    check_feed_forward(config["model"], "DQN")
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(
            f"DQN and SimpleQ need a Discrete action space, got {action_space}; for this "
            "space use SAC, TD3, DDPG or PPO"
        )
    model = _TorchModelView(QModel(obs_space, action_space, config), obs_space, action_space)
    policy.target_model = _TorchModelView(
        QModel(obs_space, action_space, config), obs_space, action_space
    )
    policy.target_model.load_state_dict(model.state_dict())
    for parameter in policy.target_model.parameters():
        parameter.requires_grad_(False)
    return model


def epsilon_greedy(policy, model, input_dict, state, explore=None, timestep=None):
    """``action_sampler_fn``: the greedy action, or with probability epsilon a random one."""
    q_values, _ = model(input_dict, state, None)
    policy.last_q_values = q_values
    actions = q_values.argmax(dim=1)
    if explore:
        epsilon = policy.epsilon_at(max(timestep or 0, policy.global_timestep))
        generator = policy.torch_generator
        n = actions.shape[0]
        random = torch.randint(0, q_values.shape[1], (n,), generator=generator)
        explore_rows = torch.rand(n, generator=generator) < epsilon
        actions = torch.where(explore_rows, random, actions)
    return actions, None, state


def q_values_fetch(policy, input_dict, state_batches, model, action_dist) -> dict[str, Any]:
    """``extra_action_out_fn``: the Q values of the last forward pass."""
    return {Q_VALUES: policy.last_q_values}


def dqn_loss(policy, model, dist_class, batch: SampleBatch) -> LossOutput:
    """Huber loss of the (double-)Q TD error, weighted by importance weights."""
    config = policy.config
    q_t, _ = model({SampleBatch.OBS: batch[SampleBatch.OBS]}, [], None)
    actions = batch[SampleBatch.ACTIONS].long()
    q_selected = q_t.gather(1, actions[:, None]).squeeze(1)
    with torch.no_grad():
        next_input = {SampleBatch.OBS: batch[SampleBatch.NEXT_OBS]}
        q_target_next, _ = policy.target_model(next_input, [], None)
        if config["double_q"]:
            q_online_next, _ = model(next_input, [], None)
            best = q_online_next.argmax(dim=1, keepdim=True)
        else:
            best = q_target_next.argmax(dim=1, keepdim=True)
        q_next = q_target_next.gather(1, best).squeeze(1)
        steps = batch[N_STEPS].float() if N_STEPS in batch else 1.0
        discount = config["gamma"] ** steps
        not_terminated = 1.0 - batch[SampleBatch.TERMINATEDS].float()
        target = batch[SampleBatch.REWARDS].float() + discount * not_terminated * q_next
    td_error = q_selected - target
    weights = batch[WEIGHTS] if WEIGHTS in batch else torch.ones_like(td_error)
    loss = (weights * nn.functional.huber_loss(q_selected, target, reduction="none")).mean()
    return LossOutput(
        loss,
        terms={
            "mean_q": q_selected.mean(),
            "min_q": q_selected.min(),
            "max_q": q_selected.max(),
            "mean_td_error": td_error.abs().mean(),
        },
        per_row={TD_ERROR: td_error.detach()},
    )


def postprocess_n_step(policy, batch, other_agent_batches=None, episode=None):
    """n-step transitions (``n_step`` > 1), each bootstrapped with ``gamma ** n_steps``."""
    if policy.config["n_step"] > 1:
        compute_n_step(batch, policy.config["n_step"], policy.config["gamma"])
    return batch


class EpsilonGreedyMixin:
    """The epsilon of the policy's schedule, and it as its exploration state."""

    def epsilon_at(self, timestep: int) -> float:
        return self.epsilon_schedule.value(timestep)

    def get_exploration_state(self) -> dict[str, Any]:
        return {"cur_epsilon": self.epsilon_at(self.global_timestep)}


def setup_dqn(policy, obs_space, action_space, config) -> None:
    """``before_loss_init``: the target network on the policy's device, the epsilon schedule."""
    policy.target_model.to(policy.device)
    if config.get("per_worker_exploration"):
        epsilon = worker_epsilon(config.get("worker_index", 0), config.get("num_workers") or 0)
        policy.epsilon_schedule = PiecewiseSchedule([[0, epsilon], [1, epsilon]])
    else:
        exploration = {**DEFAULT_CONFIG["exploration_config"], **config["exploration_config"]}
        policy.epsilon_schedule = PiecewiseSchedule(
            [
                [0, exploration["initial_epsilon"]],
                [max(1, exploration["epsilon_timesteps"]), exploration["final_epsilon"]],
            ]
        )
    policy.last_q_values = None


def worker_epsilon(worker_index: int, num_workers: int) -> float:
    """Ape-X's fixed epsilon of a rollout worker: ``0.4 ** (1 + 7 * i / (N - 1))`` for
    remote worker ``i = worker_index - 1`` of ``N``; 0 (greedy) for the driver's
    worker (index 0).

    Example:
        >>> [round(worker_epsilon(w, 3), 4) for w in range(4)]
        [0.0, 0.4, 0.0162, 0.0007]
    """
    if worker_index == 0:
        return 0.0
    if num_workers < 2:
        return 0.4
    return 0.4 ** (1 + 7 * (worker_index - 1) / (num_workers - 1))


def dqn_stats(policy, batch) -> dict[str, Any]:
    return {"cur_epsilon": policy.epsilon_at(policy.global_timestep)}


DQNTorchPolicy = build_torch_policy(
    "DQNTorchPolicy",
    loss_fn=dqn_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    stats_fn=dqn_stats,
    postprocess_fn=postprocess_n_step,
    extra_action_out_fn=q_values_fetch,
    optimizer_fn=lambda policy, config: Adam(
        policy.model.parameters(), lr=config["lr"], eps=config["adam_epsilon"]
    ),
    make_model=make_q_models,
    action_sampler_fn=epsilon_greedy,
    before_loss_init=setup_dqn,
    mixins=[TargetNetworkMixin, EpsilonGreedyMixin],
)


# The config keys both replay optimizers (SyncReplayOptimizer, AsyncReplayOptimizer)
# take under the same names.
REPLAY_OPTIMIZER_KEYS = (
    "learning_starts",
    "buffer_size",
    "prioritized_replay",
    "prioritized_replay_alpha",
    "prioritized_replay_beta",
    "final_prioritized_replay_beta",
    "prioritized_replay_beta_annealing_timesteps",
    "prioritized_replay_eps",
    "train_batch_size",
    "target_network_update_freq",
)


def make_replay_optimizer(workers: WorkerSet, config: dict[str, Any]) -> SyncReplayOptimizer:
    """``SyncReplayOptimizer`` with the config's replay, ratio and target-update keys."""
    return SyncReplayOptimizer(
        workers,
        **{key: config[key] for key in REPLAY_OPTIMIZER_KEYS},
        training_intensity=config["training_intensity"],
        store_buffer_in_checkpoints=config["store_buffer_in_checkpoints"],
    )


def validate_config(config: dict[str, Any]) -> None:
    unknown = set(config["exploration_config"]) - set(DEFAULT_CONFIG["exploration_config"])
    if unknown:
        raise ValueError(
            f"unknown exploration_config keys {sorted(unknown)}; DQN's epsilon-greedy takes "
            f"{sorted(DEFAULT_CONFIG['exploration_config'])}"
        )
    if config["per_worker_exploration"] and not config["num_workers"]:
        raise ValueError(
            "per_worker_exploration gives each remote worker its own epsilon and the "
            "driver's worker none: it needs num_workers >= 1 (got "
            f"{config['num_workers']!r}); set num_workers, or use exploration_config"
        )


DQNTrainer = build_trainer(
    "DQN",
    DQNTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_replay_optimizer,
    validate_config=validate_config,
)

SIMPLE_Q_CONFIG: dict[str, Any] = {
    **DEFAULT_CONFIG,
    "dueling": False,
    "double_q": False,
    "n_step": 1,
    "prioritized_replay": False,
    "hiddens": [],
}

SimpleQTorchPolicy = DQNTorchPolicy.with_updates(
    name="SimpleQTorchPolicy", get_default_config=lambda: SIMPLE_Q_CONFIG
)

SimpleQTrainer = DQNTrainer.with_updates(
    name="SimpleQ", default_policy=SimpleQTorchPolicy, default_config=SIMPLE_Q_CONFIG
)
