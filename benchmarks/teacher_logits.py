"""A DS cohort that replays its teacher's logits against one that runs the teacher, side by side.

    python benchmarks/teacher_logits.py            # CPU, one thread (a trial's share of the 2-core machine)
    python benchmarks/teacher_logits.py --tiny     # a few steps, to check it runs (the tests use this)

The cohort is what ``python sweeps/trifeature_paper.py --temperatures 20 30 40`` trains per
teacher seed: ResNet-20 -> LeNet-5, N = 3 (T = 20, 30, 40, alpha 0.8), the study's own data
options and recipe (24 px Trifeature, 3,000 training images, batch 64), ``--epochs`` epochs
(default 2). Three ways, alternated, the best of ``--repeats`` each: the teacher running
(as before teacher logits were stored), the teacher running and its logits recorded (what a
study's cohort does now), and the logits replayed (what the extension's cohort does). It
checks that the replaying cohort ends with the running cohort's weights bit for bit, and
prints student images per second of each, the recording cohort's time over the running
one's (what recording costs a study), and the replay's speedup. The last line reads
``replay speedup: <ratio>x``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "sweeps"))

from kdray import RunSpec  # noqa: E402
from kdray.cli_help import command_parser, description_of  # noqa: E402
from kdray.data import load_dataset  # noqa: E402
from kdray.models import build_model  # noqa: E402
from kdray.training.loop import Trainer  # noqa: E402
from kdray.training.teacher_logits import TeacherLogits  # noqa: E402


def cohort_specs(epochs: int, tiny: bool) -> list[RunSpec]:
    from trifeature_paper import EXPERIMENTS  # the study's own recipe and data options

    exp = EXPERIMENTS[0]
    data = {**exp.data, "per_combination": 2, "test_per_combination": 1} if tiny else exp.data
    return [RunSpec(dataset=exp.datasets[0], role="ds", arch="lenet5", teacher_arch="resnet20",
                    temperature=t, alpha=0.8, data=data, **{**exp.recipe, "epochs": epochs})
            for t in (20.0, 30.0, 40.0)]


def train(specs, data, teacher, logits: TeacherLogits | None) -> tuple[float, Trainer]:
    """Student images per second of one cohort's training, and the trainer."""
    trainer = Trainer(specs, data, device="cpu", teacher=teacher, num_workers=0)
    if logits is not None:
        trainer.use_teacher_logits(logits)
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    images = len(specs) * trainer.steps_per_epoch * trainer.batch_size * trainer.spec.epochs
    return images / seconds, trainer


def same_weights(a: Trainer, b: Trainer) -> bool:
    return all(torch.equal(p, q) for sa, sb in zip(a.students, b.students)
               for p, q in zip(sa.model.state_dict().values(), sb.model.state_dict().values()))


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/teacher_logits.py", description_of(__doc__))
    p.add_argument("--tiny", action="store_true", help="a few steps (a check, not a measurement)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per measurement (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="alternated measurements of each way, "
                                                          "the best kept (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    for flag, value in (("--epochs", args.epochs), ("--repeats", args.repeats)):
        if value < 1:
            p.error(f"{flag}: {value} is not >= 1")
    torch.set_num_threads(1)
    specs = cohort_specs(1 if args.tiny else args.epochs, args.tiny)
    data = load_dataset(specs[0].dataset, specs[0].data)
    torch.manual_seed(0)
    teacher = build_model("resnet20", data.num_classes, **data.model_kwargs()).eval()
    shape = Trainer(specs, data, device="cpu", teacher=teacher).teacher_logits_shape()
    recorded = TeacherLogits(shape, torch.device("cpu"))
    best = {"running": 0.0, "recording": 0.0, "replaying": 0.0}
    for _ in range(1 if args.tiny else args.repeats):
        rate, running = train(specs, data, teacher, None)
        best["running"] = max(best["running"], rate)
        best["recording"] = max(best["recording"], train(specs, data, teacher, recorded)[0])
        table = TeacherLogits(shape, torch.device("cpu"), recorded.table)
        rate, replaying = train(specs, data, teacher, table)
        best["replaying"] = max(best["replaying"], rate)
        if not same_weights(running, replaying):
            print("replaying cohort: weights differ from the running cohort's")
            return 1
    print(f"torch {torch.__version__}, 1 CPU thread; resnet20 -> lenet5, {specs[0].dataset} "
          f"{specs[0].data['image_size']} px, N = 3, {shape[0]} epoch(s) of {shape[1]} steps")
    for way, rate in best.items():
        print(f"  teacher {way:<9}  {rate:8,.0f} student img/s")
    print("  replaying cohort: the same weights as the running cohort, bit for bit")
    print(f"recording's time / running's: {best['running'] / best['recording']:.2f}x")
    print(f"replay speedup: {best['replaying'] / best['running']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
