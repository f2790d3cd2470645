"""The versioned model store: signed joblib artifacts and their metadata on local disk."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import io
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import joblib
import sklearn

from ML.atomic_files import fsync_dir
from ML.errors import InvalidName, ModelConflict, ModelNotFound, ModelUnusable

logger = logging.getLogger(__name__)

NAME_PATTERN: re.Pattern[str] = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

METADATA_FORMAT = 1
ARTIFACT_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "current"
VERSIONS_DIR = "versions"
# Hidden, so list_models skips it: per-model lock files and the highest version of deleted models.
STORE_STATE_DIR = ".store"
MAX_RESERVE_ATTEMPTS = 100
MAX_CACHED_DIGESTS = 4096

SIGNATURE_MISMATCH = (
    "signature does not match: the artifact was changed or signed with another FASTML_SECRET_KEY"
)
ARTIFACT_MISMATCH = (
    "artifact does not match its signed SHA-256: the file was changed or truncated; "
    "delete this version and train again"
)
ARTIFACT_MISSING = "artifact is missing; delete this version and train again"
_SIGNED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "name": str,
    "version": int,
    "created_at": str,
    "sklearn_version": str,
    "artifact_sha256": str,
    "artifact_bytes": int,
    "metadata": dict,
}


def check_name(name: str) -> str:
    """Return `name` if it is a valid model name, so that it can never act as a path."""
    # fullmatch: `$` alone would also accept a trailing newline.
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidName(
            f"model name {name!r} is invalid; use 1-64 characters a-z 0-9 _ - "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    created_at: str
    metadata: dict[str, Any]
    is_current: bool
    is_usable: bool
    unusable_reason: str | None
    size_bytes: int


@dataclass(frozen=True)
class ModelInfo:
    name: str
    current_version: int | None
    versions: list[VersionInfo]


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    pipeline: Any
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Document:
    """A parsed metadata.json and why the version may not be loaded (None when it may)."""

    fields: dict[str, Any]
    problem: str | None


class ModelStore:
    """Models as `<root>/<name>/versions/<n>/{model.joblib,metadata.json}` plus `<name>/current`.

    Safe to share between threads, processes and hosts on one filesystem: every file is
    replaced atomically, version numbers are reserved with mkdir, and changes to which
    versions exist or which one is current take a per-model file lock.
    """

    def __init__(self, root_dir: Path, secret_key: bytes) -> None:
        if not secret_key:
            raise ValueError("secret_key is empty; pass the key from load_or_create_secret")
        self.root_dir = root_dir
        self._secret_key = secret_key
        self._digests: dict[tuple[str, int, int, int, int], str] = {}
        (root_dir / STORE_STATE_DIR).mkdir(parents=True, exist_ok=True)

    # -- writing -----------------------------------------------------------------------------

    def save_version(
        self, name: str, pipeline: Any, metadata: dict[str, Any], *, promote: bool = True
    ) -> int:
        """Store a fitted pipeline as the next version of `name`; returns the version number."""
        check_name(name)
        user_metadata = _json_round_trip(metadata)
        version = self._reserve_version(name)
        version_dir = self._version_dir(name, version)
        is_published = False
        try:
            artifact_path = version_dir / ARTIFACT_FILE
            _atomic_write(artifact_path, lambda out: joblib.dump(pipeline, out, compress=0))
            text = self._signed_document(name, version, artifact_path, user_metadata)
            with self._model_lock(name):
                if not version_dir.is_dir():
                    raise ModelConflict(
                        f"model '{name}' was deleted while version {version} was being saved; "
                        "train it again"
                    )
                # The metadata file is written last: its presence is what publishes the version.
                _atomic_write(version_dir / METADATA_FILE, lambda out: out.write(text.encode()))
                is_published = True
                if promote:
                    self._write_current(name, version)
        finally:
            if not is_published:
                shutil.rmtree(version_dir, ignore_errors=True)
        logger.info("saved model '%s' version %d (promoted: %s)", name, version, promote)
        return version

    def set_current(self, name: str, version: int) -> VersionInfo:
        """Make `version` the one that predictions use (promote or roll back)."""
        check_name(name)
        with self._model_lock(name):
            info = self.get_version(name, version)
            if not info.is_usable:
                raise ModelUnusable(
                    f"model '{name}' version {version} cannot be made current: "
                    f"{info.unusable_reason}"
                )
            self._write_current(name, version)
        logger.info("model '%s' current version is now %d", name, version)
        return replace(info, is_current=True)

    def delete_model(self, name: str) -> None:
        """Remove a model with all its versions."""
        check_name(name)
        with self._model_lock(name):
            if not self._model_dir(name).is_dir():
                raise ModelNotFound(_model_not_found(name))
            self._delete_model_locked(name)

    def delete_version(self, name: str, version: int) -> None:
        """Remove one version; deleting the only version deletes the model."""
        check_name(name)
        with self._model_lock(name):
            info = self.get_model(name)
            existing = [v.version for v in info.versions]
            if version not in existing:
                raise ModelNotFound(_version_not_found(name, version, existing))
            if existing == [version]:
                self._delete_model_locked(name)
                return
            if info.current_version == version:
                others = ", ".join(str(v) for v in existing if v != version)
                raise ModelConflict(
                    f"version {version} is the current version of model '{name}'; "
                    f"promote another version first (other versions: {others})"
                )
            version_dir = self._version_dir(name, version)
            # Removing metadata.json unpublishes the version in one step. The emptied
            # directory stays behind so that its number is never handed out again.
            (version_dir / METADATA_FILE).unlink()
            fsync_dir(version_dir)
            with contextlib.suppress(FileNotFoundError):
                (version_dir / ARTIFACT_FILE).unlink()
        logger.info("deleted model '%s' version %d", name, version)

    # -- reading -----------------------------------------------------------------------------

    def list_models(self) -> list[ModelInfo]:
        models = []
        for entry in sorted(self.root_dir.iterdir()):
            if not NAME_PATTERN.fullmatch(entry.name) or not entry.is_dir():
                continue
            with contextlib.suppress(ModelNotFound):
                models.append(self.get_model(entry.name))
        return models

    def get_model(self, name: str) -> ModelInfo:
        check_name(name)
        versions = self._published_versions(name)
        if not versions:
            raise ModelNotFound(_model_not_found(name))
        current = self._read_current(name)
        if current not in versions:
            current = None
        infos = []
        for version in versions:
            # A version deleted while we list it is simply left out.
            with contextlib.suppress(ModelNotFound):
                infos.append(self._version_info(name, version, is_current=version == current))
        return ModelInfo(name=name, current_version=current, versions=infos)

    def get_version(self, name: str, version: int) -> VersionInfo:
        check_name(name)
        if not self._is_published(name, version):
            versions = self._published_versions(name)
            if not versions:
                raise ModelNotFound(_model_not_found(name))
            raise ModelNotFound(_version_not_found(name, version, versions))
        return self._version_info(name, version, is_current=self._read_current(name) == version)

    def current_version(self, name: str) -> int | None:
        """The current version, or None when no version is current; ModelNotFound if no model.

        Cheap enough to poll: one small file read and one stat.
        """
        check_name(name)
        current = self._read_current(name)
        if current is not None and self._is_published(name, current):
            return current
        if not self._published_versions(name):
            raise ModelNotFound(_model_not_found(name))
        return None

    def load_version(self, name: str, version: int) -> LoadedModel:
        """Unpickle a version, only after its signature, hash and scikit-learn version check out."""
        check_name(name)
        document = self._read_document(name, version)
        data: bytes | None = None
        problem = document.problem
        if problem is None:
            with contextlib.suppress(FileNotFoundError):
                data = (self._version_dir(name, version) / ARTIFACT_FILE).read_bytes()
            problem = self._artifact_problem(document.fields, data)
        if problem is not None or data is None:
            raise ModelUnusable(f"model '{name}' version {version} is unusable: {problem}")
        # The bytes just verified are the bytes unpickled: no window to swap the file.
        try:
            pipeline = joblib.load(io.BytesIO(data))
        except Exception as exc:
            raise ModelUnusable(
                f"model '{name}' version {version} could not be loaded "
                f"({type(exc).__name__}: {exc}); retrain the model"
            ) from exc
        return LoadedModel(name, version, pipeline, document.fields["metadata"])

    def load_current(self, name: str) -> LoadedModel:
        version = self.current_version(name)
        if version is None:
            versions = ", ".join(str(v) for v in self._published_versions(name))
            raise ModelNotFound(
                f"model '{name}' has no current version; promote one of versions {versions}"
            )
        return self.load_version(name, version)

    # -- layout ------------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        return self.root_dir / check_name(name)

    def _version_dir(self, name: str, version: int) -> Path:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ModelNotFound(
                f"model '{name}' has no version {version!r}; versions are 1, 2, ..."
            )
        return self._model_dir(name) / VERSIONS_DIR / str(version)

    def _allocated_versions(self, name: str) -> list[int]:
        """Every version number in use, including ones being written or deleted."""
        try:
            entries = os.listdir(self._model_dir(name) / VERSIONS_DIR)
        except FileNotFoundError:
            return []
        return sorted(int(entry) for entry in entries if _is_version_text(entry))

    def _published_versions(self, name: str) -> list[int]:
        return [v for v in self._allocated_versions(name) if self._is_published(name, v)]

    def _is_published(self, name: str, version: int) -> bool:
        try:
            return (self._version_dir(name, version) / METADATA_FILE).is_file()
        except ModelNotFound:
            return False

    def _read_current(self, name: str) -> int | None:
        try:
            text = (self._model_dir(name) / CURRENT_FILE).read_text(encoding="ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return int(text) if _is_version_text(text) else None

    def _write_current(self, name: str, version: int) -> None:
        _atomic_write(
            self._model_dir(name) / CURRENT_FILE, lambda out: out.write(b"%d\n" % version)
        )

    # -- version numbers and deletion ----------------------------------------------------------

    def _reserve_version(self, name: str) -> int:
        """Claim the next number with mkdir, which exactly one process wins."""
        versions_dir = self._model_dir(name) / VERSIONS_DIR
        for _ in range(MAX_RESERVE_ATTEMPTS):
            versions_dir.mkdir(parents=True, exist_ok=True)
            allocated = self._allocated_versions(name)
            candidate = max([*allocated, self._retired_high_water(name)], default=0) + 1
            try:
                (versions_dir / str(candidate)).mkdir()
            except (FileExistsError, FileNotFoundError):
                continue
            return candidate
        raise ModelConflict(
            f"could not reserve a new version of model '{name}' after {MAX_RESERVE_ATTEMPTS} "
            "attempts; too many saves at once, try again"
        )

    def _retired_high_water(self, name: str) -> int:
        try:
            text = self._high_water_path(name).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        return int(text) if _is_version_text(text) else 0

    def _high_water_path(self, name: str) -> Path:
        return self.root_dir / STORE_STATE_DIR / f"{check_name(name)}.last_version"

    def _delete_model_locked(self, name: str) -> None:
        # Remember the highest number so a model re-created under this name never reuses one:
        # workers cache loaded models by (name, version).
        high_water = max([*self._allocated_versions(name), self._retired_high_water(name)])
        _atomic_write(self._high_water_path(name), lambda out: out.write(b"%d\n" % high_water))
        # Renaming first makes the model vanish at once; rmtree may then take its time.
        doomed = self.root_dir / f".deleted-{name}-{uuid.uuid4().hex}"
        os.rename(self._model_dir(name), doomed)
        fsync_dir(self.root_dir)
        shutil.rmtree(doomed, ignore_errors=True)
        logger.info("deleted model '%s'", name)

    @contextlib.contextmanager
    def _model_lock(self, name: str) -> Iterator[None]:
        lock_path = self.root_dir / STORE_STATE_DIR / f"{check_name(name)}.lock"
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield

    # -- verification --------------------------------------------------------------------------

    def _sign(self, fields: dict[str, Any]) -> str:
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hmac.new(self._secret_key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()

    def _signed_document(
        self, name: str, version: int, artifact_path: Path, metadata: dict[str, Any]
    ) -> str:
        fields = {
            "format": METADATA_FORMAT,
            "name": name,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "sklearn_version": sklearn.__version__,
            "artifact_sha256": _sha256_of_file(artifact_path),
            "artifact_bytes": artifact_path.stat().st_size,
            "metadata": metadata,
        }
        document = {**fields, "signature": self._sign(fields)}
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    def _read_document(self, name: str, version: int) -> _Document:
        """Parse and authenticate metadata.json; ModelNotFound if the version is not published."""
        path = self._version_dir(name, version) / METADATA_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(
                _version_not_found(name, version, self._published_versions(name))
            ) from None
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _Document({}, "metadata.json is not valid JSON; delete this version")
        if not isinstance(document, dict):
            return _Document({}, "metadata.json is not a JSON object; delete this version")
        fields = {key: value for key, value in document.items() if key != "signature"}
        return _Document(fields, self._document_problem(name, version, document, fields))

    def _document_problem(
        self, name: str, version: int, document: dict[str, Any], fields: dict[str, Any]
    ) -> str | None:
        signature = document.get("signature")
        if not isinstance(signature, str) or not hmac.compare_digest(
            signature.encode("ascii", "replace"), self._sign(fields).encode("ascii")
        ):
            return SIGNATURE_MISMATCH
        for key, expected_type in _SIGNED_FIELDS.items():
            if not isinstance(fields.get(key), expected_type):
                return f"metadata.json field '{key}' is missing or has the wrong type"
        if fields["format"] != METADATA_FORMAT:
            return f"metadata format {fields['format']} is not supported by this server"
        if fields["name"] != name or fields["version"] != version:
            # A signed version copied to another place is not that other version.
            return (
                f"metadata belongs to model '{fields['name']}' version {fields['version']} "
                f"but is stored as model '{name}' version {version}"
            )
        return None

    def _artifact_problem(self, fields: dict[str, Any], data: bytes | None) -> str | None:
        if data is None:
            return ARTIFACT_MISSING
        if len(data) != fields["artifact_bytes"] or not hmac.compare_digest(
            hashlib.sha256(data).hexdigest(), fields["artifact_sha256"]
        ):
            return ARTIFACT_MISMATCH
        return _sklearn_problem(fields)

    def _version_info(self, name: str, version: int, *, is_current: bool) -> VersionInfo:
        """Describe a version and whether it would load, without unpickling anything."""
        document = self._read_document(name, version)
        artifact_path = self._version_dir(name, version) / ARTIFACT_FILE
        try:
            size = artifact_path.stat().st_size
        except FileNotFoundError:
            size = 0
        problem = document.problem or self._artifact_file_problem(document.fields, artifact_path)
        metadata = document.fields.get("metadata")
        created_at = document.fields.get("created_at")
        return VersionInfo(
            name=name,
            version=version,
            created_at=created_at if isinstance(created_at, str) else "",
            metadata=metadata if isinstance(metadata, dict) else {},
            is_current=is_current,
            is_usable=problem is None,
            unusable_reason=problem,
            size_bytes=size,
        )

    def _artifact_file_problem(self, fields: dict[str, Any], path: Path) -> str | None:
        try:
            digest, size = self._cached_digest(path)
        except FileNotFoundError:
            return ARTIFACT_MISSING
        if size != fields["artifact_bytes"] or not hmac.compare_digest(
            digest, fields["artifact_sha256"]
        ):
            return ARTIFACT_MISMATCH
        return _sklearn_problem(fields)

    def _cached_digest(self, path: Path) -> tuple[str, int]:
        """SHA-256 of a file, remembered while its inode, mtime and size stay the same."""
        status = path.stat()
        key = (str(path), status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)
        digest = self._digests.get(key)
        if digest is None:
            digest = _sha256_of_file(path)
            if len(self._digests) >= MAX_CACHED_DIGESTS:
                self._digests.clear()
            self._digests[key] = digest
        return digest, status.st_size


def _sklearn_problem(fields: dict[str, Any]) -> str | None:
    if fields["sklearn_version"] != sklearn.__version__:
        return (
            f"trained with scikit-learn {fields['sklearn_version']} but this server runs "
            f"{sklearn.__version__}; retrain the model"
        )
    return None


def _model_not_found(name: str) -> str:
    return f"model '{name}' not found; check the name or train a model with that name first"


def _version_not_found(name: str, version: object, existing: list[int]) -> str:
    if not existing:
        return _model_not_found(name)
    listed = ", ".join(str(v) for v in existing)
    return f"model '{name}' has no version {version}; it has versions {listed}"


def _is_version_text(text: str) -> bool:
    # Canonical decimal only ("7", not "07" or "+7"), so each number has exactly one directory.
    return text.isascii() and text.isdigit() and not text.startswith("0")


def _json_round_trip(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata as it will read back from JSON, so the signed form is the stored form."""
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    try:
        text = json.dumps(metadata, default=_numpy_to_python)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serializable: {exc}") from exc
    result: dict[str, Any] = json.loads(text)
    return result


def _numpy_to_python(value: Any) -> Any:
    # numpy scalars and arrays (metrics, confusion matrices) all offer tolist().
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temp file in the same directory, fsync, then rename over `path`."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_dir(path.parent)


def _sha256_of_file(path: Path) -> str:
    with open(path, "rb") as artifact:
        return hashlib.file_digest(artifact, "sha256").hexdigest()
