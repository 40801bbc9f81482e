"""Is the last analysis still current? (``kdray.sweep.cli`` skips the job when nothing changed.)"""

from __future__ import annotations

import json

from kdray.analysis.outputs import MANIFEST, TABLES_MD, OutputFolder
from kdray.store import Store


def unchanged_tables(store_uri: str, out_uri: str | None = None, *, level: float = 0.05,
                     normalisation: str = "ratio") -> str | None:
    """``tables.md`` of the last analysis when the store's complete runs and the options are
    exactly what it read (its ``manifest.json``); ``None`` when anything changed.

    Runs are compared by the ``predictions_sha256`` in their run.json, verified against the
    predictions by the store's one checksum (:meth:`kdray.store.Store.statuses`), so a run
    added, re-run, removed or corrupted since then means the analysis runs again.
    """
    store = Store(store_uri)
    folder = OutputFolder(store, out_uri)
    try:
        old = json.loads(folder.store.read_bytes(folder.file(MANIFEST)))
        tables = folder.store.read_bytes(folder.file(TABLES_MD)).decode()
    except (FileNotFoundError, OSError, ValueError):
        return None
    if not isinstance(old, dict) or not isinstance(old.get("runs"), dict):
        return None  # a damaged manifest: analyse again
    if (old.get("level"), old.get("normalisation")) != (level, normalisation):
        return None
    ids = store.list_run_ids()
    if sorted(ids) != sorted(old.get("runs", {})):
        return None
    statuses = store.statuses(ids)
    if any(not statuses[r].complete or statuses[r].predictions_sha256 != old["runs"][r]
           for r in ids):
        return None
    return tables
