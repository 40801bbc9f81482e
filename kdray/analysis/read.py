"""Read the store: complete runs only, one Ray Data task per ``predictions.parquet``.

The driver lists ``{store}/runs/`` and reads every ``run.json`` (small). Each run with a
run.json becomes one row of a Ray Data dataset; one task per run reads the file's bytes once,
checked against ``run.json``'s ``predictions_sha256`` by the store's one checksum
(:meth:`kdray.store.Store.read_verified_predictions`, on the same bytes it then parses, so a
file replaced mid-job cannot slip through), and reduces the run's rows to what the statistics
need (:func:`summarise_predictions`): per-class ``correct``/``total`` counts, fingerprints of
the test samples and of each sensitive attribute's values, and DPD/EOD per attribute. Only
these small per-run summaries (O(classes) each) reach the driver; the rows never do.

From ``run.json`` the driver takes the spec, ``test_accuracy`` (recomputed from the counts
only for a run.json without it) and, where the trial recorded them, ``class_names`` (one
name per class index) and ``attribute_values`` (attribute -> the name of each integer value).

A run is skipped, named and counted, never silently dropped, when it has no run.json (not
finished), an unreadable run.json (not an object, or a field of the wrong type: the store's
one check, ``kdray.checks.record_problem``, which makes the sweep train the run again) or
spec (``kdray.checks.spec_problem``), no predictions.parquet, a checksum mismatch, or an
unreadable predictions.parquet (not Parquet, missing columns, nulls, duplicate samples).
"""

from __future__ import annotations

import io
import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from kdray.analysis.bootstrap import add_intervals
from kdray.analysis.fairness import ATTR_PREFIX, run_fairness
from kdray.analysis.groups import study_key
from kdray import checks
from kdray.store import PREDICTIONS, RUN_JSON, Store, redact, sha256_bytes


@dataclass
class ReadSummary:
    """How many runs were found, read and skipped, and why.

    ``skipped``: run_id -> reason (a fixed phrase, e.g. ``"checksum mismatch"``);
    ``details``: run_id -> what exactly went wrong, where there is more to say.
    """

    store: str
    n_found: int = 0
    n_read: int = 0
    n_rows: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def skip(self, run_id: str, reason: str, detail: str = "") -> None:
        self.skipped[run_id] = reason
        if detail:
            self.details[run_id] = detail

    def reasons(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rid, why in sorted(self.skipped.items()):
            out.setdefault(why, []).append(rid)
        return out

    def counts(self) -> str:
        return (f"{self.n_found} run folder(s), {self.n_read} complete run(s) read "
                f"({self.n_rows:,} prediction rows), {len(self.skipped)} skipped")

    def lines(self) -> list[str]:
        out = [f"store {self.store}: {self.counts()}"]
        for why, ids in self.reasons().items():
            out.append(f"  skipped, {why}: {len(ids)} run(s): {', '.join(ids[:10])}"
                       + (" ..." if len(ids) > 10 else ""))
            if ids[0] in self.details:
                out.append(f"    e.g. {ids[0]}: {self.details[ids[0]]}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def open_store(uri: str) -> Store:
    """The store at ``uri``; raises ``FileNotFoundError`` when there is nothing there."""
    store = Store(uri)
    try:
        info = store.fs.get_file_info(store.root)
    except OSError as e:
        raise FileNotFoundError(f"store: {redact(store.uri)!r} is not readable ({e})") from None
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"store: {redact(store.uri)!r} does not exist (or is not a "
                                f"folder); expected a store written by a sweep, with runs/")
    return store


def read_run_records(store: Store, summary: ReadSummary) -> dict[str, dict[str, Any]]:
    """run_id -> run.json for every run folder with a usable run.json (the rest: skipped)."""
    run_ids = store.list_run_ids()
    summary.n_found = len(run_ids)

    def load(rid: str) -> tuple[str, dict | None, str, str]:
        try:
            rec = json.loads(store.read_bytes(store.run_path(rid, RUN_JSON)))
        except FileNotFoundError:
            return rid, None, "no run.json (run not finished)", ""
        except (OSError, ValueError) as e:
            return rid, None, "unreadable run.json", f"{type(e).__name__}: {str(e)[:100]}"
        problem = checks.record_problem(rec)  # the store's one check of run.json
        if problem:
            return rid, None, "unreadable run.json", problem
        problem = checks.spec_problem(rec.get("spec"))
        if problem:
            return rid, None, "invalid spec in run.json", problem
        return rid, rec, "", ""

    records = {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        for rid, rec, why, detail in pool.map(load, run_ids):
            if rec is None:
                summary.skip(rid, why, detail)
            else:
                records[rid] = rec
    return records


def summarise_predictions(data: bytes, backend: str = "fairlearn") -> dict[str, Any]:
    """Reduce one run's predictions.parquet bytes to its summary (runs on a Ray worker).

    Returns ``classes``, ``correct``, ``total`` (int64 per class of the test labels),
    ``n_rows``, ``fingerprint`` (SHA-256 of the (sample_index, label) pairs in sample order),
    ``attribute_fingerprints`` (attribute -> SHA-256 of its int64 values in sample order: equal
    digests mean equal values) and ``fairness`` (one dict per ``attr_*`` column: DPD, EOD
    and their bootstrap 95% interval, :mod:`kdray.analysis.bootstrap`). Raises
    ``ValueError`` on a malformed file.
    """
    pf = pq.ParquetFile(io.BytesIO(data))
    names = pf.schema_arrow.names
    attrs = [n for n in names if n.startswith(ATTR_PREFIX)]
    missing = [c for c in ("sample_index", "label", "pred") if c not in names]
    if missing:
        raise ValueError(f"missing column(s) {missing}")
    t = pf.read(columns=["sample_index", "label", "pred"] + attrs)
    for name in t.column_names:
        if t[name].null_count:
            raise ValueError(f"{t[name].null_count} null(s) in {name!r}")
    if t.num_rows == 0:
        raise ValueError("no rows")
    idx, label, pred = (t[c].to_numpy().astype(np.int64) for c in ("sample_index", "label", "pred"))
    order = np.argsort(idx, kind="stable")
    if len(idx) > 1 and (np.diff(idx[order]) == 0).any():
        raise ValueError("duplicate sample_index values")
    classes, inverse, total = np.unique(label, return_inverse=True, return_counts=True)
    correct = np.bincount(inverse[label == pred], minlength=len(classes))
    fp = sha256_bytes(idx[order].tobytes() + label[order].tobytes())
    values = {a[len(ATTR_PREFIX):]: t[a].to_numpy().astype(np.int64) for a in attrs}
    fairness = (add_intervals(run_fairness(label, pred, values, backend), label, pred, values)
                if attrs else [])
    return {"classes": classes, "correct": correct.astype(np.int64),
            "total": total.astype(np.int64), "n_rows": len(label), "fingerprint": fp,
            "attribute_fingerprints": {a: sha256_bytes(v[order].tobytes())
                                       for a, v in sorted(values.items())},
            "fairness": fairness}


def _read_task(store: Store, backend: str, row: dict[str, Any]) -> dict[str, Any]:
    rid, sha = row["run_id"], row["sha"]
    skip = lambda why, detail="": {"run_id": rid, "status": why, "detail": detail,  # noqa: E731
                                   "payload": b""}
    try:
        data = store.read_verified_predictions(rid, sha)
    except FileNotFoundError:
        return skip(f"no {PREDICTIONS}")
    except OSError as e:
        return skip(f"unreadable {PREDICTIONS}", str(e)[:100])
    except ValueError:
        return skip("checksum mismatch", f"run.json's predictions_sha256 does not match the "
                    f"bytes of {PREDICTIONS}")
    try:
        summary = summarise_predictions(data, backend)
    except Exception as e:  # noqa: BLE001 - any parse failure makes the run incomplete
        return skip(f"unreadable {PREDICTIONS}", f"{type(e).__name__}: {str(e)[:100]}")
    return {"run_id": rid, "status": "ok", "detail": "", "payload": pickle.dumps(summary)}


def read_store(store: Store, backend: str = "fairlearn", progress: bool = False
               ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]], ReadSummary]:
    """Every complete run: (runs table, per-run summaries, read summary).

    The runs table has one row per complete run: ``run_id, dataset, study_key, role, arch,
    teacher_arch, temperature, alpha, seed, n_test, test_accuracy`` (a fraction, run.json's)
    and ``attributes`` (the sensitive attributes in its predictions), ``predictions_sha256``.
    Each per-run summary also carries run.json's ``class_names`` and ``attribute_values``
    (``None`` when the run did not record them).
    """
    import ray.data

    summary = ReadSummary(store=redact(store.uri))
    records = read_run_records(store, summary)
    per_run: dict[str, dict[str, Any]] = {}
    if records:
        from kdray.analysis._ray import init_ray, progress_bars

        init_ray()
        items = [{"run_id": rid, "sha": rec["predictions_sha256"]}
                 for rid, rec in sorted(records.items())]
        with progress_bars(progress):
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            for row in ds.map(lambda r: _read_task(store, backend, r)).iter_rows():
                if row["status"] == "ok":
                    per_run[row["run_id"]] = pickle.loads(row["payload"])
                else:
                    summary.skip(row["run_id"], row["status"], row["detail"])
    rows = []
    for rid in sorted(per_run):
        rec, s = records[rid], per_run[rid]
        spec, acc = rec["spec"], rec.get("test_accuracy")
        s["class_names"] = rec.get("class_names")
        s["attribute_values"] = rec.get("attribute_values")
        if acc is None:  # a run.json from before test_accuracy was recorded
            acc = s["correct"].sum() / s["n_rows"]
        ds_only = spec["role"] == "ds"
        rows.append({"run_id": rid, "dataset": spec["dataset"], "study_key": study_key(spec),
                     "role": spec["role"], "arch": spec["arch"],
                     "teacher_arch": spec.get("teacher_arch") if ds_only else None,
                     "temperature": float(spec["temperature"]) if ds_only else np.nan,
                     "alpha": float(spec["alpha"]) if spec.get("alpha") is not None else np.nan,
                     "seed": int(spec["seed"]), "n_test": s["n_rows"],
                     "test_accuracy": float(acc),
                     "attributes": ",".join(f["attribute"] for f in s["fairness"]),
                     "predictions_sha256": records[rid]["predictions_sha256"]})
        summary.n_rows += s["n_rows"]
    summary.n_read = len(rows)
    runs = pd.DataFrame(rows, columns=["run_id", "dataset", "study_key", "role", "arch",
                                       "teacher_arch", "temperature", "alpha", "seed", "n_test",
                                       "test_accuracy", "attributes", "predictions_sha256"])
    runs["teacher_arch"] = runs["teacher_arch"].astype(object)
    return runs, per_run, summary


def attribute_difference(store: Store, a: tuple[str, str], b: tuple[str, str],
                         attribute: str) -> str:
    """How two runs' values of one sensitive attribute differ, compared by value.

    ``a`` and ``b`` are ``(run_id, predictions_sha256)`` of two runs on the same test samples.
    Reads their ``sample_index`` and ``attr_<attribute>`` columns (checksum-verified), aligns
    them by sample_index and describes the differing samples (for the study check's error).
    """
    column = ATTR_PREFIX + attribute

    def values(run_id: str, sha: str) -> tuple[np.ndarray, np.ndarray] | None:
        pf = pq.ParquetFile(io.BytesIO(store.read_verified_predictions(run_id, sha)))
        if column not in pf.schema_arrow.names:
            return None
        t = pf.read(columns=["sample_index", column])
        idx = t["sample_index"].to_numpy()
        order = np.argsort(idx, kind="stable")
        return idx[order], t[column].to_numpy()[order]

    va, vb = values(*a), values(*b)
    if va is None or vb is None:
        return f"run {a[0] if va is None else b[0]} has no column {column!r}"
    differ = np.flatnonzero(va[1] != vb[1])
    if not len(differ):
        return "their values are equal"
    i = differ[0]
    return (f"{len(differ)} of {len(va[1])} test samples differ, e.g. sample_index "
            f"{va[0][i]}: {va[1][i]} vs {vb[1][i]}")

