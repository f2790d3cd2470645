"""Models: train (as a job), list, inspect, promote or roll back, delete, evaluate."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Path
from pydantic import BeforeValidator
from starlette.responses import JSONResponse

from ML.errors import InvalidParams
from ML.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
from ML.jobs import TrainingJobOptions
from ML.model_store import check_name
from ML.training import TrainingOptions, validate_options
from rest_api.auth import NEEDS_TRAINER
from rest_api.backend import BackendDep
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
from rest_api.uploads import UPLOAD_FORM_LIMITS, CsvFile, TargetVariable

router = APIRouter(
    tags=["models"],
    responses=ERROR_RESPONSES,
    form_limits=UPLOAD_FORM_LIMITS,
    dependencies=[NEEDS_TRAINER],
)

_VERSION_TEXT = re.compile(r"0|[1-9][0-9]{0,17}")


def _strict_version(value: Any) -> Any:
    # A path segment is text: "02", "2.0" and " 1" are not how a version is written.
    if isinstance(value, str) and not _VERSION_TEXT.fullmatch(value):
        raise ValueError("a version is a whole number such as 2, without leading zeros")
    return value


VersionNumber = Annotated[int, BeforeValidator(_strict_version), Path(description="e.g. 2")]


def parse_training_form(
    target_variable: str,
    estimator: str,
    params: str | None,
    test_size: float | None,
    cv: int | None,
    *,
    promote: bool,
    filename: str | None,
) -> TrainingJobOptions:
    """Turn form fields into job options, failing with a 422 before anything is queued."""
    parsed_params: Any = {}
    if params:
        try:
            parsed_params = orjson.loads(params)
        except orjson.JSONDecodeError as error:
            raise InvalidParams(f"params is not valid JSON ({error}); send an object") from None
        if not isinstance(parsed_params, dict):
            raise InvalidParams('params must be a JSON object like {"n_estimators": 200}')
    options = TrainingJobOptions(
        target_variable=target_variable,
        estimator=estimator,
        params=parsed_params,
        test_size=test_size,
        cv=cv,
        promote=promote,
        filename=filename,
    )
    validate_options(TrainingOptions.for_job(options))
    return options


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
    backend: BackendDep,
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
    options = parse_training_form(
        target_variable,
        estimator,
        params,
        test_size,
        cv,
        promote=promote,
        filename=csv_file.filename,
    )
    upload_path = await backend.save_training_upload(csv_file)
    view = JobView.from_record(await backend.submit_training(name, upload_path, options))
    return JSONResponse(
        view.model_dump(mode="json"), status_code=202, headers={"Location": f"/jobs/{view.id}"}
    )


@router.get("/models", response_model=ModelList, summary="Every model and its current version")
def list_models(backend: BackendDep) -> ModelList:
    return ModelList(models=[ModelSummary.from_info(info) for info in backend.store.list_models()])


@router.get("/models/{name}", response_model=ModelView, summary="A model's versions and metadata")
def get_model(name: str, backend: BackendDep) -> ModelView:
    return ModelView.from_info(backend.store.get_model(name))


@router.get(
    "/models/{name}/versions/{version}",
    response_model=VersionView,
    summary="One version's metadata and metrics",
)
def get_version(name: str, version: VersionNumber, backend: BackendDep) -> VersionView:
    return VersionView.from_info(backend.store.get_version(name, version))


@router.put(
    "/models/{name}/current",
    response_model=VersionView,
    summary="Promote or roll back: choose which version serves predictions",
)
def set_current(name: str, body: PromoteRequest, backend: BackendDep) -> VersionView:
    return VersionView.from_info(backend.store.set_current(name, body.version))


@router.delete("/models/{name}", status_code=204, summary="Delete a model and all its versions")
def delete_model(name: str, backend: BackendDep) -> None:
    backend.store.delete_model(name)


@router.delete(
    "/models/{name}/versions/{version}",
    status_code=204,
    summary="Delete one version (not the current one while others exist)",
)
def delete_version(name: str, version: VersionNumber, backend: BackendDep) -> None:
    backend.store.delete_version(name, version)


@router.post(
    "/models/{name}/evaluate",
    response_model=EvaluationView,
    summary="Metrics of the current version on a labelled CSV",
)
async def evaluate(
    name: str, csv_file: CsvFile, target_variable: TargetVariable, backend: BackendDep
) -> EvaluationView:
    model, metrics = await backend.evaluate(name, csv_file.file, target_variable)
    return EvaluationView(model=model.name, version=model.version, metrics=metrics)
