"""Student images per second on one GPU, side by side in one run: eager vs CUDA graph, a lone
DS trial vs a cohort of 13, and 1, 4 and 8 processes sharing the GPU.

    python benchmarks/gpu_throughput.py                 # on a GPU: every figure (~5 minutes)
    python benchmarks/gpu_throughput.py --seconds 20    # longer timed windows
    python benchmarks/gpu_throughput.py --tiny          # CPU, a few steps: a check (the tests)

The workload is the paper's CIFAR pair: a ResNet-56 teacher distilled into ResNet-20
students at batch 128 on CIFAR-100-shaped random uint8 data held on the device, through
``kdray.training.loop.Trainer`` (the code a trial runs: device augmentation, bf16 autocast, the
student's own loss and update). Each figure is student images per second (a cohort of 13
counts 13 students per image) over whole epochs, after one warm-up epoch (which also
captures the graph), and its ratio to the eager lone trial measured in the same run.

Rows:
- lone DS trial, eager (``cuda_graph=False``) and graph-captured;
- the same with deterministic algorithms (``RunSpec.deterministic``: its cost);
- a cohort of 13 DS students (T = 1..10, 20, 30, 40), eager and graph-captured, and with the
  teacher cast to bf16 once (``teacher_bf16``: measured here because it is off by default),
  and replaying stored teacher logits (what an extension's cohort does: no teacher forward);
- N processes sharing the GPU (N = 1, 4, 8), each a graph-captured lone trial or cohort,
  each bounded to 1/N of the memory as a Ray trial would be (``kdray.training.gpu.limit_memory``),
  started together after their warm-up: aggregate student images/s.

Goal: at least 90,000 student images/s aggregate on an H100/H200-class GPU, at
least 10x the eager lone trial. To measure NVIDIA MPS, run the script again with the MPS
daemon started (``nvidia-cuda-mps-control -d``) and compare the process rows.

Needs only torch (and kdray); prints one table, last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kdray.cli_help import command_parser, description_of  # noqa: E402
from kdray.training import gpu  # noqa: E402  (no torch import: set the allocator before CUDA starts)

TEMPERATURES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 20.0, 30.0, 40.0)
WAIT_FOR_GO = 600.0  # seconds a worker process waits for the others' warm-up


# ----------------------------------------------------------------------------------------
# One measurement
# ----------------------------------------------------------------------------------------
def config(tiny: bool) -> dict:
    """The workload: full size on a GPU; a few tiny steps on the CPU (``--tiny``)."""
    if tiny:
        return dict(batch=8, n_train=16, size=16, students=2, classes=10, device="cpu")
    return dict(batch=128, n_train=128 * 40, size=32, students=len(TEMPERATURES), classes=100,
                device="cuda")


def setup(cfg: dict):
    import torch

    from kdray import RunSpec
    from kdray.data import DatasetSplits, TensorData
    from kdray.models import build_model

    g = torch.Generator().manual_seed(0)
    size = cfg["size"]
    x = torch.randint(0, 256, (cfg["n_train"], 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, cfg["classes"], (cfg["n_train"],), generator=g)
    data = DatasetSplits(train=TensorData(x, y), test=TensorData(x[:64], y[:64]),
                         num_classes=cfg["classes"], image_size=size)
    specs = [RunSpec(dataset="cifar100", role="ds", arch="resnet20", teacher_arch="resnet56",
                     temperature=t, alpha=0.8, batch_size=cfg["batch"])
             for t in TEMPERATURES[:cfg["students"]]]
    torch.manual_seed(0)
    teacher = build_model("resnet56", cfg["classes"], **data.model_kwargs())
    return specs, data, teacher


def measure(mode: str, cfg: dict, seconds: float, go=None) -> dict:
    """Student images/s of one configuration: ``lone|cohort`` x ``eager|graph`` [+ ``bf16``
    teacher] [+ ``det`` (deterministic)]. ``go()`` (processes) waits for the start signal."""
    import torch

    from kdray.training.loop import Trainer

    specs, data, teacher = setup(cfg)
    parts = mode.split("-")
    specs = specs if "cohort" in parts else specs[:1]
    if "det" in parts:
        specs = [s.replace(deterministic=True) for s in specs]
    trainer = Trainer(specs, data, device=cfg["device"], teacher=teacher, num_workers=0,
                      cuda_graph="graph" in parts, teacher_bf16="bf16" in parts)
    cuda = trainer.cuda
    if "replay" in parts:
        replay_teacher_logits(trainer)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    trainer.train_epoch()  # warm-up, and the graph's capture
    sync()
    if go is not None:
        go()
    per_epoch = len(trainer.active) * trainer.steps_per_epoch * trainer.batch_size
    images, t0 = 0, time.perf_counter()
    while True:
        trainer.train_epoch()  # reads its tallies at the end: the device has caught up
        images += per_epoch
        if time.perf_counter() - t0 >= seconds:
            break
    sync()
    elapsed = time.perf_counter() - t0
    gpu.set_determinism(False)
    return {"mode": mode, "images_per_s": images / elapsed, "students": len(specs),
            "captured": trainer.captured, "graph_off": trainer.graph_off,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else 0.0}


def replay_teacher_logits(trainer) -> None:
    """Record one epoch of teacher logits, then replay them (every epoch the same: the
    students' time does not depend on the values) as an extension's cohort does."""
    from kdray.training.teacher_logits import TeacherLogits

    shape = trainer.teacher_logits_shape()
    trainer.use_teacher_logits(TeacherLogits(shape, trainer.device))
    trainer.train_epoch()
    table = trainer.teacher_logits.table
    table[1:] = table[0]

    class Cycling(TeacherLogits):  # a timed window may outlast the recipe's epochs
        def before_step(self, epoch: int, step: int) -> None:
            super().before_step(epoch % self.shape[0], step)

    trainer.use_teacher_logits(Cycling(shape, trainer.device, table))


# ----------------------------------------------------------------------------------------
# Processes sharing the GPU
# ----------------------------------------------------------------------------------------
def worker(args) -> int:
    """One process of a shared-GPU measurement: warm up, say ready, wait for go, measure."""
    gpu.prepare_process()
    cfg = config(args.tiny)
    if cfg["device"] == "cuda":
        gpu.limit_memory(1.0 / args.share)

    def go():
        open(os.path.join(args.sync_dir, f"ready-{os.getpid()}"), "w").close()
        deadline = time.monotonic() + WAIT_FOR_GO
        while not os.path.exists(os.path.join(args.sync_dir, "go")):
            if time.monotonic() > deadline:
                raise TimeoutError("no start signal: another process failed its warm-up")
            time.sleep(0.01)

    print(json.dumps(measure(args.worker, cfg, args.seconds, go)), flush=True)
    return 0


def processes(mode: str, n: int, args) -> dict:
    """Aggregate student images/s of ``n`` processes each running ``mode`` at once."""
    with tempfile.TemporaryDirectory() as sync_dir:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--share", str(n),
               "--seconds", str(args.seconds), "--sync-dir", sync_dir] + (["--tiny"] if args.tiny else [])
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(n)]
        deadline = time.monotonic() + WAIT_FOR_GO
        while (sum(f.startswith("ready-") for f in os.listdir(sync_dir)) < n
               and all(p.poll() is None for p in procs) and time.monotonic() < deadline):
            time.sleep(0.05)
        open(os.path.join(sync_dir, "go"), "w").close()
        results, errors = [], []
        for p in procs:
            out, err = p.communicate()
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if p.returncode == 0 and lines:
                results.append(json.loads(lines[-1]))
            else:
                errors.append(f"exit {p.returncode}: {err.strip().splitlines()[-1:] or ''}")
    if errors:
        return {"mode": f"{n} x {mode}", "error": "; ".join(map(str, errors))}
    return {"mode": f"{n} x {mode}", "images_per_s": sum(r["images_per_s"] for r in results),
            "students": sum(r["students"] for r in results),
            "captured": all(r["captured"] for r in results),
            "graph_off": results[0]["graph_off"],
            "peak_gib": max(r["peak_gib"] for r in results)}


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------
ROWS = ["lone-eager", "lone-graph", "lone-graph-det", "cohort-eager", "cohort-graph",
        "cohort-graph-bf16", "cohort-graph-replay"]
LABELS = {"lone": "lone DS trial", "cohort": "cohort of {n} DS", "eager": "eager",
          "graph": "CUDA graph", "det": "deterministic", "bf16": "teacher bf16 once",
          "replay": "teacher logits replayed"}


def label(mode: str, students: int) -> str:
    """``"4 x cohort-graph"`` -> ``"4 processes: cohort of 13 DS, CUDA graph"``."""
    count, _, rest = mode.rpartition(" x ")
    text = ", ".join(LABELS[p].format(n=students) for p in rest.split("-"))
    return f"{count} processes: {text}" if count else text


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/gpu_throughput.py", description_of(__doc__))
    p.add_argument("--tiny", action="store_true", help="CPU, a few steps: checks that it runs")
    p.add_argument("--seconds", type=float, default=None,
                   help="timed window per figure (default 8 on a GPU, 0.1 with --tiny)")
    p.add_argument("--processes", type=int, nargs="+", default=None,
                   help="process counts sharing the GPU (default 1 4 8; 2 with --tiny)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--sync-dir", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    args.seconds = args.seconds if args.seconds is not None else (0.1 if args.tiny else 8.0)
    if args.worker:
        return worker(args)
    gpu.prepare_process()
    import torch

    cfg = config(args.tiny)
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device: this benchmark measures a GPU (--tiny checks it on the CPU)")
    counts = args.processes or ([2] if args.tiny else [1, 4, 8])
    where = torch.cuda.get_device_name() if cfg["device"] == "cuda" else "CPU (--tiny: a check, not a measurement)"
    print(f"{where}; torch {torch.__version__}; resnet56 -> resnet20, batch {cfg['batch']}, "
          f"{cfg['n_train']} uint8 images of {cfg['size']} px, {cfg['classes']} classes, on the "
          f"device", flush=True)
    t0 = time.perf_counter()
    rows = []
    for mode in ROWS:
        rows.append(measure(mode, cfg, args.seconds))
        print(f"  {label(mode, cfg['students'])}: {rows[-1]['images_per_s']:,.0f} img/s",
              flush=True)
    for mode in ("lone-graph", "cohort-graph"):
        for n in counts:
            rows.append(processes(mode, n, args))
            r = rows[-1]
            print(f"  {label(r['mode'], cfg['students'])}: "
                  + (f"{r['images_per_s']:,.0f} img/s" if "error" not in r else r["error"]),
                  flush=True)
    base = rows[0]["images_per_s"]
    print(f"\nstudent images/s ({where}), ratio to the eager lone trial; "
          f"{time.perf_counter() - t0:.0f}s")
    print(f"{'configuration':<50} {'img/s':>10} {'ratio':>7} {'peak GiB':>9}  graph")
    best = 0.0
    for r in rows:
        name = label(r["mode"], cfg["students"])
        if "error" in r:
            print(f"{name:<50} {'failed':>10}  {r['error']}")
            continue
        if " x " in r["mode"]:
            best = max(best, r["images_per_s"])
        graph = "captured" if r["captured"] else f"eager ({r['graph_off']})"
        print(f"{name:<50} {r['images_per_s']:>10,.0f} {r['images_per_s'] / base:>6.1f}x "
              f"{r['peak_gib']:>9.2f}  {graph}")
    met = best >= 90_000 and best >= 10 * base
    print(f"goal (>= 90,000 student img/s aggregate and >= 10x the eager lone trial): "
          f"{'met' if met else 'not met'}: best aggregate {best:,.0f} img/s, {best / base:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
