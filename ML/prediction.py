"""Runs a served model on validated input and returns labels as they were in the training data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from ML.datasets import (
    DatasetLimits,
    Feature,
    csv_bytes,
    features_from_text_frame,
    iter_csv_chunks,
    read_evaluation_csv,
)
from ML.errors import InvalidInput
from ML.model_store import LoadedModel
from ML.training import compute_metrics


@dataclass(frozen=True)
class ServedModel:
    """A loaded version plus what serving needs from its metadata, parsed once."""

    loaded: LoadedModel
    schema: list[Feature] = field(default_factory=list)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> ServedModel:
        schema = [Feature.from_dict(item) for item in loaded.metadata["features"]]
        return cls(loaded, schema)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> int:
        return self.loaded.version

    @property
    def pipeline(self) -> Any:
        return self.loaded.pipeline

    @property
    def has_probabilities(self) -> bool:
        return hasattr(self.pipeline, "predict_proba")


@dataclass(frozen=True)
class Prediction:
    labels: list[Any]
    probabilities: list[dict[str, float]] | None


def predict(model: ServedModel, frame: pd.DataFrame, *, with_probabilities: bool) -> Prediction:
    labels, matrix = predict_arrays(model, frame, with_probabilities=with_probabilities)
    if matrix is None:
        return Prediction(labels.tolist(), None)
    classes = [str(label) for label in model.pipeline.classes_.tolist()]
    probabilities = [dict(zip(classes, row, strict=True)) for row in matrix.tolist()]
    return Prediction(labels.tolist(), probabilities)


def predict_arrays(
    model: ServedModel, frame: pd.DataFrame, *, with_probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels, and the probability matrix (columns in `classes_` order) when asked."""
    labels = model.pipeline.predict(frame)
    if not with_probabilities:
        return labels, None
    check_probabilities(model)
    # predict() and argmax(predict_proba()) differ for some estimators (SVC): ask for both.
    return labels, model.pipeline.predict_proba(frame)


def check_probabilities(model: ServedModel) -> None:
    if not model.has_probabilities:
        raise InvalidInput(
            f"model {model.name} ({model.loaded.metadata.get('estimator')}) gives no "
            "probabilities; call without proba=true"
        )


def probability_columns(model: ServedModel) -> list[str]:
    return [f"probability_{label}" for label in model.pipeline.classes_.tolist()]


def evaluate_csv(
    model: ServedModel, source: BinaryIO | Path, target_variable: str, limits: DatasetLimits
) -> dict[str, Any]:
    """The training metrics, computed for `model` on a labelled CSV."""
    features, target = read_evaluation_csv(source, target_variable, model.schema, limits)
    return compute_metrics(model.pipeline, features, target)


PREDICTION_COLUMN = "prediction"


def write_predictions_csv(
    model: ServedModel,
    source: BinaryIO,
    target: BinaryIO,
    *,
    with_probabilities: bool,
    chunk_rows: int,
) -> int:
    """Stream `source` to `target` with prediction (and probability) columns; returns rows.

    Works chunk by chunk, so memory stays bounded whatever the file's length. Input cells
    are passed through as written, escaped against spreadsheet formula injection.
    """
    if with_probabilities:
        check_probabilities(model)
    rows = 0
    for chunk in iter_csv_chunks(source, chunk_rows):
        added = [PREDICTION_COLUMN, *(probability_columns(model) if with_probabilities else [])]
        clashes = [column for column in added if column in chunk.columns]
        if clashes:
            raise InvalidInput(
                f"the CSV already has column(s) {', '.join(clashes)}; rename them, "
                "since the answer adds them"
            )
        features = features_from_text_frame(chunk, model.schema, first_row_number=rows + 1)
        labels, matrix = predict_arrays(model, features, with_probabilities=with_probabilities)
        out = chunk.copy()
        out[PREDICTION_COLUMN] = labels
        if matrix is not None:
            for index, column in enumerate(probability_columns(model)):
                out[column] = matrix[:, index]
        target.write(csv_bytes(out, header=rows == 0))
        rows += len(chunk)
    return rows
