"""The fast-ml template's routes, so its clients keep working against this server.

Same fields and answer shape (`{"status", "code", "output"}`); unlike the original, a failure
is a real HTTP error status, with the same shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from ML.errors import FastMLError
from ML.estimators import DEFAULT_ESTIMATOR
from ML.evaluation import Scores
from ML.jobs import JobStatus, TrainingJobOptions
from rest_api.auth import NEEDS_PREDICTOR, NEEDS_TRAINER
from rest_api.backend import BackendDep
from rest_api.compat_fast import DEFAULT_MODEL, accuracy_output, compat_body
from rest_api.errors import status_and_code
from rest_api.query_keys import KNOWN_QUERY_KEYS_ONLY
from rest_api.schemas import ERROR_DESCRIPTIONS, CompatResponse
from rest_api.uploads import UPLOAD_FORM_LIMITS, CsvFile, TargetVariable

router = APIRouter(
    tags=["fast-ml compatibility"],
    form_limits=UPLOAD_FORM_LIMITS,
    dependencies=[KNOWN_QUERY_KEYS_ONLY],
)
TRAIN_TIMEOUT_SECONDS = 3600.0


def compat_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Errors of the model or data answer in the fast-ml shape, those of the edge and of
    FastAPI's parsing in ours: either may come with these statuses."""
    either = {"anyOf": [{"$ref": f"#/components/schemas/{name}"} for name in COMPAT_ERROR_SHAPES]}
    return {
        status: {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": either}},
        }
        for status in statuses
    }


COMPAT_ERROR_SHAPES = ("CompatResponse", "ErrorView")
ERRORS = (404, 409, 413, 422, 503, 507)


def compat_answer(status: int, output: str) -> Response:
    return Response(compat_body(status, output), status_code=status, media_type="application/json")


@router.post(
    "/train_model",
    response_model=CompatResponse,
    dependencies=[NEEDS_TRAINER],
    responses=compat_error_responses(*ERRORS, 504),
    summary="fast-ml: train the 'default' model and wait for it",
)
async def train_model(
    csv_file: CsvFile, target_variable: TargetVariable, backend: BackendDep
) -> Response:
    options = TrainingJobOptions(
        target_variable=target_variable, estimator=DEFAULT_ESTIMATOR, filename=csv_file.filename
    )
    upload_path = await backend.save_job_upload(csv_file)
    try:
        job = await backend.submit_training(DEFAULT_MODEL, upload_path, options)
    except FastMLError as error:
        return compat_answer(status_and_code(error)[0], error.message)
    try:
        job = await backend.runner.wait(job.id, timeout=TRAIN_TIMEOUT_SECONDS)
    except TimeoutError:
        return compat_answer(504, f"training still running; poll GET /jobs/{job.id}")
    if job.status is not JobStatus.SUCCEEDED or job.result is None:
        is_internal = (job.error or "").startswith("internal error")
        return compat_answer(500 if is_internal else 422, job.error or f"job {job.status}")
    accuracy = job.result["metrics"]["train_accuracy"]
    return compat_answer(200, f"Train accuracy : {accuracy * 100:.2f} %")


@router.post(
    "/get_prediction",
    response_model=CompatResponse,
    dependencies=[NEEDS_PREDICTOR],
    responses=compat_error_responses(*ERRORS),
    summary="fast-ml: accuracy of the 'default' model on a labelled CSV",
)
async def get_prediction(
    csv_file: CsvFile, target_variable: TargetVariable, backend: BackendDep
) -> Response:
    try:
        _, metrics = await backend.evaluate(
            DEFAULT_MODEL, csv_file.file, target_variable, Scores.ACCURACY
        )
    except FastMLError as error:
        return compat_answer(status_and_code(error)[0], error.message)
    return compat_answer(200, accuracy_output(metrics["accuracy"]))
