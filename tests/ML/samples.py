"""Tiny CSV samples for the ML tests, written by the fixtures in conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

WriteCsv = Callable[..., Path]

COLORS = ("red", "green", "blue")


def mixed_rows(count: int) -> list[str]:
    """Rows of a binary problem with a numeric, a categorical and a boolean feature.

    The label is "yes" when size > 5 or color is red, so every estimator can learn it; a few
    cells are missing (empty or NA) to exercise imputation.
    """
    rows = []
    for index in range(count):
        size = (index * 7) % 11
        color = COLORS[index % 3]
        flag = "True" if index % 2 else "False"
        label = "yes" if size > 5 or color == "red" else "no"
        size_cell = "" if index % 13 == 4 else str(size)
        color_cell = "NA" if index % 17 == 5 else color
        rows.append(f"{size_cell},{color_cell},{flag},{label}")
    return rows
