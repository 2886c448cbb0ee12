"""The sbatch scripts of ``slurm/``, submitted to a real one-node Slurm.

The node has this machine's cores (2 in CI), so jobs of more tasks than cores
are submitted with ``--overcommit``; everything else is the scripts' own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLURM_DIR = ROOT / "slurm"
TUNED = str(ROOT / "examples" / "tuned" / "cartpole-ppo.yaml")


def submit(slurm, tmp_path: Path, script: str, iterations: int, *options: str, args=()) -> str:
    """``sbatch [options] slurm/<script> -f <tuned PPO> --stop <iterations> [args]``."""
    slurm.env["HPCRL_SLURM_DIR"] = str(SLURM_DIR)
    slurm.env["OMP_NUM_THREADS"] = "1"
    stop = json.dumps({"training_iteration": iterations})
    return slurm.sbatch(
        "--overcommit",
        f"--output={tmp_path}/%x-%j.out",
        *options,
        str(SLURM_DIR / script),
        *("-f", TUNED, "--stop", stop, *args),
        cwd=tmp_path,
    )


def run_to_completion(slurm, tmp_path: Path, script: str, iterations: int, *options: str):
    """Submit, wait, check the job completed with every iteration in its one trial;
    ``(job id, trial directory, job output)``."""
    job = submit(slurm, tmp_path, script, iterations, *options)
    fields = slurm.wait(job, timeout=300)
    log = job_output(tmp_path)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log
    name = slurm.job(job)["JobName"]
    trial = one_trial(tmp_path / "hpcrl_results" / f"{name}-{job}")
    assert [r["training_iteration"] for r in results(trial)] == list(range(1, iterations + 1))
    return job, trial, log


def results(trial_dir: Path) -> list[dict]:
    """The lines of ``trial_dir/result.json`` so far (``trial_dir`` may be a glob)."""
    paths = list(trial_dir.parent.glob(f"{trial_dir.name}/result.json"))
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def one_trial(experiment_dir: Path) -> Path:
    trials = [p for p in experiment_dir.iterdir() if p.is_dir()] if experiment_dir.exists() else []
    assert len(trials) == 1, trials
    return trials[0]


def job_output(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))


def test_mpi_job_trains_and_logs_plain_lines_with_job_ids(slurm, tmp_path):
    job, trial, log = run_to_completion(slurm, tmp_path, "mpi_job.sbatch", 3, "--ntasks=3")
    assert json.loads((trial / "params.json").read_text())["num_workers"] == 2
    assert f"[slurm job {job}.0 task 0] iter 3" in log, log
    assert "\r" not in log


def test_sweep_array_runs_one_trial_per_task_under_one_experiment(slurm, tmp_path):
    job = submit(slurm, tmp_path, "sweep_array.sbatch", 2, "--array=0-1")
    for task in (0, 1):
        fields = slurm.wait(f"{job}_{task}", timeout=300)
        assert fields["JobState"] == "COMPLETED", job_output(tmp_path)
    experiment = tmp_path / "hpcrl_results" / f"hpcrl-sweep-{job}"
    assert sorted(p.name for p in experiment.iterdir()) == ["trial0", "trial1"]
    learning_rates = []
    for task in (0, 1):
        trial = experiment / f"trial{task}"
        assert [r["training_iteration"] for r in results(trial)] == [1, 2]
        learning_rates.append(json.loads((trial / "params.json").read_text())["lr"])
        assert any(p.name.startswith("checkpoint_") for p in trial.iterdir())  # at the end
    assert learning_rates == [0.001, 0.004]
    assert f"[slurm job {job}_1 task 0] iter 2" in job_output(tmp_path)


def test_dask_job_trains_on_a_dask_cluster_inside_the_allocation(slurm, tmp_path):
    _, trial, log = run_to_completion(slurm, tmp_path, "dask_job.sbatch", 2, "--ntasks=3")
    assert results(trial)[-1]["num_healthy_workers"] == 2
    assert "Dask scheduler at tls://" in log  # a certificate made for the job
    assert not list(tmp_path.glob(".hpcrl-dask-*"))  # scheduler file and TLS files cleaned up


def test_gpu_learner_job_falls_back_to_cpu_learners_over_gloo(slurm, tmp_path):
    _, trial, log = run_to_completion(slurm, tmp_path, "gpu_learners.sbatch", 2, "--ntasks=4")
    assert "driver, 1 rollout workers, 2 CPU learners over gloo" in log
    params = json.loads((trial / "params.json").read_text())
    assert (params["num_learners"], params["num_workers"]) == (2, 1)


def test_preempted_mpi_job_checkpoints_requeues_resumes_and_finishes(slurm, tmp_path):
    iterations = 12
    # only the preemption and the end write checkpoints
    args = ("--checkpoint-freq", "1000")
    job = submit(slurm, tmp_path, "mpi_job.sbatch", iterations, "--ntasks=3", args=args)
    experiment = tmp_path / "hpcrl_results" / f"hpcrl-mpi-{job}"
    deadline = time.monotonic() + 240
    while len(results(experiment / "*")) < 3:
        assert time.monotonic() < deadline, job_output(tmp_path)
        assert slurm.job(job)["JobState"] in ("PENDING", "RUNNING"), job_output(tmp_path)
        time.sleep(0.2)
    slurm.scancel("--signal=USR1", "--batch", job)

    fields = slurm.wait(job, timeout=300, restarts=1)
    log = job_output(tmp_path)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log
    assert "requeueing job" in log
    trial = one_trial(experiment)
    steps = [r["training_iteration"] for r in results(trial)]
    assert steps == list(range(1, iterations + 1)), steps  # none lost, none twice
    checkpoints = sorted(p.name for p in trial.iterdir() if p.name.startswith("checkpoint_"))
    assert len(checkpoints) == 2 and checkpoints[-1] == f"checkpoint_{iterations:06d}"


def test_mpi_job_killed_rank_requeues_and_resumes_from_the_newest_checkpoint(slurm, tmp_path):
    iterations = 8
    args = ("--checkpoint-freq", "2", "--requeue-on-failure", "1")
    job = submit(slurm, tmp_path, "mpi_job.sbatch", iterations, "--ntasks=3", args=args)
    experiment = tmp_path / "hpcrl_results" / f"hpcrl-mpi-{job}"
    deadline = time.monotonic() + 240
    while len(results(experiment / "*")) < 3:  # the checkpoint of iteration 2 is written
        assert time.monotonic() < deadline, job_output(tmp_path)
        assert slurm.job(job)["JobState"] in ("PENDING", "RUNNING"), job_output(tmp_path)
        time.sleep(0.2)
    pid = slurm.task_pid(job, "0", 1)  # rank 1 of the job's MPI step
    assert pid is not None, job_output(tmp_path)
    os.kill(pid, signal.SIGKILL)

    fields = slurm.wait(job, timeout=300, restarts=1)
    log = job_output(tmp_path)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log
    assert "task 1: Killed" in log  # srun names the rank
    assert (
        f"requeueing job {job} to resume from its newest checkpoint (requeue 1 of at most 1" in log
    )
    assert "hpcrl: resuming" in log
    trial = one_trial(experiment)
    steps = [r["training_iteration"] for r in results(trial)]
    assert steps == list(range(1, iterations + 1)), steps  # none lost, none twice
    assert not list(tmp_path.glob(".hpcrl-failures-*"))


def test_a_crash_that_recurs_requeues_at_most_n_times(slurm, tmp_path):
    shutil.copy(Path(__file__).with_name("crashing_env.py"), tmp_path)
    args = ("--env", "crashing_env:CrashingCartPole-v0", "--requeue-on-failure", "2")
    job = submit(slurm, tmp_path, "mpi_job.sbatch", 3, "--ntasks=3", args=args)
    fields = slurm.wait(job, timeout=300, restarts=2)
    log = job_output(tmp_path)
    assert fields["JobState"] == "FAILED" and fields["Restarts"] == "2", (fields, log)
    assert log.count("CrashingCartPole crashes on every step") >= 3, log
    for requeue in (1, 2):
        assert f"(requeue {requeue} of at most 2 after failures)" in log
    assert "requeued after a failure 2 time(s) already, the most --requeue-on-failure 2" in log
    assert not list(tmp_path.glob(".hpcrl-failures-*"))


def test_usage_errors_and_runs_without_the_option_do_not_requeue(slurm, tmp_path):
    usage = submit(slurm, tmp_path, "mpi_job.sbatch", 1, "--ntasks=3",
                   args=("--num-workers", "5", "--requeue-on-failure", "2"))  # fmt: skip
    shutil.copy(Path(__file__).with_name("crashing_env.py"), tmp_path)
    crash = submit(slurm, tmp_path, "mpi_job.sbatch", 1, "--ntasks=3",
                   args=("--env", "crashing_env:CrashingCartPole-v0"))  # fmt: skip
    for job in (usage, crash):
        fields = slurm.wait(job, timeout=300)
        assert (fields["JobState"], fields["Restarts"]) == ("FAILED", "0"), job_output(tmp_path)
    log = job_output(tmp_path)
    assert "exit code 2, a usage error: not requeueing" in log
    assert "requeueing job" not in log


def requeue_option(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``requeue_on_failure_option ARGS`` in bash; prints HPCRL_MAX_REQUEUES, then the
    arguments left, one a line."""
    script = (
        f'set -u; source "{SLURM_DIR}/preemptible.sh"; requeue_on_failure_option "$@" || exit; '
        'set -- ${HPCRL_ARGS[@]+"${HPCRL_ARGS[@]}"}; '
        'echo "$HPCRL_MAX_REQUEUES"; for arg in "$@"; do echo "$arg"; done'
    )
    return subprocess.run(
        ["bash", "-c", script, "bash", *args], capture_output=True, text=True, env=env
    )


def test_the_requeue_option_is_taken_out_of_the_arguments_for_hpcrl():
    stop = '{"training_iteration": 2}'
    out = requeue_option("-f", "x.yaml", "--requeue-on-failure", "3", "--stop", stop)
    assert out.stdout.splitlines() == ["3", "-f", "x.yaml", "--stop", stop], out.stderr
    assert requeue_option("--requeue-on-failure=4").stdout.splitlines() == ["4"]
    environment = {**os.environ, "HPCRL_MAX_REQUEUES": "5"}
    assert requeue_option("--run", "PPO", env=environment).stdout.splitlines() == [
        "5", "--run", "PPO",
    ]  # fmt: skip
    off = {k: v for k, v in os.environ.items() if k != "HPCRL_MAX_REQUEUES"}
    assert requeue_option(env=off).stdout.splitlines() == ["0"]
    for bad in (["--requeue-on-failure", "three"], ["--requeue-on-failure"]):
        out = requeue_option(*bad)
        assert out.returncode == 2 and "--requeue-on-failure" in out.stderr, out.stderr
