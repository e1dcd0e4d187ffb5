"""Model and index lifecycle of a service worker: where releases come from, and hot reload.

A ``ReleaseSource`` names the release that should be serving (``current()``, cheap, polled) and makes it a
local release directory (``fetch()``):

* ``DirectorySource``: ``<serving_dir>/current``, the symlink ``recstack train`` swaps atomically;
* ``MlflowAliasSource``: the version of a registered model that an alias (``champion``) points at. Its run's
  artifacts (``model/``, ``index/``, ``neighbors/``, ``catalog/``) are downloaded into a local cache; a
  release logged without an index gets one built from its model (same version, same build code).

``ReleaseManager`` loads the first release at start (a service without a model is not ready), then polls the
source on a background thread. A new release is loaded and checked completely *beside* the serving one and
swapped in by one reference assignment: a request in flight keeps the recommender it started with, so none
is dropped or fails. A release that fails to load (corrupt, incompatible) is refused, counted, logged, and
not retried until the source names another one; the old release keeps serving.
"""

from __future__ import annotations

import gc
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from recstack.models.artifact import ArtifactError
from recstack.offline.jobs.train import CURRENT, rebuild_index
from recstack.online.pipeline import Recommender, ServingRelease

log = logging.getLogger(__name__)


class ReleaseSource(Protocol):
    description: str

    def current(self) -> str | None:
        """An identifier of the release that should serve now (None: nothing published yet)."""
        ...

    def fetch(self, ident: str) -> Path:
        """A local release directory for ``ident``."""
        ...


class DirectorySource:
    def __init__(self, serving_dir: Path) -> None:
        self.link = Path(serving_dir) / CURRENT
        self.description = str(self.link)

    def current(self) -> str | None:
        return str(self.link.resolve()) if self.link.exists() else None

    def fetch(self, ident: str) -> Path:
        return Path(ident)


class MlflowAliasSource:
    """The registered model version an alias points at, downloaded into ``cache_dir/<name>/<version>``."""

    PARTS = (("model", "model"), ("index", "index"), ("neighbors/item_neighbors.npz", "item_neighbors.npz"),
             ("catalog", "catalog"))  # fmt: skip

    def __init__(self, tracking_uri: str, model_name: str, alias: str, cache_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.model_name, self.alias, self.cache_dir = model_name, alias, Path(cache_dir)
        self.description = f"models:/{model_name}@{alias} ({tracking_uri})"

    def current(self) -> str | None:
        import mlflow

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, self.alias)
        except mlflow.exceptions.MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                return None
            raise
        return f"{mv.version}:{mv.run_id}"

    def fetch(self, ident: str) -> Path:
        import mlflow

        version, run_id = ident.split(":", 1)
        target = self.cache_dir / self.model_name / version
        if (target / "model" / "manifest.json").exists() and (target / "index").exists():
            return target
        tmp = target.parent / f".{version}.download"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        listed = {a.path for a in self.client.list_artifacts(run_id)}
        for src, dst in self.PARTS:
            if src.split("/", 1)[0] not in listed:
                continue
            got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=src, dst_path=str(tmp / "_dl"),
                                                           tracking_uri=self.tracking_uri))  # fmt: skip
            shutil.move(str(got), str(tmp / dst))
        shutil.rmtree(tmp / "_dl", ignore_errors=True)
        if not (tmp / "model").exists():
            raise ArtifactError(f"run {run_id} of {self.model_name} v{version} has no model/ artifact")
        if not (tmp / "index").exists():  # releases logged without an index: build it from the model
            rebuild_index(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target


class ReleaseManager:
    """Holds the serving ``Recommender`` and swaps it when the source names a new release."""

    def __init__(
        self, source: ReleaseSource, build: Callable[[ServingRelease], Recommender], interval_s: float = 5.0,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:  # fmt: skip
        self.source = source
        self.build = build
        self.interval_s = interval_s
        self.on_event = on_event or (lambda kind, detail: None)
        self.recommender: Recommender | None = None
        self.ident: str | None = None
        self.refused: str | None = None
        self.reloads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def load_initial(self) -> None:
        """Load what the source names now; raises ``ArtifactError`` when nothing (valid) is published."""
        ident = self.source.current()
        if ident is None:
            raise ArtifactError(f"no release published at {self.source.description}: run `recstack train` first")
        self._swap(ident)

    def check(self) -> bool:
        """One poll: load and swap in a new release if the source names one; True when it swapped."""
        with self._lock:
            try:
                ident = self.source.current()
            except Exception as exc:  # the registry being down must not stop serving
                log.warning("release source %s unavailable: %s", self.source.description, exc)
                self.on_event("source_error", str(exc))
                return False
            if ident is None or ident == self.ident or ident == self.refused:
                return False
            try:
                self._swap(ident)
            except Exception as exc:  # corrupt / incompatible: keep serving the old release
                self.refused = ident
                log.error("refused release %s: %s; still serving %s", ident, exc, self.ident)
                self.on_event("refused", f"{ident}: {exc}")
                return False
            self.reloads += 1
            self.on_event("reloaded", ident)
            return True

    def _swap(self, ident: str) -> None:
        release = ServingRelease.load(self.source.fetch(ident))
        recommender = self.build(release)
        self.recommender = recommender  # one reference assignment: in-flight requests keep the old one
        self.ident = ident
        # the release's millions of long-lived objects leave the collector's scans (they are never garbage
        # while serving); the previous release's are released by reference counting
        gc.collect()
        gc.freeze()

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.check()

        self._thread = threading.Thread(target=loop, name="release-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
