"""A fitted pipeline's labels and probabilities from one pass over the rows, as its own predict
and predict_proba give them.

The metrics need both. Asked separately, the pipeline preprocesses the rows twice and the
model walks its trees twice. Here the rows are preprocessed once, and where scikit-learn's
predict is computed from the very pass its predict_proba makes, the labels are taken from
that pass the way its predict takes them (scikit-learn 1.9):

- forests (`ForestClassifier.predict`): `classes_.take(argmax(predict_proba(X)))`;
- HistGradientBoostingClassifier: predict and predict_proba both start from `_raw_predict(X)`;
  the labels are `raw > 0` (binary) or argmax(raw), the probabilities `_loss.predict_proba(raw)`.
  Not the argmax of the probabilities: a sigmoid or softmax can round two scores to a tie.

Any other model (SVC, whose predict is not the argmax of its calibrated probabilities, ...)
is asked for both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.pipeline import Pipeline

_FORESTS = (RandomForestClassifier, ExtraTreesClassifier)


def labels_and_probabilities(
    pipeline: Pipeline, features: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray | None]:
    """(pipeline.predict(features), pipeline.predict_proba(features) or None without it)."""
    rows = pipeline[:-1].transform(features)
    model = pipeline[-1]
    # Exact types: a subclass may predict its own way.
    if type(model) in _FORESTS and model.n_outputs_ == 1:
        probabilities = model.predict_proba(rows)
        return model.classes_.take(np.argmax(probabilities, axis=1), axis=0), probabilities
    if type(model) is HistGradientBoostingClassifier:
        return _boosted_labels_and_probabilities(model, rows)
    labels = model.predict(rows)
    return labels, model.predict_proba(rows) if hasattr(model, "predict_proba") else None


def _boosted_labels_and_probabilities(
    model: HistGradientBoostingClassifier, rows: Any
) -> tuple[np.ndarray, np.ndarray]:
    raw = model._raw_predict(rows)
    encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
    return model.classes_[encoded], model._loss.predict_proba(raw)
