"""The fast-ml template's routes, so its clients keep working against this server.

Same fields and answer shape (`{"status", "code", "output"}`); unlike the original, a failure
is a real HTTP error status, with the same shape.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ML.errors import FastMLError
from ML.jobs import JobStatus
from ML.prediction import evaluate_csv
from ML.training import TrainingOptions
from rest_api.auth import Predictor, Trainer
from rest_api.errors import status_for
from rest_api.routes.models import CsvFile, TargetVariable, dataset_limits, submit_training
from rest_api.schemas import CompatResponse
from rest_api.services import ServicesDep
from rest_api.uploads import UPLOAD_FORM_LIMITS

router = APIRouter(tags=["fast-ml compatibility"], form_limits=UPLOAD_FORM_LIMITS)
DEFAULT_MODEL = "default"
TRAIN_TIMEOUT_SECONDS = 3600.0


def compat_answer(status: int, output: str) -> JSONResponse:
    return JSONResponse(
        {"status": "success" if status < 400 else "error", "code": status, "output": output},
        status_code=status,
    )


@router.post(
    "/train_model",
    response_model=CompatResponse,
    summary="fast-ml: train the 'default' model and wait for it",
)
async def train_model(
    csv_file: CsvFile, target_variable: TargetVariable, services: ServicesDep, user: Trainer
) -> JSONResponse:
    try:
        view = await submit_training(
            services, DEFAULT_MODEL, csv_file, target_variable, TrainingOptions(), promote=True
        )
    except FastMLError as error:
        return compat_answer(status_for(error), error.message)
    try:
        job = await services.runner.wait(view.id, timeout=TRAIN_TIMEOUT_SECONDS)
    except TimeoutError:
        return compat_answer(504, f"training still running; poll GET /jobs/{view.id}")
    if job.status is not JobStatus.SUCCEEDED or job.result is None:
        is_internal = (job.error or "").startswith("internal error")
        return compat_answer(500 if is_internal else 422, job.error or f"job {job.status}")
    accuracy = job.result["metrics"]["train_accuracy"]
    return compat_answer(200, f"Train accuracy : {accuracy * 100:.2f} %")


@router.post(
    "/get_prediction",
    response_model=CompatResponse,
    summary="fast-ml: accuracy of the 'default' model on a labelled CSV",
)
async def get_prediction(
    csv_file: CsvFile, target_variable: TargetVariable, services: ServicesDep, user: Predictor
) -> JSONResponse:
    try:
        model = await services.served_model(DEFAULT_MODEL)
        metrics = await run_in_threadpool(
            evaluate_csv, model, csv_file.file, target_variable, dataset_limits(services)
        )
    except FastMLError as error:
        return compat_answer(status_for(error), error.message)
    return compat_answer(200, f"Test accuracy : {metrics['accuracy'] * 100:.2f} %")
