"""Each worker's loaded models: one unpickle per version, refreshed when `current` moves or
the files of the served version change on disk."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ML.batching import BatchSettings
from ML.errors import ModelNotFound, ModelUnusable, StoreUnavailable
from ML.model_store import ModelStore, VersionStamp
from ML.prediction import ServedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Served:
    model: ServedModel
    stamp: VersionStamp


@dataclass(frozen=True)
class _Refused:
    """A current version that does not verify: answered from memory until its files change."""

    version: int
    stamp: VersionStamp
    error: ModelUnusable


class ModelCache:
    """Holds the current version of every model this worker has served, or why it refuses it.

    The tamper policy: a version whose files no longer match their signature is refused by
    every worker (ModelUnusable, naming the version to roll back to), including a worker that
    verified and loaded it before the change; nothing falls back to another version by itself.
    Each poll stats the served version's two files; only when a stamp changed are they
    verified again. A refusal is logged once, when it starts, not at every poll.

    A store that becomes unreadable (folder moved away, volume unmounted) does not empty
    the cache: loaded models keep serving, models not loaded yet answer StoreUnavailable.

    `cached` is the hot path (a dict read, no I/O). `load` and `refresh` read files and
    unpickle, so callers run them off the event loop.
    """

    def __init__(self, store: ModelStore, batch_settings: BatchSettings | None = None) -> None:
        self._store = store
        self._batch_settings = batch_settings
        self._models: dict[str, ServedModel] = {}
        self._served: dict[str, _Served] = {}
        self._refused: dict[str, _Refused] = {}
        self._load_lock = threading.Lock()

    def cached(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def load(self, name: str) -> ServedModel:
        """The current version of `name`, loading it when it is not cached yet."""
        with self._load_lock:
            model = self._models.get(name)
            if model is not None:
                return model
            refused = self._refused.get(name)
            if refused is not None:
                raise refused.error
            version = self._store.require_current_version(name)
            return self._load_locked(name, version)

    def refresh(self) -> list[str]:
        """Follow `current` pointers that moved (promote, roll back, delete) and files that
        changed under the served version; return the names whose answer changed."""
        changed = []
        with self._load_lock:
            names = sorted({*self._served, *self._refused})
        for name in names:
            with self._load_lock:
                if self._refresh_locked(name):
                    changed.append(name)
        return changed

    def _refresh_locked(self, name: str) -> bool:
        known = self._served.get(name) or self._refused.get(name)
        if known is None:
            return False
        known_version = known.model.version if isinstance(known, _Served) else known.version
        try:
            current = self._store.current_version(name)
            if current == known_version:
                if self._store.version_stamp(name, current) == known.stamp:
                    return False
                # The files changed (or went missing) since they were verified: unless the
                # whole store went away just now, verify them again.
                self._store.require_available()
        except ModelNotFound:
            if not self._store.is_available():
                return False  # the whole store went away just now, not this model
            current = None
        except StoreUnavailable:
            # Moved away or unmounted: keep serving what is loaded until it is back.
            return False
        if current is None:
            self._forget(name)
            logger.info("model %s is gone; dropped from the cache", name)
            return True
        try:
            model = self._load_locked(name, current)
        except ModelUnusable:
            return True  # refused from now on, and logged once
        except (ModelNotFound, StoreUnavailable):
            return False  # deleted or moved away meanwhile: the next poll sees which
        except Exception:
            # An I/O error, say: keep what we have; the next refresh tries again.
            logger.exception("could not load %s version %d; keeping what was served", name, current)
            return False
        if model.version != known_version:
            logger.info("model %s now serves version %d (was %d)", name, current, known_version)
        return True

    def _load_locked(self, name: str, version: int) -> ServedModel:
        """Verify and load `version` as the one served for `name`, or record why not."""
        stamp = self._store.version_stamp(name, version)
        try:
            loaded = self._store.load_version(name, version)
        except ModelUnusable as error:
            self._forget(name)
            self._refused[name] = _Refused(version, stamp, error)
            logger.warning("refusing to serve: %s", error.message)
            raise
        model = ServedModel(loaded, self._batch_settings)
        self._refused.pop(name, None)
        self._served[name] = _Served(model, stamp)
        self._models[name] = model
        logger.info("loaded model %s version %d", name, version)
        return model

    def _forget(self, name: str) -> None:
        self._models.pop(name, None)
        self._served.pop(name, None)
        self._refused.pop(name, None)
