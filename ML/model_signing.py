"""Signing and checking model artifacts: an HMAC over the metadata, a SHA-256 of the pickle."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sklearn

METADATA_FORMAT = 1
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


# (device, inode, size, mtime, ctime) of a file: any write, replacement or `touch` changes it.
# ctime is in it because no user can set it back: an edit that restores mtime still shows.
FileStamp = tuple[int, int, int, int, int]


def file_stamp(path: Path) -> FileStamp | None:
    """The file's stamp, or None when it does not exist; one stat, cheap enough to poll."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@dataclass(frozen=True)
class Document:
    """A parsed metadata.json and why the version may not be loaded (None when it may)."""

    fields: dict[str, Any]
    problem: str | None


class ArtifactSigner:
    """Signs a version's metadata with the server's secret and says why a version may not load."""

    def __init__(self, secret_key: bytes) -> None:
        self._secret_key = secret_key
        self._digests: dict[tuple[str, FileStamp], str] = {}

    def sign(self, fields: dict[str, Any]) -> str:
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hmac.new(self._secret_key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()

    def signed_document(
        self, name: str, version: int, artifact_path: Path, metadata: dict[str, Any]
    ) -> str:
        fields = {
            "format": METADATA_FORMAT,
            "name": name,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "sklearn_version": sklearn.__version__,
            "artifact_sha256": sha256_of_file(artifact_path),
            "artifact_bytes": artifact_path.stat().st_size,
            "metadata": metadata,
        }
        document = {**fields, "signature": self.sign(fields)}
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    def parse_document(self, raw: bytes, name: str, version: int) -> Document:
        """Parse and authenticate the bytes of a metadata.json stored as `name` `version`."""
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return Document({}, "metadata.json is not valid JSON; delete this version")
        if not isinstance(document, dict):
            return Document({}, "metadata.json is not a JSON object; delete this version")
        fields = {key: value for key, value in document.items() if key != "signature"}
        return Document(fields, self._document_problem(name, version, document, fields))

    def _document_problem(
        self, name: str, version: int, document: dict[str, Any], fields: dict[str, Any]
    ) -> str | None:
        signature = document.get("signature")
        if not isinstance(signature, str) or not hmac.compare_digest(
            signature.encode("ascii", "replace"), self.sign(fields).encode("ascii")
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

    def artifact_problem(self, fields: dict[str, Any], data: bytes | None) -> str | None:
        if data is None:
            return ARTIFACT_MISSING
        if len(data) != fields["artifact_bytes"] or not hmac.compare_digest(
            hashlib.sha256(data).hexdigest(), fields["artifact_sha256"]
        ):
            return ARTIFACT_MISMATCH
        return sklearn_problem(fields)

    def artifact_file_problem(self, fields: dict[str, Any], path: Path) -> str | None:
        try:
            digest, size = self._cached_digest(path)
        except FileNotFoundError:
            return ARTIFACT_MISSING
        if size != fields["artifact_bytes"] or not hmac.compare_digest(
            digest, fields["artifact_sha256"]
        ):
            return ARTIFACT_MISMATCH
        return sklearn_problem(fields)

    def _cached_digest(self, path: Path) -> tuple[str, int]:
        """SHA-256 of a file, remembered while its stamp (see file_stamp) stays the same."""
        stamp = file_stamp(path)
        if stamp is None:
            raise FileNotFoundError(path)
        key = (str(path), stamp)
        digest = self._digests.get(key)
        if digest is None:
            digest = sha256_of_file(path)
            if len(self._digests) >= MAX_CACHED_DIGESTS:
                self._digests.clear()
            self._digests[key] = digest
        return digest, stamp[2]


def sklearn_problem(fields: dict[str, Any]) -> str | None:
    if fields["sklearn_version"] != sklearn.__version__:
        return (
            f"trained with scikit-learn {fields['sklearn_version']} but this server runs "
            f"{sklearn.__version__}; retrain the model"
        )
    return None


def sha256_of_file(path: Path) -> str:
    with open(path, "rb") as artifact:
        return hashlib.file_digest(artifact, "sha256").hexdigest()


def json_round_trip(metadata: dict[str, Any]) -> dict[str, Any]:
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
