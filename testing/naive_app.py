"""The naive baseline: a textbook FastAPI route serving fastml's fitted models with scikit-learn.

    FASTML_MODEL_DIR=... gunicorn -c gunicorn/gunicorn-config.py testing.naive_app:app

What a tutorial writes: a pydantic body, a DataFrame of the rows and the pipeline's own
`predict`, in a plain `def` route (FastAPI runs it in its thread pool). The models are the very
artifacts fastml trained, read once per worker from FASTML_MODEL_DIR through ML.model_store
(signature checked), with one numeric thread per worker as fastml runs them, so the
difference from fastml's route is the serving path, not the model or the thread count.
testing/benchmark.py --estimators measures it beside fastml and the ceiling. No auth: like
the ceiling it ignores the Authorization header.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

from ML.model_store import LoadedModel, ModelStore
from ML.secret_key import load_or_create_secret

threadpool_limits(1)  # fastml's workers run one numeric thread too (rest_api/app.py)
app = FastAPI()


class PredictRequest(BaseModel):
    rows: list[dict[str, Any]]


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Any]


@lru_cache(maxsize=1)
def model_store() -> ModelStore:
    model_dir = Path(os.environ["FASTML_MODEL_DIR"])
    return ModelStore(model_dir, load_or_create_secret(None, model_dir / "_state"), create=False)


@lru_cache(maxsize=64)
def loaded_model(name: str) -> LoadedModel:
    return model_store().load_current(name)


@app.get("/health/ready")
def ready() -> dict[str, str]:
    """What testing/servers.py waits for before measuring."""
    return {"status": "ready"}


@app.post("/models/{name}/predict")
def predict(name: str, request: PredictRequest) -> PredictResponse:
    model = loaded_model(name)
    frame = pd.DataFrame(request.rows)
    return PredictResponse(
        model=name, version=model.version, predictions=model.pipeline.predict(frame).tolist()
    )
