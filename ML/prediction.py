"""Runs a served model on validated input and returns labels as they were in the training data."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeAlias

import numpy as np
import pandas as pd

from ML.batching import BatchSettings, MicroBatcher
from ML.csv_chunks import read_csv_chunks
from ML.errors import InvalidInput
from ML.features import Feature
from ML.forest_inference import CompiledPipeline
from ML.json_input import frame_from_columns, frame_from_rows, matrix_from_rows
from ML.model_store import LoadedModel

# What a model is given: a DataFrame for scikit-learn, or a float matrix for a compiled forest.
ModelInput: TypeAlias = pd.DataFrame | np.ndarray


@dataclass(frozen=True)
class PredictionItem:
    """One request's rows, waiting to share a predict call with others."""

    inputs: ModelInput
    with_probabilities: bool


@dataclass(frozen=True)
class Prediction:
    labels: list[Any]
    probabilities: list[dict[str, float]] | None


class ServedModel:
    """A loaded version plus what serving needs, prepared once per worker.

    `compiled` is the compiled forest path when the pipeline allows it (same labels and
    probabilities as scikit-learn, tested); `predict_async` coalesces concurrent requests
    into one predict call through a micro-batcher.
    """

    def __init__(self, loaded: LoadedModel, batch_settings: BatchSettings | None = None) -> None:
        self.loaded = loaded
        # A tuple: JSON input checks find its layout by identity (ML/json_input.py).
        self.schema = tuple(Feature.from_dict(item) for item in loaded.metadata["features"])
        self.compiled = CompiledPipeline.compile(loaded.pipeline)
        self.classes = loaded.pipeline.classes_
        self.class_keys = [str(label) for label in self.classes.tolist()]
        self._batcher: MicroBatcher[PredictionItem, Prediction] = MicroBatcher(
            self.predict_items, batch_settings or BatchSettings(), rows_of=_item_rows
        )

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

    def inputs_from_rows(self, rows: list[dict[str, Any]]) -> ModelInput:
        """Validated model input from JSON rows; InvalidInput names every bad field."""
        if self.compiled is not None:
            return matrix_from_rows(rows, self.schema)
        return frame_from_rows(rows, self.schema)

    def inputs_from_columns(self, columns: dict[str, list[Any]]) -> ModelInput:
        frame = frame_from_columns(columns, self.schema)
        return frame.to_numpy(dtype=np.float64) if self.compiled is not None else frame

    def predict_async(
        self, inputs: ModelInput, *, with_probabilities: bool
    ) -> Coroutine[Any, Any, Prediction]:
        """The batcher's coroutine itself, to await: a coroutine awaiting it would cost every
        request a frame more, on the way in and when its batch is done."""
        if with_probabilities:
            check_probabilities(self)
        return self._batcher.submit(PredictionItem(inputs, with_probabilities))

    def predict_items(self, items: list[PredictionItem]) -> list[Prediction]:
        """One predict call for several requests' rows, split back per request."""
        inputs = _joined([item.inputs for item in items])
        need_probabilities = any(item.with_probabilities for item in items)
        labels, matrix = predict_arrays(self, inputs, with_probabilities=need_probabilities)
        label_list = labels.tolist()
        rows = matrix.tolist() if matrix is not None else None
        answers = []
        start = 0
        for item in items:
            end = start + len(item.inputs)
            probabilities = None
            if item.with_probabilities and rows is not None:
                probabilities = [
                    dict(zip(self.class_keys, row, strict=True)) for row in rows[start:end]
                ]
            answers.append(Prediction(label_list[start:end], probabilities))
            start = end
        return answers


def _item_rows(item: PredictionItem) -> int:
    return len(item.inputs)


def _joined(parts: list[ModelInput]) -> ModelInput:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return pd.concat(parts, ignore_index=True)


def predict(model: ServedModel, inputs: ModelInput, *, with_probabilities: bool) -> Prediction:
    """Predict synchronously, without batching (CSV files, notebooks)."""
    if with_probabilities:
        check_probabilities(model)
    return model.predict_items([PredictionItem(inputs, with_probabilities)])[0]


def predict_arrays(
    model: ServedModel, inputs: ModelInput, *, with_probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels, and the probability matrix (columns in `classes_` order) when asked."""
    if model.compiled is not None:
        if isinstance(inputs, pd.DataFrame):
            inputs = inputs.to_numpy(dtype=np.float64)
        labels, matrix = model.compiled.predict_with_proba(
            inputs, with_probabilities=with_probabilities
        )
        return labels, matrix if with_probabilities else None
    frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(inputs)
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


PREDICTION_COLUMN = "prediction"


def write_predictions_csv(
    model: ServedModel,
    source: BinaryIO | Path,
    target: IO[bytes],
    *,
    with_probabilities: bool,
    chunk_rows: int,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Stream `source` to `target` with prediction (and probability) columns; returns rows.

    Works chunk by chunk, so memory stays bounded whatever the file's length; `on_chunk` is
    told the rows written so far after each chunk. Input cells are passed through as written,
    escaped against spreadsheet formula injection (a plain number such as -1.5 is data and
    stays as it is; see ML/csv_output.py).
    """
    rows = 0
    for data, chunk_length in predicted_csv_chunks(
        model, source, with_probabilities=with_probabilities, chunk_rows=chunk_rows
    ):
        target.write(data)
        rows += chunk_length
        if on_chunk is not None:
            on_chunk(rows)
    return rows


def predicted_csv_chunks(
    model: ServedModel, source: BinaryIO | Path, *, with_probabilities: bool, chunk_rows: int
) -> Generator[tuple[bytes, int]]:
    """The predictions CSV of `source`, chunk by chunk: (its bytes, its rows); the header row
    is in the first. Each chunk is checked before it is predicted (InvalidInput, InvalidDataset)."""
    if with_probabilities:
        check_probabilities(model)
    added_names = [PREDICTION_COLUMN, *(probability_columns(model) if with_probabilities else [])]
    is_first = True
    for chunk in read_csv_chunks(source, chunk_rows):
        if is_first:
            _check_no_clashes(chunk.columns, added_names)
        features = chunk.features(model.schema)
        labels, matrix = predict_arrays(model, features, with_probabilities=with_probabilities)
        added = {PREDICTION_COLUMN: labels}
        if matrix is not None:
            added.update(zip(added_names[1:], matrix.T, strict=True))
        yield chunk.to_csv(added, header=is_first), len(chunk)
        is_first = False


def _check_no_clashes(columns: list[str], added_names: list[str]) -> None:
    present = set(columns)
    clashes = [name for name in added_names if name in present]
    if clashes:
        raise InvalidInput(
            f"the CSV already has column(s) {', '.join(clashes)}; rename them, "
            "since the answer adds them"
        )
