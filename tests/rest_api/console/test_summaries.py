"""What the console's pages compute from stored metadata: per-class scores and ages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rest_api.console.summaries import age_text, estimator_choices, per_class_scores


def test_per_class_scores_read_off_the_confusion_matrix() -> None:
    # rows: true a, b; columns: predicted a, b
    a, b = per_class_scores(["a", "b"], [[3, 1], [0, 4]])
    assert (a.precision, a.recall, a.support) == (1.0, 0.75, 4)
    assert a.f1 == pytest.approx(2 * 0.75 / 1.75)
    assert (b.precision, b.recall) == (0.8, 1.0)


def test_a_class_never_predicted_has_no_precision() -> None:
    a, b = per_class_scores(["a", "b"], [[2, 0], [2, 0]])
    assert b.precision is None and b.recall == 0.0 and b.f1 is None
    assert a.precision == 0.5


def test_age_text() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert age_text("2026-11-28T11:59:30+00:00", now) == "30 s ago"
    assert age_text("2026-11-28T11:40:00+00:00", now) == "20 min ago"
    assert age_text("2026-11-26T12:00:00", now) == "2 days ago"
    assert age_text(None, now) == ""


def test_every_registry_estimator_is_offered_with_its_parameters() -> None:
    choices = {choice.name: choice for choice in estimator_choices()}
    forest = choices["random_forest"]
    assert forest.parameters["n_estimators"] == "100"
    assert forest.parameters["max_depth"] == "null"
    assert "svc" in choices and "knn" in choices
