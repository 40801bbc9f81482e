"""What a valid value is, for every field of a RunSpec: each rule once, here.

Every caller asks here: :class:`~kdray.spec.RunSpec` when it resolves a spec, the sweep
scripts' flags (``kdray/sweep/flags.py``), the grid's axes (``kdray/sweep/grid.py``),
``python -m kdray.trial``'s flags (``kdray/trial/cli.py``) and the analysis reading a run.json
(``analysis/read.py``). One rule, two phrasings:

- :func:`problem` says what is wrong with a value given for the field itself
  (``"is not an integer"``, ``"is not >= 1"``, ``"is not a registered dataset; ..."``): a
  RunSpec's errors and a run.json's;
- :func:`expected` says what the field takes (``"an integer >= 1"``, ``"> 0"``,
  ``"one of [...]"``): a flag's or an axis's errors, whose parser already made a number.

Names are checked against the registries (``kdray.data``, ``kdray.models``), imported only
when a name is checked, so the analysis can check a run.json's numbers without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

ROLES = ("teacher", "nds", "ds")  # the order every table lists them in
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "linear")
AUGMENTATIONS = ("none", "crop_flip", "random_resized_crop_flip")


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
