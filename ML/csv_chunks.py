"""The CSV stream of a prediction: a file's records in chunks, each turned into a feature frame
and back into CSV (its records as written plus the predictions) in bounded memory."""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from ML.csv_output import csv_from_cells, csv_from_lines
from ML.csv_reader import CsvReader, PlainLines, opened
from ML.features import (
    MISSING_MARKERS,
    Feature,
    FeatureKind,
    check_features_present,
    features_from_text_frame,
)
from ML.frames import frame_from_arrays, object_array


class CsvChunk(ABC):
    """Consecutive data records of a CSV, as `read_csv_chunks` read them.

    A chunk turns into a feature frame and back into CSV without building a text cell per
    value where it can: that is what makes predicting a CSV of millions of rows fast.
    """

    def __init__(self, columns: list[str], first_row: int, rows: int) -> None:
        self.columns = columns
        self.first_row = first_row  # data row number of the first record, from 1
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    @property
    @abstractmethod
    def frame(self) -> pd.DataFrame:
        """Every cell as the text written; the index is the row position in the file, from 0."""

    def features(self, schema: Sequence[Feature]) -> pd.DataFrame:
        """`features_from_text_frame` of the chunk: the same frame, or the same InvalidInput."""
        return features_from_text_frame(self.frame, schema, first_row_number=self.first_row)

    @abstractmethod
    def to_csv(self, added: Mapping[str, np.ndarray], *, header: bool) -> bytes:
        """The records as written plus the `added` columns (one value per record), as UTF-8
        CSV with CRLF line ends and the header row if asked (see ML/csv_output.py): text
        cells are escaped against formula injection."""

    def _range_index(self) -> pd.RangeIndex:
        return pd.RangeIndex(self.first_row - 1, self.first_row - 1 + self._rows)


def read_csv_chunks(source: BinaryIO | Path, chunk_rows: int) -> Iterator[CsvChunk]:
    """The data records of a CSV in chunks of at most `chunk_rows`, checked as they are read.

    Memory stays bounded by one chunk. The header is checked first (UTF-8, named and unique
    columns); a ragged row, NUL byte, bad quoting or bad UTF-8 further down raises
    InvalidDataset, with its line number, when the iteration reaches it (see `CsvReader`).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    with opened(source) as binary:
        reader = CsvReader(binary)
        first_row = 1
        for records in reader.batches(chunk_rows):
            if isinstance(records, PlainLines):
                yield _LinesChunk(reader.header, first_row, records.rows, records.body)
            else:
                yield _CellsChunk(reader.header, first_row, records.rows, records.cells)
            first_row += records.rows


class _LinesChunk(CsvChunk):
    """Records that are one unquoted line each: `body` is their UTF-8 text, LF line ends.

    pandas' C parser reads the cells, and the output is each line as written (escaped where
    needed, which for unquoted text is a regular-expression pass) plus the added cells.
    """

    def __init__(self, columns: list[str], first_row: int, rows: int, body: bytes) -> None:
        super().__init__(columns, first_row, rows)
        self._body = body

    @cached_property
    def frame(self) -> pd.DataFrame:
        frame = self._read(dtype=object, na_filter=False)
        frame.index = self._range_index()
        return frame

    def features(self, schema: Sequence[Feature]) -> pd.DataFrame:
        check_features_present(self.columns, schema)
        names = [feature.name for feature in schema]
        categorical = [f.name for f in schema if f.kind is FeatureKind.CATEGORICAL]
        # The parse training uses: numeric columns come out as numbers in one C pass. (It
        # reads "-0" as 0.0 where to_numeric gives -0.0; the two compare equal everywhere.)
        parsed = self._read(
            usecols=names,
            dtype=dict.fromkeys(categorical, object),
            na_values=MISSING_MARKERS,
            keep_default_na=False,
        )
        arrays = []
        for feature in schema:
            column = parsed[feature.name]
            if feature.kind is FeatureKind.CATEGORICAL:
                arrays.append(column.to_numpy(dtype=object))
                continue
            values = column.to_numpy(dtype=np.float64) if column.dtype.kind in "iuf" else None
            if values is None or np.isinf(values).any():
                # Text, booleans or infinities: the cell-by-cell reading names the bad rows.
                return super().features(schema)
            arrays.append(values)
        return frame_from_arrays(arrays, pd.Index(names), pd.RangeIndex(len(self)))

    def to_csv(self, added: Mapping[str, np.ndarray], *, header: bool) -> bytes:
        return csv_from_lines(self._body, len(self), added, self.columns if header else None)

    def _read(self, **options: Any) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(self._body),
            compression=None,
            encoding="utf-8",
            header=None,
            names=self.columns,
            index_col=False,
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,  # whitespace-only lines are records to the csv module
            low_memory=False,  # whole-chunk type inference, as training reads the file
            **options,
        )


class _CellsChunk(CsvChunk):
    """Records as the csv module parsed them (quoted cells, blank or CR-ended lines)."""

    def __init__(self, columns: list[str], first_row: int, rows: int, cells: list[str]) -> None:
        super().__init__(columns, first_row, rows)
        self._cells = cells

    @cached_property
    def _columns(self) -> list[np.ndarray]:
        by_row = object_array(self._cells).reshape(len(self), len(self.columns))
        return list(np.ascontiguousarray(by_row.T))

    @cached_property
    def frame(self) -> pd.DataFrame:
        return frame_from_arrays(self._columns, pd.Index(self.columns), self._range_index())

    def to_csv(self, added: Mapping[str, np.ndarray], *, header: bool) -> bytes:
        return csv_from_cells(self._columns, len(self), added, self.columns if header else None)
