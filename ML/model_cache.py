"""Each worker's loaded models: one unpickle per version, refreshed when `current` moves."""

from __future__ import annotations

import logging
import threading

from ML.batching import BatchSettings
from ML.errors import ModelNotFound, StoreUnavailable
from ML.model_store import ModelStore
from ML.prediction import ServedModel

logger = logging.getLogger(__name__)


class ModelCache:
    """Holds the current version of every model this worker has served.

    A store that becomes unreadable (folder moved away, volume unmounted) does not empty
    the cache: loaded models keep serving, models not loaded yet answer StoreUnavailable.

    `cached` is the hot path (a dict read, no I/O). `load` and `refresh` read files and
    unpickle, so callers run them off the event loop.
    """

    def __init__(self, store: ModelStore, batch_settings: BatchSettings | None = None) -> None:
        self._store = store
        self._batch_settings = batch_settings
        self._models: dict[str, ServedModel] = {}
        self._load_lock = threading.Lock()

    def cached(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def load(self, name: str) -> ServedModel:
        """The current version of `name`, loading it when it is not cached yet."""
        with self._load_lock:
            model = self._models.get(name)
            if model is None:
                model = ServedModel(self._store.load_current(name), self._batch_settings)
                self._models[name] = model
                logger.info("loaded model %s version %d", name, model.version)
            return model

    def refresh(self) -> list[str]:
        """Follow `current` pointers that moved (promote, roll back, delete); return the changed."""
        changed = []
        for name, model in list(self._models.items()):
            try:
                current = self._store.current_version(name)
            except ModelNotFound:
                if not self._store.is_available():
                    continue  # the whole store went away just now, not this model
                current = None
            except StoreUnavailable:
                # Moved away or unmounted: keep serving what is loaded until it is back.
                continue
            if current == model.version:
                continue
            changed.append(name)
            if current is None:
                self._models.pop(name, None)
                logger.info("model %s is gone; dropped from the cache", name)
                continue
            try:
                fresh = ServedModel(self._store.load_version(name, current), self._batch_settings)
            except Exception:
                # Keep serving the version we have; the next refresh tries again.
                logger.exception(
                    "could not load %s version %d; still serving %d", name, current, model.version
                )
                continue
            with self._load_lock:
                self._models[name] = fresh
            logger.info("model %s now serves version %d (was %d)", name, current, model.version)
        return changed
