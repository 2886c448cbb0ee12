"""Train until a rank is killed; see test_lost_rank_mpi.py and tests/slurm.

Usage: LAUNCHER -n 3|4 python lost_rank_script.py ALGO DIR

Rank r writes its pid to DIR/rank<r>.pid before the backend starts; the driver
(rank 0) then trains ALGO (PPO, A3C, IMPALA, or APEX with a replay shard on
rank 3) with 2 rollout workers for as long as it is let, appending each
finished iteration's number to DIR/iterations. INFO logs go to stderr, as an
application that shows them would: the backend's line per rank names its pid
and host.

``kill_mid_training`` is the tests' side: launch, wait for two iterations,
SIGKILL one rank, wait for the job to end; ``PATTERNS`` what they kill.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CONFIGS = {
    "PPO": {"train_batch_size": 256, "sgd_minibatch_size": 64, "num_sgd_iter": 2},
    "A3C": {"grads_per_step": 10},
    "IMPALA": {"train_batch_size": 256, "min_iter_time_s": 0.0, "timesteps_per_iteration": 512},
    "APEX": {
        "num_replay_buffer_shards": 1,
        "learning_starts": 100,
        "train_batch_size": 16,
        "timesteps_per_iteration": 200,
        "min_iter_time_s": 0.0,
    },
}

# (algorithm, ranks, the rank killed, its role): one per optimizer pattern
PATTERNS = [
    ("PPO", 3, 1, "rollout worker"),  # synchronous samples
    ("A3C", 3, 2, "rollout worker"),  # asynchronous gradients
    ("IMPALA", 3, 1, "rollout worker"),  # asynchronous samples, streamed
    ("APEX", 4, 3, "replay shard"),  # replay: the shard's rank
]


def main() -> None:
    from mpi4py import MPI

    from hpcrl.algorithms.registry import get_trainer_class

    algo, directory = sys.argv[1], Path(sys.argv[2])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rank = MPI.COMM_WORLD.Get_rank()
    (directory / f"rank{rank}.pid").write_text(str(os.getpid()))
    config = {
        "backend": "mpi",
        "num_workers": 2,
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 32,
        "model": {"fcnet_hiddens": [16]},
        "num_torch_threads": 1,
        **CONFIGS[algo],
    }
    trainer = get_trainer_class(algo)(config, env="CartPole-v1")  # worker ranks serve here
    for iteration in range(1, 100_000):
        trainer.train()
        with open(directory / "iterations", "a") as file:
            file.write(f"{iteration}\n")
    print("NOT KILLED", flush=True)


@dataclass
class Outcome:
    returncode: int
    output: str  # stdout and stderr of the launcher
    seconds: float  # from the kill to the launcher's exit
    pid: int  # of the killed rank


def kill_mid_training(
    launcher: list[str], algo: str, ranks: int, victim: int, directory: Path, env: dict
) -> Outcome:
    """Run this script as ``launcher -n ranks python ...``, SIGKILL rank ``victim``
    after two iterations, and wait up to 60 s for the job to end."""
    script = [sys.executable, __file__, algo, str(directory)]
    log = directory / "output"
    with open(log, "w") as output:
        job = subprocess.Popen(
            [*launcher, "-n", str(ranks), *script], stdout=output, stderr=subprocess.STDOUT, env=env
        )
    try:
        progress = directory / "iterations"
        deadline = time.monotonic() + 240
        while not progress.exists() or len(progress.read_text().split()) < 2:
            if job.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no training under way:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        pid = int((directory / f"rank{victim}.pid").read_text())
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the job still runs 60 s after rank {victim} was killed:\n"
                f"{log.read_text()[-3000:]}"
            ) from None
        return Outcome(job.returncode, log.read_text(), time.monotonic() - killed, pid)
    finally:
        if job.poll() is None:
            job.terminate()  # the launcher ends its ranks
            try:
                job.wait(timeout=20)
            except subprocess.TimeoutExpired:
                job.kill()


if __name__ == "__main__":
    main()
