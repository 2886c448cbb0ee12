"""The sbatch scripts of ``slurm/``, submitted to a real one-node Slurm.

The node has this machine's cores (2 in CI), so jobs of more tasks than cores
are submitted with ``--overcommit``; everything else is the scripts' own.
"""

from __future__ import annotations

import json
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
