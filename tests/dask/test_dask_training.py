"""Training on the Dask backend against a real LocalCluster: the algorithms, the same
weights as on ``local``, a worker process killed with SIGKILL mid-iteration, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from hpcrl.algorithms.es import flat_state
from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.backends import WorkerLostError
from hpcrl.env.multi_agent_env import make_multi_agent
from hpcrl.env.registry import register_env

pytest.importorskip("distributed")


class SignallingCartPole(gym.Wrapper):
    """CartPole. On worker 1, after ``signal_after`` steps, it writes its pid to
    ``pid_file`` (once per run) and pauses, so the test can kill the process mid-sample."""

    def __init__(self, context):
        super().__init__(gym.make("CartPole-v1"))
        self.context = context
        self.steps = 0

    def step(self, action):
        self.steps += 1
        context = self.context
        if context.get("pid_file") and context.worker_index == 1 and context.vector_index == 0:
            path = Path(context["pid_file"])
            if self.steps >= context["signal_after"] and not path.exists():
                path.write_text(str(os.getpid()))
                time.sleep(10)  # killed during this pause
        return self.env.step(action)


def config_for(algo: str, address: str, **extra) -> dict:
    config = {
        "backend": "dask",
        "dask_address": address,
        "num_workers": 2,
        "seed": 7,
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 32,
        "vectorization_mode": "sync",
        "model": {"fcnet_hiddens": [16]},
    }
    if algo == "PPO":
        config.update(train_batch_size=128, sgd_minibatch_size=64, num_sgd_iter=2)
    if algo == "A3C":
        config.update(grads_per_step=6)
    if algo == "DQN":
        config.update(learning_starts=64, timesteps_per_iteration=128, buffer_size=500)
    if algo in ("IMPALA", "APPO"):
        config.update(train_batch_size=128, min_iter_time_s=0.0, timesteps_per_iteration=256)
    config.update(extra)
    return config


@pytest.mark.parametrize("algo", ["PPO", "A3C", "PG", "A2C", "DQN", "IMPALA", "APPO"])
def test_algorithms_train_on_dask(algo, dask_cluster):
    config = config_for(algo, dask_cluster.scheduler_address)
    trainer = get_trainer_class(algo)(config, "CartPole-v1")
    try:
        pids = [actor.pid for actor in trainer.workers.remote_workers()]
        assert len(set(pids)) == 2 and os.getpid() not in pids
        for _ in range(2):
            result = trainer.train()
        assert result["training_iteration"] == 2 and result["timesteps_total"] > 0
        assert result["num_healthy_workers"] == 2 and result["num_worker_restarts"] == 0
        stats = result["info"]["learner"]["default_policy"]
        assert np.isfinite(stats["mean_td_error" if algo == "DQN" else "policy_loss"])
    finally:
        trainer.stop()


MultiAgentCartPole = make_multi_agent("CartPole-v1")


def by_parity(agent_id, episode=None, worker=None, **kwargs):
    return "even" if agent_id % 2 == 0 else "odd"


TWO_POLICIES = {"policies": ["even", "odd"], "policy_mapping_fn": by_parity}


@pytest.mark.parametrize("multi_agent", [False, True], ids=["one-policy", "two-policies"])
def test_same_weights_on_dask_and_local(dask_cluster, one_torch_thread, multi_agent):
    # Dask workers run one torch thread; so does the local run here.
    weights = {}
    env = lambda cfg: MultiAgentCartPole({"num_agents": 3}) if multi_agent else "CartPole-v1"  # noqa: E731
    for backend in ("local", "dask"):
        config = config_for("PPO", dask_cluster.scheduler_address, backend=backend)
        if backend == "local":
            del config["dask_address"]
        if multi_agent:
            config["multiagent"] = TWO_POLICIES
        trainer = get_trainer_class("PPO")(config, env if multi_agent else "CartPole-v1")
        for _ in range(3):
            trainer.train()
        weights[backend] = trainer.get_weights()
        trainer.stop()
    assert sorted(weights["dask"]) == (["even", "odd"] if multi_agent else ["default_policy"])
    for pid, policy_weights in weights["local"].items():
        assert policy_weights.keys() == weights["dask"][pid].keys()
        for key, value in policy_weights.items():
            np.testing.assert_array_equal(value, weights["dask"][pid][key], err_msg=f"{pid}/{key}")


def kill_when_signalled(pid_file: Path, killed: list[int]) -> threading.Thread:
    """A thread that sends SIGKILL to the pid the env writes to ``pid_file``."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("algo", ["PPO", "A3C", "IMPALA"])
def test_worker_killed_mid_iteration_is_recreated(algo, dask_cluster, tmp_path):
    register_env("signalling_cartpole", SignallingCartPole)
    pid_file = tmp_path / "pid"
    # Worker 1 signals in the second iteration (PPO: 64 steps per env and iteration;
    # A3C: about 3 fragments of 32 per worker and iteration).
    # IMPALA: 256 steps per iteration, about a quarter of them on worker 1's env 0.
    signal_after = {"PPO": 100, "A3C": 200, "IMPALA": 100}[algo]
    env_config = {"pid_file": str(pid_file), "signal_after": signal_after}
    config = config_for(algo, dask_cluster.scheduler_address, env_config=env_config)
    trainer = get_trainer_class(algo)(config, "signalling_cartpole")
    killed: list[int] = []
    thread = kill_when_signalled(pid_file, killed)
    try:
        results = [trainer.train() for _ in range(4)]
        thread.join(timeout=5)
        pids = [actor.pid for actor in trainer.workers.remote_workers()]
    finally:
        trainer.stop()
    assert len(killed) == 1 and killed[0] not in pids
    assert [r["training_iteration"] for r in results] == [1, 2, 3, 4]
    restarts = [r["num_worker_restarts"] for r in results]
    assert restarts[-1] == 1, restarts
    if algo != "IMPALA":  # IMPALA's first iteration samples for a second: the loss may be in it
        assert restarts[0] == 0, restarts
    assert all(r["num_healthy_workers"] == 2 for r in results)
    if algo == "PPO":
        # The iteration of the loss still gathered a whole train batch.
        hit = restarts.index(1)
        assert results[hit]["timesteps_this_iter"] >= 128
        assert all(r["timesteps_this_iter"] >= 128 for r in results)


def _same_weights_everywhere(algo, trainer):
    if algo == "ES":
        driver = trainer.get_policy().get_flat()
        for theirs in trainer.workers.call_remote("apply", flat_state):
            np.testing.assert_array_equal(theirs, driver)
        return
    first, second = trainer.workers.call_remote("get_policy_states")
    for key, value in first["default_policy"]["weights"].items():
        np.testing.assert_array_equal(second["default_policy"]["weights"][key], value)


@pytest.mark.parametrize("algo", ["DDPPO", "ES"])
def test_worker_of_a_collective_pattern_killed_is_recreated(algo, dask_cluster, tmp_path):
    """DD-PPO (the workers' own gloo group) and ES (every worker applies every
    update): the lost worker is re-created, takes the survivors' state (DD-PPO:
    weights and optimizer; ES: the driver's parameters, Adam moments and
    observation statistics), the group is formed again, and afterwards every
    worker holds the same weights."""
    register_env("signalling_cartpole", SignallingCartPole)
    pid_file = tmp_path / "pid"
    # In the second iteration: DD-PPO samples 32 steps per env and iteration; ES about
    # 100 steps per worker.
    signal_after = {"DDPPO": 40, "ES": 150}[algo]
    env_config = {"pid_file": str(pid_file), "signal_after": signal_after}
    config = config_for(algo, dask_cluster.scheduler_address, env_config=env_config)
    if algo == "DDPPO":
        config.update(sgd_minibatch_size=16, num_sgd_iter=2)
    else:
        del config["num_envs_per_worker"], config["rollout_fragment_length"]
        config.update(noise_size=200_000, episodes_per_batch=8, train_batch_size=0, eval_prob=0.2)
    trainer = get_trainer_class(algo)(config, "signalling_cartpole")
    killed: list[int] = []
    thread = kill_when_signalled(pid_file, killed)
    try:
        results = [trainer.train() for _ in range(3)]
        thread.join(timeout=5)
        pids = [actor.pid for actor in trainer.workers.remote_workers()]
        _same_weights_everywhere(algo, trainer)
        # The group works again: one more iteration after the check.
        results.append(trainer.train())
    finally:
        trainer.stop()
    assert len(killed) == 1 and killed[0] not in pids
    assert [r["training_iteration"] for r in results] == [1, 2, 3, 4]
    assert results[-1]["num_worker_restarts"] == 1
    assert results[0]["num_worker_restarts"] == 0
    if algo == "DDPPO":
        assert results[-1]["info"]["num_workers_learning"] == 2


def test_with_recreation_off_the_error_names_the_lost_worker(dask_cluster, tmp_path):
    register_env("signalling_cartpole", SignallingCartPole)
    pid_file = tmp_path / "pid"
    env_config = {"pid_file": str(pid_file), "signal_after": 1}
    config = config_for(
        "PPO", dask_cluster.scheduler_address, env_config=env_config, recreate_failed_workers=False
    )
    trainer = get_trainer_class("PPO")(config, "signalling_cartpole")
    killed: list[int] = []
    kill_when_signalled(pid_file, killed)
    try:
        with pytest.raises(WorkerLostError) as info:
            trainer.train()
    finally:
        trainer.stop()
    message = str(info.value)
    assert "rollout worker 1 (Dask worker tcp://127.0.0.1:" in message
    assert f"pid {killed[0]}) was lost" in message and "killed by signal 9" in message
    assert "recreate_failed_workers is off; set it to True" in message


def test_cli_joins_a_dask_cluster(dask_cluster, tmp_path):
    args = [
        sys.executable, "-m", "hpcrl", "train", "--run", "PG", "--env", "CartPole-v1",
        "--dask-address", dask_cluster.scheduler_address, "--num-workers", "2",
        "--local-dir", str(tmp_path), "-q", "--stop", '{"training_iteration": 2}',
        "--config", '{"model": {"fcnet_hiddens": [8]}}',
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done: stopped by training_iteration after 2 iterations" in out.stdout
    assert "started a Dask LocalCluster" not in out.stdout
    params = next(tmp_path.glob("*/*/params.json")).read_text()
    assert '"backend": "dask"' in params and dask_cluster.scheduler_address in params
