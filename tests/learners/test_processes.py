"""ProcessBackend: actors in child processes (how the local backend runs K > 1 learners)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrl.backends.base import RemoteError
from hpcrl.learners import processes
from hpcrl.learners.processes import ProcessBackend, prestart


class Counter:
    def __init__(self, start: int) -> None:
        self.value = start

    def add(self, amount: int) -> int:
        self.value += amount
        return self.value

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise KeyError("no such thing")


@pytest.fixture
def backend():
    backend = ProcessBackend()
    yield backend
    backend.shutdown()


def test_broadcast_reaches_every_actor_and_raises_their_failures(backend):
    actors = backend.spawn(Counter, 0, count=2, role="counter")
    backend.broadcast(actors, "add", 5)
    assert backend.get(backend.call(actors, "add", 0)) == [5, 5]
    with pytest.raises(RemoteError, match="add"):
        backend.broadcast(actors, "add", "not a number")


def test_calls_run_in_order_in_another_process(backend):
    [actor] = backend.spawn(Counter, 10, role="counter")
    futures = [backend.call([actor], "add", i)[0] for i in range(1, 4)]
    done, pending = backend.wait(futures, num_returns=3, timeout=30)
    assert len(done) == 3 and not pending
    assert backend.get(futures) == [11, 13, 16]
    assert backend.get(backend.call([actor], "pid")) != [os.getpid()]


def test_an_actor_error_comes_back_with_where_and_traceback(backend):
    [actor] = backend.spawn(Counter, 0, role="counter")
    with pytest.raises(RemoteError) as caught:
        backend.get(backend.call([actor], "fail"))
    assert caught.value.where.startswith("local counter process ")
    assert "(fail)" in caught.value.where
    assert "in fail" in caught.value.remote_traceback
    assert backend.get(backend.call([actor], "add", 1)) == [1]  # the actor lives on


def test_a_killed_process_fails_its_calls_saying_how_it_ended(backend):
    [actor] = backend.spawn(Counter, 0, role="counter")
    os.kill(actor.process.pid, signal.SIGKILL)
    with pytest.raises(RemoteError, match="exited with code -9"):
        backend.get(backend.call([actor], "add", 1))


def test_classes_made_at_run_time_go_by_value(backend):
    offset = 100

    class Local:
        def value(self) -> int:
            return offset

    [actor] = backend.spawn(Local)
    assert backend.get(backend.call([actor], "value")) == [100]


def test_a_failing_constructor_is_an_error_of_spawn(backend):
    with pytest.raises(RemoteError, match="__spawn__"):
        backend.spawn(Counter, role="counter")  # start is missing


def test_prestarted_children_are_taken_by_the_next_spawns_then_new_ones_start():
    prestart(2, preload=("json",))
    ready = [process.pid for process, _, _ in processes._PRESTARTED]
    backend = ProcessBackend()
    try:
        actors = backend.spawn(Counter, 0, count=3, role="counter")
        pids = backend.get(backend.call(actors, "pid"))
        assert pids[:2] == ready and pids[2] not in ready
        assert not processes._PRESTARTED
        assert backend.get(backend.call(actors, "add", 2)) == [2, 2, 2]
    finally:
        backend.shutdown()


def test_prestarted_children_are_taken_only_by_a_backend_with_their_environment():
    prestart(1, preload=(), env={"OMP_NUM_THREADS": "1"})
    [(ready, _, _)] = processes._PRESTARTED
    plain, threaded = ProcessBackend(), ProcessBackend(env={"OMP_NUM_THREADS": "1"})
    try:
        [other] = plain.spawn(Counter, 0, role="counter")
        assert plain.get(plain.call([other], "pid")) != [ready.pid]
        [mine] = threaded.spawn(Counter, 0, role="counter")
        assert threaded.get(threaded.call([mine], "pid")) == [ready.pid]
        assert not processes._PRESTARTED
    finally:
        plain.shutdown()
        threaded.shutdown()


def test_prestarting_again_counts_the_children_still_waiting():
    prestart(2, preload=())
    prestart(2, preload=())  # e.g. a second run in one process, the first one failed
    assert len(processes._PRESTARTED) == 2
    processes._end_prestarted()


def test_prestarted_children_not_taken_exit_with_the_driver():
    prestart(1, preload=())
    [(process, _, _)] = processes._PRESTARTED
    processes._end_prestarted()
    assert process.wait(timeout=10) == 0 and not processes._PRESTARTED


def test_cli_takes_the_prestarted_learner_and_ddppo_worker_processes(tmp_path):
    """``hpcrl train --num-learners 2`` starts the learners before it imports torch
    and its LearnerGroup takes them: exactly two learner processes ever start. The
    same for DD-PPO's two worker processes on the local backend."""
    script = (
        "import sys\n"
        "from hpcrl.learners import processes\n"
        "started = []\n"
        "real = processes._start_child\n"
        "def counting(*args, **kwargs):\n"
        "    started.append(args)\n"
        "    return real(*args, **kwargs)\n"
        "processes._start_child = counting\n"
        "from hpcrl.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "assert 'torch' in sys.modules\n"
        "print('children started:', [args[1:] for args in started])\n"
        "sys.exit(code)\n"
    )
    args = [
        sys.executable, "-c", script, "train", "--run", "PPO", "--env", "CartPole-v1",
        "--num-learners", "2", "--local-dir", str(tmp_path), "-q",
        "--stop", '{"training_iteration": 1}',
        "--config", '{"train_batch_size": 256, "sgd_minibatch_size": 64, "num_sgd_iter": 1}',
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    preloaded = "(('hpcrl.learners.learner',),)"
    assert f"children started: [{preloaded}, {preloaded}]" in out.stdout
    assert "done: stopped by training_iteration after 1 iterations" in out.stdout

    # DD-PPO's two workers (its default) on the local backend, with a torch thread each
    args[args.index("PPO")] = "DDPPO"
    del args[args.index("--num-learners") : args.index("--num-learners") + 2]
    args[args.index("--config") + 1] = '{"rollout_fragment_length": 32, "num_torch_threads": 1}'
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    preloaded = "(('hpcrl.algorithms.ddppo',),)"
    assert f"children started: [{preloaded}, {preloaded}]" in out.stdout
    assert "done: stopped by training_iteration after 1 iterations" in out.stdout


def test_startup_benchmark_runs_a_path_and_prints_its_row():
    """A tiny run of benchmarks/startup.py (its figures are not checked here)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "startup.py"
    args = [sys.executable, str(script), "--runs", "1", "--paths", "learners", "resume"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("PPO ")]
    assert [row[1] for row in rows] == ["learners", "resume"], out.stdout
    assert all(float(row[2]) > 0 for row in rows)
