"""What FastAPI's and Starlette's body-parsing failures mean to a client, and how to fix them.

Both answer a body they cannot parse with a bare 400 ("There was an error parsing the body",
"Invalid multipart data."). The exception that caused it is chained to theirs; this reads
it and says what was wrong, with 413 for a form over one of its limits.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from rest_api.uploads import UPLOAD_FORM_LIMITS

FASTAPI_PARSE_ERROR = "There was an error parsing the body"
SEND_A_FORM = "send multipart/form-data as an HTTP client builds it (curl -F csv_file=@data.csv)"


def explain_body_error(exc: HTTPException) -> tuple[int, str] | None:
    """Status and message for a body-parsing 400 of FastAPI or Starlette; None for others."""
    if exc.status_code != 400:
        return None
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, MultiPartException):
        return _explain_form_error(cause)
    if exc.detail == FASTAPI_PARSE_ERROR:
        if isinstance(cause, UnicodeDecodeError):
            return 400, (
                f"the body is not UTF-8 text ({cause.reason} at byte {cause.start}); "
                "send JSON encoded as UTF-8"
            )
        reason = f" ({cause})" if cause is not None else ""
        return 400, (
            f"the body could not be parsed{reason}; send JSON with Content-Type: "
            "application/json, or for an upload route multipart/form-data"
        )
    return None


def _explain_form_error(error: MultiPartException) -> tuple[int, str]:
    message = error.message
    if "exceeded maximum size" in message:
        limit_kib = UPLOAD_FORM_LIMITS["max_part_size"] // 1024
        return 413, (
            f"a form field is larger than {limit_kib} KiB; only the csv_file part may be large: "
            "put data in the CSV file"
        )
    if message.startswith("Too many files"):
        return 413, (
            f"more than {UPLOAD_FORM_LIMITS['max_files']} file in the form; send one CSV "
            "file as csv_file"
        )
    if message.startswith("Too many fields"):
        return 413, (
            f"more than {UPLOAD_FORM_LIMITS['max_fields']} form fields; send only the fields "
            "/docs lists for this route"
        )
    if message.startswith("Missing boundary"):
        return 400, f"the multipart Content-Type names no boundary; {SEND_A_FORM}"
    if "Content-Disposition" in message:
        return (
            400,
            "a form part has no name; every part needs "
            f'Content-Disposition: form-data; name="..."; {SEND_A_FORM}',
        )
    detail = error.__cause__ or message.rstrip(".")
    return 400, f"the multipart body is malformed ({detail}); {SEND_A_FORM}"
