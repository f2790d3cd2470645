"""Typed settings for the whole server, read from FASTML_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ML.batching import BatchSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Built once by the app factory (or a job process) and passed down; never a module global."""

    model_config = SettingsConfigDict(env_prefix="FASTML_", extra="ignore")

    model_dir: Path = PROJECT_DIR / "ML" / "saved_models"
    # Job records, uploads waiting for training, the generated secret and admin password.
    state_dir: Path | None = None
    log_path: Path = PROJECT_DIR / "ML_server.log"
    log_max_bytes: int = Field(
        default=50 * 1024 * 1024, ge=0, description="rotate the log past this size; 0: never"
    )
    log_backup_count: int = Field(
        default=5, ge=1, description="rotated logs kept: ML_server.log.1 (newest) to .N"
    )
    secret_key: SecretStr | None = None

    # Users: the fast-ml pair (admin role) and/or a users file of hashed passwords.
    service_user: str | None = Field(
        default=None, validation_alias=AliasChoices("SERVICE_USER", "FASTML_SERVICE_USER")
    )
    service_pass: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SERVICE_PASS", "FASTML_SERVICE_PASS")
    )
    users_file: Path | None = None
    login_max_failures: int = Field(
        default=10, ge=1, description="failed logins per client address and user per window"
    )
    login_window_seconds: float = Field(default=60.0, gt=0)
    login_account_max_failures: int = Field(
        default=100,
        ge=1,
        description="failed logins per account per account window (OWASP ASVS: 100 an hour), "
        "shared by addresses it has not logged in from recently; also a cap per address",
    )
    login_account_window_seconds: float = Field(default=3600.0, gt=0)
    login_known_address_days: float = Field(
        default=30.0,
        gt=0,
        description="an address stays exempt from the account budget this "
        "long after its last successful login",
    )

    # Limits, checked before parsing.
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    max_json_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    max_training_rows: int = Field(default=2_000_000, ge=2)
    max_columns: int = Field(default=1_000, ge=2)
    max_classes: int = Field(default=1_000, ge=2)
    max_predict_rows: int = Field(default=10_000, ge=1)
    csv_chunk_rows: int = Field(default=20_000, ge=1)

    # Jobs and models.
    training_processes: int = Field(default=1, ge=1)
    recent_jobs_limit: int = Field(default=100, ge=1)
    model_poll_seconds: float = Field(default=0.5, gt=0)

    # Micro-batching of concurrent predictions for the same model (per worker).
    batch_max_rows: int = Field(default=512, ge=1)
    batch_max_wait_ms: float = Field(default=0.0, ge=0)
    batch_in_thread: bool = False
    # Answer JSON predictions from a plain ASGI endpoint (same code, less overhead).
    lean_predict: bool = True
    broker_url: str | None = None

    @property
    def batch_settings(self) -> BatchSettings:
        return BatchSettings(
            max_rows=self.batch_max_rows,
            max_wait_seconds=self.batch_max_wait_ms / 1000,
            run_in_thread=self.batch_in_thread,
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
