"""Classification scores of predicted labels against true ones: what training records and
evaluation answers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from ML.errors import InvalidDataset


def accuracy(truth: np.ndarray, predicted: np.ndarray, classes: np.ndarray) -> float:
    """sklearn's accuracy_score, the same float, without its input checks (a millisecond a call).

    accuracy_score is the mean of `truth == predicted`: an exact count divided by the rows.
    """
    check_label_kinds(truth, classes)
    return float(np.count_nonzero(np.asarray(truth == predicted, dtype=bool)) / len(truth))


def check_label_kinds(truth: np.ndarray, classes: np.ndarray) -> None:
    """InvalidDataset when the true labels are text and the model's classes numbers, or the
    reverse: scikit-learn refuses to compare them ("Mix of label input types")."""
    is_text_model = isinstance(classes[0], str)
    if truth.dtype.kind != "O" and not is_text_model:
        return  # numbers against numbers: the common case, without a loop over the rows
    example = next(
        (label for label in truth.tolist() if isinstance(label, str) != is_text_model), None
    )
    if example is None:
        return
    shown = ", ".join(repr(native(label)) for label in classes.tolist()[:5])
    raise InvalidDataset(
        f"the labels in the CSV are {'numbers' if is_text_model else 'text'} (e.g. {example!r}) "
        f"but this model's classes are {'text' if is_text_model else 'numbers'} ({shown}); "
        "name the column that holds this model's labels"
    )


def native(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (np.int64(3) -> 3); others unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def classification_metrics(
    truth: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray | None, classes: np.ndarray
) -> dict[str, Any]:
    """Every metric training records: accuracy, macro precision/recall/F1, ROC AUC, the
    confusion matrix, its labels and test_rows.

    The confusion matrix's rows are true labels and its columns predictions, both in `labels`
    order: the model's classes, then any label of `truth` the model never saw. roc_auc is
    None when it cannot be computed (no probabilities, or a class absent from `truth`).
    """
    truth = np.asarray(truth)
    check_label_kinds(truth, classes)
    labels = list(classes) + _unseen_labels(truth, classes)
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, average="macro", zero_division=0
    )
    matrix = confusion_matrix(truth, predicted, labels=labels)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "roc_auc": _roc_auc(truth, probabilities, classes),
        "confusion_matrix": matrix.tolist(),
        "labels": [native(label) for label in labels],
        # The rows these metrics were measured on: the test split, the out-of-fold
        # predictions of every row under cv, or the file sent to evaluate.
        "test_rows": len(truth),
    }


def _unseen_labels(truth: np.ndarray, classes: np.ndarray) -> list[Any]:
    known = set(classes.tolist())
    unseen = {label for label in truth.tolist() if label not in known}
    return sorted(unseen, key=lambda label: (type(label).__name__, str(label)))


def _roc_auc(
    truth: np.ndarray, probabilities: np.ndarray | None, classes: np.ndarray
) -> float | None:
    """ROC AUC (binary, or one-vs-rest macro), None where it is undefined; never raises."""
    if probabilities is None or len(classes) < 2 or not np.isfinite(probabilities).all():
        return None
    try:
        present = set(truth.tolist())
        if present != set(classes.tolist()):
            return None  # a class without true rows (or a label the model never saw)
        if len(classes) == 2:
            is_positive = (truth == classes[1]).astype(int)
            score = roc_auc_score(is_positive, probabilities[:, 1])
        else:
            score = roc_auc_score(
                truth, probabilities, multi_class="ovr", average="macro", labels=classes
            )
    except (ValueError, TypeError, IndexError):
        return None
    score = float(score)
    return score if math.isfinite(score) else None


def aligned_labels(truth: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """True labels comparable with the model's classes.

    A model trained on text labels compared with an evaluation file whose labels all look
    numeric (pandas reads them as numbers) compares them as text.
    """
    truth = np.asarray(truth)
    if truth.dtype.kind != "O" and all(isinstance(label, str) for label in classes.tolist()):
        return np.array([str(native(label)) for label in truth], dtype=object)
    return truth
