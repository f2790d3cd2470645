"""Exceptions a client can fix; the REST layer maps each to one HTTP status."""

from __future__ import annotations

from typing import Any


class FastMLError(Exception):
    """A problem caused by the caller's input; the message says what to fix."""

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidName(FastMLError):
    """A model name that does not match the allowed pattern."""


class InvalidDataset(FastMLError):
    """A CSV that cannot be used: empty, binary, ragged, wrong columns, one class, ..."""


class DatasetTooLarge(FastMLError):
    """A dataset over a configured limit (bytes, rows, columns)."""


class UnknownEstimator(FastMLError):
    """An estimator name missing from the registry."""


class InvalidParams(FastMLError):
    """Hyperparameters, test_size or cv the estimator does not accept."""


class InvalidInput(FastMLError):
    """Prediction input that does not match the model's features; details name each field."""


class ModelNotFound(FastMLError):
    """No model (or no such version of it) in the store."""


class ModelConflict(FastMLError):
    """The request clashes with the store's state, e.g. deleting the current version."""


class ModelUnusable(FastMLError):
    """A stored version that must not be loaded: bad signature, foreign scikit-learn, ...

    `rollback_version` is the newest other version of `model_name` that would load, so
    the REST layer can name the call that rolls back to it; None when there is none.
    """

    def __init__(
        self,
        message: str,
        *,
        model_name: str | None = None,
        rollback_version: int | None = None,
    ) -> None:
        super().__init__(message)
        self.model_name = model_name
        self.rollback_version = rollback_version


class JobNotFound(FastMLError):
    """No job with that id."""


class JobResultUnavailable(FastMLError):
    """A job with no result file to read: not finished yet, deleted, expired, or a training job."""


class JobConflict(FastMLError):
    """The job is in a state that does not allow the action (e.g. cancel a running job)."""


class StorageFull(FastMLError):
    """No space left on the disk holding an upload, the job database or the model store."""


class StoreUnavailable(FastMLError):
    """The model store, job database or upload folder is missing or unreadable right now."""
