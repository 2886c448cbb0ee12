"""Algorithm names for ``hpcrl train --run``."""

from __future__ import annotations

import importlib

# name -> "module:attribute", imported on demand.
ALGORITHMS: dict[str, str] = {
    "PG": "hpcrl.algorithms.pg:PGTrainer",
    "A2C": "hpcrl.algorithms.a2c:A2CTrainer",
    "A3C": "hpcrl.algorithms.a3c:A3CTrainer",
    "PPO": "hpcrl.algorithms.ppo:PPOTrainer",
    "BC": "hpcrl.algorithms.bc:BCTrainer",
    "DQN": "hpcrl.algorithms.dqn:DQNTrainer",
    "SimpleQ": "hpcrl.algorithms.dqn:SimpleQTrainer",
    "SAC": "hpcrl.algorithms.sac:SACTrainer",
    "DDPG": "hpcrl.algorithms.ddpg:DDPGTrainer",
    "TD3": "hpcrl.algorithms.ddpg:TD3Trainer",
    "IMPALA": "hpcrl.algorithms.impala:IMPALATrainer",
    "APPO": "hpcrl.algorithms.appo:APPOTrainer",
    "APEX": "hpcrl.algorithms.apex:ApexTrainer",
    "APEX_DDPG": "hpcrl.algorithms.apex:ApexDDPGTrainer",
    "DDPPO": "hpcrl.algorithms.ddppo:DDPPOTrainer",
    "ES": "hpcrl.algorithms.es:ESTrainer",
    "ARS": "hpcrl.algorithms.es:ARSTrainer",
}


def get_trainer_class(name: str) -> type:
    """The Trainer class registered as ``name`` (e.g. "PG", "A2C")."""
    if name not in ALGORITHMS:
        # Imported here: this module is read by `hpcrl --help`, which must not wait for torch.
        from hpcrl.algorithms.config import unknown_key_message

        raise ValueError(unknown_key_message("algorithm", name, ALGORITHMS))
    module, _, attribute = ALGORITHMS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
