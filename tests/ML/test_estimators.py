"""Tests for ML/estimators.py: the registry and parameter validation."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from sklearn.base import is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.svm import SVC

from ML.errors import InvalidParams, UnknownEstimator
from ML.estimators import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    build_estimator,
    estimator_spec,
    parameter_names,
)

REQUIRED = {
    "random_forest",
    "logistic_regression",
    "svc",
    "gradient_boosting",
    "hist_gradient_boosting",
    "knn",
    "extra_trees",
}


def test_registry_has_the_required_estimators_and_the_default() -> None:
    assert set(ESTIMATORS) >= REQUIRED
    assert DEFAULT_ESTIMATOR == "random_forest"
    assert DEFAULT_ESTIMATOR in ESTIMATORS


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_each_entry_builds_a_classifier_from_its_defaults(name: str) -> None:
    spec = ESTIMATORS[name]
    estimator = build_estimator(name, {})

    assert spec.name == name
    assert spec.description
    assert is_classifier(estimator)
    assert hasattr(estimator, "predict_proba")
    own = spec.factory(**spec.defaults).get_params()
    if "n_jobs" in own and "n_jobs" in spec.defaults:
        assert spec.defaults["n_jobs"] == 1
    if "random_state" in own:
        assert spec.defaults.get("random_state") == 42


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_n_jobs_is_one_wherever_it_has_an_effect(name: str) -> None:
    spec = ESTIMATORS[name]
    signature = inspect.signature(spec.factory)
    # LogisticRegression keeps n_jobs only as a deprecated no-op; setting it warns.
    if "n_jobs" in signature.parameters and name != "logistic_regression":
        assert spec.defaults.get("n_jobs") == 1


def test_params_are_merged_over_the_defaults() -> None:
    estimator = build_estimator("random_forest", {"n_estimators": 7, "max_depth": 3})

    assert isinstance(estimator, RandomForestClassifier)
    assert estimator.get_params()["n_estimators"] == 7
    assert estimator.get_params()["max_depth"] == 3
    assert estimator.get_params()["random_state"] == 42
    assert estimator.get_params()["n_jobs"] == 1


def test_svc_gets_calibrated_probabilities_and_its_params() -> None:
    estimator = build_estimator("svc", {"C": 3.0, "kernel": "linear"})

    assert isinstance(estimator, CalibratedClassifierCV)
    assert isinstance(estimator.estimator, SVC)
    assert estimator.estimator.get_params()["C"] == 3.0
    assert estimator.estimator.get_params()["kernel"] == "linear"


def test_unknown_estimator_lists_the_choices() -> None:
    with pytest.raises(UnknownEstimator) as caught:
        build_estimator("xgboost", {})

    assert caught.value.message.startswith("unknown estimator 'xgboost'; choose one of: ")
    for name in ESTIMATORS:
        assert name in caught.value.message


def test_unknown_parameters_list_the_valid_ones() -> None:
    with pytest.raises(InvalidParams) as caught:
        build_estimator("knn", {"trees": 3, "depth": 1})

    message = caught.value.message
    assert message.startswith("unknown parameters for knn: depth, trees; valid parameters are: ")
    assert "n_neighbors" in message and "weights" in message
    assert caught.value.details == [
        {"field": "depth", "error": "unknown parameter"},
        {"field": "trees", "error": "unknown parameter"},
    ]


def test_deprecated_parameters_are_not_offered() -> None:
    assert "probability" not in parameter_names("svc")
    assert "penalty" not in parameter_names("logistic_regression")
    with pytest.raises(InvalidParams, match="unknown parameter for svc: probability"):
        build_estimator("svc", {"probability": True})


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("svc", {"C": -1}, "The 'C' parameter of SVC must be a float in the range (0.0, inf]"),
        ("random_forest", {"n_estimators": "many"}, "'n_estimators' parameter"),
        ("random_forest", {"n_estimators": 2.5}, "'n_estimators' parameter"),
        ("knn", {"weights": "heaviest"}, "'weights' parameter"),
        ("logistic_regression", {"max_iter": -5}, "'max_iter' parameter"),
        ("hist_gradient_boosting", {"learning_rate": 0}, "'learning_rate' parameter"),
    ],
)
def test_invalid_values_are_reported_with_sklearns_message(
    name: str, params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        build_estimator(name, params)

    assert caught.value.message.startswith(f"invalid parameters for {name}: ")
    assert fragment in caught.value.message


def test_params_must_be_a_mapping() -> None:
    with pytest.raises(InvalidParams, match="params must be a JSON object"):
        build_estimator("knn", ["n_neighbors", 3])  # type: ignore[arg-type]


def test_estimator_spec_and_parameter_names() -> None:
    assert estimator_spec("knn") is ESTIMATORS["knn"]
    assert "n_neighbors" in parameter_names("knn")
    assert parameter_names("knn") == sorted(parameter_names("knn"))
    with pytest.raises(UnknownEstimator):
        parameter_names("nope")
