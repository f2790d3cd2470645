"""Evaluating a served model on a labelled CSV: the file read once, one inference pass, and only
the scores asked for."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ML.csv_reader import opened
from ML.datasets import DatasetLimits, read_evaluation_csv
from ML.plain_csv import MAX_PLAIN_BYTES, read_plain_evaluation_csv
from ML.prediction import ModelInput, ServedModel, predict_arrays
from ML.scores import accuracy, aligned_labels, classification_metrics


class Scores(StrEnum):
    """What an evaluation computes: the fast-ml route needs the accuracy alone."""

    ACCURACY = "accuracy"
    ALL = "all"


def evaluate_csv(
    model: ServedModel,
    source: BinaryIO | Path,
    target_variable: str,
    limits: DatasetLimits,
    scores: Scores = Scores.ALL,
) -> dict[str, Any]:
    """The training metrics of `model` on a labelled CSV, or only its accuracy.

    The same figures as scikit-learn's metrics on the pipeline's own predictions: a compiled
    forest gives the very probabilities, and its labels are their argmax as the forest's
    predict takes it (first class on a tie).
    """
    inputs, target = read_evaluation_input(model, source, target_variable, limits)
    with_probabilities = scores is Scores.ALL and model.has_probabilities
    predicted, probabilities = predict_arrays(model, inputs, with_probabilities=with_probabilities)
    truth = aligned_labels(target, model.classes)
    if scores is Scores.ACCURACY:
        return {"accuracy": accuracy(truth, predicted, model.classes)}
    return classification_metrics(truth, predicted, probabilities, model.classes)


def read_evaluation_input(
    model: ServedModel, source: BinaryIO | Path, target_variable: str, limits: DatasetLimits
) -> tuple[ModelInput, np.ndarray]:
    """The model's input and the true labels of a labelled CSV.

    A small file of plain numbers for a compiled model goes straight to a float matrix (see
    ML/plain_csv.py); any other file, or any doubt, takes the checked reader of
    `read_evaluation_csv`, which gives the same values, or the error, for every file.
    """
    with opened(source) as binary:
        if model.compiled is not None and binary.seekable():
            start = binary.tell()
            content = binary.read(MAX_PLAIN_BYTES + 1)
            plain = read_plain_evaluation_csv(content, target_variable, model.schema, limits)
            if plain is not None:
                return plain.features, plain.target
            binary.seek(start)
        features, target = read_evaluation_csv(binary, target_variable, model.schema, limits)
    return features, target.to_numpy()
