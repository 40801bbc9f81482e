"""Which runs are compared with which: studies, experiments, reference runs, seed pairs.

A distilled student (DS) run belongs to the experiment
``(dataset, study, teacher_arch, student_arch = arch, temperature, alpha)``. Its references:

- NDS: the non-distilled student runs with the same dataset, study and ``arch``;
- teacher: the teacher runs with the same dataset, study and ``arch == teacher_arch``.

A *study* is the part of the spec that is neither the model nor the seed: the dataset
options (``data``) and the training recipe (:data:`STUDY_FIELDS`). Two runs of the same
dataset and architecture trained with different options or recipes (a one-epoch smoke test
beside the full run) are different studies and are never compared. When no architecture of
a dataset was trained in two studies (the usual case, even where different pairs have their
own recipes, e.g. ResNets and ViTs on ImageNet) the ``study`` label is ``""`` and nothing
extra is printed; otherwise the label names the fields that differ, e.g. ``epochs=1``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

STUDY_FIELDS = ("data", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                "lr_schedule", "lr_milestones", "lr_gamma", "warmup_epochs", "augmentation",
                "pretrained")

RUN_COLUMNS = ["run_id", "dataset", "study", "role", "arch", "teacher_arch", "temperature",
               "alpha", "seed"]


def study_key(spec: Mapping[str, Any]) -> str:
    """Canonical JSON of the spec's dataset options and recipe (:data:`STUDY_FIELDS`)."""
    return json.dumps({f: spec.get(f) for f in STUDY_FIELDS}, sort_keys=True,
                      separators=(",", ":"), default=str)


def label_studies(runs: pd.DataFrame) -> pd.Series:
    """A short ``study`` label per run: ``""`` where no architecture of its dataset was trained
    in two studies, else the differing fields (``"epochs=1"``), falling back to a hash when
    that is not unique."""
    labels = pd.Series("", index=runs.index, dtype=object)
    for _, sub in runs.groupby("dataset", sort=False):
        keys = sorted(sub["study_key"].unique())
        if len(keys) < 2 or not (sub.groupby("arch")["study_key"].nunique() > 1).any():
            continue
        flat = [_flatten(json.loads(k)) for k in keys]
        differ = sorted(f for f in set().union(*flat)
                        if len({json.dumps(d.get(f), default=str) for d in flat}) > 1)
        names = {k: ",".join(f"{f}={d.get(f)}" for f in differ)[:60] for k, d in zip(keys, flat)}
        if len(set(names.values())) < len(keys):
            names = {k: "study-" + hashlib.sha256(k.encode()).hexdigest()[:6] for k in keys}
        labels[sub.index] = sub["study_key"].map(names)
    return labels


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass(frozen=True)
class Experiment:
    """One (dataset, study, teacher/student pair, T, alpha) and its runs (run_ids by seed order)."""

    dataset: str
    study: str
    teacher_arch: str
    student_arch: str
    temperature: float
    alpha: float
    ds: tuple[str, ...]
    nds: tuple[str, ...]
    teacher: tuple[str, ...]

    @property
    def family(self) -> tuple[str, str, str, str]:
        """What the teacher-vs-NDS comparison and a paper table share (T and alpha vary)."""
        return (self.dataset, self.study, self.teacher_arch, self.student_arch)

    def key(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "study": self.study, "teacher_arch": self.teacher_arch,
                "student_arch": self.student_arch, "temperature": self.temperature,
                "alpha": self.alpha}

    def title(self) -> str:
        study = f" [{self.study}]" if self.study else ""
        return (f"{self.dataset}{study} {self.teacher_arch}/{self.student_arch} "
                f"T={self.temperature:g} alpha={self.alpha:g}")


def _sorted_ids(sub: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sub.sort_values(["seed", "run_id"])["run_id"])


def check_unique_seeds(runs: pd.DataFrame) -> None:
    """Two complete runs with the same spec up to the run_id would be counted twice: refuse."""
    cols = ["dataset", "study", "role", "arch", "teacher_arch", "temperature", "alpha", "seed"]
    dup = runs[runs.duplicated(cols, keep=False)]
    if len(dup):
        groups = dup.groupby(cols, dropna=False)["run_id"].apply(list).tolist()
        raise ValueError(f"runs with the same dataset, study, role, arch, T, alpha and seed "
                         f"(each seed must appear once per group): {groups[:5]}")


def experiments(runs: pd.DataFrame) -> list[Experiment]:
    """Every experiment that has at least one DS run, sorted by dataset, pair, alpha, T."""
    out = []
    ds = runs[runs["role"] == "ds"]
    keys = ["dataset", "study", "teacher_arch", "arch", "temperature", "alpha"]
    for (dataset, study, t_arch, s_arch, temp, alpha), sub in ds.groupby(keys, sort=True):
        same = (runs["dataset"] == dataset) & (runs["study"] == study)
        nds = runs[same & (runs["role"] == "nds") & (runs["arch"] == s_arch)]
        teacher = runs[same & (runs["role"] == "teacher") & (runs["arch"] == t_arch)]
        out.append(Experiment(dataset, study, t_arch, s_arch, float(temp), float(alpha),
                              _sorted_ids(sub), _sorted_ids(nds), _sorted_ids(teacher)))
    return sorted(out, key=lambda e: (e.family, e.alpha, e.temperature))


def unreferenced(runs: pd.DataFrame, exps: list[Experiment]) -> pd.DataFrame:
    """Teacher and NDS runs that no experiment compares with (listed, never dropped silently)."""
    used = {r for e in exps for r in e.ds + e.nds + e.teacher}
    return runs[~runs["run_id"].isin(used)]


def seed_pairs(f_runs: tuple[str, ...], g_runs: tuple[str, ...],
               seeds: Mapping[str, int]) -> list[tuple[int, str, str]]:
    """(seed, f, g) for every seed both sides have: DS seed k distils from teacher seed k."""
    g_by_seed = {seeds[g]: g for g in g_runs}
    return [(seeds[f], f, g_by_seed[seeds[f]]) for f in f_runs if seeds[f] in g_by_seed]


def check_same_samples(runs: pd.DataFrame, fingerprints: Mapping[str, str]) -> None:
    """All runs of one dataset and study must be evaluated on the same test samples.

    ``fingerprints[run_id]`` is the SHA-256 of the run's (sample_index, label) pairs sorted by
    sample_index (computed on the workers). Raises ``ValueError`` naming the runs otherwise.
    """
    for (dataset, study), sub in runs.groupby(["dataset", "study"], sort=True):
        by_fp: dict[str, list[str]] = {}
        for rid in sub["run_id"]:
            by_fp.setdefault(fingerprints[rid], []).append(rid)
        if len(by_fp) > 1:
            parts = sorted(by_fp.values(), key=len, reverse=True)
            desc = "; ".join(f"{len(p)} run(s) on test set #{i + 1}: {', '.join(p[:6])}"
                             + (" ..." if len(p) > 6 else "") for i, p in enumerate(parts))
            name = dataset + (f" [{study}]" if study else "")
            raise ValueError(f"runs of {name} were evaluated on different test samples "
                             f"(sample_index/label differ); expected one test set: {desc}")
