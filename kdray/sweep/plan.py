"""A plan before spending: which runs exist, are complete, will run, and what they cost.

``plan_statuses`` is every run's status as the sweep and its dry run both see it (every
teacher's weights verified too); ``pending_cohorts`` groups the pending runs into the trials
the sweep would run; ``format_plan`` prints, per experiment and stage, how many runs exist,
are complete and will run, with an estimate of GPU-hours for what will run; ``plan_json`` is
the machine-readable list (``run_id``, ``status`` complete|pending, the experiment, the stage
and the spec's fields).

GPU-hours = epochs x training images / (images per second) / 3600, for one trial alone on
one GPU (fractional-GPU trials share a card: 4-8 trials per H100 gave 3-4x the aggregate
throughput of one). The throughput table below says, for every number, where it comes from:
measured on an H100 or scaled from a measured anchor by forward FLOPs (an estimate, not a
measurement). The measurements: one NVIDIA H100 80GB, torch 2.11, CUDA 13, 2026-11-26, with a
stand-alone reference script (random uint8 CIFAR-sized data on the GPU, crop + flip on the
GPU, SGD); every row of them, and what else kdray takes from them, in ``docs/performance.md``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping

from kdray.sweep.grid import Plan, cohorts
from kdray.spec import RunSpec
from kdray.store import RunStatus, Store

H100 = "H100 80GB, torch 2.11, CUDA 13, 2026-11-26 (docs/performance.md)"


@dataclass(frozen=True)
class Throughput:
    images_per_second: float  # training images/s of the model alone (teacher / NDS step)
    size: int  # the input size (px) the rate is for; conv-net cost scales with pixels
    source: str


# Anchors measured on one H100: ResNet-20 at 32 px (batch 128, eager fp32, launch-bound) and
# ResNet-18 at 224 px (batch 256, bf16, compute-bound). Other entries scale the compute-bound
# anchor by forward GFLOPs at the size given (ResNet-18 @224: 1.82 GFLOPs).
THROUGHPUT: dict[str, Throughput] = {
    "resnet20": Throughput(15_178, 32, f"measured: NDS, CIFAR-size, batch 128, {H100}"),
    "resnet56": Throughput(5_000, 32, "estimate: ResNet-20's measured rate x 41/125 MFLOPs"),
    "lenet5": Throughput(15_178, 32, "estimate: capped at ResNet-20's launch-bound measured rate"),
    "resnet18": Throughput(11_939, 224, f"measured: 224 px, batch 256, bf16, {H100}"),
    "resnet50": Throughput(5_300, 224, "estimate: ResNet-18's measured rate x 1.82/4.1 GFLOPs"),
    "densenet121": Throughput(7_500, 224, "estimate: ResNet-18's measured rate x 1.82/2.9 GFLOPs"),
    "densenet169": Throughput(6_400, 224, "estimate: ResNet-18's measured rate x 1.82/3.4 GFLOPs"),
    "vit_base": Throughput(1_235, 224, "estimate: ResNet-18's measured rate x 1.82/17.6 GFLOPs"),
    "tiny_vit": Throughput(16_700, 224, "estimate: ResNet-18's measured rate x 1.82/1.3 GFLOPs"),
    "bert_base": Throughput(1_000, 0, "estimate: ResNet-18's measured rate x 1.82/22 GFLOPs (128 tokens)"),
    "distilbert": Throughput(2_000, 0, "estimate: half of bert_base (6 of 12 layers)"),
}
# ImageNet-stem models on inputs <= 64 px use the small-image stem (kdray/models/vision.py):
# no stride-4 stem, so their cost is that of a 4x larger input with the ImageNet stem.
SMALL_STEM = {"resnet18", "resnet50", "densenet121", "densenet169"}
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32}

# Training images per dataset (paper's Appendix A; CelebA after balancing, Table 4).
N_TRAIN = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "tinyimagenet": 100_000,
           "imagenet": 1_281_167, "celeba-smiling": 156_160, "celeba-eyeglasses": 21_000,
           "hatexplain": 15_000, "digits": 1_347}


def n_train(spec: RunSpec) -> int:
    if spec.dataset.startswith("trifeature"):
        return 1000 * (spec.data["per_combination"] - spec.data["test_per_combination"])
    return N_TRAIN.get(spec.dataset, 50_000)


def _rate(spec: RunSpec, arch: str) -> float:
    """Training images/s of ``arch`` at ``spec``'s input size (table entry, scaled)."""
    size = spec.data.get("image_size") or NATIVE_SIZE.get(spec.dataset, 224)
    t = THROUGHPUT.get(arch, Throughput(5_000.0, 0, "default"))
    if not t.size:
        return t.images_per_second
    effective = size * 4 if arch in SMALL_STEM and size <= 64 else size
    return t.images_per_second * (t.size / effective) ** 2


def _seconds_per_image(spec: RunSpec) -> tuple[float, float]:
    """(student's training step, teacher's eval forward) seconds per image of ``spec`` on one
    GPU; a lone trial's throughput is ``1 / sum(...)``.

    Conv nets and ViTs scale with the number of input pixels relative to the table's size.
    DS adds an eval-mode teacher forward, about a third of the teacher's training step:
    ``1 / (1/s + 1/(3 t))``. Check against the H100's DS rows: ResNet-20 from ResNet-56 gives
    7,544 (measured 8,679); ResNet-18 from ResNet-50 at 224 px gives 6,819 (measured 6,165).
    """
    student = 1.0 / _rate(spec, spec.arch)
    if spec.role != "ds":
        return student, 0.0
    return student, 1.0 / (3.0 * _rate(spec, spec.teacher_arch))


def gpu_hours(spec: RunSpec) -> float:
    """GPU-hours of ``spec`` trained alone (a trial of its own)."""
    return spec.epochs * n_train(spec) * sum(_seconds_per_image(spec)) / 3600.0


def cohort_gpu_hours(cohort: list[RunSpec]) -> float:
    """GPU-hours of a cohort trial: every student's step, the teacher's forward once."""
    student, teacher = _seconds_per_image(cohort[0])
    return cohort[0].epochs * n_train(cohort[0]) * (len(cohort) * student + teacher) / 3600.0


def stage_of(spec: RunSpec) -> int:
    return 2 if spec.role == "ds" else 1


def pending_cohorts(plan: Plan, status: dict[str, RunStatus],
                    caps: Mapping[str, int] | None = None) -> dict[str, tuple[int, list[RunSpec]]]:
    """run_id -> (trial number, its cohort) for every pending run, as the sweep groups them."""
    pending = [s for s in plan.all if not status[s.run_id].complete]
    out = {}
    for number, cohort in enumerate(cohorts(pending, caps)):
        for s in cohort:
            out[s.run_id] = (number, cohort)
    return out


def plan_json(plan: Plan, status: dict[str, RunStatus],
              caps: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One entry per run: run_id, status (complete|pending), experiment, stage, its cohort
    (trial number and size; null when complete), GPU-hours alone, and the spec's fields."""
    trials = pending_cohorts(plan, status, caps)
    return [{"run_id": s.run_id, "status": "complete" if status[s.run_id].complete else "pending",
             "experiment": plan.experiment[s.run_id], "stage": stage_of(s),
             "cohort": trials[s.run_id][0] if s.run_id in trials else None,
             "cohort_size": len(trials[s.run_id][1]) if s.run_id in trials else None,
             "gpu_hours": round(gpu_hours(s), 4), **s.to_dict()} for s in plan.all]


def format_plan(plan: Plan, status: dict[str, RunStatus],
                caps: Mapping[str, int] | None = None) -> str:
    """The dry-run table: per experiment and stage, runs, complete, to run, trials (cohorts),
    and GPU-hours as cohorts run them beside one run per trial."""
    trials = pending_cohorts(plan, status, caps)
    rows: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0, 0.0])
    counted: set[int] = set()
    for s in plan.all:
        row = rows[(plan.experiment[s.run_id], stage_of(s))]
        row[0] += 1
        if status[s.run_id].complete:
            row[1] += 1
            continue
        row[2] += 1
        row[5] += gpu_hours(s)
        number, cohort = trials[s.run_id]
        if number not in counted:  # a cohort counts once, in the experiment of its first run
            counted.add(number)
            row[3] += 1
            row[4] += cohort_gpu_hours(cohort)
    width = max([len(e) for e, _ in rows] + [10])
    lines = [f"plan: {plan.counts()}", f"{'experiment':<{width}}  stage   runs  complete  to run  trials  "
             f"GPU-hours (est.)  one run per trial"]
    total = [0, 0, 0, 0, 0.0, 0.0]
    for (exp, stage), row in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        n, done, todo, ntrials, hours, alone = row
        lines.append(f"{exp:<{width}}  {stage:>5}  {n:>5}  {done:>8}  {todo:>6}  {ntrials:>6}  "
                     f"{hours:>16.1f}  {alone:>17.1f}")
        total = [a + b for a, b in zip(total, row)]
    n, done, todo, ntrials, hours, alone = total
    lines.append(f"{'total':<{width}}  {'':>5}  {n:>5}  {done:>8}  {todo:>6}  {ntrials:>6}  "
                 f"{hours:>16.1f}  {alone:>17.1f}")
    saved = 100.0 * (1.0 - hours / alone) if alone else 0.0
    lines.append(f"cohorts: {todo} runs in {ntrials} trials; the teacher's forward is charged once "
                 f"per cohort: {hours:.1f} GPU-hours against {alone:.1f} one run per trial "
                 f"({saved:.0f}% saved)")
    lines.append("GPU-hours: one trial alone on one GPU; throughput sources in kdray/sweep/plan.py "
                 "(measured on an H100, or FLOP-scaled estimates)")
    return "\n".join(lines)


def plan_statuses(store: Store, plan: Plan) -> dict[str, RunStatus]:
    """Every run's status in ``store`` (:meth:`kdray.store.Store.statuses`), the teachers'
    weights verified too (:meth:`kdray.store.Store.model_problem`: on S3 one HEAD request
    each when run.json holds the weights' ETag), whether or not a student needs them now: a
    damaged teacher is pending, so the sweep trains it again and the dry run says so."""
    return store.statuses([s.run_id for s in plan.all],
                          verify_model=[s.run_id for s in plan.teachers])
