"""The sbatch scripts of ``slurm/``, submitted to a real one-node Slurm.

The node has this machine's cores (2 in CI), so jobs of more tasks than cores
are submitted with ``--overcommit``; everything else is the scripts' own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLURM_DIR = ROOT / "slurm"
TUNED = str(ROOT / "examples" / "tuned" / "cartpole-ppo.yaml")


def submit(slurm, tmp_path: Path, script: str, *args: str, options: tuple = ()) -> str:
    slurm.env["HPCRL_SLURM_DIR"] = str(SLURM_DIR)
    slurm.env["OMP_NUM_THREADS"] = "1"
    return slurm.sbatch(
        "--overcommit",
        f"--output={tmp_path}/%x-%j.out",
        *options,
        str(SLURM_DIR / script),
        *args,
        cwd=tmp_path,
    )


def results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def one_trial(experiment_dir: Path) -> Path:
    trials = [p for p in experiment_dir.iterdir() if p.is_dir()] if experiment_dir.exists() else []
    assert len(trials) == 1, trials
    return trials[0]


def job_output(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))


def test_mpi_job_trains_and_logs_plain_lines_with_job_ids(slurm, tmp_path):
    job = submit(
        slurm,
        tmp_path,
        "mpi_job.sbatch",
        "-f",
        TUNED,
        "--stop",
        '{"training_iteration": 3}',
        options=("--ntasks=3",),
    )
    fields = slurm.wait(job, timeout=300)
    log = job_output(tmp_path)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log
    trial = one_trial(tmp_path / "hpcrl_results" / f"hpcrl-mpi-{job}")
    assert [r["training_iteration"] for r in results(trial)] == [1, 2, 3]
    assert json.loads((trial / "params.json").read_text())["num_workers"] == 2
    assert f"[slurm job {job}.0 task 0] iter 3" in log, log
    assert "\r" not in log


def test_sweep_array_runs_one_trial_per_task_under_one_experiment(slurm, tmp_path):
    job = submit(
        slurm,
        tmp_path,
        "sweep_array.sbatch",
        "-f",
        TUNED,
        "--stop",
        '{"training_iteration": 2}',
        options=("--array=0-1",),
    )
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
    job = submit(
        slurm,
        tmp_path,
        "dask_job.sbatch",
        "-f",
        TUNED,
        "--stop",
        '{"training_iteration": 2}',
        options=("--ntasks=3",),
    )
    fields = slurm.wait(job, timeout=300)
    log = job_output(tmp_path)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log
    trial = one_trial(tmp_path / "hpcrl_results" / f"hpcrl-dask-{job}")
    assert [r["training_iteration"] for r in results(trial)] == [1, 2]
    assert results(trial)[-1]["num_healthy_workers"] == 2
    assert "Dask scheduler at tcp://" in log
    assert not list(tmp_path.glob(".hpcrl-dask-*.json"))  # cleaned up


def test_preempted_mpi_job_checkpoints_requeues_resumes_and_finishes(slurm, tmp_path):
    iterations = 12
    job = submit(
        slurm,
        tmp_path,
        "mpi_job.sbatch",
        "-f",
        TUNED,
        "--stop",
        json.dumps({"training_iteration": iterations}),
        "--checkpoint-freq",
        "1000",  # only the preemption and the end write checkpoints
        options=("--ntasks=3",),
    )
    experiment = tmp_path / "hpcrl_results" / f"hpcrl-mpi-{job}"
    deadline = time.monotonic() + 240
    while not (experiment.exists() and len(results(one_trial(experiment))) >= 3):
        assert time.monotonic() < deadline, job_output(tmp_path)
        assert slurm.job(job)["JobState"] in ("PENDING", "RUNNING"), job_output(tmp_path)
        time.sleep(0.2)
    slurm.scancel("--signal=USR1", "--batch", job)

    fields = slurm.wait(job, timeout=600, restarts=1)
    log = job_output(tmp_path)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log
    assert "requeueing job" in log
    trial = one_trial(experiment)
    steps = [r["training_iteration"] for r in results(trial)]
    assert steps == list(range(1, iterations + 1)), steps  # none lost, none twice
    checkpoints = sorted(p.name for p in trial.iterdir() if p.name.startswith("checkpoint_"))
    assert len(checkpoints) == 2 and checkpoints[-1] == f"checkpoint_{iterations:06d}"
