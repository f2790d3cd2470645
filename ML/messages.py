"""Wording shared by the input checks: lists of names, values described, the detail cap."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

# At most this many field-level problems are returned in an error's details.
MAX_DETAILS = 100
MISSING_FIELD = "is missing"
UNEXPECTED_FIELD = "is not a feature of this model"
# A message names at most this many rows (and says how many more there are).
ROWS_IN_MESSAGE = 5
_NAMES_IN_MESSAGE = 30


def listed_names(names: Iterable[str]) -> str:
    """'a, b, c', or the first 30 and 'and N more'."""
    listed = list(names)
    shown = ", ".join(listed[:_NAMES_IN_MESSAGE])
    more = len(listed) - _NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def described(value: Any) -> str:
    """A client's value in words: "the string 'x'", "true", "a list", "1.5", ..."""
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"the string {shown!r}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, numbers.Real):
        return repr(value)
    return f"a value of type {type(value).__name__}"
