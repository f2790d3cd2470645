"""What the console's pages show, read from the shared stores: models, versions, estimators.

Every worker reads the same model store and job store, so any worker renders any page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from markupsafe import Markup

from ML.estimators import ESTIMATORS, estimator_spec, parameter_names
from ML.model_store import ModelInfo, VersionInfo
from rest_api.console.pictures import confusion_matrix_svg

# The headline metrics, in the order the tables show them.
HEADLINE_METRICS = (
    ("accuracy", "Accuracy"),
    ("precision_macro", "Precision (macro)"),
    ("recall_macro", "Recall (macro)"),
    ("f1_macro", "F1 (macro)"),
    ("roc_auc", "ROC AUC"),
)


def age_text(iso_time: str | None, now: datetime | None = None) -> str:
    """'3 min ago' for an ISO 8601 time; '' when there is none."""
    if not iso_time:
        return ""
    then = datetime.fromisoformat(iso_time)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{seconds} s ago"


def score_text(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int


def per_class_scores(labels: Sequence[object], matrix: Sequence[Sequence[int]]) -> list[ClassScore]:
    """Precision, recall and F1 of each class, read off the stored confusion matrix
    (rows true labels, columns predictions); None where a class was never predicted or
    never present."""
    scores = []
    for index, label in enumerate(labels):
        hits = matrix[index][index]
        support = sum(matrix[index])
        predicted = sum(row[index] for row in matrix)
        precision = hits / predicted if predicted else None
        recall = hits / support if support else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else (0.0 if precision is not None and recall is not None else None)
        )
        scores.append(ClassScore(str(label), precision, recall, f1, int(support)))
    return scores


@dataclass(frozen=True)
class ModelRow:
    """One line of the models list."""

    name: str
    current_version: int | None
    version_count: int
    estimator: str
    scores: list[str]
    age: str


def model_rows(models: Sequence[ModelInfo]) -> list[ModelRow]:
    rows = []
    for info in models:
        current = next((v for v in info.versions if v.is_current), None)
        metadata = current.metadata if current is not None else {}
        metrics = metadata.get("metrics") or {}
        rows.append(
            ModelRow(
                name=info.name,
                current_version=info.current_version,
                version_count=len(info.versions),
                estimator=str(metadata.get("estimator", "-")),
                scores=[score_text(metrics.get(key)) for key, _ in HEADLINE_METRICS],
                age=age_text(current.created_at if current is not None else None),
            )
        )
    return rows


@dataclass(frozen=True)
class VersionColumn:
    """One version on the model page: a column of the comparison and its pictures."""

    version: int
    is_current: bool
    is_usable: bool
    unusable_reason: str | None
    age: str
    estimator: str
    changed_params: dict[str, Any]
    scores: list[str]
    evaluation: str
    train_rows: str
    test_rows: str
    duration: str
    heatmap: Markup | None
    class_scores: list[ClassScore]


def version_columns(info: ModelInfo) -> list[VersionColumn]:
    """The model's versions, newest first."""
    return [_version_column(version) for version in sorted(info.versions, key=_newest_first)]


def _newest_first(version: VersionInfo) -> int:
    return -version.version


def _version_column(version: VersionInfo) -> VersionColumn:
    metadata = version.metadata
    metrics = metadata.get("metrics") or {}
    labels: list[Any] = metrics.get("labels") or []
    matrix: list[list[int]] = metrics.get("confusion_matrix") or []
    has_matrix = len(labels) > 0 and len(matrix) == len(labels)
    if metrics.get("cv"):
        evaluation = f"{metrics['cv']}-fold CV"
    elif metrics.get("test_size") is not None:
        evaluation = f"holdout {metrics['test_size']}"
    else:
        evaluation = str(metrics.get("evaluation", "-"))
    duration = metadata.get("duration_seconds")
    estimator = str(metadata.get("estimator", "-"))
    return VersionColumn(
        version=version.version,
        is_current=version.is_current,
        is_usable=version.is_usable,
        unusable_reason=version.unusable_reason,
        age=age_text(version.created_at),
        estimator=estimator,
        changed_params=_changed_params(estimator, metadata.get("params") or {}),
        scores=[score_text(metrics.get(key)) for key, _ in HEADLINE_METRICS],
        evaluation=evaluation,
        train_rows=str(metrics.get("train_rows", metadata.get("dataset_rows", "-"))),
        test_rows=str(metrics.get("test_rows", "-")),
        duration=f"{duration:.2f} s" if isinstance(duration, int | float) else "-",
        heatmap=confusion_matrix_svg(labels, matrix) if has_matrix else None,
        class_scores=per_class_scores(labels, matrix) if has_matrix else [],
    )


def _changed_params(estimator: str, params: dict[str, Any]) -> dict[str, Any]:
    """The recorded hyperparameters that differ from the estimator's own defaults."""
    if estimator not in ESTIMATORS:
        return {}
    defaults = _library_defaults(estimator)
    return {
        key: value
        for key, value in sorted(params.items())
        if key in defaults and defaults[key] != value and "__" not in key
    }


@lru_cache(maxsize=64)
def _library_defaults(estimator: str) -> dict[str, Any]:
    """The estimator class's own defaults (built once per worker; callers do not modify)."""
    return dict(estimator_spec(estimator).factory().get_params(deep=False))


@dataclass(frozen=True)
class EstimatorChoice:
    """An estimator of the registry, as the train form offers it."""

    name: str
    description: str
    # name -> the default the server uses (the registry's, else the library's), as JSON text
    parameters: dict[str, str]


def estimator_choices() -> list[EstimatorChoice]:
    choices = []
    for name, spec in ESTIMATORS.items():
        defaults = {**_library_defaults(name), **spec.defaults}
        parameters = {key: _json_text(defaults.get(key)) for key in parameter_names(name)}
        choices.append(EstimatorChoice(name, spec.description, parameters))
    return choices


def _json_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
