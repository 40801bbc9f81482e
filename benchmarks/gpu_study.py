"""A real study on one GPU without Ray: Trifeature (shape) at 32 px, 5 seeds of a ResNet-56
teacher, a ResNet-20 NDS and a cohort of ResNet-20 DS at several temperatures, trained
through ``kdray.trial`` into a local store; then the analysis job's statistics (Welch tests
on normalised class accuracy, paper eq. 8, with BH; DPD and EOD, Algorithm 1); it prints
the tables and the wall time.

    python benchmarks/gpu_study.py                      # on a GPU (target: under 10 minutes)
    python benchmarks/gpu_study.py --store ./gpu-study  # keep the store (default: temporary)
    python benchmarks/gpu_study.py --tiny               # CPU, 2 seeds, 1 epoch: a check (tests)

Recipe (converging on Trifeature shape; unmeasured on a GPU so far): 30 epochs of SGD,
lr 0.05, momentum 0.9, weight decay 1e-3, lr / 10 at epochs 15 and 25, batch 64, alpha 0.8,
T = 1, 2, 4, 8; 9,000 training and 1,000 test images (10 per feature combination). Runs
already complete in the store are skipped, so an interrupted study resumes.

Its GPU part needs torch, numpy, pandas, scipy and pyarrow (and what kdray itself imports:
torchvision, safetensors); not Ray, W&B, fairlearn or matplotlib: the statistics are the
analysis package's pure functions (``kdray.analysis.significance``, ``kdray.analysis.fairness`` with
its numpy backend), imported module by module.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kdray.cli_help import command_parser, description_of  # noqa: E402
from kdray.training import gpu  # noqa: E402  (no torch import: set the allocator before CUDA starts)

SEEDS = (0, 1, 2, 3, 4)
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
RECIPE = dict(epochs=30, lr=0.05, lr_milestones=(15, 25), batch_size=64, momentum=0.9,
              weight_decay=1e-3)
DATA = {"image_size": 32, "per_combination": 10, "test_per_combination": 1}
TINY_DATA = {"image_size": 16, "per_combination": 2, "test_per_combination": 1}
ATTRIBUTES = ("color", "texture")


def statistics_functions() -> dict:
    """The analysis job's pure statistics, imported submodule by submodule (never through a
    part of the package that needs Ray, W&B or fairlearn); fails before any training."""
    names = {"kdray.analysis.significance": ("normalised_class_accuracy", "welch_tests", "bh_adjust",
                                       "count_significant"),
             "kdray.analysis.fairness": ("fairness_metrics",)}
    out = {}
    for module, functions in names.items():
        mod = importlib.import_module(module)
        for name in functions:
            out[name] = getattr(mod, name)
    return out


def plan(args) -> dict[str, list]:
    """The study's runs by model: teachers, NDS and, per seed, one DS cohort."""
    from kdray import RunSpec

    common = dict(dataset="trifeature-shape", data=args.data, **args.recipe)
    teachers = [RunSpec(role="teacher", arch=args.teacher, seed=s, **common) for s in args.seeds]
    nds = [RunSpec(role="nds", arch=args.student, seed=s, **common) for s in args.seeds]
    cohorts = [[RunSpec(role="ds", arch=args.student, teacher_arch=args.teacher, seed=s,
                        temperature=t, alpha=0.8, **common) for t in args.temperatures]
               for s in args.seeds]
    return {"teachers": teachers, "nds": nds, "cohorts": cohorts}


def train(runs: dict[str, list], store, args) -> dict[str, float]:
    """Every missing run through ``kdray.trial`` (teachers before their students)."""
    from kdray import trial

    seconds = {"teachers": 0.0, "nds": 0.0, "ds": 0.0}
    kw = dict(device=args.device, data_root=args.data_dir, num_workers=0)
    for key, group in (("teachers", runs["teachers"]), ("nds", runs["nds"])):
        for spec in group:
            if store.is_complete(spec.run_id):
                continue
            t0 = time.perf_counter()
            record = trial.run(spec, store, **kw)
            seconds[key] += time.perf_counter() - t0
            print(f"  {spec.run_id}: {100 * record['test_accuracy']:.1f}% "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    for cohort in runs["cohorts"]:
        pending = [s for s in cohort if not store.is_complete(s.run_id)]
        if not pending:
            continue
        t0 = time.perf_counter()
        result = trial.run_cohort(pending, store, **kw)
        seconds["ds"] += time.perf_counter() - t0
        for run_id, record in result.items():
            print(f"  {run_id}: {100 * record['test_accuracy']:.1f}%", flush=True)
        for run_id, why in result.failed.items():
            print(f"  FAILED {run_id}: {why}", flush=True)
        print(f"  (cohort of {len(pending)}: {time.perf_counter() - t0:.0f}s)", flush=True)
    return seconds


def read_runs(specs: list, store, num_classes: int) -> dict:
    """Per run: per-class correct and total counts, accuracy, and the test columns."""
    import numpy as np

    out = {}
    for spec in specs:
        df = store.read_predictions(spec.run_id).to_pandas()
        label, pred = df["label"].to_numpy(), df["pred"].to_numpy()
        out[spec.run_id] = {
            "correct": np.bincount(label[label == pred], minlength=num_classes),
            "total": np.bincount(label, minlength=num_classes),
            "accuracy": float((label == pred).mean()), "label": label, "pred": pred,
            "attributes": {a: df[f"attr_{a}"].to_numpy() for a in ATTRIBUTES}}
    return out


def tables(runs: dict[str, list], store, stats: dict, args) -> None:
    """The study's tables: accuracy, significance (#SC vs NDS, #TC vs teacher), fairness."""
    import numpy as np

    models = {f"teacher {args.teacher}": runs["teachers"], f"NDS {args.student}": runs["nds"]}
    for i, t in enumerate(args.temperatures):
        models[f"DS {args.student} T={t:g}"] = [cohort[i] for cohort in runs["cohorts"]]
    present = {name: [s for s in specs if store.is_complete(s.run_id)]
               for name, specs in models.items()}
    data = read_runs([s for specs in present.values() for s in specs], store, 10)

    def mean_std(values) -> str:
        values = np.asarray(values, float)
        std = values.std(ddof=1) if len(values) > 1 else float("nan")
        return f"{values.mean():6.2f} ± {std:5.2f}"

    print("\nTest accuracy (%), mean ± std over seeds")
    print(f"{'model':<24} {'seeds':>5}  {'accuracy':>15}")
    for name, specs in present.items():
        if specs:
            print(f"{name:<24} {len(specs):>5}  {mean_std([100 * data[s.run_id]['accuracy'] for s in specs])}")

    def normalised(specs):
        correct = np.stack([data[s.run_id]["correct"] for s in specs])
        total = np.stack([data[s.run_id]["total"] for s in specs])
        return stats["normalised_class_accuracy"](correct, total)

    print("\nClasses whose normalised accuracy differs (Welch, p <= 0.05; paper eq. 8), of 10")
    print(f"{'model':<24} {'#SC vs NDS':>10} {'(BH)':>5} {'#TC vs teacher':>15} {'(BH)':>5}")
    for name, specs in present.items():
        if not name.startswith("DS") or len(specs) < 2:
            continue
        row = []
        for ref in (present[f"NDS {args.student}"], present[f"teacher {args.teacher}"]):
            if len(ref) < 2:
                row += ["-", "-"]
                continue
            _, p, _ = stats["welch_tests"](normalised(specs), normalised(ref))
            row += [stats["count_significant"](p, 0.05),
                    stats["count_significant"](stats["bh_adjust"](p), 0.05)]
        print(f"{name:<24} {row[0]:>10} {row[1]:>5} {row[2]:>15} {row[3]:>5}")

    print("\nFairness (%, mean ± std over seeds; one-vs-rest over classes, Algorithm 1)")
    print(f"{'model':<24} {'attribute':<9} {'DPD':>15} {'EOD':>15}")
    for name, specs in present.items():
        for attribute in ATTRIBUTES:
            if not specs:
                continue
            metrics = [stats["fairness_metrics"](data[s.run_id]["label"], data[s.run_id]["pred"],
                                                 data[s.run_id]["attributes"][attribute],
                                                 backend="numpy") for s in specs]
            print(f"{name:<24} {attribute:<9} {mean_std([100 * m['dpd'] for m in metrics])} "
                  f"{mean_std([100 * m['eod'] for m in metrics])}")


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/gpu_study.py", description_of(__doc__))
    p.add_argument("--tiny", action="store_true",
                   help="CPU, 16 px, 2 seeds, 2 temperatures, 1 epoch, ResNet-20 -> LeNet-5")
    p.add_argument("--store", help="the study's store (default: a temporary folder)")
    p.add_argument("--data-dir", help="where Trifeature is generated (default: kdray's)")
    p.add_argument("--epochs", type=int, help=f"default {RECIPE['epochs']}")
    p.add_argument("--device", help="default: cuda (cpu with --tiny)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    gpu.prepare_process()
    import torch

    stats = statistics_functions()  # before any training: fail fast without them
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device: this study is for a GPU (--tiny checks it on the CPU)")
    args.seeds = SEEDS[:2] if args.tiny else SEEDS
    args.temperatures = TEMPERATURES[1:3] if args.tiny else TEMPERATURES
    args.teacher, args.student = ("resnet20", "lenet5") if args.tiny else ("resnet56", "resnet20")
    args.data = TINY_DATA if args.tiny else DATA
    args.recipe = dict(RECIPE, epochs=args.epochs or (1 if args.tiny else RECIPE["epochs"]))
    if args.tiny:
        args.recipe.update(lr=0.01, lr_milestones=())
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs: {args.epochs} is not >= 1")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        from kdray.store import Store

        store = Store(args.store or os.path.join(tmp, "store"))
        runs = plan(args)
        n = len(runs["teachers"]) + len(runs["nds"]) + sum(map(len, runs["cohorts"]))
        print(f"{where}; torch {torch.__version__}; trifeature-shape {args.data['image_size']} px, "
              f"{args.teacher} -> {args.student}, {len(args.seeds)} seeds, T = "
              f"{', '.join(f'{t:g}' for t in args.temperatures)}, {args.recipe['epochs']} epochs: "
              f"{n} runs into {store}", flush=True)
        t0 = time.perf_counter()
        seconds = train(runs, store, args)
        t_train = time.perf_counter() - t0
        tables(runs, store, stats, args)
        wall = time.perf_counter() - t0
    print(f"\nwall time: {wall:.0f}s on {where} (training {t_train:.0f}s: teachers "
          f"{seconds['teachers']:.0f}s, NDS {seconds['nds']:.0f}s, DS cohorts {seconds['ds']:.0f}s; "
          f"statistics {wall - t_train:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
