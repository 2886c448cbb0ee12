"""Scheduler decisions, without processes: ASHA's rungs and PBT's exploit/explore."""

from __future__ import annotations

import pytest

from hpcrl import tune
from hpcrl.tune.schedulers import (
    CONTINUE,
    STOP,
    ASHAScheduler,
    FIFOScheduler,
    PopulationBasedTraining,
)
from hpcrl.tune.trial import PAUSED, PENDING, RUNNING, Trial


def make_trials(count, **kwargs):
    return [Trial(f"t{i}", "exp", dict(kwargs), "", f"/nowhere/t{i}") for i in range(count)]


def result(iteration, score):
    return {"training_iteration": iteration, "score": score}


def test_asha_rungs_stop_trials_below_the_top_fraction_seen_there():
    asha = ASHAScheduler(metric="score", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    asha.set_search_properties(None, None)
    assert [m for m, _ in asha.brackets[0].rungs] == [4, 2, 1]
    a, b, c = make_trials(3)
    for trial in (a, b, c):
        asha.on_trial_add(trial)
    # rung 1: a first (no cutoff), then b better, then c below the median of {a, b}
    assert asha.on_trial_result(a, result(1, 1.0)) == CONTINUE
    assert asha.on_trial_result(b, result(1, 3.0)) == CONTINUE
    assert asha.on_trial_result(c, result(1, 1.5)) == STOP  # cutoff 2.0 = median(1, 3)
    # rung 2: b first, then a below b
    assert asha.on_trial_result(b, result(2, 4.0)) == CONTINUE
    assert asha.on_trial_result(a, result(2, 2.0)) == STOP
    assert asha.on_trial_result(b, result(3, 5.0)) == CONTINUE  # no rung at 3
    assert asha.on_trial_result(b, result(4, 6.0)) == STOP  # max_t


def test_asha_minimises_and_deals_trials_to_brackets():
    asha = ASHAScheduler(
        metric="loss", mode="min", max_t=9, grace_period=1, reduction_factor=3, brackets=2
    )
    asha.set_search_properties(None, None)
    assert [m for m, _ in asha.brackets[1].rungs] == [9, 3]
    a, b, c = make_trials(3)
    for trial in (a, b, c):
        asha.on_trial_add(trial)
    assert asha._bracket_of["t1"] is asha.brackets[1]
    assert asha.on_trial_result(a, {"training_iteration": 1, "loss": 2.0}) == CONTINUE
    assert asha.on_trial_result(c, {"training_iteration": 1, "loss": 1.0}) == CONTINUE
    assert asha.on_trial_result(b, {"training_iteration": 1, "loss": 9.0}) == CONTINUE  # no rung


def test_asha_needs_a_metric_and_results_that_have_it():
    with pytest.raises(ValueError, match="needs a metric and a mode"):
        ASHAScheduler().set_search_properties(None, None)
    asha = ASHAScheduler(max_t=4)
    asha.set_search_properties("score", "max")  # tune.run's metric and mode
    [trial] = make_trials(1)
    with pytest.raises(ValueError, match="needs 'score' in every result"):
        asha.on_trial_result(trial, {"training_iteration": 1, "loss": 1.0})
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        ASHAScheduler(mode="maximum")


def test_fifo_starts_pending_trials_before_paused_ones_in_order():
    a, b, c = make_trials(3)
    a.status, b.status, c.status = PAUSED, RUNNING, PENDING
    assert FIFOScheduler().choose_trial_to_run([a, b, c]) is c
    c.status = RUNNING
    assert FIFOScheduler().choose_trial_to_run([a, b, c]) is a


def pbt(**kwargs):
    scheduler = PopulationBasedTraining(
        metric="score",
        mode="max",
        perturbation_interval=2,
        quantile_fraction=0.25,
        seed=0,
        **kwargs,
    )
    scheduler.set_search_properties(None, None)
    return scheduler


def test_pbt_checkpoints_the_top_and_restarts_the_bottom_from_a_top_checkpoint():
    scheduler = pbt(hyperparam_mutations={"lr": [0.001, 0.01, 0.1]}, resample_probability=0.0)
    trials = make_trials(4, lr=0.01)
    for trial in trials:
        scheduler.on_trial_add(trial)
    # iteration 1: not yet at the perturbation interval
    for trial, score in zip(trials, [1, 2, 3, 4]):
        assert scheduler.on_trial_result(trial, result(1, score)) == CONTINUE
    # iteration 2: t3 is on top (asked to checkpoint), t0 at the bottom
    top = scheduler.on_trial_result(trials[3], result(2, 8))
    assert top.action == "CONTINUE" and top.save_checkpoint
    trials[3].checkpoints = [{"path": "/nowhere/t3/checkpoint_000002", "iteration": 2}]
    assert scheduler.on_trial_result(trials[1], result(2, 4)) == CONTINUE  # middle
    exploit = scheduler.on_trial_result(trials[0], result(2, 2))
    assert exploit.action == "EXPLOIT" and exploit.donor == "t3"
    assert exploit.checkpoint == "/nowhere/t3/checkpoint_000002"
    assert exploit.config["lr"] in (0.001, 0.1)  # a neighbour of 0.01 in the list
    # the next perturbation of t0 comes perturbation_interval later
    assert scheduler.on_trial_result(trials[0], result(3, 100)) == CONTINUE


def test_pbt_without_a_donor_checkpoint_continues():
    scheduler = pbt(hyperparam_mutations={"lr": [0.1, 0.2]})
    a, b = make_trials(2, lr=0.1)
    scheduler.on_trial_add(a)
    scheduler.on_trial_add(b)
    scheduler.on_trial_result(b, result(2, 5))
    assert scheduler.on_trial_result(a, result(2, 1)) == CONTINUE


def test_pbt_explore_perturbs_domains_functions_and_nested_keys():
    mutations = {
        "lr": tune.uniform(0.0, 10.0),
        "batch": lambda: 64,
        "model": {"width": [16, 32, 64]},
        "gamma": [0.9, 0.99],
    }
    scheduler = pbt(hyperparam_mutations=mutations, resample_probability=0.0)
    config = {"lr": 1.0, "batch": 100, "model": {"width": 32, "depth": 2}, "gamma": 0.5, "x": 1}
    new = scheduler.explore(config)
    assert new["lr"] in (pytest.approx(0.8), pytest.approx(1.2))
    assert new["batch"] in (80, 120)
    assert new["model"]["width"] in (16, 64) and new["model"]["depth"] == 2
    assert new["gamma"] in (0.9, 0.99)  # not in the list: resampled
    assert new["x"] == 1 and config["lr"] == 1.0  # the donor's config is left as it was
    resampling = pbt(hyperparam_mutations=mutations, resample_probability=1.0)
    assert resampling.explore(config)["batch"] == 64


def test_pbt_custom_explore_and_bad_mutations():
    scheduler = pbt(
        hyperparam_mutations={"lr": [1, 2]},
        custom_explore_fn=lambda config: {**config, "lr": config["lr"] * 10},
    )
    assert scheduler.explore({"lr": 1})["lr"] in (10, 20)
    with pytest.raises(ValueError, match="needs hyperparam_mutations"):
        PopulationBasedTraining(metric="score", mode="max")
    with pytest.raises(TypeError, match="must be a list, a domain"):
        pbt(hyperparam_mutations={"lr": 3}).explore({"lr": 1})


def test_pbt_quantiles_leave_finished_trials_out():
    scheduler = pbt(hyperparam_mutations={"lr": [1]})
    trials = make_trials(3)
    for trial, score in zip(trials, [3, 1, 2]):
        scheduler.on_trial_add(trial)
        scheduler.on_trial_result(trial, result(1, score))
    assert scheduler.quantiles() == (["t1"], ["t0"])
    scheduler.on_trial_complete(trials[0], {})
    assert scheduler.quantiles() == (["t1"], ["t2"])


def test_pbt_starts_the_least_advanced_waiting_trial():
    scheduler = pbt(hyperparam_mutations={"lr": [1]})
    a, b, c = make_trials(3)
    a.last_result, b.last_result = result(6, 0), result(2, 0)
    assert scheduler.choose_trial_to_run([a, b, c]) is c
    c.status = RUNNING
    assert scheduler.choose_trial_to_run([a, b, c]) is b
