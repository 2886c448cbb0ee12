"""OptunaSearch: Optuna's sampler finds the optimum of a synthetic trainable."""

from __future__ import annotations

import pytest

from hpcrl import tune

optuna = pytest.importorskip("optuna")
from hpcrl.tune.optuna_search import OptunaSearch  # noqa: E402


def quadratic(config):
    # Optimum 0 at x = 0.3, lr = 1e-3, layers = 2, activation "relu".
    import math

    loss = (config["x"] - 0.3) ** 2 + (math.log10(config["lr"]) + 3) ** 2 / 4
    loss += (config["layers"] - 2) ** 2 / 4 + (config["activation"] != "relu")
    tune.report(loss=loss)


SPACE = {
    "x": tune.uniform(-2.0, 2.0),
    "lr": tune.loguniform(1e-5, 1e-1),
    "layers": tune.randint(1, 5),
    "activation": tune.choice(["relu", "tanh", "elu"]),
    "fixed": 7,
}


def test_optuna_finds_the_optimum_better_than_its_first_random_trials(tmp_path):
    search = OptunaSearch(seed=0)
    analysis = tune.run(
        quadratic,
        config=SPACE,
        search_alg=search,
        num_samples=40,
        metric="loss",
        mode="min",
        max_concurrent_trials=2,
        local_dir=str(tmp_path),
        verbose=0,
    )
    losses = [t.last_result["loss"] for t in analysis.trials]
    best = analysis.get_best_config("loss", "min")
    assert len(losses) == 40 and min(losses) < 0.05, sorted(losses)[:5]
    assert best["activation"] == "relu" and best["layers"] == 2 and best["fixed"] == 7
    assert abs(best["x"] - 0.3) < 0.25
    # TPE's later trials (model-based) beat its first ten (random start-up) on average.
    assert sum(losses[-10:]) < sum(losses[:10])
    assert search.best_config["activation"] == "relu"


def test_optuna_refuses_grids_and_needs_a_metric():
    search = OptunaSearch()
    with pytest.raises(ValueError, match="needs a metric and mode"):
        search.set_search_properties(None, None, SPACE, 1)
    with pytest.raises(ValueError, match="grid_search"):
        tune.run(
            quadratic,
            config={"x": tune.grid_search([1, 2])},
            search_alg=OptunaSearch(),
            metric="loss",
            mode="min",
            verbose=0,
        )


def test_resumed_search_continues_from_the_finished_trials():
    search = OptunaSearch(seed=1)
    search.set_search_properties("loss", "min", {"x": tune.uniform(0, 1)}, 3)
    config = search.suggest("t0")
    search.on_trial_complete("t0", {"loss": config["x"]})
    state = search.get_state()
    again = OptunaSearch(seed=1)
    again.set_state(state)
    again.set_search_properties("loss", "min", {"x": tune.uniform(0, 1)}, 3)
    assert len(again._study.trials) == 1 and again.suggested == 1
