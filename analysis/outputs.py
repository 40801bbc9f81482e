"""Write the analysis outputs (local folder or S3, through the store's pyarrow filesystem) and
log them to one W&B analysis run.

Files under ``{out}/`` (DESIGN.md "Analysis"): ``significance.csv``, ``class_tests.parquet``,
``fairness.csv``, ``disagreement/<name>.csv``, ``tables.md``, ``figures/<name>.png``. The
``study`` column appears only when some dataset has several studies (see
:mod:`analysis.groups`). Each file is written whole (``Store.write_bytes``); files of an
earlier analysis that this one does not produce are left in place.
"""

from __future__ import annotations

import io
import json
import sys
from typing import TYPE_CHECKING

import pandas as pd

from analysis.figures import disagreement_heatmap, make_figures
from kdray.store import Store, redact

if TYPE_CHECKING:
    from analysis.job import AnalysisResult

class Output:
    """Where the outputs go: ``{store}/analysis`` by default, or any URI (``--out``)."""

    def __init__(self, store: Store, out_uri: str | None = None) -> None:
        if out_uri:
            self.store, self.base = Store(out_uri), ""
        else:
            self.store, self.base = store, "analysis"
        self.written: list[str] = []

    def __str__(self) -> str:
        return redact(self.store.uri) + (f"/{self.base}" if self.base else "")

    def write(self, name: str, data: bytes) -> None:
        self.store.write_bytes(self.store.path(self.base, name), data)
        self.written.append(name)

    def csv(self, name: str, df: pd.DataFrame) -> None:
        self.write(name, df.to_csv(index=False).encode())

    def parquet(self, name: str, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        self.write(name, buf.getvalue())


def _public(df: pd.DataFrame, with_study: bool) -> pd.DataFrame:
    return df if with_study or "study" not in df.columns else df.drop(columns="study")


def write_outputs(result: "AnalysisResult", out: Output, counts: dict,
                  figures: bool = True) -> dict[str, bytes]:
    """Write every output file; returns the figures (name -> PNG) for W&B."""
    with_study = bool(result.studies)
    out.csv("significance.csv", _public(result.significance, with_study))
    out.parquet("class_tests.parquet", _public(result.class_tests, with_study))
    out.csv("fairness.csv", _public(result.fairness, with_study))
    pngs: dict[str, bytes] = {}
    for name, df in result.disagreement.items():
        out.csv(f"disagreement/{name}.csv", df)
        if figures:
            classes = result.disagreement_classes[name]
            png = disagreement_heatmap(df, classes, result.disagreement_titles[name])
            if png is not None:
                pngs[f"{name}_disagreement.png"] = png
    if figures:
        pngs.update(make_figures(result, counts))
        for name, png in sorted(pngs.items()):
            out.write(f"figures/{name}", png)
    out.write("tables.md", result.tables_md.encode())
    out.write("manifest.json", json.dumps(manifest(result), indent=1, sort_keys=True).encode())
    return pngs


def manifest(result: "AnalysisResult") -> dict:
    """What the outputs were computed from: every run read (by checksum) and the options."""
    return {"runs": dict(zip(result.runs["run_id"], result.runs["predictions_sha256"])),
            "level": result.level, "normalisation": result.normalisation}


def unchanged_tables(store_uri: str, out_uri: str | None = None, *, level: float = 0.05,
                     normalisation: str = "ratio") -> str | None:
    """``tables.md`` of the last analysis when the store's complete runs and the options are
    exactly what it read (its ``manifest.json``); ``None`` when anything changed.

    Runs are compared by the ``predictions_sha256`` in their run.json, so a run added,
    re-run or removed since then means the analysis runs again.
    """
    store = Store(store_uri)
    out = Output(store, out_uri)
    try:
        old = json.loads(out.store.read_bytes(out.store.path(out.base, "manifest.json")))
        tables = out.store.read_bytes(out.store.path(out.base, "tables.md")).decode()
    except (FileNotFoundError, OSError, ValueError):
        return None
    if (old.get("level"), old.get("normalisation")) != (level, normalisation):
        return None
    ids = store.list_run_ids()
    if sorted(ids) != sorted(old.get("runs", {})):
        return None
    statuses = store.statuses(ids)
    if any(statuses[r].predictions_sha256 != old["runs"][r] for r in ids):
        return None
    return tables


def _table(df: pd.DataFrame):
    import wandb

    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].fillna("").astype(str)
    return wandb.Table(dataframe=df.reset_index(drop=True))


def log_wandb(result: "AnalysisResult", pngs: dict[str, bytes], mode: str,
              project: str) -> str | None:
    """One W&B run (job_type ``analysis``): tables as ``wandb.Table``, figures as images.

    Returns the run's id (``None`` when disabled, or with a warning when W&B cannot start:
    the files are already written). Nothing secret is logged: the store URI is
    redacted and no credentials or API key are read here.
    """
    if mode == "disabled":
        return None
    import wandb
    from PIL import Image

    try:
        run = wandb.init(project=project, job_type="analysis", mode=mode,
                         config={"store": result.summary.store, "out": result.out,
                                 "level": result.level, "normalisation": result.normalisation})
    except Exception as e:  # noqa: BLE001 - the files are written; W&B is a copy
        print(f"analysis: warning: W&B {mode} run not started ({type(e).__name__}: {e}); "
              f"the outputs are in {result.out}", file=sys.stderr)
        return None
    try:
        payload = {"significance": _table(result.significance),
                   "fairness": _table(result.fairness),
                   "too_few_seeds": _table(result.too_few_seeds),
                   "runs": _table(result.runs.drop(columns=["predictions_sha256"],
                                                   errors="ignore"))}
        if len(result.class_tests) <= 100_000:  # W&B tables are meant for ~1e5 rows
            payload["class_tests"] = _table(result.class_tests)
        for name, png in sorted(pngs.items()):
            payload[f"figures/{name.removesuffix('.png')}"] = wandb.Image(
                Image.open(io.BytesIO(png)).convert("RGB"), caption=name)
        run.log(payload)
        run.summary.update({"runs_read": result.summary.n_read,
                            "runs_skipped": len(result.summary.skipped),
                            "prediction_rows": result.summary.n_rows})
        return run.id
    finally:
        run.finish()
