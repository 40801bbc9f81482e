"""Convergence of a Trifeature recipe: a teacher's, NDS's or DS cohort's test accuracy after
every epoch, and how much it changed over the last 20 % of the epochs.

    python benchmarks/trifeature_convergence.py --image-size 24 --per-combination 5 --epochs 100
    python benchmarks/trifeature_convergence.py --roles teacher --seed 1 ...
    python benchmarks/trifeature_convergence.py --roles ds --temperatures 1 4 10 \
        --teacher-store STORE --no-kd-t-squared ...     # DS runs of a teacher in STORE

The paper's recipe (kdray's defaults for ResNet-20 and LeNet-5 on Trifeature: SGD lr 0.1,
weight decay 1e-3, batch 64, crop + flip, lr / 10 at 30/60/90 % of the epochs) at the image
size, data size and epochs given, on the CPU without Ray. ``sweeps/trifeature_paper.py`` says
how its recipe was chosen with it. One JSON line per epoch, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kdray import RunSpec
from kdray.store import Store
from kdray.trial.steps import load_data, load_teacher
from kdray.training.loop import Trainer

ARCH = {"teacher": "resnet20", "nds": "lenet5", "ds": "lenet5"}


def epochs_of(specs: list[RunSpec], data_dir: str, teacher_store: str | None,
              eval_every: int = 1):
    """Train ``specs`` (one run, or a DS cohort whose teacher is in ``teacher_store``) and
    yield ``(epoch, {run_id: (metrics, test accuracy)}, seconds)`` after every
    ``eval_every``-th epoch and the last; a run that diverged gets ``({"failed": why}, nan)``
    once."""
    data = load_data(specs[0], data_dir)
    teacher = load_teacher(specs[0], Store(teacher_store), data) if specs[0].role == "ds" else None
    trainer = Trainer(specs, data, device="cpu", num_workers=0, teacher=teacher)
    reported: set[str] = set()
    while trainer.epoch < specs[0].epochs and trainer.active:
        t0 = time.perf_counter()
        metrics = trainer.train_epoch()
        seconds = time.perf_counter() - t0
        if trainer.epoch % eval_every and trainer.epoch < specs[0].epochs:
            continue  # test accuracy only every eval_every epochs, and after the last
        preds, labels = trainer.predict_all()
        out = {rid: (m, float((preds[rid] == labels).mean())) for rid, m in metrics.items()}
        out.update({rid: ({"failed": why}, float("nan")) for rid, why in trainer.failed.items()
                    if rid not in out and rid not in reported})
        reported.update(trainer.failed)
        yield trainer.epoch, out, seconds


def specs_of(role: str, args, data: dict) -> list[RunSpec]:
    common = dict(dataset=args.dataset, role=role, arch=ARCH[role], seed=args.seed,
                  epochs=args.epochs, data=data, lr=args.lr)
    if role != "ds":
        return [RunSpec(**common)]
    return [RunSpec(**common, teacher_arch="resnet20", temperature=t, alpha=args.alpha,
                    kd_t_squared=args.kd_t_squared) for t in args.temperatures]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="trifeature-shape")
    p.add_argument("--roles", nargs="+", default=["nds", "teacher"], choices=sorted(ARCH))
    p.add_argument("--image-size", type=int, default=24)
    p.add_argument("--per-combination", type=int, default=5, help="train + test images per combination")
    p.add_argument("--test-per-combination", type=int, default=2)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=1,
                   help="test accuracy after every N-th epoch (and the last)")
    p.add_argument("--lr", type=float, default=None, help="default: the paper's (0.1)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0, 10.0],
                   help="ds: the cohort's temperatures")
    p.add_argument("--alpha", type=float, default=0.8, help="ds")
    p.add_argument("--no-kd-t-squared", dest="kd_t_squared", action="store_false",
                   help="ds: the KD term without the T^2 factor (the paper's eq. 6 as printed)")
    p.add_argument("--teacher-store", default=None,
                   help="ds: a store holding the teacher (same seed, data and recipe)")
    args = p.parse_args()
    if "ds" in args.roles and not args.teacher_store:
        p.error("--roles ds needs --teacher-store: a store with the teacher of the same seed, "
                "data options and recipe (e.g. one --roles teacher trained by a sweep)")
    torch.set_num_threads(args.threads)
    data = {"image_size": args.image_size, "per_combination": args.per_combination,
            "test_per_combination": args.test_per_combination}
    for role in args.roles:
        specs = specs_of(role, args, data)
        accs: dict[str, list[float]] = {s.run_id: [] for s in specs}
        for epoch, runs, seconds in epochs_of(specs, args.data_dir, args.teacher_store,
                                               args.eval_every):
            for rid, (metrics, acc) in runs.items():
                accs[rid].append(acc)
                print(json.dumps({"run_id": rid, "epoch": epoch, "test_accuracy": round(acc, 4),
                                  "seconds": round(seconds, 2), **metrics}), flush=True)
        for spec in specs:
            print(json.dumps(summary(spec, accs[spec.run_id], args, data)), flush=True)


def summary(spec: RunSpec, accs: list[float], args, data: dict) -> dict:
    """A run's final test accuracy and its change over the last 20 % of the epochs."""
    evaluated = [e for e in range(1, args.epochs + 1) if e % args.eval_every == 0 or e == args.epochs]
    if len(accs) == len(evaluated):  # from the first evaluation at or before 80 % of the epochs
        start = max([i for i, e in enumerate(evaluated) if e <= round(0.8 * args.epochs)] or [0])
        last = accs[start:]
    else:
        last = [float("nan")]
    return {"run_id": spec.run_id, "role": spec.role, "temperature": spec.temperature, **data,
            "epochs": args.epochs, "seed": args.seed, "lr": spec.lr,
            "final_test_accuracy": accs[-1] if accs else float("nan"),
            "change_over_last_20pct_points": round(100 * abs(last[-1] - last[0]), 2)}


if __name__ == "__main__":
    main()
