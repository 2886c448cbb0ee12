"""ES and ARS through their trainers on the local backend: identical parameters on
every process, the update's bytes, checkpoints, learning, config errors."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.es import ARSTrainer, ESTrainer, flat_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"noise_size": 200_000, "model": {"fcnet_hiddens": [8]}, "seed": 0}


@pytest.mark.parametrize(
    "trainer_class, extra",
    [
        (ESTrainer, {"episodes_per_batch": 8, "train_batch_size": 0, "eval_prob": 0.5}),
        (ARSTrainer, {"num_rollouts": 4, "rollouts_used": 2, "eval_prob": 0.5}),
    ],
    ids=["ES", "ARS"],
)
def test_every_worker_and_the_driver_hold_the_same_parameters(trainer_class, extra):
    config = {**SMALL, **extra, "num_workers": 2}
    with trainer_class(config, env="CartPole-v1") as trainer:
        before = trainer.get_policy().get_flat().copy()
        for _ in range(3):
            result = trainer.train()
            driver = trainer.get_policy().get_flat()
            workers = trainer.workers.call_remote("apply", flat_state)
            for theirs in workers:
                np.testing.assert_array_equal(theirs, driver)
        stats = trainer.get_policy().observation_filter.running
    assert not np.array_equal(before, driver)
    # every step of the perturbed episodes, on every process, counted once
    assert 0 < stats.count <= result["timesteps_total"]
    info = result["info"]
    # a share is a few numbers per episode, not the parameters
    assert info["exchange_bytes_per_worker"] < 8 * before.size
    assert info["exchange"] == "allgather"
    assert result["episodes_this_iter"] >= 0


def test_checkpoint_holds_parameters_statistics_and_adam_not_the_noise(tmp_path):
    config = {**SMALL, "episodes_per_batch": 6, "train_batch_size": 0, "num_workers": 1}
    with ESTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        path = trainer.save(str(tmp_path))
        saved = trainer.get_policy().get_state()
        theta = trainer.get_policy().get_flat().copy()
        trainer.train()
        after_two = trainer.get_policy().get_flat().copy()
    with ESTrainer(config, env="CartPole-v1") as restored:
        restored.restore(path)
        policy = restored.get_policy()
        np.testing.assert_array_equal(policy.get_flat(), theta)
        running = policy.observation_filter.running
        assert running.count == saved["observation_filter"]["running"]["count"] > 0
        assert policy.flat_adam.t == 1
        restored.train()
        # the same iteration from the same state: the same parameters
        np.testing.assert_array_equal(policy.get_flat(), after_two)
        workers = restored.workers.call_remote("apply", flat_state)
        np.testing.assert_array_equal(workers[0], after_two)
    sizes = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert sizes < 200_000 * 4  # the 800 KB noise table is not in it


@pytest.mark.parametrize(
    "trainer_class, config, message",
    [
        (ESTrainer, {"noise_stdev": 0.0}, "'noise_stdev' must be > 0"),
        (ESTrainer, {"eval_prob": 1.5}, r"'eval_prob' must be in \[0, 1\]"),
        (ESTrainer, {"episodes_per_batch": 1}, "episodes_per_batch must be >= 2"),
        (ARSTrainer, {"num_rollouts": 4, "rollouts_used": 5}, "rollouts_used must be between"),
        (ARSTrainer, {"observation_filter": "Nope"}, "observation_filter must be"),
    ],
)
def test_bad_config_is_a_clear_error(trainer_class, config, message):
    with pytest.raises(ValueError, match=message):
        trainer_class({**SMALL, **config}, env="CartPole-v1")


def tuned(name: str) -> dict:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "examples" / "tuned" / name
    (experiment,) = yaml.safe_load(path.read_text()).values()
    return experiment


@pytest.mark.parametrize(
    "trainer_class, name, budget",
    [(ESTrainer, "cartpole-es.yaml", 400_000), (ARSTrainer, "cartpole-ars.yaml", 500_000)],
    ids=["ES", "ARS"],
)
def test_reaches_150_on_cartpole_v0_with_2_workers(trainer_class, name, budget):
    experiment = tuned(name)
    assert experiment["stop"]["timesteps_total"] == budget
    config = {**experiment["config"], "seed": 0}
    with trainer_class(config, env=experiment["env"]) as trainer:
        while True:
            result = trainer.train()
            if result["episode_reward_mean"] >= 150 or result["timesteps_total"] >= budget:
                break
    assert result["episode_reward_mean"] >= 150, (
        f"{result['episode_reward_mean']:.1f} after {result['timesteps_total']} steps"
    )
