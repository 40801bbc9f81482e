"""The results store: one URI (a local path or ``s3://bucket/prefix``) through pyarrow filesystems.

Layout (the data contract, ``docs/store.md``)::

    {store}/runs/{run_id}/predictions.parquet   one row per test sample
    {store}/runs/{run_id}/model.safetensors     final weights (DS trials read their teacher's)
    {store}/runs/{run_id}/run.json              spec, metrics, provenance: written LAST
    {store}/analysis/...                        the aggregation job's outputs
    {store}/tune/...                            Ray Tune's experiment state and checkpoints

A run is committed by :meth:`Store.commit_run`: its predictions, its weights, then run.json.
A run is complete only when ``run.json`` exists and its ``predictions_sha256`` is the SHA-256
of the bytes of ``predictions.parquet``. Every file is written whole: locally to a temporary
name then renamed, on S3 as one PUT (an object appears only when its upload completes).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from kdray.checks import record_problem, spec_problem

PREDICTIONS = "predictions.parquet"
MODEL = "model.safetensors"
RUN_JSON = "run.json"

# Column order and types of predictions.parquet; then one int64 ``attr_<name>`` per attribute.
PREDICTION_FIELDS = [
    pa.field("run_id", pa.string()), pa.field("dataset", pa.string()),
    pa.field("role", pa.string()), pa.field("arch", pa.string()),
    pa.field("teacher_arch", pa.string()), pa.field("temperature", pa.float64()),
    pa.field("alpha", pa.float64()), pa.field("seed", pa.int64()),
    pa.field("sample_index", pa.int64()), pa.field("label", pa.int64()),
    pa.field("pred", pa.int64()),
]


def redact(uri: str) -> str:
    """``uri`` with any ``user:secret@`` userinfo and secret query values masked, for printing."""
    uri = re.sub(r"(?<=://)[^/@]+@", "***@", uri)
    return re.sub(r"(?i)((?:secret|token|key|password)[^=&]*=)[^&]*", r"\1***", uri)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def predictions_table(run_id: str, spec: Mapping[str, Any], sample_index: np.ndarray,
                      label: np.ndarray, pred: np.ndarray,
                      attributes: Mapping[str, np.ndarray] | None = None) -> pa.Table:
    """The contract's table for one run: constant run-level columns, then per-sample ones."""
    n = len(sample_index)
    if not (len(label) == len(pred) == n):
        raise ValueError(f"predictions: {n} sample indices, {len(label)} labels, {len(pred)} preds")
    const = {"run_id": run_id, "dataset": spec["dataset"], "role": spec["role"],
             "arch": spec["arch"], "teacher_arch": spec.get("teacher_arch"),
             "temperature": spec.get("temperature"), "alpha": spec.get("alpha"),
             "seed": spec["seed"]}
    cols: dict[str, pa.Array] = {}
    for f in PREDICTION_FIELDS[:8]:
        cols[f.name] = pa.array([const[f.name]] * n, type=f.type)
    cols["sample_index"] = pa.array(np.asarray(sample_index, dtype=np.int64))
    cols["label"] = pa.array(np.asarray(label, dtype=np.int64))
    cols["pred"] = pa.array(np.asarray(pred, dtype=np.int64))
    fields = list(PREDICTION_FIELDS)
    for name, values in sorted((attributes or {}).items()):
        if len(values) != n:
            raise ValueError(f"attribute {name!r}: {len(values)} values for {n} samples")
        cols[f"attr_{name}"] = pa.array(np.asarray(values, dtype=np.int64))
        fields.append(pa.field(f"attr_{name}", pa.int64()))
    return pa.Table.from_pydict(cols, schema=pa.schema(fields))


def predictions_problem(data: bytes) -> str | None:
    """What makes ``data`` not a predictions table (``None``: it is one): not Parquet, or
    without the per-sample columns. Reads the footer only."""
    try:
        names = pq.read_schema(io.BytesIO(data)).names
    except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        return f"unreadable {PREDICTIONS} ({type(e).__name__}: {str(e)[:80]})"
    missing = [c for c in ("sample_index", "label", "pred") if c not in names]
    return f"{PREDICTIONS} has no column(s) {missing}" if missing else None


@dataclass(frozen=True)
class Predictions:
    """A run's predicted labels on its test split, in sample order, with what the dataset says
    about the samples: their labels, the sensitive attributes' values, and the names."""

    pred: np.ndarray
    labels: np.ndarray
    num_classes: int
    attributes: Mapping[str, np.ndarray]
    class_names: list[str]
    attribute_values: Mapping[str, list[str]]

    def per_class_accuracy(self) -> list[float | None]:
        """Accuracy on each class's test samples (``None`` for a class with no test sample)."""
        total = np.bincount(self.labels, minlength=self.num_classes)
        hit = np.bincount(self.labels[self.labels == self.pred], minlength=self.num_classes)
        return [float(h / t) if t else None for h, t in zip(hit, total)]

    def metrics(self) -> dict[str, Any]:
        """run.json's metrics: test accuracy, per-class accuracy and test samples per class."""
        n = len(self.labels)
        return {"test_accuracy": float((self.pred == self.labels).mean()) if n else float("nan"),
                "per_class_accuracy": self.per_class_accuracy(),
                "per_class_n": np.bincount(self.labels, minlength=self.num_classes).tolist(),
                "n_test": n, "num_classes": self.num_classes}


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    complete: bool
    reason: str = ""  # why not complete: "missing", "no run.json", "checksum mismatch", ...
    predictions_sha256: str | None = None  # of a complete run


class Store:
    """A results store at ``uri`` (local path, ``file://``, or ``s3://bucket/prefix[?endpoint_override=…]``).

    S3 credentials come from the environment (``AWS_*`` variables, an instance profile) or
    the URI's userinfo; ``str(store)`` never shows them.
    """

    def __init__(self, uri: str | os.PathLike) -> None:
        uri = os.fspath(uri)
        if not uri:
            raise ValueError("store: '' is not a path or URI; expected e.g. ./results or s3://bucket/prefix")
        if "://" not in uri:
            uri = os.path.abspath(os.path.expanduser(uri))
        try:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        except Exception as e:  # pyarrow's message names the scheme; add what we expected
            raise ValueError(f"store: {redact(uri)!r} is not a usable URI ({e}); expected a local "
                             f"path or s3://bucket/prefix") from None
        self.root = root.rstrip("/")
        self.uri = uri
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Store({redact(self.uri)!r})"

    __str__ = lambda self: redact(self.uri)  # noqa: E731

    def __reduce__(self):  # ship to Ray workers by URI (the filesystem is rebuilt there)
        return (Store, (self.uri,))

    # -- paths and bytes ---------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def run_path(self, run_id: str, name: str = "") -> str:
        return self.path("runs", run_id, name)

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` whole: a reader sees the old file, no file, or all of ``data``."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if self.is_local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)  # rename(2): atomic on one filesystem
        else:
            with self.fs.open_output_stream(path) as f:  # one object PUT
                f.write(data)

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
                                + "\n").encode())

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def delete_dir(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(path)

    # -- runs --------------------------------------------------------------------------
    def write_predictions(self, run_id: str, table: pa.Table) -> str:
        """Write predictions.parquet; returns the SHA-256 of the bytes written."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self.write_bytes(self.run_path(run_id, PREDICTIONS), data)
        return sha256_bytes(data)

    def read_predictions(self, run_id: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(self.run_path(run_id, PREDICTIONS))))

    def read_verified_predictions(self, run_id: str, predictions_sha256: str | None) -> bytes:
        """The bytes of the run's predictions.parquet, checked against run.json's checksum.

        The one implementation of the predictions checksum (every reader uses it): the run is
        complete only when ``sha256(bytes) == predictions_sha256``. Checking the bytes that
        are then parsed means a file replaced in between cannot slip through.

        Raises
        ------
        FileNotFoundError : there is no predictions.parquet.
        ValueError : its SHA-256 is not ``predictions_sha256``.
        """
        data = self.read_bytes(self.run_path(run_id, PREDICTIONS))
        if sha256_bytes(data) != predictions_sha256:
            raise ValueError(f"predictions_sha256 does not match {PREDICTIONS}")
        return data

    def write_model(self, run_id: str, state_dict: Mapping[str, Any],
                    metadata: Mapping[str, str] | None = None) -> str:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        data = save(tensors, metadata=dict(metadata or {}))
        self.write_bytes(self.run_path(run_id, MODEL), data)
        return sha256_bytes(data)

    def read_model(self, run_id: str, verify: bool = False) -> dict[str, Any]:
        """The run's weights; with ``verify``, checked against run.json's ``model_sha256``
        (``ValueError`` on a mismatch; runs written before that field are not checked)."""
        from safetensors.torch import load

        data = self.read_bytes(self.run_path(run_id, MODEL))
        if verify:
            record = self.read_run_json(run_id)
            expected = record.get("model_sha256") if isinstance(record, dict) else None
            if expected is not None and sha256_bytes(data) != expected:
                raise ValueError(f"{run_id}: model.safetensors does not match the model_sha256 "
                                 f"of its run.json; the run is incomplete and must be trained again")
        return load(data)

    def commit_run(self, spec, predictions: Predictions, provenance: Mapping[str, Any], *,
                   weights: Mapping[str, Any]) -> dict[str, Any]:
        """Commit one run of ``spec`` (a RunSpec): ``predictions.parquet``, then
        ``model.safetensors`` (``weights``, a state dict), then ``run.json``, the commit marker:
        the spec, the metrics, the data's names, both checksums (on S3 also the weights'
        ETag, so that :meth:`model_problem` verifies them with one HEAD request) and
        ``provenance`` (``kdray.trial.provenance.Provenance.record``). Returns the run.json
        record."""
        p = predictions
        table = predictions_table(spec.run_id, spec.to_dict(), np.arange(len(p.labels)),
                                  p.labels, p.pred, p.attributes)
        sha = self.write_predictions(spec.run_id, table)
        model_sha = self.write_model(spec.run_id, weights, {"run_id": spec.run_id})
        record = {"run_id": spec.run_id, "spec": spec.to_dict(), **p.metrics(),
                  "attributes": sorted(p.attributes), "class_names": p.class_names,
                  "attribute_values": p.attribute_values, "predictions_sha256": sha,
                  "model_sha256": model_sha,
                  "model_etag": self.etag(self.run_path(spec.run_id, MODEL)), **provenance}
        self.write_run_json(spec.run_id, record)
        return record

    def write_run_json(self, run_id: str, record: Mapping[str, Any]) -> None:
        """Write run.json, the commit marker: call it after predictions and model are written."""
        if "predictions_sha256" not in record:
            raise ValueError("run.json: record has no 'predictions_sha256'")
        self.write_json(self.run_path(run_id, RUN_JSON), dict(record))

    def read_run_json(self, run_id: str) -> dict[str, Any] | None:
        try:
            return self.read_json(self.run_path(run_id, RUN_JSON))
        except FileNotFoundError:
            return None

    def status(self, run_id: str, verify_model: bool = False) -> RunStatus:
        """Complete or not, and why. ``verify_model`` also checks model.safetensors (for
        teachers, whose weights DS runs read; :meth:`model_problem`). A run.json that is not
        what a trial writes (``kdray.checks.record_problem``, ``spec_problem``) makes the
        run incomplete, with the reason."""
        try:
            record = self.read_json(self.run_path(run_id, RUN_JSON))
        except FileNotFoundError:
            return RunStatus(run_id, False, "no run.json")
        except (ValueError, OSError) as e:
            return RunStatus(run_id, False, f"unreadable run.json ({e})")
        problem = record_problem(record) or spec_problem(record.get("spec"))
        if problem:
            return RunStatus(run_id, False, f"run.json: {problem}")
        try:
            data = self.read_verified_predictions(run_id, record["predictions_sha256"])
        except FileNotFoundError:
            return RunStatus(run_id, False, f"no {PREDICTIONS}")
        except ValueError as e:
            return RunStatus(run_id, False, str(e))
        problem = predictions_problem(data)
        if not problem and verify_model:
            problem = self.model_problem(run_id, record)
        if problem:
            return RunStatus(run_id, False, problem)
        return RunStatus(run_id, True, predictions_sha256=record["predictions_sha256"])

    def model_problem(self, run_id: str, record: Mapping[str, Any]) -> str | None:
        """Does model.safetensors still hold what run.json recorded? ``None``: yes.

        Cheapest check first. On S3, a run.json with ``model_etag`` (the ETag S3 gave the
        weights when they were written) is compared with the object's ETag now: one HEAD
        request, whatever the model's size; S3 changes an object's ETag whenever its bytes
        change (an MD5 of the body, or of its parts' MD5s for a multipart upload), so a
        replaced, truncated or overwritten file is found without downloading it. Otherwise
        (a local store, where no filesystem keeps a checksum, or a run.json from before
        ``model_etag``) the file is read and its SHA-256 compared with ``model_sha256``.
        Runs written before ``model_sha256`` are not checked.

        What it saves: the paper's largest teachers hold 346.3 MB (ViT-B/16, 224 px, 1000
        classes) and 437.9 MB (BERT-base, 30,522-token vocabulary) of float32 tensors, and
        ResNet-50 102.4 MB (the state dicts ``kdray.models.build_model`` builds, summed
        tensor bytes, 2026-12-02). Hashing would download each teacher on every sweep; the
        ETag comparison sends one HEAD request per teacher and downloads nothing. (S3's
        additional checksums, ``x-amz-checksum-sha256``, would need the upload to send one;
        pyarrow's S3 output stream sends none, and custom ``x-amz-meta-*`` metadata it
        drops, checked with pyarrow 26.0.1 against moto 5.2.5.)
        """
        expected, etag = record.get("model_sha256"), record.get("model_etag")
        if expected is None:
            return None
        path = self.run_path(run_id, MODEL)
        if not self.is_local and etag:
            now = self.etag(path)
            if now is None:
                return f"no {MODEL}"
            return None if now == etag else f"{MODEL} changed since run.json was written (ETag)"
        try:
            data = self.read_bytes(path)
        except FileNotFoundError:
            return f"no {MODEL}"
        return None if sha256_bytes(data) == expected else f"model_sha256 does not match {MODEL}"

    def etag(self, path: str) -> str | None:
        """The S3 ETag of the object at ``path`` (one HEAD request, no download); ``None``
        for a local store or a missing object."""
        if self.is_local:
            return None
        try:
            with self.fs.open_input_file(path) as f:  # HEAD; the body is read only on read()
                value = f.metadata().get("ETag")
        except FileNotFoundError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def is_complete(self, run_id: str) -> bool:
        return self.status(run_id).complete

    def statuses(self, run_ids: Iterable[str], max_workers: int = 16,
                 verify_model: Iterable[str] = ()) -> dict[str, RunStatus]:
        """Status of many runs; existence is listed once, checksums are verified in parallel
        (the weights too for the runs in ``verify_model``)."""
        run_ids, verify = list(run_ids), set(verify_model)
        present = set(self.list_run_ids())
        todo = [r for r in run_ids if r in present]
        out = {r: RunStatus(r, False, "missing") for r in run_ids if r not in present}
        if todo:
            with ThreadPoolExecutor(max_workers=min(max_workers, len(todo))) as pool:
                out.update(zip(todo, pool.map(lambda r: self.status(r, r in verify), todo)))
        return {r: out[r] for r in run_ids}

    def list_run_ids(self) -> list[str]:
        """Every run folder in the store, complete or not."""
        sel = pafs.FileSelector(self.path("runs"), allow_not_found=True, recursive=False)
        return sorted(i.base_name for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory)
