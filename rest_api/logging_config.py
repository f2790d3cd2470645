"""Logging set up once, at the edge: every worker appends to the same ML_server.log."""

from __future__ import annotations

import logging
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"


def configure_logging(log_path: Path, level: str = "info") -> None:
    """Attach one append-mode file handler to the root logger (idempotent per path) and set
    its level (FASTML_LOG_LEVEL).

    Append mode opens the file with O_APPEND, so lines from several workers interleave
    whole and nothing is ever truncated.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    resolved = str(log_path.resolve())
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == resolved:
            return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(resolved, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
