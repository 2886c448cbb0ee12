"""A custom recurrent model: a GRU written against ``RecurrentNetwork``, registered in the
catalog, trained by PPO on CartPole without its velocities.

``MemoryGRU`` implements ``get_initial_state`` (one hidden vector), ``forward_rnn`` on
padded sequences ``[N, T, features]`` and ``value_function``. hpcrl does the rest: the
rollout worker feeds the state back each step and resets it at episode starts, training
cuts batches into sequences that start from their stored states, and the padded steps
never reach the loss. Without memory the policy cannot tell which way the pole moves and
stays near a return of 40; the script exits non-zero unless the GRU reaches the target.

Run:
    python examples/custom_recurrent_model.py
    python examples/custom_recurrent_model.py --stop-reward 80 --max-timesteps 100000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import nn

import hpcrl.env.stateless_cartpole  # noqa: F401  (registers StatelessCartPole-v1)
from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.models import ModelCatalog
from hpcrl.models.recurrent import RecurrentNetwork, remove_time_dimension


class MemoryGRU(RecurrentNetwork):
    """obs -> tanh layer -> GRU -> policy logits and value."""

    def __init__(self, obs_space, action_space, num_outputs, model_config, name, hidden=64):
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        self.hidden = hidden
        self.encoder = nn.Sequential(nn.Linear(int(np.prod(obs_space.shape)), hidden), nn.Tanh())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.logits = nn.Linear(hidden, num_outputs)
        self.value = nn.Linear(hidden, 1)
        self._values: torch.Tensor | None = None
        self._seq_lens: torch.Tensor | None = None

    def get_initial_state(self) -> list[np.ndarray]:
        return [np.zeros(self.hidden, np.float32)]

    def forward_rnn(self, inputs, state, seq_lens):
        out, hidden = self.gru(self.encoder(inputs), state[0][None])
        self._values, self._seq_lens = self.value(out), seq_lens
        return self.logits(out), [hidden[0]]

    def value_function(self) -> torch.Tensor:
        if self._seq_lens is None:  # acting: one step per row
            return self._values[:, 0, 0]
        return remove_time_dimension(self._values, self._seq_lens)[:, 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-reward", type=float, default=150.0)
    parser.add_argument("--max-timesteps", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    ModelCatalog.register_custom_model("memory_gru", MemoryGRU)
    trainer = PPOTrainer(
        {
            "num_envs_per_worker": 16,
            "rollout_fragment_length": 64,
            "train_batch_size": 1024,
            "sgd_minibatch_size": 256,
            "num_sgd_iter": 6,
            "lr": 1e-3,
            "lambda": 0.95,
            "entropy_coeff": 0.0,
            "kl_coeff": 0.0,
            "grad_clip": 0.5,
            "vf_loss_coeff": 0.001,
            "seed": args.seed,
            "model": {"custom_model": "memory_gru", "max_seq_len": 20},
        },
        env="StatelessCartPole-v1",
    )
    try:
        while True:
            result = trainer.train()
            reward, steps = result["episode_reward_mean"], result["timesteps_total"]
            print(
                f"iter {result['training_iteration']:3d}  steps {steps:7,d}  reward {reward:6.1f}"
            )
            if reward >= args.stop_reward or steps >= args.max_timesteps:
                break
    finally:
        trainer.stop()
    if reward < args.stop_reward:
        print(f"FAILED: mean return {reward:.1f} < {args.stop_reward} after {steps:,} steps")
        return 1
    print(f"OK: the custom GRU reached {reward:.1f} >= {args.stop_reward} in {steps:,} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
