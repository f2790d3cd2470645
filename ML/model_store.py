"""The versioned model store: signed joblib artifacts and their metadata on local disk."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib

from ML.atomic_files import atomic_write, fsync_dir, is_out_of_space
from ML.errors import (
    InvalidName,
    ModelConflict,
    ModelNotFound,
    ModelUnusable,
    StorageFull,
    StoreUnavailable,
)

# The reasons a version is unusable are re-exported: callers read them from the store.
from ML.model_signing import ARTIFACT_MISMATCH as ARTIFACT_MISMATCH
from ML.model_signing import ARTIFACT_MISSING as ARTIFACT_MISSING
from ML.model_signing import SIGNATURE_MISMATCH as SIGNATURE_MISMATCH
from ML.model_signing import ArtifactSigner, Document, FileStamp, file_stamp, json_round_trip
from ML.secret_key import load_or_create_secret, load_secret

if TYPE_CHECKING:
    from ML.config import Settings

logger = logging.getLogger(__name__)

NAME_PATTERN: re.Pattern[str] = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

ARTIFACT_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "current"
# The signed metadata of a version written but not committed yet; renamed to METADATA_FILE.
STAGED_FILE = "metadata.staged.json"
VERSIONS_DIR = "versions"
# Hidden, so list_models skips it: per-model lock files and the highest version of deleted models.
STORE_STATE_DIR = ".store"
MAX_RESERVE_ATTEMPTS = 100


def open_model_store(settings: Settings, *, create: bool) -> ModelStore:
    """The store at `settings.model_dir`, signed with the server's key.

    create=True only when a server starts (and settings.create_store allows it). Otherwise
    nothing is ever created: a store, or the key file beside it, that is missing (moved
    away at run time, or when a worker starts) answers StoreUnavailable, and the same
    object works again once they are back.
    """
    configured = settings.secret_key.get_secret_value() if settings.secret_key else None
    if create and settings.create_store:
        key = load_or_create_secret(configured, settings.resolved_state_dir)
        return ModelStore(settings.model_dir, key, create=True)
    return ModelStore(
        settings.model_dir,
        functools.partial(load_secret, configured, settings.resolved_state_dir),
        create=False,
    )


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


# The stamps of a version's artifact and metadata.json (None for a missing file): when
# neither changed, the bytes verified when the version was loaded are still the ones on disk.
VersionStamp = tuple[FileStamp | None, FileStamp | None]


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    pipeline: Any
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StagedVersion:
    """A version whose files are written but not yet published (see ModelStore.stage_version)."""

    name: str
    version: int
    promote: bool
    metadata: dict[str, Any]


class ModelStore:
    """Models as `<root>/<name>/versions/<n>/{model.joblib,metadata.json}` plus `<name>/current`.

    Safe to share between threads, processes and hosts on one filesystem: every file is
    replaced atomically, version numbers are reserved with mkdir, and changes to which
    versions exist or which one is current take a per-model file lock.
    """

    def __init__(
        self, root_dir: Path, secret_key: bytes | Callable[[], bytes], *, create: bool = True
    ) -> None:
        """Open the store at `root_dir`; `create=False` never makes one: a folder that went
        away must not come back empty over the real one. `secret_key` may be a function,
        called at first use (it raises StoreUnavailable while the key cannot be read)."""
        if not secret_key:
            raise ValueError("secret_key is empty; pass the key from load_or_create_secret")
        self.root_dir = root_dir
        self._load_key = secret_key if callable(secret_key) else lambda: secret_key
        self._loaded_signer = None if callable(secret_key) else ArtifactSigner(secret_key)
        if create:
            (root_dir / STORE_STATE_DIR).mkdir(parents=True, exist_ok=True)

    @property
    def _signer(self) -> ArtifactSigner:
        signer = self._loaded_signer
        if signer is None:
            self.require_available()
            # Two threads may both read the key here: the same key, so either signer will do.
            signer = self._loaded_signer = ArtifactSigner(self._load_key())
        return signer

    # -- writing -----------------------------------------------------------------------------

    def save_version(
        self, name: str, pipeline: Any, metadata: dict[str, Any], *, promote: bool = True
    ) -> int:
        """Store a fitted pipeline as the next version of `name`; returns the version number."""
        staged = self.stage_version(name, pipeline, metadata, promote=promote)
        self.commit_staged(staged, lambda: True)
        return staged.version

    def stage_version(
        self, name: str, pipeline: Any, metadata: dict[str, Any], *, promote: bool = True
    ) -> StagedVersion:
        """Write every file of a new version without publishing it (see commit_staged).

        All the bytes are written here, so a full disk fails now, before anything is
        committed: publishing later is renames only, which need no free space.
        """
        check_name(name)
        self.require_available()
        user_metadata = json_round_trip(metadata)
        with self._reporting_full_disk():
            version = self._reserve_version(name)
            # The lock file must exist before commit_staged, which must not need space.
            self._lock_path(name).touch()
        version_dir = self._version_dir(name, version)
        staged = StagedVersion(name, version, promote, user_metadata)
        is_staged = False
        try:
            with self._reporting_full_disk():
                artifact_path = version_dir / ARTIFACT_FILE
                atomic_write(artifact_path, lambda out: joblib.dump(pipeline, out, compress=0))
                text = self._signer.signed_document(name, version, artifact_path, user_metadata)
                if promote:
                    current_path = self._staged_current_path(name, version)
                    atomic_write(current_path, lambda out: out.write(b"%d\n" % version))
                atomic_write(version_dir / STAGED_FILE, lambda out: out.write(text.encode()))
            is_staged = True
        finally:
            if not is_staged:
                self._remove_staged_files(staged)
        return staged

    def commit_staged(
        self, staged: StagedVersion, is_committed: Callable[[], bool], *, is_recovery: bool = False
    ) -> bool:
        """Publish a staged version if `is_committed()` says so, else discard it; True if published.

        `is_committed` runs under the model's lock, between the last check that the model
        still exists and the renames that publish, so whatever it records (a job marked
        succeeded) and the store cannot disagree except by a crash between the two, which
        recovery rolls forward. On recovery a staged promotion never moves `current` back.
        """
        version_dir = self._version_dir(staged.name, staged.version)
        with self._model_lock(staged.name):
            if not version_dir.is_dir() and not is_recovery:
                raise ModelConflict(
                    f"model '{staged.name}' was deleted while version {staged.version} was "
                    "being saved; train it again"
                )
            if not (version_dir / STAGED_FILE).is_file():
                return False  # published or discarded meanwhile by a recovering process
            if not is_committed():
                self._remove_staged_files(staged)
                return False
            # The metadata file appears last: its presence is what publishes the version.
            os.replace(version_dir / STAGED_FILE, version_dir / METADATA_FILE)
            fsync_dir(version_dir)
            staged_current = self._staged_current_path(staged.name, staged.version)
            if staged.promote and staged_current.exists():
                current = self._read_current(staged.name)
                if is_recovery and current is not None and current > staged.version:
                    staged_current.unlink()
                else:
                    os.replace(staged_current, self._model_dir(staged.name) / CURRENT_FILE)
                fsync_dir(self._model_dir(staged.name))
        logger.info(
            "saved model '%s' version %d (promoted: %s)",
            staged.name,
            staged.version,
            staged.promote,
        )
        return True

    def discard_staged(self, staged: StagedVersion) -> None:
        with self._model_lock(staged.name):
            self._remove_staged_files(staged)

    def staged_versions(self) -> list[StagedVersion]:
        """Versions staged but neither published nor discarded: a process stopped in between."""
        self.require_available()
        staged = []
        for model in self._model_names():
            for version in self._allocated_versions(model):
                path = self._version_dir(model, version) / STAGED_FILE
                try:
                    fields = json.loads(path.read_bytes())
                except (FileNotFoundError, ValueError, UnicodeDecodeError):
                    continue
                metadata = fields.get("metadata") if isinstance(fields, dict) else None
                promote = self._staged_current_path(model, version).exists()
                if isinstance(metadata, dict):
                    staged.append(StagedVersion(model, version, promote, metadata))
        return staged

    def is_available(self) -> bool:
        """False when the store folder is gone or unreadable (moved away, unmounted)."""
        return _store_exists(self.root_dir)

    def set_current(self, name: str, version: int) -> VersionInfo:
        """Make `version` the one that predictions use (promote or roll back)."""
        check_name(name)
        self.require_available()
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
        self.require_available()
        with self._model_lock(name):
            if not self._model_dir(name).is_dir():
                raise ModelNotFound(_model_not_found(name))
            self._delete_model_locked(name)

    def delete_version(self, name: str, version: int) -> None:
        """Remove one version; deleting the only version deletes the model."""
        check_name(name)
        self.require_available()
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
        self.require_available()
        models = []
        for name in self._model_names():
            with contextlib.suppress(ModelNotFound):
                models.append(self.get_model(name))
        return models

    def get_model(self, name: str) -> ModelInfo:
        check_name(name)
        self.require_available()
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
        self.require_available()
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
        self.require_available()
        self._wait_for_commit(name)
        current = self._read_current(name)
        if current is not None and self._is_published(name, current):
            return current
        if not self._published_versions(name):
            raise ModelNotFound(_model_not_found(name))
        return None

    def _wait_for_commit(self, name: str) -> None:
        """Wait until a commit in progress (`commit_staged`, under the model's lock) has
        published its version: a job's record turns succeeded just before its version and
        `current` appear, and a client that saw it succeed must find them."""
        if not self._model_dir(name).is_dir():
            return  # no lock file for names that are no model
        with contextlib.suppress(FileNotFoundError), self._model_lock(name):
            pass

    def load_version(self, name: str, version: int) -> LoadedModel:
        """Unpickle a version, only after its signature, hash and scikit-learn version check out."""
        check_name(name)
        self.require_available()
        document = self._read_document(name, version)
        data: bytes | None = None
        problem = document.problem
        if problem is None:
            with contextlib.suppress(FileNotFoundError):
                data = (self._version_dir(name, version) / ARTIFACT_FILE).read_bytes()
            problem = self._signer.artifact_problem(document.fields, data)
        if problem is not None or data is None:
            raise self._unusable(name, version, f"is unusable: {problem}")
        # The bytes just verified are the bytes unpickled: no window to swap the file.
        try:
            pipeline = joblib.load(io.BytesIO(data))
        except Exception as exc:
            raise self._unusable(
                name,
                version,
                f"could not be loaded ({type(exc).__name__}: {exc}); retrain the model",
            ) from exc
        return LoadedModel(name, version, pipeline, document.fields["metadata"])

    def load_current(self, name: str) -> LoadedModel:
        return self.load_version(name, self.require_current_version(name))

    def require_current_version(self, name: str) -> int:
        """The current version; ModelNotFound when there is no model or no current version."""
        version = self.current_version(name)
        if version is None:
            versions = ", ".join(str(v) for v in self._published_versions(name))
            raise ModelNotFound(
                f"model '{name}' has no current version; promote one of versions {versions}"
            )
        return version

    def version_stamp(self, name: str, version: int) -> VersionStamp:
        """Two stats, cheap enough to poll: a change means the files must be verified again.

        Taken before a version is read, so a change during the read shows at the next look.
        """
        version_dir = self._version_dir(name, version)
        return file_stamp(version_dir / ARTIFACT_FILE), file_stamp(version_dir / METADATA_FILE)

    def unusable_current_versions(self) -> dict[str, ModelUnusable]:
        """Every model whose current version would not load, and why (nothing is unpickled).

        The artifacts' digests are remembered while their stamps stay the same, so asking
        again costs a few stats and small reads per model.
        """
        self.require_available()
        unusable = {}
        for name in self._model_names():
            current = self._read_current(name)
            if current is None or not self._is_published(name, current):
                continue
            with contextlib.suppress(ModelNotFound):  # deleted while we look
                problem = self._version_problem(name, current)
                if problem is not None:
                    unusable[name] = self._unusable(name, current, f"is unusable: {problem}")
        return unusable

    # -- layout ------------------------------------------------------------------------------

    def require_available(self) -> None:
        if not self.is_available():
            raise StoreUnavailable(_unavailable_message(self.root_dir))

    @contextlib.contextmanager
    def _reporting_full_disk(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if is_out_of_space(exc):
                raise StorageFull(
                    f"no space left in the model store at {self.root_dir}; "
                    "free space there and train again"
                ) from exc
            raise

    def _lock_path(self, name: str) -> Path:
        return self.root_dir / STORE_STATE_DIR / f"{check_name(name)}.lock"

    def _model_names(self) -> list[str]:
        names = []
        for entry in sorted(os.listdir(self.root_dir)):
            if NAME_PATTERN.fullmatch(entry) and (self.root_dir / entry).is_dir():
                names.append(entry)
        return names

    def _staged_current_path(self, name: str, version: int) -> Path:
        return self._model_dir(name) / f".{CURRENT_FILE}.{version}.staged"

    def _remove_staged_files(self, staged: StagedVersion) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._staged_current_path(staged.name, staged.version).unlink()
        shutil.rmtree(self._version_dir(staged.name, staged.version), ignore_errors=True)

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
        atomic_write(self._model_dir(name) / CURRENT_FILE, lambda out: out.write(b"%d\n" % version))

    # -- version numbers and deletion ----------------------------------------------------------

    def _reserve_version(self, name: str) -> int:
        """Claim the next number with mkdir, which exactly one process wins."""
        versions_dir = self._model_dir(name) / VERSIONS_DIR
        for _ in range(MAX_RESERVE_ATTEMPTS):
            # Not parents=True: a store folder that went away is not re-created empty.
            with contextlib.suppress(FileExistsError):
                self._model_dir(name).mkdir()
            versions_dir.mkdir(exist_ok=True)
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
        atomic_write(self._high_water_path(name), lambda out: out.write(b"%d\n" % high_water))
        # Renaming first makes the model vanish at once; rmtree may then take its time.
        doomed = self.root_dir / f".deleted-{name}-{uuid.uuid4().hex}"
        os.rename(self._model_dir(name), doomed)
        fsync_dir(self.root_dir)
        shutil.rmtree(doomed, ignore_errors=True)
        logger.info("deleted model '%s'", name)

    @contextlib.contextmanager
    def _model_lock(self, name: str) -> Iterator[None]:
        try:
            lock_file = open(self._lock_path(name), "a")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            self.require_available()
            raise
        with lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield

    def _read_document(self, name: str, version: int) -> Document:
        """Parse and authenticate metadata.json; ModelNotFound if the version is not published."""
        path = self._version_dir(name, version) / METADATA_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(
                _version_not_found(name, version, self._published_versions(name))
            ) from None
        return self._signer.parse_document(raw, name, version)

    def _checked_document(self, name: str, version: int) -> tuple[Document, str | None]:
        """The version's metadata and why it would not load (None when it would), without
        unpickling anything; the artifact is hashed again only when its stamp changed."""
        document = self._read_document(name, version)
        artifact_path = self._version_dir(name, version) / ARTIFACT_FILE
        problem = document.problem or self._signer.artifact_file_problem(
            document.fields, artifact_path
        )
        return document, problem

    def _version_problem(self, name: str, version: int) -> str | None:
        return self._checked_document(name, version)[1]

    def _unusable(self, name: str, version: int, what: str) -> ModelUnusable:
        """The error for a version that must not load, naming the version to roll back to."""
        rollback = None
        for other in reversed(self._published_versions(name)):
            with contextlib.suppress(ModelNotFound):
                if other != version and self._version_problem(name, other) is None:
                    rollback = other
                    break
        if rollback is not None:
            advice = f"version {rollback} is the newest usable one: make it current to roll back"
        else:
            advice = "no other version is usable: train the model again"
        return ModelUnusable(
            f"model '{name}' version {version} {what}; {advice}",
            model_name=name,
            rollback_version=rollback,
        )

    def _version_info(self, name: str, version: int, *, is_current: bool) -> VersionInfo:
        """Describe a version and whether it would load, without unpickling anything."""
        document, problem = self._checked_document(name, version)
        try:
            size = (self._version_dir(name, version) / ARTIFACT_FILE).stat().st_size
        except FileNotFoundError:
            size = 0
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


def _store_exists(root_dir: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(root_dir / STORE_STATE_DIR).st_mode)
    except OSError:
        return False


def _unavailable_message(root_dir: Path) -> str:
    return (
        f"the model store at {root_dir} is missing or unreadable (moved, deleted or "
        "unmounted?); put it back: the models already loaded keep serving meanwhile"
    )


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
