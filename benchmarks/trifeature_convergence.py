"""Convergence of a Trifeature recipe: a teacher's, NDS's or DS cohort's test accuracy after
every epoch, and how much it changed over the last 20 % of the epochs.

    python benchmarks/trifeature_convergence.py --image-size 24 --per-combination 5 --epochs 100
    python benchmarks/trifeature_convergence.py --roles teacher --seeds 1 ...
    python benchmarks/trifeature_convergence.py --roles ds --temperatures 1 4 10 \
        --teacher-store STORE --no-kd-t-squared ...     # DS runs of a teacher in STORE
    python benchmarks/trifeature_convergence.py --epochs 100 --stop-after 2 ...   # its start

The paper's recipe (kdray's defaults for ResNet-20 and LeNet-5 on Trifeature: SGD lr 0.1,
weight decay 1e-3, batch 64, crop + flip, lr / 10 at 30/60/90 % of the epochs) at the image
size, data size and epochs given, on the CPU without Ray. docs/recipes.md says how
``sweeps/trifeature_paper.py``'s recipe was chosen with it. One JSON line per epoch, then a summary line.

Each epoch's line also says whether the network still computes anything: ``logit_spread``,
the standard deviation of its logits over the test images (mean over classes; 0 when it
gives every image the same output, which is chance accuracy), and, for a model naming the
layers that feed its ReLUs (LeNet-5's ``relu_layers``), ``units_alive``: per layer, the share
of units (channels of a convolution) positive on some test image. A unit that is never
positive passes no gradient, so it stays dead.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import torch

from kdray import RunSpec
from kdray.cli_help import command_parser, one_value, description_of
from kdray.store import Store
from kdray.trial.steps import load_data, load_teacher
from kdray.training.loop import Trainer

ARCH = {"teacher": "resnet20", "nds": "lenet5", "ds": "lenet5"}


class Health:
    """Hooks on the models of a prediction pass: ``units_alive`` and ``logit_spread`` (the
    module's docstring) per run, read by ``close``, which removes the hooks."""

    def __init__(self, models: dict[str, torch.nn.Module]) -> None:
        self.alive: dict[str, dict[str, torch.Tensor]] = {rid: {} for rid in models}
        self.logits: dict[str, list[torch.Tensor]] = {rid: [] for rid in models}
        self.hooks = [model.register_forward_hook(partial(self._logits, rid))
                      for rid, model in models.items()]
        for rid, model in models.items():
            self.hooks += [getattr(model, name).register_forward_hook(partial(self._units, rid, name))
                           for name in getattr(model, "relu_layers", ())]

    def _units(self, rid: str, name: str, module, inputs, out: torch.Tensor) -> None:
        positive = (out.flatten(2).amax(2) if out.dim() == 4 else out) > 0  # per channel
        seen = self.alive[rid].get(name)
        self.alive[rid][name] = positive.any(0) if seen is None else seen | positive.any(0)

    def _logits(self, rid: str, module, inputs, out: torch.Tensor) -> None:
        self.logits[rid].append(out.float())

    def close(self) -> dict[str, dict]:
        for hook in self.hooks:
            hook.remove()
        return {rid: {"logit_spread": round(torch.cat(logits).std(0).mean().item(), 4),
                      **({"units_alive": {name: round(a.float().mean().item(), 3)
                                          for name, a in self.alive[rid].items()}}
                         if self.alive[rid] else {})}
                for rid, logits in self.logits.items()}


def epochs_of(specs: list[RunSpec], data_dir: str, teacher_store: str | None,
              eval_every: int = 1, stop_after: int | None = None):
    """Train ``specs`` (one run, or a DS cohort whose teacher is in ``teacher_store``) and
    yield ``(epoch, {run_id: (metrics, test accuracy)}, seconds)`` after every
    ``eval_every``-th epoch and the last; a run that diverged gets ``({"failed": why}, nan)``
    once. ``stop_after``: train only the first epochs of the schedule (its lr steps stay
    those of ``specs[0].epochs``)."""
    data = load_data(specs[0], data_dir)
    teacher = load_teacher(specs[0], Store(teacher_store), data) if specs[0].role == "ds" else None
    trainer = Trainer(specs, data, device="cpu", num_workers=0, teacher=teacher)
    reported: set[str] = set()
    last = min(stop_after or specs[0].epochs, specs[0].epochs)
    while trainer.epoch < last and trainer.active:
        t0 = time.perf_counter()
        metrics = trainer.train_epoch()
        seconds = time.perf_counter() - t0
        if trainer.epoch % eval_every and trainer.epoch < last:
            continue  # test accuracy only every eval_every epochs, and after the last
        health = Health({s.run_id: s.model for s in trainer.active})
        preds, labels = trainer.predict_all()
        health = health.close()
        out = {rid: ({**m, **health[rid]}, float((preds[rid] == labels).mean()))
               for rid, m in metrics.items()}
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


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/trifeature_convergence.py", description_of(__doc__))
    p.add_argument("--dataset", default="trifeature-shape", metavar="NAME",
                   help="trifeature-shape or trifeature-texture")
    p.add_argument("--roles", nargs="+", default=["nds", "teacher"], choices=sorted(ARCH),
                   metavar="ROLE", help="teacher, nds, ds")
    p.add_argument("--image-size", type=int, default=24, metavar="PX", help="image size")
    p.add_argument("--per-combination", type=int, default=5, metavar="N",
                   help="train + test images per combination")
    p.add_argument("--test-per-combination", type=int, default=2, metavar="N",
                   help="test images per combination")
    p.add_argument("--epochs", type=int, default=100, metavar="N", help="the schedule's epochs")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="train only the first N epochs of the --epochs schedule")
    p.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0], metavar="S",
                   help="the seed: one value")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="default: $KDRAY_DATA_DIR")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads")
    p.add_argument("--eval-every", type=int, default=1, metavar="N",
                   help="test accuracy after every N-th epoch (and the last)")
    p.add_argument("--lr", type=float, default=None, help="default: the paper's (0.1)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0, 10.0], metavar="T",
                   help="ds: the cohort's temperatures")
    p.add_argument("--alphas", "--alpha", nargs="+", type=float, default=[0.8], metavar="A",
                   help="ds: the cohort's alpha, one value")
    p.add_argument("--no-kd-t-squared", dest="kd_t_squared", action="store_false",
                   help="ds: the KD term without the T^2 factor (the paper's eq. 6 as printed)")
    p.add_argument("--teacher-store", default=None, metavar="URI",
                   help="ds: a store holding the teacher (same seed, data and recipe)")
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    args.seed, args.alpha = one_value(p, "--seeds", args.seeds), one_value(p, "--alphas", args.alphas)
    if "ds" in args.roles and not args.teacher_store:
        p.error("--roles ds needs --teacher-store: a store with the teacher of the same seed, "
                "data options and recipe (e.g. one --roles teacher trained by a sweep)")
    if args.stop_after is not None and args.stop_after < 1:
        p.error(f"--stop-after: {args.stop_after} is not an epoch count >= 1")
    torch.set_num_threads(args.threads)
    data = {"image_size": args.image_size, "per_combination": args.per_combination,
            "test_per_combination": args.test_per_combination}
    for role in args.roles:
        specs = specs_of(role, args, data)
        accs: dict[str, list[float]] = {s.run_id: [] for s in specs}
        for epoch, runs, seconds in epochs_of(specs, args.data_dir, args.teacher_store,
                                               args.eval_every, args.stop_after):
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
            "epochs": args.epochs, "stop_after": args.stop_after, "seed": args.seed, "lr": spec.lr,
            "final_test_accuracy": accs[-1] if accs else float("nan"),
            "change_over_last_20pct_points": round(100 * abs(last[-1] - last[0]), 2)}


if __name__ == "__main__":
    main()
