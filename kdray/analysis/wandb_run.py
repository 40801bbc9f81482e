"""Render the table model as one W&B run (job_type ``analysis``): every table a
``wandb.Table``, every figure a ``wandb.Image``, so it can be browsed without the store.

A table of up to ``wandb.Table.MAX_ROWS`` rows is logged to the run's history under its name
(``significance``, ``class_tests``, ``tables/<pair>``, ``disagreement/<name>`` ...); a larger
one (run.log would truncate it) goes into the run's ``analysis-tables`` artifact, where W&B
keeps up to ``wandb.Table.MAX_ARTIFACT_ROWS`` rows; the output files always hold them whole.
Nothing secret is logged: the store URI is redacted and no credentials are read here.
"""

from __future__ import annotations

import io
import os
import sys

import pandas as pd

from kdray.analysis.model import Report


def _table(df: pd.DataFrame):
    import wandb

    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].fillna("").astype(str)
    return wandb.Table(dataframe=df.reset_index(drop=True))


def log_run(report: Report, pngs: dict[str, bytes], mode: str, project: str,
            dir: str | None = None) -> str | None:
    """Log the report to one W&B run, written under ``dir`` (where the sweep's runs are;
    offline: ``{dir}/wandb/offline-run-*``); returns its id (``None`` when disabled, or
    with a warning when W&B cannot start: the files are already written)."""
    if mode == "disabled":
        return None
    import wandb
    from PIL import Image

    try:
        if dir:
            os.makedirs(dir, exist_ok=True)
        run = wandb.init(project=project, job_type="analysis", mode=mode, config=report.config,
                         dir=dir)
    except Exception as e:  # noqa: BLE001 - the files are written; W&B is a copy
        print(f"analysis: warning: W&B {mode} run not started ({type(e).__name__}: {e}); "
              f"the outputs are in {report.config.get('out')}", file=sys.stderr)
        return None
    try:
        small = [t for t in report.tables if len(t.frame) <= wandb.Table.MAX_ROWS]
        large = [t for t in report.tables if len(t.frame) > wandb.Table.MAX_ROWS]
        payload = {t.name: _table(t.frame) for t in small}
        titles = {f.name: f.title for f in report.figures}
        for name, png in sorted(pngs.items()):
            payload[f"figures/{name.removesuffix('.png')}"] = wandb.Image(
                Image.open(io.BytesIO(png)).convert("RGB"), caption=titles.get(name, name))
        run.log(payload)
        if large:
            art = wandb.Artifact(f"analysis-tables-{run.id}", type="analysis-tables")
            for t in large:
                art.add(_table(t.frame), t.name)
            run.log_artifact(art)
        run.summary.update(report.summary)
        return run.id
    finally:
        run.finish()
