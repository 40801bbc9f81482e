"""Stage-1 convergence of a Trifeature recipe: a teacher's or NDS's test accuracy after every
epoch, and how much it changed over the last 20 % of the epochs.

    python benchmarks/trifeature_convergence.py --image-size 24 --per-combination 5 --epochs 100
    python benchmarks/trifeature_convergence.py --roles teacher --seed 1 ...

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
from kdray.trial.steps import load_data
from kdray.training.loop import Trainer

ARCH = {"teacher": "resnet20", "nds": "lenet5"}


def epochs_of(spec: RunSpec, data_dir: str):
    """Train ``spec`` and yield ``(epoch, metrics, test accuracy, seconds)`` after each epoch."""
    trainer = Trainer(spec, load_data(spec, data_dir), device="cpu", num_workers=0)
    while trainer.epoch < spec.epochs and trainer.active:
        t0 = time.perf_counter()
        metrics = trainer.train_epoch().get(spec.run_id)
        seconds = time.perf_counter() - t0
        if metrics is None:  # diverged
            yield trainer.epoch, {"failed": trainer.failed[spec.run_id]}, float("nan"), seconds
            return
        pred, labels = trainer.predict()
        yield trainer.epoch, metrics, float((pred == labels).mean()), seconds


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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = {"image_size": args.image_size, "per_combination": args.per_combination,
            "test_per_combination": args.test_per_combination}
    for role in args.roles:
        spec = RunSpec(dataset=args.dataset, role=role, arch=ARCH[role], seed=args.seed,
                       epochs=args.epochs, data=data)
        accs = []
        for epoch, metrics, acc, seconds in epochs_of(spec, args.data_dir):
            accs.append(acc)
            print(json.dumps({"role": role, "epoch": epoch, "test_accuracy": round(acc, 4),
                              "seconds": round(seconds, 2), **metrics}), flush=True)
        last = accs[max(0, round(0.8 * len(accs)) - 1):]
        print(json.dumps({"role": role, **data, "epochs": args.epochs, "seed": args.seed,
                          "final_test_accuracy": accs[-1],
                          "change_over_last_20pct_points": round(100 * abs(last[-1] - last[0]), 2)}),
              flush=True)


if __name__ == "__main__":
    main()
