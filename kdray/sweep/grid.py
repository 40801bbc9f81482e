"""A study as a grid: datasets x teacher/student pairs x temperatures x alphas x seeds.

An :class:`Experiment` names one block of the paper (e.g. Table 1's CIFAR-100
ResNet-56/ResNet-20 column); :func:`expand` turns a list of them into the runs of the two
stages, without duplicates:

- teachers: one per (dataset, teacher arch, seed), stage 1;
- NDS: one per (dataset, student arch, seed), stage 1;
- controls (``Experiment(controls=True)``): one per (dataset, student arch, seed, alpha),
  stage 1: the NDS trained at the step a DS at that alpha gives its CE term
  (``RunSpec.control_spec``); they need no teacher;
- DS: one per (dataset, pair, T, alpha, seed), stage 2, distilling from teacher seed k
  for DS seed k (``RunSpec.teacher_spec``).

Every axis is validated before anything runs; errors name the axis and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from kdray.checks import expected, problem, valid
from kdray.models import MODELS
from kdray.spec import RunSpec


@dataclass(frozen=True)
class Experiment:
    """One block of a study. ``recipe`` overrides RunSpec recipe fields (e.g. ``epochs``);
    ``data`` sets dataset options for every dataset of the block (e.g. ``image_size``);
    ``controls``: train each NDS's matched control at every alpha too."""

    name: str
    datasets: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]  # (teacher arch, student arch)
    temperatures: tuple[float, ...]
    alphas: tuple[float, ...] = (0.8,)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    recipe: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    controls: bool = False

    def __post_init__(self) -> None:
        for key in ("datasets", "pairs", "temperatures", "alphas", "seeds"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        validate(self)

    def replace(self, **changes: Any) -> "Experiment":
        import dataclasses
        return dataclasses.replace(self, **changes)


def _where(exp: Experiment, axis: str) -> str:
    return f"{exp.name}: {axis}" if exp.name else axis


def validate(exp: Experiment) -> None:
    """Raise ``ValueError`` naming the axis and value of the first problem in ``exp``."""
    for axis in ("datasets", "pairs", "temperatures", "alphas", "seeds"):
        values = getattr(exp, axis)
        if not values:
            raise ValueError(f"{_where(exp, axis)}: empty; expected at least one value")
        seen = set()
        for v in values:
            if v in seen:
                raise ValueError(f"{_where(exp, axis)}: {v!r} appears twice")
            seen.add(v)
    for d in exp.datasets:
        if not valid("dataset", d):
            raise ValueError(f"{_where(exp, 'datasets')}: {d!r} {problem('dataset', d)}")
    for pair in exp.pairs:
        if len(pair) != 2:
            raise ValueError(f"{_where(exp, 'pairs')}: {pair!r} is not a (teacher, student) pair")
        for a in pair:
            if not valid("arch", a):
                raise ValueError(f"{_where(exp, 'pairs')}: {a!r} {problem('arch', a)}")
    for axis, field_ in (("temperatures", "temperature"), ("alphas", "alpha"), ("seeds", "seed")):
        for v in getattr(exp, axis):
            if not valid(field_, v):
                raise ValueError(f"{_where(exp, axis)}: {v!r} is not {expected(field_)}")
    # the recipe and data options are checked by building one spec per dataset and pair
    for d in exp.datasets:
        for t, s in exp.pairs:
            try:
                ds = _spec(exp, d, "ds", s, exp.seeds[0], t, exp.temperatures[0], exp.alphas[0])
                for alpha in exp.alphas if exp.controls else ():
                    ds.control_spec(float(alpha))  # alpha 1: no control (lr x 0)
            except ValueError as e:
                raise ValueError(f"{exp.name}: {e}") from None


def _spec(exp: Experiment, dataset: str, role: str, arch: str, seed: int,
          teacher_arch: str | None = None, temperature: float | None = None,
          alpha: float | None = None) -> RunSpec:
    return RunSpec(dataset=dataset, role=role, arch=arch, seed=seed, teacher_arch=teacher_arch,
                   temperature=temperature, alpha=alpha, data=dict(exp.data), **dict(exp.recipe))


@dataclass
class Plan:
    """The runs of a study, by stage, with the experiment and W&B group of each."""

    teachers: list[RunSpec] = field(default_factory=list)
    nds: list[RunSpec] = field(default_factory=list)
    ds: list[RunSpec] = field(default_factory=list)
    controls: list[RunSpec] = field(default_factory=list)
    experiment: dict[str, str] = field(default_factory=dict)  # run_id -> experiment name
    group: dict[str, str] = field(default_factory=dict)  # run_id -> W&B group

    @property
    def stage1(self) -> list[RunSpec]:
        return self.teachers + self.nds + self.controls

    @property
    def stage2(self) -> list[RunSpec]:
        return self.ds

    @property
    def all(self) -> list[RunSpec]:
        return self.stage1 + self.stage2

    def __len__(self) -> int:
        return len(self.all)

    def counts(self) -> str:
        """``"60 runs (5 teachers, 5 NDS, 0 controls, 50 DS)"``."""
        return (f"{len(self)} runs ({len(self.teachers)} teachers, {len(self.nds)} NDS, "
                f"{len(self.controls)} controls, {len(self.ds)} DS)")


def expand(experiments: Iterable[Experiment]) -> Plan:
    """All runs of ``experiments``, deduplicated by run_id (first experiment wins the label)."""
    plan = Plan()
    seen: set[str] = set()

    def add(bucket: list[RunSpec], spec: RunSpec, exp: Experiment, group: str) -> None:
        if spec.run_id in seen:
            return
        seen.add(spec.run_id)
        bucket.append(spec)
        plan.experiment[spec.run_id] = exp.name
        plan.group[spec.run_id] = group

    experiments = list(experiments)
    names = [e.name for e in experiments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"experiments: name(s) {dupes} appear twice")
    for exp in experiments:
        for dataset in exp.datasets:
            for teacher_arch, student_arch in exp.pairs:
                group = f"{dataset}/{teacher_arch}-{student_arch}"
                for seed in exp.seeds:
                    for temperature in exp.temperatures:
                        for alpha in exp.alphas:
                            ds = _spec(exp, dataset, "ds", student_arch, seed, teacher_arch,
                                       float(temperature), float(alpha))
                            add(plan.teachers, ds.teacher_spec(), exp, group)
                            nds = _spec(exp, dataset, "nds", student_arch, seed)
                            add(plan.nds, nds, exp, group)
                            if exp.controls:
                                add(plan.controls, nds.control_spec(float(alpha)), exp, group)
                            add(plan.ds, ds, exp, group)
    return plan


def narrow(experiments: Sequence[Experiment], *, datasets: Sequence[str] | None = None,
           temperatures: Sequence[float] | None = None, alphas: Sequence[float] | None = None,
           seeds: Sequence[int] | None = None, recipe: Mapping[str, Any] | None = None,
           data: Mapping[str, Mapping[str, Any]] | None = None,
           controls: bool | None = None) -> list[Experiment]:
    """Apply command-line filters and overrides.

    ``datasets`` keeps only those datasets (each must appear in some experiment);
    ``temperatures``/``alphas``/``seeds`` replace those axes everywhere (so
    ``temperatures=[20, 30, 40]`` extends a finished study to new temperatures: teachers
    and NDS keep their run_ids and are reused). ``recipe`` updates every experiment's recipe
    and ``data`` maps a dataset name to options for it. ``controls`` (when not None) turns
    every experiment's controls on or off.
    """
    known = sorted({d for e in experiments for d in e.datasets})
    for d in datasets or ():
        if d not in known:
            raise ValueError(f"--datasets: {d!r} is not in this sweep; expected one of {known}")
    out = []
    for exp in experiments:
        changes: dict[str, Any] = {}
        if datasets:
            kept = tuple(d for d in exp.datasets if d in datasets)
            if not kept:
                continue
            changes["datasets"] = kept
        if temperatures:
            changes["temperatures"] = tuple(float(t) for t in temperatures)
        if alphas:
            changes["alphas"] = tuple(float(a) for a in alphas)
        if seeds is not None and len(seeds):
            changes["seeds"] = tuple(seeds)
        if recipe:
            changes["recipe"] = {**exp.recipe, **recipe}
        if controls is not None:
            changes["controls"] = bool(controls)
        ds_names = changes.get("datasets", exp.datasets)
        per_dataset = [dict((data or {}).get(d, {})) for d in ds_names]
        if any(per_dataset):
            # one block per dataset when datasets get different options
            for d, opts in zip(ds_names, per_dataset):
                label = exp.name if len(ds_names) == 1 else f"{exp.name}:{d}"
                out.append(exp.replace(name=label, datasets=(d,),
                                       data={**exp.data, **opts}, **{k: v for k, v in changes.items()
                                                                    if k != "datasets"}))
        else:
            out.append(exp.replace(**changes))
    return out


# ----------------------------------------------------------------------------------------
# Cohorts: the DS runs of one teacher seed that train together
# ----------------------------------------------------------------------------------------
# Most students per cohort trial, by the student's model family, and at most "imagenet" on
# ImageNet whatever the family. A cohort of n costs about (teacher share + n x student share)
# of a lone run (plan.py). The paper has at most 13 DS runs per teacher seed (T = 1-10, 20,
# 30, 40), so CIFAR-size CNNs and BERT fine-tuning (hours) take them all in one trial. On
# ImageNet a lone DS run takes days (ResNet-50 -> ResNet-18 ~6 GPU-hours, ViT-B -> TinyViT
# ~43 by the plan's estimates): 4 students keep a cohort within ~3x a lone run's duration
# (~16 h and ~69 h), so it is checkpointed and preempted as a run of days, not weeks.
COHORT_MAX: dict[str, int] = {"cnn": 13, "vit": 4, "bert": 13, "imagenet": 4}


def cohort_cap(spec: RunSpec, caps: Mapping[str, int] | None = None) -> int:
    """Most students a cohort of ``spec``'s runs takes (``caps`` overrides :data:`COHORT_MAX`)."""
    caps = {**COHORT_MAX, **(caps or {})}
    cap = caps[MODELS[spec.arch].family]
    return min(cap, caps["imagenet"]) if spec.dataset == "imagenet" else cap


def cohorts(specs: Sequence[RunSpec], caps: Mapping[str, int] | None = None,
            resume_from: Mapping[str, str] | None = None) -> list[list[RunSpec]]:
    """Group runs into cohorts: same ``RunSpec.cohort_key`` (all but temperature and alpha),
    at most :func:`cohort_cap` each, ordered by temperature then alpha. Runs that resume from
    an earlier checkpoint (``resume_from``: run_id -> checkpoint) are grouped by it, so a
    cohort resumes from one checkpoint or starts afresh. Teachers and NDS are cohorts of one."""
    groups: dict[tuple[str, str | None], list[RunSpec]] = {}
    for spec in specs:
        key = spec.cohort_key if spec.role == "ds" else spec.run_id
        groups.setdefault((key, (resume_from or {}).get(spec.run_id)), []).append(spec)
    out = []
    for members in groups.values():
        members = sorted(members, key=lambda s: (s.temperature or 0.0, s.alpha or 0.0))
        cap = cohort_cap(members[0], caps)
        out += [members[i:i + cap] for i in range(0, len(members), cap)]
    return out


def parse_cohort_sizes(items: Sequence[str]) -> dict[str, int]:
    """``["4"]`` -> every family at most 4; ``["vit=2", "cnn=8"]`` -> those families."""
    out: dict[str, int] = {}
    for item in items:
        key, _, value = item.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1 or (key and key not in COHORT_MAX):
            raise ValueError(f"--cohort-size: {item!r} is not N or FAMILY=N with N >= 1 and "
                             f"FAMILY one of {sorted(COHORT_MAX)}")
        out.update({key: n} if key else dict.fromkeys(COHORT_MAX, n))
    return out
