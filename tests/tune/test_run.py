"""tune.run on real processes: grids on a pool, retries, resume after SIGKILL,
ASHA and PBT on synthetic trainables with a known optimum, the seed's PPO line."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from hpcrl import tune
from hpcrl.tune.analysis import ExperimentAnalysis
from hpcrl.tune.schedulers import CONTINUE, PAUSE, FIFOScheduler


def iterations(analysis, trial):
    return [r["training_iteration"] for r in analysis.trial_results(trial)]


def starts(trial):
    """The step each start of the trial's function continued from."""
    with open(os.path.join(trial.logdir, "starts.txt")) as f:
        return [int(line) for line in f]


def counting(config):
    """Reports ``x * step + y`` for ``steps`` steps, a checkpoint after each; fails at
    step ``fail_at`` the first ``failures`` times."""
    state = tune.get_checkpoint() or {"step": 0}
    trial_dir = tune.get_trial_dir()
    with open(os.path.join(trial_dir, "starts.txt"), "a") as f:
        f.write(f"{state['step']}\n")
    for step in range(state["step"], config.get("steps", 3)):
        if step + 1 == config.get("fail_at"):
            failures = os.path.join(trial_dir, "failures.txt")
            count = os.path.getsize(failures) if os.path.exists(failures) else 0
            if count < config.get("failures", 1):
                with open(failures, "a") as f:
                    f.write("x")
                raise RuntimeError(f"planned failure at step {step + 1}")
        tune.report(score=config["x"] * (step + 1) + config.get("y", 0))
        tune.save_checkpoint({"step": step + 1})


def test_a_grid_of_eight_trials_runs_two_at_a_time_on_two_processes(tmp_path):
    analysis = tune.run(
        counting,
        config={"x": tune.grid_search([1, 2]), "y": tune.grid_search([10, 20]), "steps": 3},
        num_samples=2,
        max_concurrent_trials=2,
        local_dir=str(tmp_path),
        name="grid",
        verbose=0,
    )
    trials = analysis.trials
    assert len(trials) == 8 and {t.status for t in trials} == {"TERMINATED"}
    points = sorted((t.config["x"], t.config["y"]) for t in trials)
    assert points == sorted(list(itertools.product([1, 2], [10, 20])) * 2)
    # two long-lived worker processes ran all eight trials, one at a time each
    pids = {r["pid"] for t in trials for r in analysis.trial_results(t)}
    assert len(pids) == 2
    for trial in trials:
        assert iterations(analysis, trial) == [1, 2, 3]
        names = set(os.listdir(trial.logdir))
        assert {"params.json", "result.json", "progress.csv", "checkpoint_000003"} <= names
    assert analysis.get_best_config("score", "max") == {"x": 2, "y": 20, "steps": 3}
    best = analysis.get_best_trial("score", "max")
    assert analysis.get_best_checkpoint(best, "score", "max").endswith("checkpoint_000003")
    state = json.loads((tmp_path / "grid" / "experiment_state.json").read_text())
    assert [t["status"] for t in state["trials"]] == ["TERMINATED"] * 8
    rows = analysis.dataframe()
    rows = rows if isinstance(rows, list) else rows.to_dict("records")
    assert sorted(row["config/x"] for row in rows) == [1, 1, 1, 1, 2, 2, 2, 2]
    again = ExperimentAnalysis.from_directory(str(tmp_path / "grid"))
    assert again.get_best_trial("score", "max").trial_id == best.trial_id


def test_the_seed_line_runs_ppo_as_written(tmp_path):
    from hpcrl.algorithms.ppo import PPOTrainer

    analysis = tune.run(
        PPOTrainer,
        config={"env": "CartPole-v0", "train_batch_size": 4000},
        stop={"training_iteration": 1},
        checkpoint_at_end=True,
        local_dir=str(tmp_path),
        verbose=0,
    )
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and trial.trial_id == "PPO_CartPole-v0_00000"
    assert trial.last_result["timesteps_total"] >= 4000
    assert trial.last_result["stopped_by"] == "training_iteration"
    [checkpoint] = trial.checkpoints
    assert checkpoint["iteration"] == 1 and os.path.isdir(checkpoint["path"])
    assert os.path.basename(os.path.dirname(trial.logdir)).startswith("PPO_")


def test_a_failed_trial_is_retried_from_its_checkpoint_and_one_failing_for_good_is_reported(
    tmp_path,
):
    with pytest.raises(tune.TuneError, match=r"1 of 2 trials failed: counting_00001 \(see .*"):
        tune.run(
            counting,
            config={"x": 1, "steps": 4, "fail_at": 3, "failures": tune.grid_search([1, 5])},
            max_failures=1,
            max_concurrent_trials=2,
            local_dir=str(tmp_path),
            name="failing",
            verbose=0,
        )
    analysis = ExperimentAnalysis.from_directory(str(tmp_path / "failing"))
    retried, failed = analysis.trials
    assert retried.status == "TERMINATED" and retried.num_failures == 1
    assert starts(retried) == [0, 2]  # the retry continued from checkpoint_000002
    assert iterations(analysis, retried) == [1, 2, 3, 4]
    with open(retried.error_file) as f:
        text = f.read()
    assert "Failure 1" in text and "RuntimeError: planned failure at step 3" in text
    assert failed.status == "ERROR" and failed.num_failures == 2 and starts(failed) == [0, 2]


KILLED_EXPERIMENT = """
import os, sys, time
from hpcrl import tune

def slow(config):
    state = tune.get_checkpoint() or {"step": 0}
    with open(os.path.join(tune.get_trial_dir(), "starts.txt"), "a") as f:
        f.write(f"{state['step']}\\n")
    for step in range(state["step"], 8):
        time.sleep(0.35)  # 2.8 s a trial: longer than the state file's 2 s interval
        tune.report(score=config["x"] * (step + 1))
        tune.save_checkpoint({"step": step + 1})

tune.run(slow, config={"x": tune.grid_search([1, 2, 3, 4])}, local_dir=sys.argv[1],
         name="killed", max_concurrent_trials=2, resume=len(sys.argv) > 2, verbose=0)
"""


def test_an_experiment_killed_with_sigkill_resumes_where_it_was(tmp_path):
    script = tmp_path / "experiment.py"
    script.write_text(textwrap.dedent(KILLED_EXPERIMENT))
    state_file = tmp_path / "results" / "killed" / "experiment_state.json"
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path / "results")])
    deadline = time.monotonic() + 60
    state = {}
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        statuses = [t["status"] for t in state["trials"]]
        checkpointed = [t for t in state["trials"] if t["status"] == "RUNNING" and t["checkpoints"]]
        if "TERMINATED" in statuses and checkpointed:
            break
    driver.kill()  # SIGKILL: no chance to save anything
    driver.wait()
    assert "TERMINATED" in statuses and checkpointed, f"never got there: {statuses}"
    workers = {t["last_result"]["pid"] for t in state["trials"] if t["last_result"]}
    while any(_alive(pid) for pid in workers):  # they die with their driver
        assert time.monotonic() < deadline
        time.sleep(0.05)

    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "results"), "resume"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    analysis = ExperimentAnalysis.from_directory(str(tmp_path / "results" / "killed"))
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 4
    before = {t["trial_id"]: t for t in state["trials"]}
    for trial in analysis.trials:
        assert iterations(analysis, trial) == list(range(1, 9))
        was = before.get(trial.trial_id, {"status": "PENDING", "checkpoints": []})
        if was["status"] == "TERMINATED":
            assert starts(trial) == [0]  # not run again
        elif was["checkpoints"]:
            resumed_at = starts(trial)
            assert len(resumed_at) == 2 and resumed_at[1] >= was["checkpoints"][-1]["iteration"]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rising(config):
    """Scores ``q * (1 - 0.5**step)``: the trial with the largest ``q`` is best at every step."""
    for step in range(1, 9):
        tune.report(score=config["q"] * (1 - 0.5**step))


def test_asha_stops_the_weak_trials_early(tmp_path):
    analysis = tune.run(
        rising,
        config={"q": tune.grid_search([8, 7, 6, 5, 4, 3, 2, 1])},
        scheduler=tune.ASHAScheduler(max_t=8, grace_period=1, reduction_factor=2),
        metric="score",
        mode="max",
        max_concurrent_trials=2,
        local_dir=str(tmp_path),
        name="asha",
        verbose=0,
    )
    lengths = {t.config["q"]: t.last_result["training_iteration"] for t in analysis.trials}
    assert lengths[8] == 8  # the best trial runs to max_t
    assert sum(length <= 2 for length in lengths.values()) >= 5
    assert sum(lengths.values()) < 8 * 8 / 2
    assert analysis.get_best_config()["q"] == 8


def growing(config):
    """Adds ``lr`` to a value each step (the largest lr is best); reports whose
    checkpoint it started from."""
    state = tune.get_checkpoint() or {"step": 0, "value": 0.0, "writer": tune.get_trial_id()}
    started_from = state["writer"]
    for step in range(state["step"], 12):
        time.sleep(0.04)
        state["value"] += config["lr"]
        tune.report(score=state["value"], started_from=started_from)
        tune.save_checkpoint(
            {"step": step + 1, "value": state["value"], "writer": tune.get_trial_id()}
        )


def test_pbt_restarts_a_weak_trial_from_a_copy_of_a_strong_ones_checkpoint(tmp_path):
    scheduler = tune.PopulationBasedTraining(
        perturbation_interval=3,
        hyperparam_mutations={"lr": tune.uniform(0.01, 2.0)},
        resample_probability=0.0,
        seed=1,
    )
    analysis = tune.run(
        growing,
        config={"lr": tune.grid_search([0.1, 0.2, 0.3, 0.4])},
        scheduler=scheduler,
        metric="score",
        mode="max",
        max_concurrent_trials=4,
        local_dir=str(tmp_path),
        name="pbt",
        verbose=0,
    )
    exploited = [t for t in analysis.trials if t.exploits]
    assert exploited and {t.status for t in analysis.trials} == {"TERMINATED"}
    trial = exploited[0]
    exploit = trial.exploits[0]
    assert exploit["donor"] != trial.trial_id and "lr" in exploit["config"]
    assert exploit["donor"] in {t.trial_id for t in analysis.trials}
    with open(os.path.join(trial.logdir, "params.json")) as f:
        assert json.load(f)["lr"] == trial.config["lr"]
    results = analysis.trial_results(trial)
    after = [r for r in results if r["started_from"] == exploit["donor"]]
    assert after, "no result after the exploit came from the donor's checkpoint"
    copied = os.path.basename(exploit["checkpoint"])
    assert after[0]["training_iteration"] == int(copied.split("_")[1]) + 1
    assert all(c["path"].startswith(trial.logdir) for c in trial.checkpoints)


class PauseOnce(FIFOScheduler):
    """Pauses each trial at its second iteration once."""

    def __init__(self):
        self.paused = set()

    def on_trial_result(self, trial, result):
        if result["training_iteration"] == 2 and trial.trial_id not in self.paused:
            self.paused.add(trial.trial_id)
            return PAUSE
        return CONTINUE


def test_a_paused_trial_continues_from_its_checkpoint(tmp_path):
    analysis = tune.run(
        counting,
        config={"x": tune.grid_search([1, 2]), "steps": 4},
        scheduler=PauseOnce(),
        local_dir=str(tmp_path),
        name="paused",
        verbose=0,
    )
    for trial in analysis.trials:
        assert trial.status == "TERMINATED" and starts(trial) == [0, 2]
        assert iterations(analysis, trial) == [1, 2, 3, 4]


def test_an_existing_experiment_needs_resume(tmp_path):
    settings = {"config": {"x": 1, "steps": 1}, "local_dir": str(tmp_path), "name": "e"}
    tune.run(counting, verbose=0, **settings)
    with pytest.raises(ValueError, match="pass resume=True"):
        tune.run(counting, verbose=0, **settings)
    analysis = tune.run(counting, verbose=0, resume=True, **settings)  # all finished: nothing runs
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and starts(trial) == [0]


@pytest.mark.parametrize(
    "trainable, kwargs, message",
    [
        ("PPX", {}, "unknown algorithm 'PPX'; did you mean 'PPO'?"),
        (dict, {}, "is a class but not a Trainer"),
        ("PG", {}, "PG trials need an env"),
        ("PG", {"config": {"env": "CartPole-v1"}, "stop": {"reward": 1}}, "unknown stop key"),
        (counting, {"num_samples": 0}, "num_samples must be an int >= 1"),
        (counting, {"resources_per_trial": {"cpus": 1}}, "unknown resource 'cpus'"),
        (counting, {"trial_executor": "nonesuch"}, "unknown trial_executor 'nonesuch'"),
        (counting, {"resources_per_trial": {"cpu": 64}}, "asks for 64 CPUs"),
    ],
)
def test_bad_arguments_fail_before_any_trial(trainable, kwargs, message, tmp_path):
    with pytest.raises((ValueError, TypeError), match=message):
        tune.run(trainable, local_dir=str(tmp_path), verbose=0, **kwargs)


def test_a_trainer_without_stop_criteria_gets_the_default_with_a_warning(tmp_path, caplog):
    from hpcrl.tune.runner import make_experiment
    from hpcrl.tune.searcher import BasicVariantGenerator

    experiment = make_experiment(
        name="x",
        trainable="PG",
        config={"env": "CartPole-v1"},
        stop=None,
        num_samples=1,
        local_dir=str(tmp_path),
        checkpoint_freq=0,
        checkpoint_at_end=False,
        keep_checkpoints_num=None,
        max_failures=0,
        searcher=BasicVariantGenerator(),
        resume=False,
    )
    assert experiment.stop == {"timesteps_total": 1_000_000.0}
    assert "no stop criteria given" in caplog.text


def crashing(config):
    """Kills its own process at step 2 the first time (as the OOM killer would)."""
    state = tune.get_checkpoint() or {"step": 0}
    for step in range(state["step"], 3):
        if step == 1 and state["step"] == 0:
            os.kill(os.getpid(), 9)
        tune.report(score=step)
        tune.save_checkpoint({"step": step + 1})


def test_a_trial_whose_process_dies_is_retried_on_a_new_process(tmp_path):
    analysis = tune.run(crashing, max_failures=1, local_dir=str(tmp_path), name="crash", verbose=0)
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert iterations(analysis, trial) == [1, 2, 3]
    with open(trial.error_file) as f:
        assert "was killed by SIGKILL" in f.read()
    assert len({r["pid"] for r in analysis.trial_results(trial)}) == 2


PREEMPTED_EXPERIMENT = KILLED_EXPERIMENT.replace("tune.run(", "try:\n    tune.run(").replace(
    "verbose=0)", "verbose=0)\nexcept tune.ExperimentPreempted:\n    sys.exit(75)"
)


def test_sigterm_checkpoints_the_running_trials_and_resume_finishes_them(tmp_path):
    script = tmp_path / "experiment.py"
    script.write_text(PREEMPTED_EXPERIMENT)
    state_file = tmp_path / "results" / "killed" / "experiment_state.json"
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path / "results")])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if any(t["status"] == "RUNNING" and t["checkpoints"] for t in state["trials"]):
            break
    driver.terminate()  # SIGTERM, as Slurm before it stops a job
    assert driver.wait(timeout=30) == 75
    state = json.loads(state_file.read_text())
    assert "RUNNING" not in {t["status"] for t in state["trials"]}
    waiting = [t for t in state["trials"] if t["status"] == "PENDING" and t["checkpoints"]]
    assert waiting
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "results"), "resume"], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    analysis = ExperimentAnalysis.from_directory(str(tmp_path / "results" / "killed"))
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 4
    for trial in analysis.trials:
        assert iterations(analysis, trial) == list(range(1, 9))


def report_devices(config):
    tune.report(
        devices=os.environ.get("CUDA_VISIBLE_DEVICES"), threads=os.environ["OMP_NUM_THREADS"]
    )


def test_each_worker_gets_its_own_gpus_and_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # no GPU needed: the ids are passed on
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    analysis = tune.run(
        report_devices,
        config={"x": tune.grid_search([1, 2, 3, 4])},
        resources_per_trial={"cpu": 1, "gpu": 1},
        local_dir=str(tmp_path),
        verbose=0,
    )
    devices = {t.last_result["devices"] for t in analysis.trials}
    assert devices == {"3", "5"}  # two slots, one GPU each
    assert {t.last_result["threads"] for t in analysis.trials} == {"1"}
