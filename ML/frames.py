"""Building pandas frames and object arrays cheaply: the prediction paths build one per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

_FROM_ARRAYS = getattr(pd.DataFrame, "_from_arrays", None)


def frame_from_arrays(arrays: list[np.ndarray], columns: pd.Index, index: pd.Index) -> pd.DataFrame:
    """A frame from 1-D column arrays of equal length, object arrays kept as object dtype.

    pandas 3's public constructor infers a `str` dtype from object arrays of text and costs
    several times more; this is the prediction hot path, so use the internal constructor when
    this pandas has it.
    """
    if _FROM_ARRAYS is not None:
        return cast(
            pd.DataFrame, _FROM_ARRAYS(arrays, columns=columns, index=index, verify_integrity=False)
        )
    series = {
        position: pd.Series(array, index=index, dtype=array.dtype, copy=False)
        for position, array in enumerate(arrays)
    }
    frame = pd.DataFrame(series, copy=False)
    frame.columns = columns
    return frame


def object_array(values: Sequence[Any]) -> np.ndarray:
    """`values` as they are in a 1-D object array (np.array would pick a fixed-width dtype)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
