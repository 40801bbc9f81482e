"""Cohort vs lone trainings: the same N distilled students, side by side in one run.

    python benchmarks/cohort.py                 # CPU (one thread, as a quick-study trial), and CUDA when present
    python benchmarks/cohort.py --tiny          # a few steps, to check it runs (the tests use this)

Case 1 is the quick study's pair (ResNet-20 -> LeNet-5, Trifeature at 16 px, N = 3); case 2
the paper's CIFAR pair (ResNet-56 -> ResNet-20, 32 px, CIFAR-100-shaped random uint8 data,
N = 13, batch 128). For each case and device it trains the N specs for the same epochs as N
lone trainings (``Trainer([spec])`` each, its own teacher forward per batch) and as one
cohort (``Trainer(specs)``: one data draw and one teacher forward per batch), and prints
student images per second for both and their ratio. Both produce the same weights (the
tests check it); only the time differs. The last line reads
``cohort speedup: <ratio>x (<case 1>)``, on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kdray import RunSpec  # noqa: E402
from kdray.data import DatasetSplits, TensorData, load_dataset  # noqa: E402
from kdray.models import build_model  # noqa: E402
from kdray.train import Trainer  # noqa: E402

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
    n_train = 256 if tiny else 1280  # 2 or 10 steps of batch 128
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n_train,), generator=g)
    data = DatasetSplits(train=TensorData(x, y), test=TensorData(x[:128], y[:128]),
                         num_classes=100, image_size=32)
    specs = [RunSpec(dataset="cifar100", role="ds", arch="resnet20", teacher_arch="resnet56",
                     temperature=t, alpha=0.8, epochs=1, batch_size=128) for t in TEMPERATURES]
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


def bench(case, device: str) -> float:
    name, specs, data = case
    torch.manual_seed(0)
    teacher = build_model(specs[0].teacher_arch, data.num_classes, **data.model_kwargs())
    student_images_per_second(specs[:1], data, teacher, device, cohort=True)  # warm-up
    lone = student_images_per_second(specs, data, teacher, device, cohort=False)
    together = student_images_per_second(specs, data, teacher, device, cohort=True)
    ratio = together / lone
    print(f"{device:>5}  {name}:  lone {lone:,.0f} img/s   cohort {together:,.0f} img/s   "
          f"ratio {ratio:.2f}x", flush=True)
    return ratio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few steps per case (a check, not a measurement)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: what a quick-study trial gets on the 2-core machine)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads: {args.threads} is not >= 1")
    torch.set_num_threads(args.threads)
    cases = [quick_case(args.tiny), cifar_case(args.tiny)]
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    first = bench(cases[0], "cpu")
    bench(cases[1], "cpu")
    if torch.cuda.is_available():
        for case in cases:
            bench(case, "cuda")
    print(f"cohort speedup: {first:.2f}x ({cases[0][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
