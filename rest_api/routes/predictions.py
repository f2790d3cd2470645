"""Predictions: CSV files streamed back, or predicted by a batch job. JSON rows, the hot path,
are answered by rest_api/predict_json.py, which create_app puts first in the routing."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, Query
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse

from ML.prediction import write_predictions_csv
from rest_api.auth import NEEDS_PREDICTOR, PredictorUser
from rest_api.backend import BackendDep
from rest_api.metrics import count_predicted_rows
from rest_api.predict_json import PROBA_PARAMETER, parse_proba
from rest_api.query_keys import KNOWN_QUERY_KEYS_ONLY
from rest_api.schemas import JobView, ModelName, error_responses
from rest_api.uploads import UPLOAD_FORM_LIMITS, CsvFile

router = APIRouter(
    tags=["predictions"],
    responses=error_responses(404, 409),
    form_limits=UPLOAD_FORM_LIMITS,
    dependencies=[NEEDS_PREDICTOR, KNOWN_QUERY_KEYS_ONLY],
)


def proba_flag(proba: Annotated[str | None, Query(include_in_schema=False)] = None) -> bool:
    return parse_proba(proba)


@router.post(
    "/models/{name}/predict/csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "input columns + prediction"}},
    openapi_extra={"parameters": [PROBA_PARAMETER]},
    summary="Predict a CSV file; answers the same rows as CSV with a prediction column",
)
async def predict_csv(
    name: ModelName,
    csv_file: CsvFile,
    backend: BackendDep,
    proba: Annotated[bool, Depends(proba_flag)],
) -> StreamingResponse:
    model = await backend.served_model(name)
    # Predict into a temporary file first, so a bad row anywhere gets a 422 rather than a
    # truncated 200; the answer is then streamed from disk in bounded memory.
    output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the response's background task
    try:
        rows = await run_in_threadpool(
            write_predictions_csv,
            model,
            csv_file.file,
            output,
            with_probabilities=proba,
            chunk_rows=backend.settings.csv_chunk_rows,
        )
    except BaseException:
        output.close()
        raise
    count_predicted_rows(model.name, rows)
    output.seek(0)
    return StreamingResponse(
        _read_chunks(output),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{model.name}-predictions.csv"'},
        background=BackgroundTask(output.close),
    )


@router.post(
    "/models/{name}/predict/jobs",
    status_code=202,
    response_model=JobView,
    openapi_extra={"parameters": [PROBA_PARAMETER]},
    summary="Predict a CSV file as a job, for files too big to wait for; the predictions "
    "CSV (as /predict/csv answers it) is then at /jobs/{id}/result",
)
async def submit_prediction_job(
    name: ModelName,
    csv_file: CsvFile,
    backend: BackendDep,
    user: PredictorUser,
    proba: Annotated[bool, Depends(proba_flag)],
) -> JSONResponse:
    job = await backend.submit_prediction(
        name, csv_file, with_probabilities=proba, submitted_by=user.name
    )
    return JobView.from_record(job).accepted()


def _read_chunks(file: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := file.read(size):
        yield chunk
