"""Models: train (as a job), list, inspect, promote or roll back, delete, evaluate."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ML.datasets import DatasetLimits, check_training_csv_start
from ML.errors import FastMLError, InvalidParams
from ML.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
from ML.model_store import ModelInfo, VersionInfo, check_name
from ML.prediction import evaluate_csv
from ML.training import TrainingOptions, validate_options
from rest_api.auth import Trainer
from rest_api.metrics import TRAINING_JOBS
from rest_api.routes.jobs import job_view
from rest_api.schemas import (
    ERROR_RESPONSES,
    EvaluationView,
    JobView,
    ModelList,
    ModelSummary,
    ModelView,
    PromoteRequest,
    VersionView,
)
from rest_api.services import Services, ServicesDep
from rest_api.uploads import UPLOAD_FORM_LIMITS, save_upload

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES, form_limits=UPLOAD_FORM_LIMITS)

CsvFile = Annotated[UploadFile, File(description="CSV with a header row")]
TargetVariable = Annotated[str, Form(description="name of the column to predict")]


def dataset_limits(services: Services) -> DatasetLimits:
    settings = services.settings
    return DatasetLimits(
        max_rows=settings.max_training_rows,
        max_columns=settings.max_columns,
        max_classes=settings.max_classes,
    )


def parse_training_form(
    estimator: str, params: str | None, test_size: float | None, cv: int | None
) -> TrainingOptions:
    """Turn form fields into options, failing with a 422 before anything is queued."""
    parsed_params: Any = {}
    if params:
        try:
            parsed_params = orjson.loads(params)
        except orjson.JSONDecodeError as error:
            raise InvalidParams(f"params is not valid JSON ({error}); send an object") from None
        if not isinstance(parsed_params, dict):
            raise InvalidParams('params must be a JSON object like {"n_estimators": 200}')
    options = TrainingOptions(estimator=estimator, params=parsed_params, test_size=test_size, cv=cv)
    validate_options(options)
    return options


async def submit_training(
    services: Services,
    name: str,
    csv_file: UploadFile,
    target_variable: str,
    options: TrainingOptions,
    *,
    promote: bool,
) -> JobView:
    """Save the upload, record the job, hand it to the runner; shared with the fast-ml route."""
    services.store.require_available()  # a clear 503 before a job that could never save
    upload_path = await save_upload(csv_file, services.settings.uploads_dir)
    try:
        await run_in_threadpool(
            check_training_csv_start, upload_path, target_variable, dataset_limits(services)
        )
    except FastMLError:
        upload_path.unlink(missing_ok=True)
        raise
    job_options = {
        "estimator": options.estimator,
        "params": dict(options.params),
        "test_size": options.test_size,
        "cv": options.cv,
        "promote": promote,
        "target_variable": target_variable,
        "filename": csv_file.filename,
    }
    try:
        job = await run_in_threadpool(
            services.jobs.create, name, job_options, str(upload_path), services.runner.owner
        )
    except FastMLError:  # a full disk or a missing job database: keep no upload
        upload_path.unlink(missing_ok=True)
        raise
    services.runner.submit(job.id)
    TRAINING_JOBS.inc()
    return job_view(job)


@router.post(
    "/models/{name}/train",
    status_code=202,
    response_model=JobView,
    summary="Train a new version from a CSV (asynchronous job)",
)
async def train(
    name: str,
    csv_file: CsvFile,
    target_variable: TargetVariable,
    services: ServicesDep,
    user: Trainer,
    estimator: Annotated[
        str, Form(description=f"one of: {', '.join(ESTIMATORS)}")
    ] = DEFAULT_ESTIMATOR,
    params: Annotated[
        str | None, Form(description='hyperparameters as a JSON object, e.g. {"n_estimators": 200}')
    ] = None,
    test_size: Annotated[float | None, Form(description="holdout fraction, default 0.2")] = None,
    cv: Annotated[
        int | None, Form(description="k-fold cross-validation instead of holdout")
    ] = None,
    promote: Annotated[bool, Form(description="make the new version current")] = True,
) -> JSONResponse:
    check_name(name)
    options = parse_training_form(estimator, params, test_size, cv)
    view = await submit_training(
        services, name, csv_file, target_variable, options, promote=promote
    )
    return JSONResponse(
        view.model_dump(), status_code=202, headers={"Location": f"/jobs/{view.id}"}
    )


def version_view(info: VersionInfo) -> VersionView:
    return VersionView(**info.__dict__)


def model_view(info: ModelInfo) -> ModelView:
    return ModelView(
        name=info.name,
        current_version=info.current_version,
        versions=[version_view(v) for v in info.versions],
    )


def model_summary(info: ModelInfo) -> ModelSummary:
    current = next((v for v in info.versions if v.is_current), None)
    return ModelSummary(
        name=info.name,
        current_version=info.current_version,
        versions=[v.version for v in info.versions],
        estimator=current.metadata.get("estimator") if current else None,
        metrics=current.metadata.get("metrics") if current else None,
    )


@router.get("/models", response_model=ModelList, summary="Every model and its current version")
def list_models(services: ServicesDep, user: Trainer) -> ModelList:
    return ModelList(models=[model_summary(info) for info in services.store.list_models()])


@router.get("/models/{name}", response_model=ModelView, summary="A model's versions and metadata")
def get_model(name: str, services: ServicesDep, user: Trainer) -> ModelView:
    return model_view(services.store.get_model(name))


@router.get(
    "/models/{name}/versions/{version}",
    response_model=VersionView,
    summary="One version's metadata and metrics",
)
def get_version(name: str, version: int, services: ServicesDep, user: Trainer) -> VersionView:
    return version_view(services.store.get_version(name, version))


@router.put(
    "/models/{name}/current",
    response_model=VersionView,
    summary="Promote or roll back: choose which version serves predictions",
)
def set_current(
    name: str, body: PromoteRequest, services: ServicesDep, user: Trainer
) -> VersionView:
    return version_view(services.store.set_current(name, body.version))


@router.delete("/models/{name}", status_code=204, summary="Delete a model and all its versions")
def delete_model(name: str, services: ServicesDep, user: Trainer) -> None:
    services.store.delete_model(name)


@router.delete(
    "/models/{name}/versions/{version}",
    status_code=204,
    summary="Delete one version (not the current one while others exist)",
)
def delete_version(name: str, version: int, services: ServicesDep, user: Trainer) -> None:
    services.store.delete_version(name, version)


@router.post(
    "/models/{name}/evaluate",
    response_model=EvaluationView,
    summary="Metrics of the current version on a labelled CSV",
)
async def evaluate(
    name: str,
    csv_file: CsvFile,
    target_variable: TargetVariable,
    services: ServicesDep,
    user: Trainer,
) -> EvaluationView:
    model = await services.served_model(name)
    metrics = await run_in_threadpool(
        evaluate_csv, model, csv_file.file, target_variable, dataset_limits(services)
    )
    return EvaluationView(model=model.name, version=model.version, metrics=metrics)
