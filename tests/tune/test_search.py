"""Search spaces: grids expand to their product, domains draw per trial, tags name values."""

from __future__ import annotations

import math
import random

import pytest

from hpcrl import tune
from hpcrl.tune.search import (
    count_variants,
    generate_variants,
    has_spaces,
    searched_values,
    variant_tag,
)
from hpcrl.tune.searcher import FINISHED, BasicVariantGenerator, Searcher, check_searcher_config


def test_grids_give_their_product_num_samples_times_in_order():
    space = {"a": tune.grid_search([1, 2]), "nested": {"b": tune.grid_search(["x", "y"])}}
    variants = generate_variants(space, num_samples=2)
    points = [(v.config["a"], v.config["nested"]["b"]) for v in variants]
    assert points == [(1, "x"), (1, "y"), (2, "x"), (2, "y")] * 2
    assert count_variants(space, num_samples=2) == 8
    assert [v.tag for v in variants[:2]] == ["0_a=1,b=x", "1_a=1,b=y"]


def test_yaml_dict_form_and_grids_inside_lists_and_grid_values():
    space = {
        "layers": [{"grid_search": [8, 16]}, 4],
        "opt": {"grid_search": [{"name": "adam", "lr": tune.grid_search([0.1, 0.2])}, "sgd"]},
    }
    configs = [v.config for v in generate_variants(space)]
    assert [c["layers"] for c in configs] == [[8, 4]] * 3 + [[16, 4]] * 3
    assert [c["opt"] for c in configs[:3]] == [
        {"name": "adam", "lr": 0.1},
        {"name": "adam", "lr": 0.2},
        "sgd",
    ]
    assert not any(has_spaces(c) for c in configs)


def test_random_domains_draw_per_trial_within_bounds_and_repeat_with_the_seed():
    space = {
        "u": tune.uniform(-1, 1),
        "log": tune.loguniform(1e-4, 1e-1),
        "i": tune.randint(0, 3),
        "c": tune.choice(["a", "b"]),
    }
    variants = generate_variants(space, num_samples=200, seed=7)
    configs = [v.config for v in variants]
    assert all(-1 <= c["u"] < 1 and 1e-4 <= c["log"] <= 1e-1 for c in configs)
    assert {c["i"] for c in configs} == {0, 1, 2}  # high excluded, as range()
    assert {c["c"] for c in configs} == {"a", "b"}
    logs = [math.log10(c["log"]) for c in configs]
    assert sum(x < -2.5 for x in logs) == pytest.approx(100, abs=25)  # uniform in the exponent
    again = [v.config for v in generate_variants(space, num_samples=200, seed=7)]
    assert again == configs
    assert len({c["u"] for c in configs}) == 200


def test_sample_from_sees_the_resolved_config():
    space = {
        "a": tune.grid_search([1, 2]),
        "b": tune.uniform(0, 1),
        "sum": tune.sample_from(lambda spec: spec.config.a + spec.config["b"]),
    }
    for variant in generate_variants(space, seed=0):
        config = variant.config
        assert config["sum"] == config["a"] + config["b"]


def test_tags_name_the_searched_values_by_their_last_key():
    space = {"model": {"lr": tune.grid_search([0.001])}, "other": {"lr": 5}, "x": 1}
    config = {"model": {"lr": 0.001}, "other": {"lr": 5}, "x": 1}
    assert variant_tag(4, space, config) == "4_lr=0.001"
    assert searched_values(space, config) == {"model/lr": 0.001}
    clash = {"a": {"lr": tune.choice([1])}, "b": {"lr": tune.choice([2])}}
    assert variant_tag(0, clash, {"a": {"lr": 1}, "b": {"lr": 2}}) == "0_a/lr=1,b/lr=2"
    assert variant_tag(3, {"x": 1}, {"x": 1}) == "3"


def test_objects_in_the_config_are_not_copied():
    class Env:
        pass

    [variant] = generate_variants({"env": Env, "lr": tune.choice([1])})
    assert variant.config["env"] is Env


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tune.grid_search([]), "at least one value"),
        (lambda: tune.uniform(1, 1), "low < high"),
        (lambda: tune.loguniform(0, 1), "0 < low < high"),
        (lambda: tune.randint(3, 3), "high is excluded"),
        (lambda: tune.choice([]), "at least one category"),
        (lambda: tune.sample_from(3), "function of spec"),
        (lambda: generate_variants({}, num_samples=0), "num_samples must be an int >= 1"),
    ],
)
def test_bad_spaces_are_errors_that_say_what_is_expected(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_perturbing_stays_inside_the_domain():
    rng = random.Random(0)
    assert tune.uniform(0, 1).perturb(0.9, rng) <= 1
    assert tune.randint(1, 10).perturb(9, rng) <= 9
    assert tune.choice(["a", "b", "c"]).perturb("a", rng) in ("a", "b")
    values = sorted({tune.loguniform(1e-3, 1).perturb(0.1, random.Random(s)) for s in range(20)})
    assert values == pytest.approx([0.08, 0.12])


def test_variant_generator_suggests_every_variant_then_finished_and_resumes():
    searcher = BasicVariantGenerator(seed=3)
    space = {"a": tune.grid_search([1, 2]), "b": tune.uniform(0, 1)}
    searcher.set_search_properties(None, None, space, num_samples=2)
    first = [searcher.suggest(str(i)) for i in range(2)]
    again = BasicVariantGenerator()
    again.set_search_properties(None, None, space, num_samples=2)
    again.set_state(searcher.get_state())
    rest = [again.suggest(str(i)) for i in range(3)]
    assert rest[2] == FINISHED
    expected = [v.config for v in generate_variants(space, num_samples=2, seed=3)]
    assert first + rest[:2] == expected


def test_grids_need_the_default_searcher():
    class Other(Searcher):
        def suggest(self, trial_id):
            return FINISHED

    with pytest.raises(ValueError, match="use choice"):
        check_searcher_config(Other(), {"a": tune.grid_search([1, 2])})
