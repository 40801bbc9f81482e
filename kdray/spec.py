"""Run identity: a :class:`RunSpec` names everything a result depends on.

A spec is a frozen dataclass of the fields that define a result, and :func:`resolve` is the
one function that fills the recipe in: fields left as ``None`` take the paper's recipe
(Appendix C) for the spec's dataset and architecture, so the resolved spec, and therefore
its ``run_id``, says exactly how the run was trained::

    >>> spec = RunSpec(dataset="trifeature-shape", role="teacher", arch="resnet20", seed=0)
    >>> spec.epochs, spec.batch_size, spec.lr, spec.lr_milestones
    (100, 64, 0.1, (30, 60, 90))

``run_id`` is a readable prefix plus the first 8 hex digits of the SHA-256 of the canonical
JSON (sorted keys, no spaces) of every field, e.g. ``cifar100-resnet20-ds-T4-a0.8-s0-1f3a9c2e``.
Teachers and non-distilled students (NDS) have no temperature or alpha, so their run_id
never depends on them: extending a sweep to new temperatures reuses them. A control
(:meth:`RunSpec.control_spec`) is an NDS trained at the step a DS gives its CE term: one per
seed and alpha, with no teacher and no temperature.

Fields added to RunSpec after runs were stored (:data:`ADDED_FIELDS`) are left out of the
spec's dict, and so of its canonical JSON and run_id, while they hold their default: every
run stored before a field existed keeps its run_id, and a spec that sets the field gets a
new one. What a valid value of each field is: ``kdray/checks.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

# ROLES: the roles, in table order (imported from here too)
from kdray.checks import DS_ONLY, ROLE_FIELDS, ROLES, check, check_for_role, json_type  # noqa: F401

# The paper's recipe for LeNet-5, ResNets and DenseNets (Appendix C): SGD, lr 0.1,
# weight decay 1e-3, lr / 10 at epochs 30, 60, 90 of 100. Batch size is per dataset.
# ViT-family and BERT-family models follow their own papers (DeiT/TinyViT; BERT fine-tuning).
FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    "cnn": dict(epochs=100, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3,
                lr_schedule="multistep", lr_milestones=(30, 60, 90), warmup_epochs=0.0),
    # DeiT (Touvron et al. 2021) / TinyViT (Wu et al. 2022) from-scratch ImageNet recipe:
    # AdamW, lr 5e-4 per 512 images, weight decay 0.05, 5 warm-up epochs, cosine, 300 epochs.
    "vit": dict(epochs=300, optimizer="adamw", lr=5e-4, momentum=None, weight_decay=0.05,
                lr_schedule="cosine", lr_milestones=(), warmup_epochs=5.0, batch_size=512),
    # BERT fine-tuning (Devlin et al. 2019, Sec. 4): AdamW, lr 2e-5, batch 32, 3 epochs,
    # linear decay after 10% warm-up, weight decay 0.01.
    "bert": dict(epochs=3, optimizer="adamw", lr=2e-5, momentum=None, weight_decay=0.01,
                 lr_schedule="linear", lr_milestones=(), warmup_epochs=0.3, batch_size=32),
}
PAPER_EPOCHS = 100

# Fields added after runs were stored, with their defaults. ``to_dict`` (the canonical JSON,
# the run_id, the cohort key, run.json's "spec") omits such a field while it holds its
# default, so the identity of every spec that does not use it is what it was before the
# field existed. A new field goes here with its default, at the end of the dataclass.
ADDED_FIELDS: dict[str, Any] = {
    "deterministic": False,  # deterministic CUDA algorithms (kdray.training.gpu.set_determinism)
    "micro_batch_size": None,  # gradient accumulation over micro-batches (kdray.training.loop)
    "kd_t_squared": True,  # the T^2 factor on the KD term (kdray.training.step.kd_loss)
}
# Recipe fields of the KD term: only DS runs use them, so teachers and NDS always hold the
# default and serve the DS runs of every value (the analysis lists them in each such study).
KD_FIELDS: dict[str, Any] = {f: ADDED_FIELDS[f] for f in ("kd_t_squared",)}


STEP_DIGITS = 12  # significant digits of a control's derived lr and weight decay


def control_step(lr: float, weight_decay: float, alpha: float) -> tuple[float, float]:
    """The step a DS at ``alpha`` gives its CE term, as an NDS recipe: ``(lr x (1 - alpha),
    weight_decay / (1 - alpha))`` (SGD's coupled weight decay: ``(1 - alpha) x lr x (grad +
    wd' x w)`` with ``wd' = wd / (1 - alpha)`` is ``lr' x (grad + wd' x w)``), rounded to
    :data:`STEP_DIGITS` significant digits so that a run.json reads ``0.02``."""
    check_for_role("control", "alpha", alpha)
    return _round(lr * (1.0 - alpha)), _round(weight_decay / (1.0 - alpha))


def nds_step(lr: float, weight_decay: float, alpha: float) -> tuple[float, float]:
    """:func:`control_step`'s inverse: the NDS recipe's lr and weight decay of a control."""
    return _round(lr / (1.0 - alpha)), _round(weight_decay * (1.0 - alpha))


def _round(x: float) -> float:
    return float(f"{x:.{STEP_DIGITS}g}")


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run's result.

    Parameters
    ----------
    dataset : registry name (``kdray.data``), e.g. ``"cifar100"``.
    role : ``"teacher"``, ``"nds"`` (non-distilled student), ``"control"`` (an NDS at the
        step a DS gives its CE term: lr x (1 - alpha), weight decay / (1 - alpha); the
        T -> infinity limit of eq. 6 without T^2) or ``"ds"`` (distilled student).
    arch : registry name of the trained model (``kdray.models``).
    seed : seed of the run; DS seed k distils from teacher seed k.
    teacher_arch, temperature, alpha : DS only (a control has an alpha). The loss is
        ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE`` (paper eq. 6
        with Hinton et al.'s T^2 factor; ``kd_t_squared=False`` drops the factor).
    data : dataset options (e.g. ``image_size``); unset options take the dataset's defaults.
    epochs, batch_size, optimizer, lr, momentum, weight_decay, lr_schedule, lr_milestones,
    lr_gamma, warmup_epochs, augmentation, pretrained : the recipe; ``None`` means the
        paper's recipe for this dataset and architecture. When ``epochs`` is set and
        ``lr_milestones`` is not, the paper's milestones (30/60/90 of 100) scale with it.
    deterministic : on a GPU, deterministic algorithms only (cuDNN deterministic,
        ``torch.use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG``); CPU runs are
        deterministic either way. Part of the run's identity only when True.
    micro_batch_size : accumulate each batch's gradient over micro-batches of this many
        samples (a big model on a small GPU); ``None``: the whole batch at once. Equal
        gradients up to float rounding for models without batch statistics (LayerNorm:
        ViT, BERT); with BatchNorm each micro-batch has its own statistics, a different
        training (``kdray.training.step.backward_in_micro_batches``). Part of the identity
        only when set.
    kd_t_squared : DS only: multiply the KD term by T^2 (Hinton et al. 2015; the default) or
        not (the paper's eq. 6 as written, ``False``). Teachers and NDS have no KD term, so
        theirs is always the default: a DS spec and its ``teacher_spec()`` name the same
        teacher either way. Part of the identity only when False.

    Constructing a spec resolves it (:func:`resolve`); a bad field raises ``ValueError``
    naming it (``temperature: -1 is not > 0``).
    """

    dataset: str
    role: str
    arch: str
    seed: int = 0
    teacher_arch: str | None = None
    temperature: float | None = None
    alpha: float | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    lr_schedule: str | None = None
    lr_milestones: tuple[int, ...] | None = None
    lr_gamma: float = 0.1
    warmup_epochs: float | None = None
    augmentation: str | None = None
    pretrained: bool = False
    # fields added later (ADDED_FIELDS): out of the identity while at their default
    deterministic: bool = False
    micro_batch_size: int | None = None
    kd_t_squared: bool = True

    def __post_init__(self) -> None:
        for name, value in resolve(self).items():  # a frozen dataclass: set them once, here
            object.__setattr__(self, name, value)

    # -- identity ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field, but the :data:`ADDED_FIELDS` that hold their
        default (``from_dict`` inverts it)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if not _at_added_default(f.name, getattr(self, f.name))}
        d["data"] = dict(self.data)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        """The spec of a JSON object (``to_dict``'s inverse); a ``ValueError`` naming the
        field for anything else (a list, a missing field, a field of the wrong JSON type)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"RunSpec: {json_type(d)} is not an object of RunSpec fields")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"RunSpec: unknown field(s) {unknown}; expected among {sorted(names)}")
        missing = [k for k in ("dataset", "role", "arch") if k not in d]
        if missing:
            raise ValueError(f"RunSpec: no field(s) {missing}")
        for key, ok, wanted in _JSON_TYPES:
            if key in d and not isinstance(d[key], ok):
                raise ValueError(f"{key}: {json_type(d[key])} is not {wanted}")
        d = dict(d)
        if d.get("lr_milestones") is not None:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)

    def canonical_json(self) -> str:
        return _canonical_json(self.to_dict())

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(self.canonical_json().encode()).hexdigest()[:8]
        parts = [self.dataset, self.arch, self.role]
        if self.role == "ds":
            parts += [f"T{_fmt(self.temperature)}"]
        if self.alpha is not None:
            parts += [f"a{_fmt(self.alpha)}"]
        parts += [f"s{self.seed}", digest]
        return "-".join(parts)

    @property
    def cohort_key(self) -> str:
        """What the runs of one cohort share: every field but temperature and alpha.

        DS runs with equal keys distil from the same teacher run, draw the same batches and
        augmentation and start from the same weights, so they train in lockstep sharing
        one teacher forward per batch (``kdray.training.loop.Trainer``).
        """
        d = self.to_dict()
        d.pop("temperature"), d.pop("alpha")
        return _canonical_json(d)

    def teacher_spec(self) -> "RunSpec":
        """The teacher a DS run distils from: same dataset, options, recipe and seed."""
        if self.role != "ds":
            raise ValueError(f"role: teacher_spec() needs a 'ds' spec, got {self.role!r}")
        return dataclasses.replace(self, role="teacher", arch=self.teacher_arch,
                                   teacher_arch=None, temperature=None, alpha=None)

    def control_spec(self, alpha: float | None = None) -> "RunSpec":
        """The matched control of a DS (at its alpha) or of an NDS (at ``alpha``): the
        student's arch, seed, data and recipe, trained on CE alone at the lr and weight decay
        of :func:`control_step`. ``ValueError`` for alpha 1 (lr 0) or another role."""
        if self.role not in ("ds", "nds"):
            raise ValueError(f"role: control_spec() needs a 'ds' or 'nds' spec, got {self.role!r}")
        alpha = self.alpha if alpha is None else alpha
        if alpha is None:
            raise ValueError("alpha: the control of an NDS needs an alpha, got None")
        lr, weight_decay = control_step(self.lr, self.weight_decay, alpha)
        return dataclasses.replace(self, role="control", teacher_arch=None, temperature=None,
                                   alpha=alpha, lr=lr, weight_decay=weight_decay, **KD_FIELDS)

    def replace(self, **changes: Any) -> "RunSpec":
        return dataclasses.replace(self, **changes)


# the fields whose JSON type from_dict checks before resolving (resolve checks the values)
_JSON_TYPES = (("dataset", str, "a string"), ("role", str, "a string"), ("arch", str, "a string"),
               ("teacher_arch", (str, type(None)), "a string or null"),
               ("data", (Mapping, type(None)), "an object"),
               ("lr_milestones", (list, tuple, type(None)), "a list"))


# ----------------------------------------------------------------------------------------
# Resolution: the one function that checks a spec and fills its recipe in
# ----------------------------------------------------------------------------------------
def resolve(spec: RunSpec) -> dict[str, Any]:
    """Every field of ``spec``, checked, with its dataset options and recipe filled in.

    1. identity: the role, the dataset and model names and the seed are valid; temperature,
       alpha and teacher arch are set exactly for DS runs; the models take the dataset's
       modality;
    2. ``data``: the dataset's registered defaults, then the spec's options (unknown keys
       refused, the dataset's own check applied);
    3. the recipe: every unset field takes the paper's recipe for the model's family
       (:data:`FAMILY_RECIPES`), with the dataset's batch size and augmentation; a spec that
       sets ``epochs`` keeps the schedule's shape (milestones and warm-up scale with it);
    4. the resolved recipe is checked. ``ValueError`` names the first bad field.
    """
    from kdray.data import DATASETS
    from kdray.models import MODELS

    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    _check_identity(fields)
    dataset = DATASETS[fields["dataset"]]
    for key in ("arch",) + (("teacher_arch",) if fields["role"] == "ds" else ()):
        modality = MODELS[fields[key]].modality
        if modality != dataset.modality:
            raise ValueError(f"{key}: {fields[key]!r} takes {modality} input but dataset "
                             f"{fields['dataset']!r} is {dataset.modality}")
    fields["data"] = _dataset_options(fields["dataset"], fields["data"], dataset)
    fields.update(_recipe(fields, dataset, MODELS[fields["arch"]].family))
    _check_recipe(fields)
    return fields


def _check_identity(fields: dict[str, Any]) -> None:
    check("role", fields["role"])
    check("dataset", fields["dataset"])
    role = fields["role"]
    own = ROLE_FIELDS[role]
    for key in ("arch",) + tuple(k for k in own if k == "teacher_arch"):
        check(key, fields[key])
    check("seed", fields["seed"])
    for key in DS_ONLY:
        if key in own and fields[key] is None:
            raise ValueError(f"{key}: a {role!r} spec needs {key}, got None")
        if key not in own and fields[key] is not None:
            takers = " and ".join(repr(r) for r, f in ROLE_FIELDS.items() if key in f)
            raise ValueError(f"{key}: {fields[key]!r} is set on a {role!r} spec; "
                             f"only {takers} specs take it")
    for key in own:
        if key != "teacher_arch":
            check_for_role(role, key, fields[key])
            fields[key] = float(fields[key])
    if role != "ds":  # a recipe shared with DS runs: a teacher, NDS or control has no KD term
        fields.update(KD_FIELDS)


def _dataset_options(name: str, options: Mapping[str, Any] | None, dataset) -> "_FrozenDict":
    """The dataset's defaults updated with ``options``; unknown keys refused."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(dataset.defaults))
    if unknown:
        raise ValueError(f"data: unknown option(s) {unknown} for dataset {name!r}; "
                         f"expected keys among {sorted(dataset.defaults)}")
    merged = {**dataset.defaults, **opts}
    if dataset.check is not None:
        try:
            dataset.check(dict(merged))
        except ValueError as e:
            raise ValueError(f"data: {e}") from None
    return _FrozenDict(sorted(merged.items()))


def _recipe(fields: dict[str, Any], dataset, family: str) -> dict[str, Any]:
    """The recipe fields the spec left unset, from its family's recipe and the dataset; a
    spec whose ``epochs`` differ from the recipe's gets milestones and warm-up scaled."""
    recipe = dict(FAMILY_RECIPES[family])
    recipe.setdefault("batch_size", dataset.batch_size)
    recipe["augmentation"] = dataset.augmentation
    e, e0 = fields["epochs"], recipe["epochs"]
    out: dict[str, Any] = {}
    if isinstance(e, int) and not isinstance(e, bool) and e != e0:
        # shorter (or longer) runs keep the schedule's shape: milestones and warm-up scale
        if fields["lr_milestones"] is None:
            scaled = sorted({max(1, round(m * e / e0)) for m in recipe["lr_milestones"]})
            out["lr_milestones"] = tuple(m for m in scaled if m < e)
        if fields["warmup_epochs"] is None:
            out["warmup_epochs"] = recipe["warmup_epochs"] * e / e0
    for key, default in recipe.items():
        if fields[key] is None and key not in out:
            out[key] = default
    if fields["role"] == "control":  # the recipe's step as a DS at alpha gives it to CE
        lr, wd = control_step(recipe["lr"], recipe["weight_decay"], fields["alpha"])
        out.update({k: v for k, v in (("lr", lr), ("weight_decay", wd)) if k in out})
    return out


def _check_recipe(fields: dict[str, Any]) -> None:
    for key in ("epochs", "batch_size", "optimizer", "lr_schedule", "augmentation"):
        check(key, fields[key])
    for key in ("lr", "weight_decay", "lr_gamma", "warmup_epochs", "momentum"):
        if key != "momentum" or fields[key] is not None:
            check(key, fields[key])
            fields[key] = float(fields[key])
    milestones = tuple(fields["lr_milestones"])
    for m in milestones:
        check("lr_milestones", m)
    if list(milestones) != sorted(set(milestones)):
        raise ValueError(f"lr_milestones: {milestones!r} is not strictly increasing")
    fields["lr_milestones"] = milestones
    for key in ("pretrained", "deterministic", "kd_t_squared"):
        if not isinstance(fields[key], bool):
            raise ValueError(f"{key}: {fields[key]!r} is not a bool")
    if fields["micro_batch_size"] is not None:
        check("micro_batch_size", fields["micro_batch_size"])
        if fields["micro_batch_size"] > fields["batch_size"]:
            raise ValueError(f"micro_batch_size: {fields['micro_batch_size']} is not <= "
                             f"batch_size {fields['batch_size']}")


def _at_added_default(name: str, value: Any) -> bool:
    """Is ``name`` a field added later that holds its default (left out of the identity)?"""
    if name not in ADDED_FIELDS:
        return False
    default = ADDED_FIELDS[name]
    return value is default or (type(value) is type(default) and value == default)


class _FrozenDict(dict):
    """A hashable, read-only dict for the ``data`` options (keeps specs hashable)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(_canonical_json(self))

    def _readonly(self, *a, **k):
        raise TypeError("RunSpec.data is read-only; use spec.replace(data={...})")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly  # type: ignore

    def __reduce__(self):
        return (_FrozenDict, (list(self.items()),))
