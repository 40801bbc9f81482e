"""What a valid value is, for every field of a RunSpec: each rule once, here.

Every caller asks here: :class:`~kdray.spec.RunSpec` when it resolves a spec, the sweep
scripts' flags (``kdray/sweep/flags.py``), the grid's axes (``kdray/sweep/grid.py``),
``python -m kdray.trial``'s flags (``kdray/trial/cli.py``) and the analysis reading a run.json
(``kdray/analysis/read.py``). One rule, two phrasings:

- :func:`problem` says what is wrong with a value given for the field itself
  (``"is not an integer"``, ``"is not >= 1"``, ``"is not a registered dataset; ..."``): a
  RunSpec's errors and a run.json's;
- :func:`expected` says what the field takes (``"an integer >= 1"``, ``"> 0"``,
  ``"one of [...]"``): a flag's or an axis's errors, whose parser already made a number.

Names are checked against the registries (``kdray.data``, ``kdray.models``), imported only
when a name is checked, so the analysis can check a run.json's numbers without torch.

A committed ``run.json`` is checked here too, once for every reader of the store, so that a
file the analysis skips is also one the sweep trains again (:meth:`kdray.store.Store.status`
and ``kdray/analysis/read.py``): :func:`record_problem` (a JSON object with a string
``predictions_sha256``, its optional fields of the right type) and :func:`spec_problem` (its
``spec`` an object whose fields the analysis reads are valid, by the rules above; names are
not looked up in the registries). Each returns ``None`` when all is well, else one phrase
naming the field, the value's JSON type (:func:`json_type`) and what was expected
(``predictions_sha256 is a number, expected a string``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from kdray.vocabulary import (AUGMENTATIONS, DS_ONLY, OPTIMIZERS, ROLE_FIELDS,  # noqa: F401
                              ROLES, SCHEDULES)


@dataclass(frozen=True)
class Rule:
    """A numeric field: its type (``int``, or ``float`` for any finite number) and its range."""

    kind: type
    range: str  # as the messages say it: ">= 1", "> 0", "in [0, 1]"
    holds: Callable[[Any], bool]


_AT_LEAST_0 = Rule(float, ">= 0", lambda v: v >= 0)
RULES: dict[str, Rule] = {
    "seed": Rule(int, ">= 0", lambda v: v >= 0),
    "epochs": Rule(int, ">= 1", lambda v: v >= 1),
    "batch_size": Rule(int, ">= 1", lambda v: v >= 1),
    "micro_batch_size": Rule(int, ">= 1", lambda v: v >= 1),
    "lr_milestones": Rule(int, ">= 1", lambda v: v >= 1),  # each milestone
    "temperature": Rule(float, "> 0", lambda v: v > 0),
    "alpha": Rule(float, "in [0, 1]", lambda v: 0 <= v <= 1),
    "lr": Rule(float, "> 0", lambda v: v > 0),
    "momentum": _AT_LEAST_0, "weight_decay": _AT_LEAST_0, "lr_gamma": _AT_LEAST_0,
    "warmup_epochs": _AT_LEAST_0,
}
# what a role asks of a field beyond the field's rule: a control trains at lr x (1 - alpha)
ROLE_RULES: dict[tuple[str, str], Rule] = {
    ("control", "alpha"): Rule(float, "< 1 for a 'control' spec (it trains at lr x (1 - alpha))",
                               lambda v: v < 1)}
CHOICES: dict[str, tuple[str, ...]] = {"role": ROLES, "optimizer": OPTIMIZERS,
                                       "lr_schedule": SCHEDULES, "augmentation": AUGMENTATIONS}
REGISTRIES = {"dataset": "dataset", "arch": "model", "teacher_arch": "model"}


def registered(kind: str) -> list[str]:
    """The registered names of ``kind`` (``"dataset"`` or ``"model"``), sorted."""
    if kind == "dataset":
        from kdray.data import DATASETS

        return sorted(DATASETS)
    from kdray.models import MODELS

    return sorted(MODELS)


def _wrong_type(rule: Rule, value: Any) -> str | None:
    if isinstance(value, bool):
        return "is not an integer" if rule.kind is int else "is not a finite number"
    if rule.kind is int:
        return None if isinstance(value, int) else "is not an integer"
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    return None if ok else "is not a finite number"


def problem(field: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the RunSpec field ``field``, or None when it is valid."""
    if field in RULES:
        rule = RULES[field]
        wrong = _wrong_type(rule, value)
        if wrong is not None:
            return wrong
        return None if rule.holds(value) else f"is not {rule.range}"
    if field in CHOICES:
        return None if value in CHOICES[field] else f"is not one of {CHOICES[field]}"
    kind = REGISTRIES[field]
    names = registered(kind)
    return None if value in names else (f"is not a registered {kind}; expected one of "
                                        f"{names}")


def valid(field: str, value: Any) -> bool:
    return problem(field, value) is None


def expected(field: str) -> str:
    """What ``field`` takes, for a message about a flag or an axis: ``"an integer >= 1"``."""
    if field in RULES:
        rule = RULES[field]
        return f"an integer {rule.range}" if rule.kind is int else rule.range
    if field in CHOICES:
        return f"one of {CHOICES[field]}"
    return f"one of {registered(REGISTRIES[field])}"


def check(field: str, value: Any) -> None:
    """Raise ``ValueError("field: value is not ...")`` unless ``value`` is a valid ``field``."""
    wrong = problem(field, value)
    if wrong is not None:
        raise ValueError(f"{field}: {value!r} {wrong}")


def role_problem(role: str, field: str, value: Any) -> str | None:
    """What is wrong with ``value`` as ``field`` of a ``role`` spec (the field's rule, then
    the role's own, :data:`ROLE_RULES`), or None when it is valid."""
    wrong = problem(field, value)
    rule = ROLE_RULES.get((role, field))
    if wrong is None and rule is not None and not rule.holds(value):
        wrong = f"is not {rule.range}"
    return wrong


def check_for_role(role: str, field: str, value: Any) -> None:
    """:func:`check` with the role's own rule too (``alpha: 1.0 is not < 1 for a 'control'
    spec ...``)."""
    wrong = role_problem(role, field, value)
    if wrong is not None:
        raise ValueError(f"{field}: {value!r} {wrong}")


# ----------------------------------------------------------------------------------------
# A committed run.json, as every reader of the store checks it
# ----------------------------------------------------------------------------------------
def json_type(value: Any) -> str:
    """The JSON type of a parsed value, as a message names it: ``a list``, ``null``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    names = {str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def record_problem(record: Any) -> str | None:
    """What is wrong with a parsed run.json, apart from its spec (``None``: nothing)."""
    if not isinstance(record, dict):
        return f"run.json is {json_type(record)}, expected an object"
    if "predictions_sha256" not in record:
        return "no predictions_sha256"
    for key, required in (("predictions_sha256", True), ("model_sha256", False),
                          ("model_etag", False)):
        value = record.get(key)
        if (required or value is not None) and not isinstance(value, str):
            return f"{key} is {json_type(value)}, expected a string"
    acc = record.get("test_accuracy")
    if acc is not None and (isinstance(acc, bool) or not isinstance(acc, (int, float))
                            or not (math.isfinite(acc) and 0.0 <= acc <= 1.0)):
        return f"test_accuracy {acc!r} is not a number in [0, 1]"
    names = record.get("class_names")
    if names is not None and not _strings(names):
        return "class_names is not a list of strings"
    values = record.get("attribute_values")
    if values is not None and not (isinstance(values, dict)
                                   and all(_strings(v) for v in values.values())):
        return "attribute_values is not an object of lists of strings"
    return None


def spec_problem(spec: Any) -> str | None:
    """What is wrong with a run.json's ``spec``, by RunSpec's rules for the fields the
    analysis reads (``None``: nothing). Names must be strings; they are not looked up."""
    if not isinstance(spec, dict):
        return f"spec is {json_type(spec)}, expected an object"
    role = spec.get("role")
    own = ROLE_FIELDS.get(role, ()) if isinstance(role, str) else ()
    for key in ("dataset", "role", "arch", "seed") + own:
        if spec.get(key) is None:
            return f"{f'{role} ' if key in own else ''}spec has no {key!r}"
    for key in ("dataset", "role", "arch") + tuple(k for k in own if k == "teacher_arch"):
        if not isinstance(spec[key], str):
            return f"spec {key} is {json_type(spec[key])}, expected a string"
    for key in ("role", "seed") + tuple(k for k in own if k != "teacher_arch"):
        wrong = problem(key, spec[key])
        if wrong is not None:
            return f"spec {key} {spec[key]!r} {wrong}"
    return None


def _strings(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)
