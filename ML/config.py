"""Every FASTML_* setting of the server, defined once, each with its one-line description.

README's configuration table lists exactly these fields (a test checks it), and
gunicorn/gunicorn-config.py reads its knobs from here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ML.batching import BatchSettings

if TYPE_CHECKING:
    from ML.datasets import DatasetLimits
    from ML.jobs import JobRecords
    from ML.model_store import ModelStore

PROJECT_DIR = Path(__file__).resolve().parent.parent

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Settings(BaseSettings):
    """Built once by the app factory (or a job process) and passed down; never a module global.

    The environment variable of a field is FASTML_ + its name in capitals, except the
    fast-ml template's SERVICE_USER and SERVICE_PASS.
    """

    model_config = SettingsConfigDict(env_prefix="FASTML_", extra="ignore")

    # Files and folders.
    model_dir: Path = Field(
        default=PROJECT_DIR / "ML" / "saved_models",
        description="model store: one folder per model, versions inside",
    )
    state_dir: Path | None = Field(
        default=None,
        description="job records, uploads waiting for their job, batch-prediction results, the "
        "generated secret and admin password (default: MODEL_DIR/_state)",
    )
    create_store: bool = Field(
        default=True,
        description="create a missing model store, state folder and job database at start "
        "(gunicorn's master does, once; its workers never do); false: never create them",
    )
    log_path: Path = Field(
        default=PROJECT_DIR / "ML_server.log",
        description="the log every worker appends to: request lines, job and model events",
    )
    log_max_bytes: int = Field(
        default=50 * 1024 * 1024, ge=0, description="rotate the log past this size; 0: never"
    )
    log_backup_count: int = Field(
        default=5, ge=1, description="rotated logs kept: ML_server.log.1 (newest) to .N"
    )
    log_level: LogLevel = Field(
        default="info", description="level of the app log and of gunicorn's own messages"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="HMAC key signing model artifacts (default: generated once into STATE_DIR)",
    )

    # Users.
    service_user: str | None = Field(
        default=None,
        validation_alias="SERVICE_USER",
        description="the fast-ml template's user name; that user gets the admin role",
    )
    service_pass: SecretStr | None = Field(
        default=None, validation_alias="SERVICE_PASS", description="SERVICE_USER's password"
    )
    users_file: Path | None = Field(
        default=None, description="users file: lines of name:role:hash (python -m rest_api.users)"
    )
    login_max_failures: int = Field(
        default=10, ge=1, description="failed logins per client and user before a 429"
    )
    login_window_seconds: float = Field(
        default=60.0, gt=0, description="the window those failed logins are counted in"
    )
    login_account_max_failures: int = Field(
        default=100,
        ge=1,
        description="failed logins per account per account window (OWASP ASVS: 100 an hour), "
        "shared by addresses it has not logged in from recently; also a cap per address",
    )
    login_account_window_seconds: float = Field(
        default=3600.0, gt=0, description="the window the account budget is counted in"
    )
    login_known_address_days: float = Field(
        default=30.0,
        gt=0,
        description="an address stays exempt from the account budget this "
        "long after its last successful login",
    )

    # Limits, checked before parsing.
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="largest multipart upload (413 above)"
    )
    max_json_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, description="largest JSON or other non-upload body"
    )
    max_training_rows: int = Field(
        default=2_000_000, ge=2, description="most rows of a training or evaluation CSV"
    )
    max_columns: int = Field(default=1_000, ge=2, description="most columns of a CSV")
    max_classes: int = Field(default=1_000, ge=2, description="most distinct target labels")
    max_predict_rows: int = Field(
        default=10_000, ge=1, description="most rows of one JSON predict request (413 above)"
    )
    csv_chunk_rows: int = Field(
        default=20_000,
        ge=1,
        description="rows predicted at a time by /predict/csv and /predict/jobs",
    )

    # Jobs and models.
    training_processes: int = Field(
        default=1,
        ge=1,
        description="job processes (training, batch prediction) per gunicorn worker",
    )
    prediction_result_hours: float = Field(
        default=24.0,
        gt=0,
        description="a batch-prediction job's result file is deleted this long after the job "
        "finishes (or at DELETE /jobs/{id})",
    )
    model_poll_seconds: float = Field(
        default=0.5, gt=0, description="how often a worker checks which version is current"
    )

    # Micro-batching of concurrent predictions for the same model (per worker).
    batch_max_rows: int = Field(
        default=512, ge=1, description="most rows coalesced into one predict call"
    )
    batch_max_wait_ms: float = Field(
        default=0.0, ge=0, description="how long a prediction may wait for company (0: never)"
    )

    # Gunicorn (read by gunicorn/gunicorn-config.py).
    bind: str = Field(default="127.0.0.1:8000", description="address gunicorn listens on")
    workers: int = Field(default=2, ge=1, description="gunicorn worker processes")
    worker_timeout: int = Field(
        default=60, ge=1, description="seconds a silent worker lives before gunicorn restarts it"
    )
    keepalive: int = Field(
        default=5,
        gt=0,
        description="seconds an idle connection stays open, before its first request and "
        "between requests",
    )
    pid_file: Path | None = Field(default=None, description="file gunicorn writes its pid to")
    max_requests: int = Field(
        default=1_000_000,
        ge=0,
        description="a worker is replaced after this many requests, dropping none (0: never)",
    )
    max_requests_jitter: int | None = Field(
        default=None, ge=0, description="random extra requests per worker (default: a tenth)"
    )

    # HTTP limits, kept by our Uvicorn worker (rest_api/worker.py).
    limit_request_line: int = Field(
        default=8190, ge=0, description="bytes of the request target (414 above; 0: no limit)"
    )
    limit_request_fields: int = Field(
        default=100, ge=0, description="header lines of one request (431 above; 0: no limit)"
    )
    limit_request_field_size: int = Field(
        default=8190, ge=0, description="bytes of one header line (431 above; 0: no limit)"
    )
    limit_request_head_bytes: int = Field(
        default=32768, gt=0, description="bytes of the request line and all headers (431 above)"
    )
    header_timeout: float = Field(
        default=10.0, gt=0, description="seconds from a request's first byte to its last header"
    )
    body_timeout: float = Field(
        default=20.0, gt=0, description="seconds a body may take before BODY_MIN_RATE applies"
    )
    body_min_rate: float = Field(
        default=500.0, gt=0, description="bytes per second a slow body must average (408 below)"
    )

    # Scale-out (docs/scaling.md): Celery workers and shared state in Redis.
    broker_url: str | None = Field(
        default=None,
        description="redis://HOST:PORT/DB: jobs run on Celery workers, job records and "
        "failed logins live in that Redis (unset: the embedded default)",
    )
    redis_key_prefix: str = Field(
        default="fastml:",
        description="prefix of the Redis keys of job records and failed logins",
    )
    job_time_limit_seconds: int = Field(
        default=3600,
        ge=1,
        description="a Celery job running this long is stopped and failed (killed "
        "FASTML_JOB_STOP_GRACE_SECONDS later if it does not stop); the broker's visibility "
        "timeout is set above it",
    )
    job_stop_grace_seconds: int = Field(
        default=30,
        ge=1,
        description="seconds a Celery job past its time limit has to stop before it is "
        "killed; a dead worker's job goes to another worker this long after that",
    )
    job_max_attempts: int = Field(
        default=3,
        ge=1,
        description="times a Celery job is started before it is failed, when its worker "
        "process dies each time (killed, out of memory)",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def batch_settings(self) -> BatchSettings:
        # The batch runs on the event loop: a compiled forest's batch takes well under a
        # millisecond, and wrk passes with a thread hop differed by less than the noise.
        return BatchSettings(
            max_rows=self.batch_max_rows,
            max_wait_seconds=self.batch_max_wait_ms / 1000,
            run_in_thread=False,
        )

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or self.model_dir / "_state"

    @property
    def jobs_db_path(self) -> Path:
        return self.resolved_state_dir / "jobs.sqlite3"

    @property
    def login_failures_db_path(self) -> Path:
        return self.resolved_state_dir / "login_failures.sqlite3"

    @property
    def uploads_dir(self) -> Path:
        return self.resolved_state_dir / "uploads"

    @property
    def results_dir(self) -> Path:
        return self.resolved_state_dir / "results"

    @property
    def is_distributed(self) -> bool:
        """Jobs on Celery workers and shared state in Redis (FASTML_BROKER_URL is set)."""
        return bool(self.broker_url)

    def open_job_store(self, *, create: bool = True) -> JobRecords:
        """Where job records live: the broker's Redis when one is set, else SQLite.
        create=False (job processes) reports a SQLite file that went missing."""
        if self.broker_url:
            from ML.redis_jobs import RedisJobStore

            return RedisJobStore.from_url(self.broker_url, self.redis_key_prefix)
        from ML.jobs import JobStore

        return JobStore(self.jobs_db_path, create=create)

    # The two builders below import their modules when called: those load pandas and
    # scikit-learn, which a job process must not load before it limits their threads.

    def dataset_limits(self) -> DatasetLimits:
        """The size limits every CSV read (training, evaluation) is checked against."""
        from ML.datasets import DatasetLimits

        return DatasetLimits(
            max_rows=self.max_training_rows,
            max_columns=self.max_columns,
            max_classes=self.max_classes,
        )

    def open_model_store(self, *, create: bool = True) -> ModelStore:
        """The model store, keyed by FASTML_SECRET_KEY or the generated key. create=False
        (or create_store false) never makes one: a missing store answers StoreUnavailable."""
        from ML.model_store import open_model_store

        return open_model_store(self, create=create)


def environment_variable(name: str) -> str:
    """The environment variable that sets the field `name`."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"FASTML_{name.upper()}"


def configuration_table() -> str:
    """README's configuration table, in markdown: `python -m ML.config` prints it."""
    lines = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            shown = f"`{default.relative_to(PROJECT_DIR)}`"
        elif default is None:
            shown = "unset"
        else:
            shown = f"`{default}`"
        lines.append(f"| `{environment_variable(name)}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(configuration_table(), end="")
