"""Error codes come from one written-out table, so renaming a class cannot change the API."""

from __future__ import annotations

import inspect
import re

from ML import errors
from rest_api.errors import ANSWER_BY_ERROR, status_and_code

# The codes clients already switch on; this list changes only with a release note.
PUBLISHED_CODES = {
    "InvalidName": "invalid_name",
    "InvalidDataset": "invalid_dataset",
    "DatasetTooLarge": "dataset_too_large",
    "UnknownEstimator": "unknown_estimator",
    "InvalidParams": "invalid_params",
    "InvalidInput": "invalid_input",
    "ModelNotFound": "model_not_found",
    "ModelConflict": "model_conflict",
    "ModelUnusable": "model_unusable",
    "JobNotFound": "job_not_found",
    "JobConflict": "job_conflict",
    "JobResultUnavailable": "job_result_unavailable",
    "StorageFull": "storage_full",
    "StoreUnavailable": "store_unavailable",
}
# Not the client's fault but not a bug either: the disk is full, or the store went away.
UNAVAILABLE_STATUSES = {503, 507}


def test_every_domain_error_has_a_status_and_a_code() -> None:
    domain_errors = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.FastMLError) and cls is not errors.FastMLError
    }
    assert domain_errors <= set(ANSWER_BY_ERROR)
    for status, code in ANSWER_BY_ERROR.values():
        assert 400 <= status < 500 or status in UNAVAILABLE_STATUSES
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code)


def test_published_codes_are_kept() -> None:
    assert {cls.__name__: code for cls, (_, code) in ANSWER_BY_ERROR.items()} == PUBLISHED_CODES


def test_a_renamed_or_derived_error_keeps_its_parents_code() -> None:
    class CsvHeaderMissing(errors.InvalidDataset):
        pass

    assert status_and_code(CsvHeaderMissing("no header")) == (422, "invalid_dataset")
