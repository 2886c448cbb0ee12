"""tune.run with trial_executor="slurm": four function trials, two Slurm jobs at a time
(run by tests/slurm/test_tune_slurm.py with the local Slurm's environment)."""

from __future__ import annotations

import json
import os
import sys

from hpcrl import tune
from hpcrl.tune.dask_executor import SlurmExecutor


def trainable(config):
    for step in range(1, 4):
        tune.report(score=config["x"] * step, job=os.environ.get("SLURM_JOB_ID", ""))


if __name__ == "__main__":
    local_dir, log_dir = sys.argv[1], sys.argv[2]
    executor = SlurmExecutor(
        max_concurrent_trials=2,
        memory="1GB",
        walltime="00:10:00",
        log_directory=log_dir,
        start_timeout=180,
    )
    analysis = tune.run(
        trainable,
        config={"x": tune.grid_search([1, 2, 3, 4])},
        trial_executor=executor,
        local_dir=local_dir,
        name="slurm",
        verbose=0,
    )
    print(
        json.dumps(
            {
                t.trial_id: [t.status, t.last_result.get("score"), t.last_result.get("job")]
                for t in analysis.trials
            }
        )
    )
