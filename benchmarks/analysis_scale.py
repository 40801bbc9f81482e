"""Time the analysis job on an ImageNet-sized synthetic store.

    python benchmarks/analysis_scale.py                          # full size
    python benchmarks/analysis_scale.py --classes 100 --samples 10000 --seeds 0 1 2

Defaults: 1000 classes x 50,000 test samples x 140 runs = 7M prediction rows
(5 seeds x (teacher + NDS + DS at 13 temperatures x 2 alphas)), the shape of the paper's
ImageNet ResNet-50/ResNet-18 experiment (Tables 1, 6). Writes the store (real format, via
tests/analysis_store.py conventions), runs ``kdray.analysis.run`` on a local Ray, and prints rows,
seconds, rows/s, the CPU seconds the job used (driver, and the whole process tree: driver +
raylet + Ray workers, from /proc; less sensitive than wall time to other work on a shared
machine), the driver's peak RSS (getrusage) and the peak RSS summed over the process tree
(sampled from /proc every 0.2 s; shared object-store pages are counted once per process that
touched them, so it over-counts).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ADDRESS", "local")  # a fresh local Ray, never a cluster on the machine
os.environ.setdefault("WANDB_MODE", "disabled")

from kdray.cli_help import command_parser, description_of  # noqa: E402
from kdray.store import Store, predictions_table  # noqa: E402

RECIPE = dict(epochs=100, batch_size=512, optimizer="sgd", lr=0.1, momentum=0.9,
              weight_decay=1e-3, lr_schedule="multistep", lr_milestones=[30, 60, 90],
              lr_gamma=0.1, warmup_epochs=0.0, augmentation="random_resized_crop_flip",
              pretrained=False)


def write_store(root: str, classes: int, samples: int, seeds: list[int], temperatures: list[float],
                alphas: list[float]) -> int:
    """A synthetic study; returns the number of runs written."""
    store = Store(root)
    rng = np.random.default_rng(0)
    label = rng.permutation(np.arange(samples) % classes)  # balanced, in no particular order
    base = rng.uniform(0.5, 0.9, classes)  # per-class difficulty, shared by every model
    specs = []
    for s in seeds:
        specs.append(dict(role="teacher", arch="resnet50", seed=s))
        specs.append(dict(role="nds", arch="resnet18", seed=s))
        specs += [dict(role="ds", arch="resnet18", seed=s, teacher_arch="resnet50",
                       temperature=t, alpha=a) for a in alphas for t in temperatures]
    for i, sp in enumerate(specs):
        spec = {"dataset": "imagenet", "teacher_arch": None, "temperature": None, "alpha": None,
                "data": {"image_size": 224}, **RECIPE, **sp}
        t = sp.get("temperature") or 0.0
        shift = {"teacher": 0.07, "nds": 0.0}.get(sp["role"], 0.01 * t ** 0.5)
        acc = np.clip(base + shift + rng.normal(0, 0.02, classes), 0, 1)
        correct = rng.random(samples) < acc[label]
        pred = np.where(correct, label, (label + rng.integers(1, classes, samples)) % classes)
        rid = f"imagenet-{sp['arch']}-{sp['role']}-{i:03d}-s{s}"
        sha = store.write_predictions(rid, predictions_table(rid, spec, np.arange(samples),
                                                             label, pred))
        store.write_run_json(rid, {"spec": spec, "run_id": rid, "n_test": samples,
                                   "test_accuracy": float(correct.mean()),
                                   "per_class_accuracy": {}, "predictions_sha256": sha})
    return len(specs)


def _tree(root_pid: int) -> list[int]:
    """root_pid and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        out.append(pid)
    return out


def _tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU seconds of root_pid and its live descendants (/proc/<pid>/stat)."""
    total = 0
    for pid in _tree(root_pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, ValueError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _tree_rss_bytes(root_pid: int) -> int:
    """Sum of VmRSS over root_pid and all its descendants (Linux /proc)."""
    total = 0
    for pid in _tree(root_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class TreeMemory(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            self.stop.wait(0.2)


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/analysis_scale.py", description_of(__doc__))
    p.add_argument("--classes", type=int, default=1000, help="classes of the task")
    p.add_argument("--samples", type=int, default=50_000, help="test samples per run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], metavar="S",
                   help="the seeds (default: 0 1 2 3 4)")
    p.add_argument("--temperatures", nargs="+", type=numbers, metavar="T",
                   default=[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40]],
                   help="DS temperatures, 1 2 4 or 1,2,4 (default: 1-10 20 30 40)")
    p.add_argument("--alphas", nargs="+", type=numbers, default=[[0.6, 0.8]], metavar="A",
                   help="DS alphas, 0.6 0.8 or 0.6,0.8 (default: 0.6 0.8)")
    p.add_argument("--store", default=None, help="where to write (default: a temp dir, removed)")
    p.add_argument("--figures", action="store_true", help="also render the figures")
    return p


def numbers(text: str) -> list[float]:
    """One value of --temperatures/--alphas: a number, or numbers joined by commas."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or numbers joined by commas") from None


def main() -> None:
    args = parser().parse_args()
    temps = [v for values in args.temperatures for v in values]
    alphas = [v for values in args.alphas for v in values]
    root = args.store or tempfile.mkdtemp(prefix="kdray-analysis-bench-")

    t = time.perf_counter()
    n_runs = write_store(root, args.classes, args.samples, args.seeds, temps, alphas)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    print(f"wrote {n_runs} runs x {args.samples:,} samples x {args.classes} classes "
          f"({n_runs * args.samples:,} rows, {size / 2**20:.0f} MiB) in "
          f"{time.perf_counter() - t:.1f} s", flush=True)

    import ray

    from kdray import analysis

    mem = TreeMemory()
    mem.start()
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t
    t, cpu, tree_cpu = time.perf_counter(), time.process_time(), _tree_cpu_seconds(os.getpid())
    result = analysis.run(root, wandb_mode="disabled", figures=args.figures)
    seconds = time.perf_counter() - t
    cpu, tree_cpu = time.process_time() - cpu, _tree_cpu_seconds(os.getpid()) - tree_cpu
    mem.stop.set()
    mem.join()
    rows = result.summary.n_rows
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(f"runs read: {result.summary.n_read}, skipped: {len(result.summary.skipped)}; "
          f"experiments: {len(result.experiments)}; class tests: {len(result.class_tests):,}; "
          f"disagreement matrices: {len(result.disagreement)}")
    print(f"rows: {rows:,}  job seconds: {seconds:.1f} (plus ray.init {t_init:.1f})  "
          f"rows/s: {rows / seconds:,.0f}")
    print(f"CPU seconds: driver {cpu:.1f}; process tree (driver + Ray) {tree_cpu:.1f}")
    print(f"peak RSS: driver {driver_peak:,.0f} MiB; process tree (driver + Ray) "
          f"{mem.peak / 2**20:,.0f} MiB; machine: {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}")
    ray.shutdown()
    if not args.store:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
