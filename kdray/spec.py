"""Run identity: a :class:`RunSpec` names everything a result depends on.

A spec is a frozen dataclass. Fields left as ``None`` are filled at construction from
the paper's recipe (Appendix C) for the spec's dataset and architecture, so the resolved
spec, and therefore its ``run_id``, says exactly how the run was trained::

    >>> spec = RunSpec(dataset="trifeature-shape", role="teacher", arch="resnet20", seed=0)
    >>> spec.epochs, spec.batch_size, spec.lr, spec.lr_milestones
    (100, 64, 0.1, (30, 60, 90))

``run_id`` is a readable prefix plus the first 8 hex digits of the SHA-256 of the canonical
JSON (sorted keys, no spaces) of every field, e.g. ``cifar100-resnet20-ds-T4-a0.8-s0-1f3a9c2e``.
Teachers and non-distilled students (NDS) have no temperature or alpha, so their run_id
never depends on them: extending a sweep to new temperatures reuses them.

Fields added to RunSpec after runs were stored (:data:`ADDED_FIELDS`) are left out of the
spec's dict, and so of its canonical JSON and run_id, while they hold their default: every
run stored before a field existed keeps its run_id, and a spec that sets the field gets a
new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

ROLES = ("teacher", "nds", "ds")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "linear")
AUGMENTATIONS = ("none", "crop_flip", "random_resized_crop_flip")

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
}


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
    role : ``"teacher"``, ``"nds"`` (non-distilled student) or ``"ds"`` (distilled student).
    arch : registry name of the trained model (``kdray.models``).
    seed : seed of the run; DS seed k distils from teacher seed k.
    teacher_arch, temperature, alpha : DS only. The loss is
        ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE`` (paper eq. 6).
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
        training (``kdray.training.loop.backward_in_micro_batches``). Part of the identity only when set.
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

    # -- construction ------------------------------------------------------------------
    def __post_init__(self) -> None:
        from kdray import data as data_registry
        from kdray import models as model_registry

        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)

        if self.role not in ROLES:
            raise ValueError(f"role: {self.role!r} is not one of {ROLES}")
        if self.dataset not in data_registry.DATASETS:
            raise ValueError(f"dataset: {self.dataset!r} is not a registered dataset; "
                             f"expected one of {sorted(data_registry.DATASETS)}")
        for key in ("arch",) + (("teacher_arch",) if self.role == "ds" else ()):
            name = getattr(self, key)
            if name not in model_registry.MODELS:
                raise ValueError(f"{key}: {name!r} is not a registered model; "
                                 f"expected one of {sorted(model_registry.MODELS)}")
        _check_int("seed", self.seed, minimum=0)

        if self.role == "ds":
            for key in ("teacher_arch", "temperature", "alpha"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: a 'ds' spec needs a {key}, got None")
            t = _check_number("temperature", self.temperature)
            if not t > 0:
                raise ValueError(f"temperature: {self.temperature!r} is not > 0")
            a = _check_number("alpha", self.alpha)
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"alpha: {self.alpha!r} is not in [0, 1]")
            set_("temperature", t)
            set_("alpha", a)
        else:
            for key in ("teacher_arch", "temperature", "alpha"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: {getattr(self, key)!r} is set on a "
                                     f"{self.role!r} spec; only 'ds' specs take it")

        dinfo = data_registry.DATASETS[self.dataset]
        minfo = model_registry.MODELS[self.arch]
        if minfo.modality != dinfo.modality:
            raise ValueError(f"arch: {self.arch!r} takes {minfo.modality} input but dataset "
                             f"{self.dataset!r} is {dinfo.modality}")
        if self.role == "ds":
            tinfo = model_registry.MODELS[self.teacher_arch]
            if tinfo.modality != dinfo.modality:
                raise ValueError(f"teacher_arch: {self.teacher_arch!r} takes {tinfo.modality} "
                                 f"input but dataset {self.dataset!r} is {dinfo.modality}")

        # dataset options: defaults + overrides, unknown keys refused
        opts = dict(self.data or {})
        unknown = sorted(set(opts) - set(dinfo.defaults))
        if unknown:
            raise ValueError(f"data: unknown option(s) {unknown} for dataset {self.dataset!r}; "
                             f"expected keys among {sorted(dinfo.defaults)}")
        merged = {**dinfo.defaults, **opts}
        if dinfo.check is not None:
            try:
                dinfo.check(dict(merged))
            except ValueError as e:
                raise ValueError(f"data: {e}") from None
        set_("data", _FrozenDict(sorted(merged.items())))

        # recipe: the paper's defaults for this family, dataset batch size
        recipe = dict(FAMILY_RECIPES[minfo.family])
        recipe.setdefault("batch_size", dinfo.batch_size)
        recipe["augmentation"] = dinfo.augmentation
        explicit_epochs = self.epochs is not None
        scale_schedule = explicit_epochs and self.epochs != recipe["epochs"]
        if isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and scale_schedule:
            # shorter (or longer) runs keep the schedule's shape: milestones and warm-up scale
            e, e0 = self.epochs, recipe["epochs"]
            if self.lr_milestones is None:
                scaled = sorted({max(1, round(m * e / e0)) for m in recipe["lr_milestones"]})
                set_("lr_milestones", tuple(m for m in scaled if m < e))
            if self.warmup_epochs is None:
                set_("warmup_epochs", recipe["warmup_epochs"] * e / e0)
        for key, default in recipe.items():
            if getattr(self, key) is None:
                set_(key, default)
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule: {self.lr_schedule!r} is not one of {SCHEDULES}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation: {self.augmentation!r} is not one of {AUGMENTATIONS}")
        for key in ("lr", "weight_decay", "lr_gamma", "warmup_epochs") + (
                ("momentum",) if self.momentum is not None else ()):
            v = _check_number(key, getattr(self, key))
            if v < 0 or (key == "lr" and v == 0):
                raise ValueError(f"{key}: {getattr(self, key)!r} is not "
                                 f"{'> 0' if key == 'lr' else '>= 0'}")
            set_(key, v)
        ms = tuple(self.lr_milestones)
        for m in ms:
            _check_int("lr_milestones", m, minimum=1)
        if list(ms) != sorted(set(ms)):
            raise ValueError(f"lr_milestones: {ms!r} is not strictly increasing")
        set_("lr_milestones", ms)
        for key in ("pretrained", "deterministic"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}: {getattr(self, key)!r} is not a bool")
        if self.micro_batch_size is not None:
            _check_int("micro_batch_size", self.micro_batch_size, minimum=1)
            if self.micro_batch_size > self.batch_size:
                raise ValueError(f"micro_batch_size: {self.micro_batch_size} is not <= "
                                 f"batch_size {self.batch_size}")

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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"RunSpec: unknown field(s) {unknown}; expected among {sorted(names)}")
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
            parts += [f"T{_fmt(self.temperature)}", f"a{_fmt(self.alpha)}"]
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

    def replace(self, **changes: Any) -> "RunSpec":
        return dataclasses.replace(self, **changes)


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


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {value!r} is not an integer")
    if value < minimum:
        raise ValueError(f"{name}: {value!r} is not >= {minimum}")


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} is not a finite number")
    return float(value)
