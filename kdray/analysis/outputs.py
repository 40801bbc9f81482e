"""Write the analysis: the table model's files, into a fresh folder that then replaces the old.

Files under ``{out}/``: ``significance.csv``, ``class_tests.parquet``,
``fairness.csv``, ``disagreement/<name>.csv``, ``tables.md``, ``figures/<name>.png``, plus
``class_accuracy.csv`` (β^c per model and class, mean ± std over seeds) and ``manifest.json``
(what they were computed from; the cache check reads it back).

Every rerun leaves exactly its own outputs. The files are written to a fresh staging folder
beside ``{out}`` (``.analysis.staging-<id>``); only when all of them are written does it
replace ``{out}``, so a crash while computing or writing leaves the previous complete
analysis in place (and the staging folder is removed on an exception):

- local filesystem: ``{out}`` is renamed aside, the staging folder renamed to ``{out}``, the
  old one deleted (two renames; only a crash between them leaves no ``{out}``, with the
  previous analysis complete in ``.analysis.old-<id>``);
- object stores (S3), which cannot rename a folder: ``manifest.json`` is deleted first,
  every staged object is copied over (server-side), the manifest last, then the objects that
  are not part of the new analysis are deleted. A crash during that copy leaves no manifest,
  so the cache check reruns the analysis, and the complete staged folder in place.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from typing import Iterator

import pyarrow.fs as pafs

from kdray.analysis.model import Report
from kdray.store import Store, redact

MANIFEST = "manifest.json"
TABLES_MD = "tables.md"


class Staging:
    """A fresh folder that the files of one analysis are written into."""

    def __init__(self, store: Store, path: str) -> None:
        self.store, self.path = store, path
        self.written: list[str] = []

    def write(self, name: str, data: bytes) -> None:
        self.store.write_bytes(f"{self.path}/{name}", data)
        self.written.append(name)


class OutputFolder:
    """Where the outputs go: ``{store}/analysis`` by default, or any URI (``--out``)."""

    def __init__(self, store: Store, out_uri: str | None = None) -> None:
        if out_uri:
            self.store, base = Store(out_uri), ""
        else:
            self.store, base = store, "analysis"
        self.path = self.store.path(base).rstrip("/")
        self._label = redact(self.store.uri) + (f"/{base}" if base else "")
        if "/" not in self.path.lstrip("/"):
            raise ValueError(f"out: {self._label!r} is a bucket root; expected a folder "
                             "(e.g. s3://bucket/analysis) to replace on each run")
        self.parent, self.name = self.path.rsplit("/", 1)

    def __str__(self) -> str:
        return self._label

    def file(self, name: str) -> str:
        """The path of an output file of the current analysis."""
        return f"{self.path}/{name}"

    def _sibling(self, kind: str) -> str:
        return f"{self.parent}/.{self.name}.{kind}-{uuid.uuid4().hex[:12]}"

    @contextlib.contextmanager
    def replace(self) -> Iterator[Staging]:
        """Stage the new analysis; on success it replaces the old, on an exception the old
        one stays and the staging folder is removed."""
        stage = Staging(self.store, self._sibling("staging"))
        try:
            yield stage
        except BaseException:
            self.store.delete_dir(stage.path)
            raise
        if self.store.is_local:
            self._rename(stage)
        else:
            self._copy(stage)
        self._clean_leftovers()

    def _rename(self, stage: Staging) -> None:
        fs, old = self.store.fs, None
        if self.store.exists(self.path):
            old = self._sibling("old")
            fs.move(self.path, old)
        fs.create_dir(stage.path, recursive=True)  # an analysis may write no file at all
        fs.move(stage.path, self.path)
        if old:
            fs.delete_dir(old)

    def _copy(self, stage: Staging) -> None:
        fs = self.store.fs
        sel = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        before = {i.path[len(self.path) + 1:] for i in fs.get_file_info(sel)
                  if i.type == pafs.FileType.File}
        if MANIFEST in before:
            fs.delete_file(self.file(MANIFEST))
        names = sorted(stage.written, key=lambda n: n == MANIFEST)  # the manifest last
        for name in names:
            fs.copy_file(f"{stage.path}/{name}", self.file(name))
        for name in sorted(before - set(stage.written)):
            fs.delete_file(self.file(name))
        self.store.delete_dir(stage.path)

    def _clean_leftovers(self) -> None:
        """Staging and old folders that a crashed earlier run left beside ``{out}``."""
        sel = pafs.FileSelector(self.parent, allow_not_found=True, recursive=False)
        for info in self.store.fs.get_file_info(sel):
            if info.base_name.startswith((f".{self.name}.staging-", f".{self.name}.old-")):
                self.store.delete_dir(info.path)


def _bytes(df, file: str) -> bytes:
    if file.endswith(".parquet"):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    return df.to_csv(index=False).encode()


def write_report(report: Report, markdown: str, pngs: dict[str, bytes],
                 folder: OutputFolder, pages: dict[str, str] | None = None) -> list[str]:
    """Write every file of the report (tables, figures, tables.md, the other Markdown
    ``pages``, manifest) into a fresh folder that replaces ``folder``; returns the file
    names, relative to it."""
    with folder.replace() as stage:
        for table in report.tables:
            if table.file:
                stage.write(table.file, _bytes(table.frame, table.file))
        for name, png in sorted(pngs.items()):
            stage.write(f"figures/{name}", png)
        stage.write(TABLES_MD, markdown.encode())
        for name, text in sorted((pages or {}).items()):
            stage.write(name, text.encode())
        stage.write(MANIFEST, json.dumps(report.manifest, indent=1, sort_keys=True).encode())
    return list(stage.written)
