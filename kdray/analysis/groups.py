"""Which runs are compared with which: studies, experiments, reference runs, seed pairs.

A distilled student (DS) run belongs to the experiment
``(dataset, study, teacher_arch, student_arch = arch, temperature, alpha)``. Its references:

- NDS: the non-distilled student runs with the same dataset, study and ``arch``;
- teacher: the teacher runs with the same dataset, study and ``arch == teacher_arch``;
- control: the control runs (the NDS at the step a DS at ``alpha`` gives its CE term) with
  the same dataset, study, ``arch`` and ``alpha``.

A *study* is the part of the spec that is neither the model nor the seed: every field of
:class:`kdray.spec.RunSpec` except ``arch``, ``teacher_arch``, ``seed``, ``role``,
``temperature`` and ``alpha`` (:data:`STUDY_FIELDS`, derived from the dataclass, so a field
added to RunSpec later is part of the study at once); a control's lr and weight decay count
as the NDS recipe's they derive from (:func:`kdray.spec.nds_step`). Two runs of the same
dataset and architecture trained with different options or recipes (a one-epoch smoke test
beside the full run) are different studies and are never compared. When no architecture of
a dataset was trained in two studies (the usual case, even where different pairs have their
own recipes, e.g. ResNets and ViTs on ImageNet) the ``study`` label is ``""`` and nothing
extra is printed; otherwise the label names the fields that differ, e.g. ``epochs=1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pandas as pd

from kdray.spec import KD_FIELDS, ROLES, RunSpec, nds_step

# What names a model within a study; every other RunSpec field is the study.
MODEL_FIELDS = ("arch", "teacher_arch", "seed", "role", "temperature", "alpha")
STUDY_FIELDS = tuple(f.name for f in dataclasses.fields(RunSpec) if f.name not in MODEL_FIELDS)
ROLE_ORDER = {role: i for i, role in enumerate(ROLES)}  # teacher, NDS, control, DS: tables' order
# The two comparisons of a DS run (paper eq. 8): name, the reference role, and the label of
# its count in the tables (#SC: significant classes against the NDS, #TC: the teacher)
COMPARISONS = (("ds_vs_nds", "nds", "#SC"), ("ds_vs_teacher", "teacher", "#TC"))


def slug(*parts: object) -> str:
    """A file-name-safe name from parts (``cifar100_resnet56-resnet20_a0.8``); empty parts
    (the ``""`` study) are left out."""
    text = "_".join(str(p) for p in parts if p not in ("", None))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def study_key(spec: Mapping[str, Any]) -> str:
    """Canonical JSON of the spec's study fields (:data:`STUDY_FIELDS`; a field missing from an
    older run.json counts as ``null``)."""
    fields = {f: spec.get(f) for f in STUDY_FIELDS}
    if spec.get("role") == "control" and None not in (fields["lr"], fields["weight_decay"]):
        fields["lr"], fields["weight_decay"] = nds_step(fields["lr"], fields["weight_decay"],
                                                        spec["alpha"])
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


def share_references(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table with each teacher and NDS run listed in every study it serves.

    A teacher or NDS has no KD term, so its spec holds the default of every KD field
    (:data:`kdray.spec.KD_FIELDS`, e.g. ``kd_t_squared``), and DS runs that set one (the
    paper's eq. 6 without the T^2 factor) are in a study of their own. Such a study gets a
    copy of each teacher/NDS row whose study fields are equal but for the KD fields; the row
    stays in its own study only where DS runs of that study exist or no other study takes it.
    """
    ds_keys = set(runs.loc[runs["role"] == "ds", "study_key"])
    takers: dict[str, list[str]] = {}
    for key in sorted(ds_keys):
        own = _without_kd(key)
        if own != key:
            takers.setdefault(own, []).append(key)
    if not takers:
        return runs
    refs = runs["role"] != "ds"
    parts, moved = [runs], pd.Series(False, index=runs.index)
    for own, keys in takers.items():
        served = refs & (runs["study_key"] == own)
        parts += [runs[served].assign(study_key=k) for k in keys]
        moved |= served & (own not in ds_keys)
    parts[0] = runs[~moved]
    return pd.concat(parts, ignore_index=True)


def _without_kd(key: str) -> str:
    """A study key with its KD fields as a teacher's run.json has them (absent: null)."""
    d = json.loads(key)
    d.update({f: None for f in KD_FIELDS if f in d})
    return study_key(d)


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
    control: tuple[str, ...] = ()

    @property
    def family(self) -> tuple[str, str, str, str]:
        """What the teacher-vs-NDS comparison and a paper table share (T and alpha vary)."""
        return (self.dataset, self.study, self.teacher_arch, self.student_arch)


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
        control = runs[same & (runs["role"] == "control") & (runs["arch"] == s_arch)
                       & (runs["alpha"] == alpha)]
        out.append(Experiment(dataset, study, t_arch, s_arch, float(temp), float(alpha),
                              _sorted_ids(sub), _sorted_ids(nds), _sorted_ids(teacher),
                              _sorted_ids(control)))
    return sorted(out, key=lambda e: (e.family, e.alpha, e.temperature))


def without(exps: list[Experiment], run_ids: set[str]) -> list[Experiment]:
    """The experiments with ``run_ids`` (collapsed runs) left out of their DS, NDS,
    teacher and control runs; an experiment whose every DS run is left out stays, with no DS runs, so
    its row still shows (``n = 0 of 5``)."""
    def keep(ids: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(r for r in ids if r not in run_ids)

    return [dataclasses.replace(e, ds=keep(e.ds), nds=keep(e.nds), teacher=keep(e.teacher),
                                control=keep(e.control)) for e in exps]


@dataclass(frozen=True)
class PairTable:
    """The experiments of one paper table (Tables 1, 5, 6, 7): one teacher/student pair of one
    dataset and study at one alpha, in temperature order."""

    dataset: str
    study: str
    teacher_arch: str
    student_arch: str
    alpha: float
    experiments: tuple[Experiment, ...]

    @property
    def teacher(self) -> tuple[str, ...]:
        return self.experiments[0].teacher

    @property
    def nds(self) -> tuple[str, ...]:
        return self.experiments[0].nds

    @property
    def control(self) -> tuple[str, ...]:
        """The controls at the table's alpha (none when the study trained none)."""
        return self.experiments[0].control


def pair_tables(exps: list[Experiment]) -> list[PairTable]:
    """The experiments grouped by pair and alpha (in the order of :func:`experiments`)."""
    by_table: dict[tuple, list[Experiment]] = {}
    for e in exps:
        by_table.setdefault(e.family + (e.alpha,), []).append(e)
    return [PairTable(*key, tuple(es)) for key, es in by_table.items()]


def model_key(dataset: str, study: str, role: str, arch: str, teacher_arch: Any,
              temperature: Any, alpha: Any) -> tuple:
    """The key of one model cell (its seeds vary): teacher and NDS have ``None`` for
    ``teacher_arch``, ``temperature`` and ``alpha``, a control for the first two (NaN, None
    and "" alike); numbers are floats."""
    def part(x: Any) -> Any:
        if x is None or x == "" or (isinstance(x, float) and x != x):
            return None
        return float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) else str(x)

    return (dataset, study, role, arch, part(teacher_arch), part(temperature), part(alpha))


def unreferenced(runs: pd.DataFrame, exps: list[Experiment]) -> pd.DataFrame:
    """Teacher, NDS and control runs that no experiment compares with (listed, never dropped
    silently)."""
    used = {r for e in exps for r in e.ds + e.nds + e.teacher + e.control}
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
            raise ValueError(f"runs of {study_name(dataset, study)} were evaluated on "
                             f"different test samples (sample_index/label differ); expected "
                             f"one test set: {desc}")


def check_same_attributes(runs: pd.DataFrame, fingerprints: Mapping[str, Mapping[str, str]],
                          explain: Callable[[str, str, str], str] | None = None) -> None:
    """Within a study, every run has the same sensitive attributes with the same values.

    ``fingerprints[run_id][attribute]`` is the SHA-256 of the attribute's values in
    sample_index order (computed on the workers); equal digests mean equal values, so every
    run is compared with the study's first run by value. ``explain(a, b, attribute)`` may
    describe a difference (e.g. which samples differ). Raises ``ValueError`` naming the two
    runs and the attribute.
    """
    for (dataset, study), sub in runs.groupby(["dataset", "study"], sort=True):
        ids = sorted(sub["run_id"])
        first = fingerprints[ids[0]]
        for rid in ids[1:]:
            other = fingerprints[rid]
            for attr in sorted(set(first) | set(other)):
                if first.get(attr) != other.get(attr):
                    why = explain(ids[0], rid, attr) if explain else ""
                    raise ValueError(
                        f"runs {ids[0]} and {rid} of {study_name(dataset, study)} disagree on "
                        f"the sensitive attribute {attr!r} of their test samples"
                        + (f": {why}" if why else "") + "; the runs of one study must be "
                        "evaluated on the same samples with the same attributes")


def study_name(dataset: str, study: str) -> str:
    """A study's name in text: the dataset, and the study label when there is one."""
    return dataset + (f" [{study}]" if study else "")


@dataclass(frozen=True)
class Names:
    """What one study calls its classes and its attributes' values (from run.json).

    ``classes[c]`` names class index ``c``; ``attributes[a][v]`` names value ``v`` of sensitive
    attribute ``a``. Runs written before run.json recorded them have none: then a class is
    ``"class c"`` and an attribute value its integer.
    """

    classes: tuple[str, ...] | None = None
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def class_name(self, c: int) -> str:
        c = int(c)
        return self.classes[c] if self.classes and 0 <= c < len(self.classes) else f"class {c}"


def study_names(runs: pd.DataFrame, recorded: Mapping[str, tuple[Any, Any]]
                ) -> dict[tuple[str, str], Names]:
    """One :class:`Names` per (dataset, study) from the runs that recorded names.

    ``recorded[run_id] = (class_names or None, attribute_values or None)``. Runs that did not
    record names take the study's; two runs of one study that name things differently are an
    error (their labels would not mean the same classes): ``ValueError`` naming both runs.
    """
    out = {}
    for (dataset, study), sub in runs.groupby(["dataset", "study"], sort=True):
        classes, attributes, source = None, {}, {}
        for rid in sorted(sub["run_id"]):
            cls, values = recorded[rid]
            items = [("class_names", None, cls)] + [
                ("attribute_values", a, v) for a, v in sorted((values or {}).items())]
            for what, attr, names in items:
                if names is None:
                    continue
                names = tuple(names)
                have = classes if attr is None else attributes.get(attr)
                if have is None:
                    source[(what, attr)] = rid
                    if attr is None:
                        classes = names
                    else:
                        attributes[attr] = names
                elif have != names:
                    label = what + (f"[{attr!r}]" if attr else "")
                    raise ValueError(
                        f"runs {source[(what, attr)]} and {rid} of {study_name(dataset, study)} "
                        f"record different {label} in run.json ({list(have)[:5]} vs "
                        f"{list(names)[:5]}); the runs of one study must label classes alike")
        out[(dataset, study)] = Names(classes, attributes)
    return out

