"""Request and response models: what Swagger shows and what the routes return."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.responses import JSONResponse

from ML.jobs import JobKind, JobRecord, JobStatus
from ML.model_store import NAME_PATTERN, ModelInfo, VersionInfo

Scalar = float | int | str | bool | None

MODEL_NAME_DESCRIPTION = "1-64 characters a-z 0-9 _ -, starting with a letter or digit"
# Documented, not enforced here: the store's check_name refuses any other name with a 422
# that says what a name may be (FastAPI's own would only quote the pattern).
MODEL_NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN.pattern}
ModelName = Annotated[
    str,
    Path(
        description=MODEL_NAME_DESCRIPTION,
        json_schema_extra={"pattern": NAME_PATTERN.pattern},
        examples=["iris"],
    ),
]


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(examples=["invalid_dataset"])
    message: str = Field(examples=["column 'label' not found; the CSV has: a, b, c"])
    details: list[dict[str, Any]] = []


class ErrorView(BaseModel):
    error: ErrorDetail
    request_id: str | None


class RootView(BaseModel):
    name: str
    version: str
    links: dict[str, str]


class HealthView(BaseModel):
    status: str
    checks: dict[str, str] = {}
    # Models whose current version would not load, and why (readiness only).
    models: dict[str, str] = {}


# What training measured: train_rows fitted the stored model, test_rows were scored
# (the holdout split, or every row out-of-fold under cv). Evaluate answers the same
# metrics without the training-only keys; test_rows is then the file's row count.
METRICS_EXAMPLE: dict[str, Any] = {
    "accuracy": 0.952,
    "precision_macro": 0.958,
    "recall_macro": 0.952,
    "f1_macro": 0.952,
    "roc_auc": 1.0,
    "confusion_matrix": [[7, 0, 0], [0, 7, 0], [0, 1, 6]],
    "labels": ["setosa", "versicolor", "virginica"],
    "test_rows": 21,
    "train_accuracy": 1.0,
    "evaluation": "holdout",
    "test_size": 0.2,
    "train_rows": 84,
}
TRAINING_ONLY = frozenset({"train_accuracy", "evaluation", "test_size", "cv", "train_rows"})
METRICS_DESCRIPTION = (
    "accuracy, macro precision/recall/F1, ROC AUC, confusion matrix (rows: true labels, "
    "columns: predictions, in `labels` order), test_rows: rows scored; from training also "
    "train_rows: rows the model was fitted on"
)


class JobView(BaseModel):
    id: str
    kind: str
    model_name: str
    status: JobStatus
    created_at: str
    started_at: str | None
    finished_at: str | None
    options: dict[str, Any]
    result: dict[str, Any] | None = Field(
        description=f"a training job's version, promoted flag and metrics: {METRICS_DESCRIPTION}; "
        "a batch-prediction job's version, rows, and when its result file expires",
        examples=[
            {"version": 1, "promoted": True, "metrics": METRICS_EXAMPLE},
            {"version": 1, "rows": 45, "expires_at": "2026-11-29T08:00:00+00:00"},
        ],
    )
    error: str | None
    rows_done: int | None = Field(
        default=None, description="a batch-prediction job's rows written so far"
    )
    links: dict[str, str] = {}

    @classmethod
    def from_record(cls, job: JobRecord) -> JobView:
        links = {"self": f"/jobs/{job.id}", "model": f"/models/{job.model_name}"}
        if job.result is not None and "version" in job.result:
            links["version"] = f"/models/{job.model_name}/versions/{job.result['version']}"
        if job.kind is JobKind.PREDICT and job.status is JobStatus.SUCCEEDED:
            links["result"] = f"/jobs/{job.id}/result"
        return cls(**job.to_dict(), links=links)

    def accepted(self) -> JSONResponse:
        """The 202 answer of a submitted job, with Location: /jobs/{id}."""
        return JSONResponse(
            self.model_dump(mode="json"), status_code=202, headers={"Location": f"/jobs/{self.id}"}
        )


class JobList(BaseModel):
    jobs: list[JobView]


class VersionView(BaseModel):
    name: str
    version: int
    created_at: str
    is_current: bool
    is_usable: bool
    unusable_reason: str | None
    size_bytes: int
    metadata: dict[str, Any] = Field(
        description="estimator and params, features (name, kind, dtype, and a categorical "
        "feature's categories in the training CSV), classes, dataset_rows (every row of the "
        f"training CSV), library versions, duration, and metrics: {METRICS_DESCRIPTION}"
    )

    @classmethod
    def from_info(cls, info: VersionInfo) -> VersionView:
        return cls(**info.__dict__)


class ModelView(BaseModel):
    name: str
    current_version: int | None
    versions: list[VersionView]

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelView:
        return cls(
            name=info.name,
            current_version=info.current_version,
            versions=[VersionView.from_info(version) for version in info.versions],
        )


class ModelSummary(BaseModel):
    name: str
    current_version: int | None
    versions: list[int]
    estimator: str | None
    metrics: dict[str, Any] | None = Field(
        description=METRICS_DESCRIPTION, examples=[METRICS_EXAMPLE]
    )

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelSummary:
        current = next((v for v in info.versions if v.is_current), None)
        return cls(
            name=info.name,
            current_version=info.current_version,
            versions=[v.version for v in info.versions],
            estimator=current.metadata.get("estimator") if current else None,
            metrics=current.metadata.get("metrics") if current else None,
        )


class ModelList(BaseModel):
    models: list[ModelSummary]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


IRIS_ROW: dict[str, Any] = {
    "sepal_length": 5.1,
    "sepal_width": 3.5,
    "petal_length": 1.4,
    "petal_width": 0.2,
}


class RowsInput(BaseModel):
    """One object per row, feature name to value."""

    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Scalar]] = Field(examples=[[IRIS_ROW]])


class ColumnsInput(BaseModel):
    """One list per feature, all of the same length."""

    model_config = ConfigDict(extra="forbid")
    columns: dict[str, list[Scalar]] = Field(examples=[{k: [v] for k, v in IRIS_ROW.items()}])


class PredictRequest(RootModel[RowsInput | ColumnsInput]):
    """Either `rows` or `columns`, never both, nothing else (the route refuses other keys)."""

    # One example of the whole body: Swagger's "Try it out" would otherwise build one from
    # both alternatives, which the route refuses.
    model_config = ConfigDict(json_schema_extra={"examples": [{"rows": [IRIS_ROW]}]})


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None = None


class EvaluationView(BaseModel):
    model: str
    version: int
    metrics: dict[str, Any] = Field(
        description=METRICS_DESCRIPTION,
        examples=[
            {key: value for key, value in METRICS_EXAMPLE.items() if key not in TRAINING_ONLY}
        ],
    )


class CompatResponse(BaseModel):
    """The fast-ml template's answer shape."""

    status: str = Field(examples=["success"])
    code: int = Field(examples=[200])
    output: str = Field(examples=["Test accuracy : 97.78 %"])


# Every error status a route may answer and what it means: routes list those of their own
# domain with `error_responses(404, 409)`; rest_api/openapi_document.py adds the edge's
# (401, 403, 429 and 503 of logins; 400, 413 and 422 of bodies and parameters) to every route.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: a body, form or header that cannot be parsed",
    401: "No or wrong credentials",
    403: "The user's role may not do this",
    404: "Unknown model, version or job",
    409: "The model, version or job cannot do this in its present state",
    413: "Over a size limit: body, upload, form field or rows",
    415: "Content-Type is not application/json",
    422: "Invalid input; the message and details say what to fix",
    429: "Too many failed logins; see Retry-After",
    503: "The model store, the job database or the login counters are unavailable; retry",
    504: "Training is still running; poll the job",
    507: "No space left on the server's disk",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: these statuses, each with the JSON error shape."""
    return {
        status: {"model": ErrorView, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }
