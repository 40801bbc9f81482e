"""Staging: the sweep driver puts every downloadable dataset into the store, once, before
any trial starts, so that no node downloads it (the store as the datasets' mirror,
``kdray.data.fetch``)."""

from __future__ import annotations

import json
import os
from typing import Callable

from kdray.data import DATASETS, load_dataset
from kdray.store import Store


def stage_datasets(specs, store: Store, root: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print) -> dict[str, str]:
    """Put every downloadable dataset the runs ``specs`` need into ``{store}/datasets`` once:
    each is loaded here (the sweep driver, on the head node) with the store as a publishing
    mirror, which downloads it only when neither this node nor the store has it.

    Returns ``{run_id: why}`` for the runs whose dataset could not be staged (they cannot
    run); the others are unaffected."""
    failed: dict[str, str] = {}
    by_data: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        if DATASETS.get(spec.dataset) is not None and DATASETS[spec.dataset].downloadable:
            key = (spec.dataset, json.dumps(dict(spec.data), sort_keys=True))
            by_data.setdefault(key, []).append(spec.run_id)
    for (name, options), run_ids in sorted(by_data.items()):
        try:
            load_dataset(name, json.loads(options), root, mirror=store, publish=True)
        except Exception as e:  # noqa: BLE001 - reported per run, the others still run
            why = f"dataset {name} could not be staged into the store: {type(e).__name__}: {e}"
            log(f"  {why}")
            failed.update({run_id: why for run_id in run_ids})
    staged = sorted({n for (n, _), ids in by_data.items() if not set(ids) & set(failed)})
    if staged:
        log(f"datasets: {', '.join(staged)} in {store.uri}/datasets (every node reads them there)")
    return failed
