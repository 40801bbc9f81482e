"""Cohort vs lone trainings: the same N distilled students, side by side in one run.

    python benchmarks/cohort.py                 # CPU (one thread, as a quick-study trial), and CUDA when present
    python benchmarks/cohort.py --tiny          # a few steps, to check it runs (the tests use this)

Case 1 is the quick study's pair (ResNet-20 -> LeNet-5, Trifeature at 16 px, N = 3); case 2
the paper's CIFAR pair (ResNet-56 -> ResNet-20, 32 px, CIFAR-100-shaped random uint8 data,
N = 13, batch 128). For each case and device it trains the N specs for the same epochs as N
lone trainings (``Trainer([spec])`` each, its own teacher forward per batch) and as one
cohort (``Trainer(specs)``: one data draw and one teacher forward per batch), and prints
student images per second for both and their ratio: the best of ``--repeats`` alternated
measurements of each (default 2; single measurements of the same build have differed by up
to 0.15x on the 2-core machine). Both produce the same weights (the tests check it); only
the time differs.

It then times the shared work on its own (an epoch of data draws and teacher forwards, no
student) and prints its share ``s`` of a lone run's time, and the ratio ``N / (s + N (1 -
s))`` of a cohort that saves exactly that work for N - 1 runs: every student's own
forward, backward and update is a lone run's, so sharing is all a cohort can save. (The
measured ratio has come out a few hundredths above it: timed alone, the shared work runs
without the students between its batches.) A ratio of 2.0x at N = 3 needs ``s >= 0.75``.
The last line reads ``cohort speedup: <ratio>x (<case 1>)``, on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kdray import RunSpec  # noqa: E402
from kdray.cli_help import command_parser, description_of  # noqa: E402
from kdray.data import DatasetSplits, TensorData, load_dataset  # noqa: E402
from kdray.models import build_model  # noqa: E402
from kdray.training.loop import Trainer  # noqa: E402

TEMPERATURES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 20.0, 30.0, 40.0)


def quick_case(tiny: bool) -> tuple[str, list[RunSpec], DatasetSplits]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sweeps"))
    from quick import EXPERIMENTS  # the quick study's own recipe and data options

    exp = EXPERIMENTS[0]
    data_opts = dict(exp.data)
    recipe = {**exp.recipe, "epochs": 1}
    if tiny:
        data_opts.update(per_combination=2, test_per_combination=1)
    specs = [RunSpec(dataset=exp.datasets[0], role="ds", arch="lenet5", teacher_arch="resnet20",
                     temperature=t, alpha=0.8, data=data_opts, **recipe) for t in TEMPERATURES[:3]]
    return ("resnet20 -> lenet5, trifeature-shape 16 px, N = 3",
            specs, load_dataset(specs[0].dataset, data_opts))


def cifar_case(tiny: bool) -> tuple[str, list[RunSpec], DatasetSplits]:
    batch = 16 if tiny else 128
    n_train = batch if tiny else 1280  # 1 step of batch 16, or 10 steps of batch 128
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n_train,), generator=g)
    data = DatasetSplits(train=TensorData(x, y), test=TensorData(x[:batch], y[:batch]),
                         num_classes=100, image_size=32)
    specs = [RunSpec(dataset="cifar100", role="ds", arch="resnet20", teacher_arch="resnet56",
                     temperature=t, alpha=0.8, epochs=1, batch_size=batch) for t in TEMPERATURES]
    return "resnet56 -> resnet20, CIFAR-100-shaped 32 px, N = 13", specs, data


def student_images_per_second(specs: list[RunSpec], data: DatasetSplits, teacher: torch.nn.Module,
                              device: str, cohort: bool) -> float:
    """Student images/s of training ``specs`` as one cohort, or one lone trainer after another."""
    groups = [specs] if cohort else [[s] for s in specs]
    images, seconds = 0, 0.0
    for group in groups:
        trainer = Trainer(group, data, device=device, teacher=teacher, num_workers=0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.fit()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        images += len(group) * trainer.steps_per_epoch * trainer.batch_size * group[0].epochs
    return images / seconds


@torch.no_grad()
def shared_seconds(spec: RunSpec, data: DatasetSplits, teacher: torch.nn.Module, device: str
                   ) -> tuple[float, int]:
    """``(seconds, images)`` of one run's training of what a cohort shares: the data draw,
    the input pipeline and the teacher's forward, per batch, as the trainer runs them (no
    student), timed on one epoch."""
    trainer = Trainer([spec], data, device=device, teacher=teacher, num_workers=0)
    images = trainer.steps_per_epoch * trainer.batch_size * spec.epochs
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x, views, _ in trainer._train_batches():
        with trainer._autocast():
            trainer.teacher(trainer._inputs(x, views))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * spec.epochs, images


def bench(case, device: str, repeats: int) -> float:
    name, specs, data = case
    n = len(specs)
    torch.manual_seed(0)
    teacher = build_model(specs[0].teacher_arch, data.num_classes, **data.model_kwargs())
    student_images_per_second(specs[:1], data, teacher, device, cohort=True)  # warm-up
    lone, together = 0.0, 0.0
    for _ in range(repeats):  # alternated; the best of each (the least disturbed)
        lone = max(lone, student_images_per_second(specs, data, teacher, device, cohort=False))
        together = max(together, student_images_per_second(specs, data, teacher, device, cohort=True))
    ratio = together / lone
    print(f"{device:>5}  {name}:  lone {lone:,.0f} img/s   cohort {together:,.0f} img/s   "
          f"ratio {ratio:.2f}x", flush=True)
    # What sharing alone explains: with a lone run's time L and its shared part S timed on
    # its own, a cohort that saves exactly S for N - 1 runs takes S + N (L - S) against N L.
    shared, images = shared_seconds(specs[0], data, teacher, device)
    lone_run = images / lone
    model = n * lone_run / (shared + n * max(lone_run - shared, 0.0))
    print(f"{'':>5}  shared work (data draw, teacher forward), timed alone: {shared / lone_run:.0%} "
          f"of a lone run's time; a cohort of {n} saving exactly that: {model:.2f}x", flush=True)
    return ratio


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/cohort.py", description_of(__doc__))
    p.add_argument("--tiny", action="store_true", help="a few steps per case (a check, not a measurement)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: what a quick-study trial gets on the 2-core machine)")
    p.add_argument("--repeats", type=int, default=2,
                   help="measure lone and cohort this many times each, alternated, and keep the "
                        "best of each (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads: {args.threads} is not >= 1")
    if args.repeats < 1:
        p.error(f"--repeats: {args.repeats} is not >= 1")
    if args.tiny:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    cases = [quick_case(args.tiny), cifar_case(args.tiny)]
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    first = bench(cases[0], "cpu", args.repeats)
    bench(cases[1], "cpu", args.repeats)
    if torch.cuda.is_available():
        for case in cases:
            bench(case, "cuda", args.repeats)
    print(f"cohort speedup: {first:.2f}x ({cases[0][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
