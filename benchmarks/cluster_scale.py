"""What many concurrent trials cost the head node, before and after the checkpoint cadence.

Starts a local multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two worker
nodes of logical CPUs), then runs the same sweep twice, each time from a driver process of
its own that joins the cluster by address (as ``ray submit`` runs a sweep script):

- ``before``: every epoch reports with a resume checkpoint (kdray before the cadence);
- ``after``: every epoch reports its metrics, a checkpoint only at ``kdray.sweep.checkpoints``'s
  default cadence (every 10 epochs or 15 minutes, and after the last epoch).

Each sweep is ``--trials`` concurrent trials (default 32) of ``--epochs`` epochs, driven
by Ray Tune with kdray's callbacks (W&B offline, its runs made by a driver thread; the
retry policy; the stage progress view) and its Tune settings (``FailureConfig(max_failures=-1)``,
``CheckpointConfig(num_to_keep=1)``, a store on local disk). The trials do no training:
an epoch is ``--epoch-seconds`` of sleep, and a checkpoint is a real Trainer state of
ResNet-20 with its SGD momentum (``kdray.training.state.save_state``), so what is measured is
the head's side: the driver's peak RSS (``VmHWM``), its CPU time per reported result (user
+ system, the whole ``fit``), the CPU time of the head node's Ray processes (GCS, raylet,
monitor and the workers they started, the W&B logging actor among them when the driver is
attached to the head node), and the checkpoint bytes the trials wrote.

    python benchmarks/cluster_scale.py                      # 32 trials x 20 epochs
    python benchmarks/cluster_scale.py --trials 64 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


# ----------------------------------------------------------------------------------------
# The trial (runs in a Ray worker): kdray's reporting pattern, no training
# ----------------------------------------------------------------------------------------
def tiny_trial(config, state_path: str, epochs: int, epoch_seconds: float, every_epoch: bool):
    import ray
    from ray import tune

    from kdray.spec import RunSpec
    from kdray.sweep.checkpoints import DEFAULT
    from kdray.training.state import STATE

    with open(state_path, "rb") as f:
        state = f.read()  # a real checkpoint's bytes
    run_id = RunSpec.from_dict(config["specs"][0]).run_id
    # the first report names node and device, as kdray's trainable (without importing torch
    # into 32 processes of a 2-core machine: kdray.sweep.runtime.trial_report would)
    tune.report({"node/node_id": ray.get_runtime_context().get_node_id(), "device": "cpu"})
    clock, written = DEFAULT.clock(0), 0
    for epoch in range(1, epochs + 1):
        time.sleep(epoch_seconds)
        metrics = {"epoch": epoch, "loss": 1.0 / epoch, "train_accuracy": 0.5, "lr": 0.1,
                   "epoch_seconds": epoch_seconds}
        row = {"epoch": epoch, "students": {run_id: metrics}, "failed": {},
               "checkpoint_bytes": written}
        if every_epoch or clock.due(epoch, final_epoch=epochs):
            with tempfile.TemporaryDirectory() as tmp:
                with open(os.path.join(tmp, STATE), "wb") as f:
                    f.write(state)
                written += len(state)
                row["checkpoint_bytes"] = written
                tune.report(row, checkpoint=tune.Checkpoint.from_directory(tmp))
            clock.saved(epoch)
        else:
            tune.report(row)
    final = {run_id: {"test_accuracy": 0.5, "per_class_accuracy": [0.5] * 10,
                                    "per_class_n": [1] * 10, "n_test": 10,
                                    "resumed_from_epoch": 0}}
    tune.report({"epoch": epochs, "final": final, "failed": {}, "checkpoint_bytes": written})


# ----------------------------------------------------------------------------------------
# One sweep's driver (its own process, joined to the cluster by address)
# ----------------------------------------------------------------------------------------
def drive(args) -> dict:
    import ray
    from ray import tune

    from kdray.spec import RunSpec
    from kdray.sweep.progress import StageProgress
    from kdray.sweep.retries import RetryPolicy
    from kdray.tracking import WandbConfig, tune_callback

    ray.init(address=args.address, log_to_driver=False)
    specs = [RunSpec(dataset="cifar10", role="teacher", arch="resnet20", seed=i, epochs=args.epochs)
             for i in range(args.trials)]
    wandb = WandbConfig(mode="offline", dir=os.path.join(args.work, f"wandb-{args.drive}"))
    os.environ.update(wandb.env())
    policy = RetryPolicy(2, log=lambda _: None)
    fn = tune.with_parameters(tiny_trial, state_path=args.state, epochs=args.epochs,
                              epoch_seconds=args.epoch_seconds,
                              every_epoch=args.drive == "before")
    tuner = tune.Tuner(
        tune.with_resources(fn, {"cpu": 1}),
        param_space={"specs": tune.grid_search([[s.to_dict()] for s in specs])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=args.drive, storage_path=os.path.join(args.work, f"store-{args.drive}", "tune"),
            callbacks=[tune_callback(wandb, {}), StageProgress("stage 1", len(specs)),
                       policy.callback],
            stop=policy.stopper, verbose=0,
            failure_config=tune.FailureConfig(max_failures=-1),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    n_results = sum(len(r.metrics_dataframe) for r in results if r.metrics_dataframe is not None)
    # the peak RSS of this process's own memory (VmHWM is reset by exec; getrusage's
    # ru_maxrss is not, and would include the parent's at fork)
    peak = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
    return {"trials": len(results), "errors": results.num_errors, "results": n_results,
            "checkpoint_bytes": sum(int(r.metrics.get("checkpoint_bytes", 0)) for r in results),
            "driver_cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "driver_peak_rss_mib": peak / 1024, "fit_wall_s": wall,
            "driver_on_head": ray.get_runtime_context().get_node_id() == args.head}


# ----------------------------------------------------------------------------------------
# The cluster and the side-by-side table
# ----------------------------------------------------------------------------------------
def head_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of the head node's processes and all their descendants (live ones read
    from /proc, finished ones through their parents' cutime/cstime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return total / tick


def checkpoint_of_resnet20(path: str) -> int:
    """Write a real resume checkpoint (ResNet-20 with SGD momentum, after one step)."""
    import torch

    from kdray.training.state import save_state
    from kdray.data import DatasetSplits, TensorData
    from kdray.spec import RunSpec
    from kdray.training.loop import Trainer

    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(64) % 10
    data = DatasetSplits(train=TensorData(x, y), test=TensorData(x[:8], y[:8]), num_classes=10,
                         image_size=32)
    trainer = Trainer(RunSpec(dataset="cifar10", role="teacher", arch="resnet20", epochs=1,
                              batch_size=64), data, device="cpu")
    trainer.train_epoch()
    save_state(trainer.state_dict(), os.path.dirname(path))
    return os.path.getsize(path)


def parser() -> argparse.ArgumentParser:
    from kdray.cli_help import command_parser, description_of

    p = command_parser("python benchmarks/cluster_scale.py", description_of(__doc__))
    p.add_argument("--trials", type=int, default=32, help="concurrent trials")
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    p.add_argument("--epoch-seconds", type=float, default=0.5, help="an epoch's sleep")
    p.add_argument("--drive", choices=["before", "after"], help=argparse.SUPPRESS)
    p.add_argument("--address", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    p.add_argument("--head", help=argparse.SUPPRESS)
    return p


def main() -> int:
    p = parser()
    args = p.parse_args()
    if args.trials < 1 or args.epochs < 1 or args.epoch_seconds < 0:
        p.error(f"--trials {args.trials}, --epochs {args.epochs}, --epoch-seconds "
                f"{args.epoch_seconds}: expected >= 1, >= 1, >= 0")
    if args.drive:
        print("RESULT " + json.dumps(drive(args)), flush=True)
        return 0

    work = tempfile.mkdtemp(prefix="kdray-cluster-scale-")
    state = os.path.join(work, "state", "state.pt")
    os.makedirs(os.path.dirname(state))
    size = checkpoint_of_resnet20(state)
    per_node = (args.trials + 1) // 2
    rows = measure(args, work, state, per_node)
    if rows is None:
        return 1
    show(rows, args, per_node, size)
    return 0


def measure(args, work: str, state: str, per_node: int) -> dict | None:
    """Both drives ("before": a checkpoint every epoch, "after": at kdray's cadence) on one
    local cluster (a head without CPUs, two nodes of ``per_node``), each from its own driver
    process; None when one failed."""
    from ray.cluster_utils import Cluster

    with socket.socket() as sock:  # a free GCS port: never another Ray's 6379
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args=dict(  # no trial on the head
        num_cpus=0, include_dashboard=False, gcs_server_port=port,
        object_store_memory=100 * 1024 ** 2))
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=per_node, object_store_memory=100 * 1024 ** 2)
        rows = {}
        head = [p.process.pid for procs in cluster.head_node.all_processes.values() for p in procs]
        for drive_ in ("before", "after"):
            head0 = head_cpu_seconds(head)
            out = subprocess.run(
                [sys.executable, __file__, "--drive", drive_, "--address", cluster.address,
                 "--work", work, "--state", state, "--trials", str(args.trials),
                 "--epochs", str(args.epochs), "--epoch-seconds", str(args.epoch_seconds),
                 "--head", cluster.head_node.node_id],
                capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
                return None
            rows[drive_] = json.loads(line[0][len("RESULT "):])
            rows[drive_]["head_cpu_s"] = head_cpu_seconds(head) - head0
    finally:
        cluster.shutdown()
    return rows


def show(rows: dict, args, per_node: int, size: int) -> None:
    """The before/after table."""
    b, a = rows["before"], rows["after"]
    print(f"cluster_scale: {args.trials} concurrent trials x {args.epochs} epochs "
          f"({args.epoch_seconds:g} s each), W&B offline; local cluster: head (0 CPU) + 2 nodes "
          f"x {per_node} logical CPUs; {os.cpu_count()} cores; checkpoint = ResNet-20 state, "
          f"{size / 1e6:.2f} MB")
    print(f"{'':34}{'before (every epoch)':>24}{'after (10 epochs/15 min)':>26}")
    table = [
        ("trials (errors)", lambda r: f"{r['trials']} ({r['errors']})"),
        ("results reported", lambda r: f"{r['results']:,}"),
        ("checkpoint bytes written", lambda r: f"{r['checkpoint_bytes'] / 1e6:,.1f} MB"),
        ("driver peak RSS", lambda r: f"{r['driver_peak_rss_mib']:,.0f} MiB"),
        ("driver CPU per result", lambda r: f"{1000 * r['driver_cpu_s'] / max(1, r['results']):.2f} ms"),
        ("driver CPU, whole fit", lambda r: f"{r['driver_cpu_s']:.1f} s"),
        ("head node's Ray processes CPU", lambda r: f"{r['head_cpu_s']:.1f} s"),
        ("(driver + head) CPU per result",
         lambda r: f"{1000 * (r['driver_cpu_s'] + r['head_cpu_s']) / max(1, r['results']):.2f} ms"),
        ("fit wall time", lambda r: f"{r['fit_wall_s']:.1f} s"),
    ]
    for label, fmt in table:
        print(f"{label:34}{fmt(b):>24}{fmt(a):>26}")
    print("(the head node's Ray processes: GCS, raylet, monitor and the workers they started, "
          "the W&B logging actor among them when the driver attached to the head node: "
          f"{'yes' if b['driver_on_head'] and a['driver_on_head'] else 'no'})")

if __name__ == "__main__":
    sys.exit(main())
