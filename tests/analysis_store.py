"""Write kdray stores directly, in the real on-disk format, for the analysis tests.

Each run gets ``runs/{run_id}/predictions.parquet`` (``kdray.store.predictions_table``) and a
``run.json`` with a ``spec`` dict, metrics and the correct ``predictions_sha256``, exactly
what a trial writes; no training, no Ray.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

import numpy as np

from kdray.store import Store, predictions_table

RECIPE = dict(epochs=100, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
              weight_decay=1e-3, lr_schedule="multistep", lr_milestones=[30, 60, 90],
              lr_gamma=0.1, warmup_epochs=0.0, augmentation="crop_flip", pretrained=False)


def make_spec(dataset: str, role: str, arch: str, seed: int, *, teacher_arch: str | None = None,
              temperature: float | None = None, alpha: float | None = None,
              data: Mapping[str, Any] | None = None, **recipe: Any) -> dict[str, Any]:
    """A RunSpec-shaped dict (the analysis reads only the dict, never the registries)."""
    return {"dataset": dataset, "role": role, "arch": arch, "seed": seed,
            "teacher_arch": teacher_arch, "temperature": temperature, "alpha": alpha,
            "data": dict(data or {}), **RECIPE, **recipe}


def run_id_of(spec: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    parts = [spec["dataset"], spec["arch"], spec["role"]]
    if spec["role"] == "ds":
        parts += [f"T{spec['temperature']:g}"]
    if spec.get("alpha") is not None:
        parts += [f"a{spec['alpha']:g}"]
    return "-".join(parts + [f"s{spec['seed']}", digest])


def write_run(store: Store | str, spec: Mapping[str, Any], label: np.ndarray, pred: np.ndarray,
              *, sample_index: np.ndarray | None = None,
              attributes: Mapping[str, np.ndarray] | None = None,
              record: Mapping[str, Any] | None = None) -> str:
    """Write one complete run; returns its run_id. ``record``: more run.json fields (e.g.
    ``class_names``, ``attribute_values``), or ones that replace the computed ones."""
    store = Store(store) if isinstance(store, str) else store
    rid = run_id_of(spec)
    label, pred = np.asarray(label), np.asarray(pred)
    idx = np.arange(len(label)) if sample_index is None else np.asarray(sample_index)
    sha = store.write_predictions(rid, predictions_table(rid, spec, idx, label, pred, attributes))
    classes = np.unique(label)
    store.write_run_json(rid, {
        "spec": dict(spec), "run_id": rid, "test_accuracy": float(np.mean(label == pred)),
        "per_class_accuracy": {str(c): float(np.mean(pred[label == c] == c)) for c in classes},
        "n_test": int(len(label)), "predictions_sha256": sha, "wall_time_s": 1.0,
        **(record or {})})
    return rid


def preds_for_accuracy(label: np.ndarray, class_acc: Sequence[float],
                       rng: np.random.Generator, n_classes: int | None = None) -> np.ndarray:
    """Predictions whose accuracy on class c is exactly round(class_acc[c] * n_c) / n_c; wrong
    predictions go to a random other class."""
    label = np.asarray(label)
    k = n_classes or int(label.max()) + 1
    pred = label.copy()
    for c in range(k):
        where = np.flatnonzero(label == c)
        n_wrong = len(where) - int(round(float(np.clip(class_acc[c], 0, 1)) * len(where)))
        wrong = rng.choice(where, size=n_wrong, replace=False)
        pred[wrong] = (c + rng.integers(1, k, size=n_wrong)) % k
    return pred


def write_study(store: Store | str, *, dataset: str = "toy", n_classes: int = 10,
                per_class: int = 100, seeds: Sequence[int] = range(5),
                temperatures: Sequence[float] = (2.0, 4.0), alphas: Sequence[float] = (0.8,),
                teacher_acc: Sequence[float] | float = 0.85,
                nds_acc: Sequence[float] | float = 0.75,
                ds_acc: Mapping[float, Sequence[float] | float] | Sequence[float] | float = 0.78,
                noise: float = 0.02, teacher_arch: str = "resnet56", student_arch: str = "resnet20",
                attributes: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                roles: Sequence[str] = ("teacher", "nds", "ds"),
                record: Mapping[str, Any] | None = None, **spec_extra: Any
                ) -> dict[str, list[str]]:
    """A synthetic study: teacher, NDS and DS runs (every T, alpha) for every seed.

    Class accuracies are the given per-class values (or one value for all classes) plus
    ``N(0, noise)`` per (run, class). ``ds_acc`` may map a temperature to its accuracies.
    ``record``: more run.json fields for every run. Returns ``{role: [run_id, ...]}``.
    """
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(n_classes), per_class)
    vec = lambda a: np.broadcast_to(np.asarray(a, float), (n_classes,))  # noqa: E731
    made: dict[str, list[str]] = {"teacher": [], "nds": [], "ds": []}

    def one(spec: dict, acc: Sequence[float] | float) -> str:
        acc_v = vec(acc) + rng.normal(0, noise, n_classes)
        return write_run(store, spec, label, preds_for_accuracy(label, acc_v, rng),
                         attributes=attributes, record=record)

    for s in seeds:
        if "teacher" in roles:
            made["teacher"].append(one(make_spec(dataset, "teacher", teacher_arch, s,
                                                 **spec_extra), teacher_acc))
        if "nds" in roles:
            made["nds"].append(one(make_spec(dataset, "nds", student_arch, s, **spec_extra),
                                   nds_acc))
        if "ds" in roles:
            for a in alphas:
                for t in temperatures:
                    acc = ds_acc.get(t, 0.78) if isinstance(ds_acc, Mapping) else ds_acc
                    made["ds"].append(one(make_spec(dataset, "ds", student_arch, s,
                                                    teacher_arch=teacher_arch, temperature=t,
                                                    alpha=a, **spec_extra), acc))
    return made


def control_spec(dataset: str, arch: str, seed: int, alpha: float) -> dict[str, Any]:
    """The spec dict of a control: the NDS recipe's lr and weight decay, derived."""
    from kdray.spec import control_step

    lr, weight_decay = control_step(RECIPE["lr"], RECIPE["weight_decay"], alpha)
    return make_spec(dataset, "control", arch, seed, alpha=alpha, lr=lr,
                     weight_decay=weight_decay)


def preds_for_rates(label: np.ndarray, group: np.ndarray, tpr: Sequence[float],
                    fpr: Sequence[float]) -> np.ndarray:
    """Binary predictions whose true- and false-positive rate in group g are exactly
    round(tpr[g] * positives) / positives and round(fpr[g] * negatives) / negatives (the
    first samples of each (group, label) cell are the predicted positives)."""
    label, group = np.asarray(label), np.asarray(group)
    pred = np.zeros_like(label)
    for g in np.unique(group):
        for y, rate in ((1, tpr[g]), (0, fpr[g])):
            where = np.flatnonzero((group == g) & (label == y))
            pred[where[:int(round(rate * len(where)))]] = 1
    return pred


def write_fairness_study(store: Store | str, dataset: str, gap: Mapping[str, Any], *,
                         seeds: Sequence[int] = range(3), per_cell: int = 250,
                         teacher_arch: str = "resnet50", student_arch: str = "resnet18",
                         alpha: float = 0.8) -> dict[str, list[str]]:
    """A binary study with one attribute ``young`` whose EOD is planted exactly.

    Group 0 has TPR 0.9 and FPR 0.1; group 1 TPR 0.9 - gap and FPR 0.1 + gap / 2, so that
    EOD = gap and DPD = gap / 4 (``per_cell`` samples per (group, label)). ``gap`` maps
    ``"teacher"``, ``"nds"``, optionally ``"control"`` (the NDS at the step a DS at ``alpha``
    gives its CE term, ``kdray.spec.control_step``) and each DS temperature (a float) to a
    gap; seed s adds
    0.004 * s (so seeds differ), or a gap may be one value per seed (a list, used as it is),
    where ``None`` is a constant predictor (class 0 for every sample: EOD = DPD = 0, at
    chance). Returns ``{role: [run_id, ...]}``."""
    label = np.tile(np.repeat([0, 1], per_cell), 2)
    young = np.repeat([0, 1], 2 * per_cell)
    made: dict[str, list[str]] = {"teacher": [], "nds": [], "ds": [], "control": []}
    for s in seeds:
        specs = [("teacher", make_spec(dataset, "teacher", teacher_arch, s), gap["teacher"]),
                 ("nds", make_spec(dataset, "nds", student_arch, s), gap["nds"])]
        if "control" in gap:
            specs.append(("control", control_spec(dataset, student_arch, s, alpha),
                          gap["control"]))
        specs += [("ds", make_spec(dataset, "ds", student_arch, s, teacher_arch=teacher_arch,
                                   temperature=t, alpha=alpha), g)
                  for t, g in gap.items() if isinstance(t, float)]
        for role, spec, g in specs:
            g = g[s] if isinstance(g, Sequence) else g + 0.004 * s
            pred = (np.zeros_like(label) if g is None else
                    preds_for_rates(label, young, [0.9, 0.9 - g], [0.1, 0.1 + g / 2]))
            made[role].append(write_run(store, spec, label, pred, attributes={"young": young}))
    return made
