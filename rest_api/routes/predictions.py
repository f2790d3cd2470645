"""Predictions: JSON rows or columns (the hot path), and CSV files streamed back."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
from fastapi import APIRouter, Query, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from ML.errors import InvalidInput
from ML.prediction import ServedModel, write_predictions_csv
from rest_api.auth import Predictor
from rest_api.errors import ApiError
from rest_api.metrics import count_predicted_rows
from rest_api.routes.models import CsvFile
from rest_api.schemas import ERROR_RESPONSES, PredictRequest, PredictResponse
from rest_api.services import Services, ServicesDep
from rest_api.uploads import UPLOAD_FORM_LIMITS

router = APIRouter(tags=["predictions"], responses=ERROR_RESPONSES, form_limits=UPLOAD_FORM_LIMITS)
Proba = Query(default=False, description="also return class probabilities")

# The hot path reads the body itself (orjson, no pydantic pass over every row); this keeps
# the documented request schema in Swagger all the same.
PREDICT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


@router.post(
    "/models/{name}/predict",
    response_model=PredictResponse,
    openapi_extra=PREDICT_BODY_DOC,
    summary="Predict labels for JSON rows (or columns)",
)
async def predict_json(
    name: str, request: Request, services: ServicesDep, user: Predictor, proba: bool = Proba
) -> Response:
    """Documents the route; requests are answered by `rest_api.lean_predict` with the same
    `answer_predict_json`, unless FASTML_LEAN_PREDICT=false routes them here."""
    answer = await answer_predict_json(
        services, name, await request.body(), request.headers.get("content-type"), proba
    )
    return Response(answer, media_type="application/json")


async def answer_predict_json(
    services: Services, name: str, body: bytes, content_type: str | None, proba: bool
) -> bytes:
    """The JSON predict answer, or a FastMLError/ApiError saying what to fix."""
    if content_type is not None and not content_type.startswith("application/json"):
        raise ApiError(415, f"send Content-Type: application/json, not {content_type!r}")
    model = await services.served_model(name)
    inputs = parse_predict_body(body, model, services.settings.max_predict_rows)
    prediction = await model.predict_async(inputs, with_probabilities=proba)
    count_predicted_rows(model.name, len(inputs))
    answer: dict[str, Any] = {
        "model": model.name,
        "version": model.version,
        "predictions": prediction.labels,
    }
    if prediction.probabilities is not None:
        answer["probabilities"] = prediction.probabilities
    return orjson.dumps(answer)


def parse_predict_body(body: bytes, model: ServedModel, max_rows: int) -> Any:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict) or ("rows" in payload) == ("columns" in payload):
        raise InvalidInput(
            'send {"rows": [{"feature": value, ...}, ...]} or {"columns": {"feature": [values]}}'
        )
    if "rows" in payload:
        rows = payload["rows"]
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise InvalidInput('"rows" must be a list of objects, one per row')
        _check_row_count(len(rows), max_rows)
        return model.inputs_from_rows(rows)
    columns = payload["columns"]
    if not isinstance(columns, dict) or not all(isinstance(v, list) for v in columns.values()):
        raise InvalidInput('"columns" must be an object of lists, one list per feature')
    _check_row_count(max((len(v) for v in columns.values()), default=0), max_rows)
    return model.inputs_from_columns(columns)


def _check_row_count(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise ApiError(
            413,
            f"{count} rows is over the limit of {max_rows} per JSON request; "
            "send large inputs to /models/{name}/predict/csv",
        )


@router.post(
    "/models/{name}/predict/csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "input columns + prediction"}},
    summary="Predict a CSV file; answers the same rows as CSV with a prediction column",
)
async def predict_csv(
    name: str, csv_file: CsvFile, services: ServicesDep, user: Predictor, proba: bool = Proba
) -> StreamingResponse:
    model = await services.served_model(name)
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
            chunk_rows=services.settings.csv_chunk_rows,
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


def _read_chunks(file: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := file.read(size):
        yield chunk
