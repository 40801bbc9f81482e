"""The sweep driver: a study's runs as Ray Tune trials, in two stages, safe to re-run.

``run_sweep(experiments, store)``:

1. expands and validates the grid (``kdray.grid``) and checks the store: every complete run
   (run.json present, checksum matching) is skipped;
2. stage 1 runs the missing teachers and non-distilled students, stage 2 the missing
   distilled students whose teacher is complete; a DS run whose teacher failed is not
   launched and is listed;
3. each trial is ``tune.with_resources(trainable, resources_of(spec))``: CPUs and a GPU
   fraction per architecture (``kdray.models`` defaults, overridable), CPU-only when the
   cluster has no GPU. A trial reports every epoch with a checkpoint (model, optimiser,
   schedule, RNG), so ``FailureConfig(max_failures=…)`` resumes a killed or preempted
   trial from its last epoch. Tune's experiment state lives under ``{store}/tune/``;
4. W&B: one run per trial, created on the driver by Ray's ``WandbLoggerCallback`` (so only
   the head needs an API key), named by run_id, grouped by dataset and pair;
5. the returned :class:`SweepReport` says what ran, what was skipped, what failed (with the
   error) and what was not launched; ``fit()`` does not raise on failed trials, we check.

The driver joins a running Ray cluster (``RAY_ADDRESS`` or ``ray.init(address="auto")``)
and starts a local Ray otherwise.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kdray import models as model_registry
from kdray.cluster import cluster_has_gpu, init_ray, largest_node_cpus
from kdray.grid import Experiment, Plan, expand
from kdray.spec import RunSpec
from kdray.store import Store
from kdray.tracking import WandbConfig, tune_callback

CRASH_ENV = "KDRAY_CRASH_AFTER_EPOCH"  # fault injection for tests: "<epoch>:<marker dir>"
STATE, META = "state.pt", "checkpoint.json"  # a trial checkpoint: Trainer state + {run_id, epoch}


def earlier_checkpoints(store: Store, run_ids: set[str]) -> dict[str, str]:
    """For runs an earlier sweep started but did not finish (its driver died, a trial ran out
    of retries), the store path of the latest epoch checkpoint Tune kept under ``{store}/tune``."""
    from pyarrow import fs as pafs

    sel = pafs.FileSelector(store.path("tune"), recursive=True, allow_not_found=True)
    best: dict[str, tuple[int, str]] = {}
    for info in store.fs.get_file_info(sel):
        if info.type != pafs.FileType.File or info.base_name != META:
            continue
        try:
            meta = json.loads(store.read_bytes(info.path))
        except (OSError, ValueError):
            continue
        run_id, epoch = meta.get("run_id"), int(meta.get("epoch", 0))
        if run_id in run_ids and epoch > best.get(run_id, (0, ""))[0]:
            state = info.path.rsplit("/", 1)[0] + "/" + STATE
            if store.exists(state):
                best[run_id] = (epoch, state)
    return {run_id: path for run_id, (_, path) in best.items()}


# ----------------------------------------------------------------------------------------
# Resources
# ----------------------------------------------------------------------------------------
def resources_of(spec: RunSpec, overrides: Mapping[str, Mapping[str, float]] | None = None,
                 use_gpu: bool = True, max_cpus: float | None = None) -> dict[str, float]:
    """Ray resources of one trial of ``spec``: the arch's default (for a DS run, the larger of
    its and its teacher's), then ``overrides[arch]``; without GPUs only CPUs, at most
    ``max_cpus`` (a local Ray's size)."""
    res = dict(model_registry.MODELS[spec.arch].resources)
    if spec.role == "ds":  # a DS trial also holds and runs its teacher
        teacher = model_registry.MODELS[spec.teacher_arch].resources
        res = {k: max(res.get(k, 0), teacher.get(k, 0)) for k in {*res, *teacher}}
    res.update((overrides or {}).get(spec.arch, {}))
    if not use_gpu:
        res.pop("gpu", None)
    if max_cpus:
        res["cpu"] = min(res.get("cpu", 1), max_cpus)
    return {k: v for k, v in res.items() if v}


def parse_resources(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """``["resnet20=cpu:2,gpu:0.5"]`` -> ``{"resnet20": {"cpu": 2.0, "gpu": 0.5}}``."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        arch, _, spec = item.partition("=")
        if arch not in model_registry.MODELS or not spec:
            raise ValueError(f"--resources: {item!r} is not ARCH=cpu:N,gpu:F with a registered ARCH")
        res = {}
        for part in spec.split(","):
            key, _, value = part.partition(":")
            try:
                v = float(value)
            except ValueError:
                v = -1.0
            if key not in ("cpu", "gpu") or v < 0 or (key == "gpu" and v > 1 and v != int(v)):
                raise ValueError(f"--resources: {part!r} in {item!r} is not cpu:N or gpu:F (F >= 0)")
            res[key] = v
        out[arch] = res
    return out


# ----------------------------------------------------------------------------------------
# The trainable (runs inside a Ray worker)
# ----------------------------------------------------------------------------------------
def _maybe_crash(run_id: str, epoch: int, setting: str | None) -> None:
    """Fault injection for tests (``$KDRAY_CRASH_AFTER_EPOCH`` = "<epoch>:<marker dir>" on the
    driver): kill this worker once per run right after checkpointing epoch N, like a preemption."""
    if not setting:
        return
    at, _, marker_dir = setting.partition(":")
    marker = os.path.join(marker_dir, f"{run_id}.crashed")
    if epoch == int(at) and not os.path.exists(marker):
        os.makedirs(marker_dir, exist_ok=True)
        open(marker, "w").close()
        os._exit(17)


def trainable(config: dict[str, Any], store_uri: str, data_dir: str | None = None,
              crash: str | None = None, earlier: Mapping[str, str] | None = None) -> None:
    """Tune function trainable: one run, checkpointed every epoch, resumable."""
    import torch
    from ray import tune

    from kdray import trial

    spec = RunSpec.from_dict(config["spec"])
    store = Store(store_uri)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    if store.is_complete(spec.run_id):  # finished by an earlier attempt or sweep
        tune.report({"run_id": spec.run_id, "already_complete": True})
        return

    resume = None
    checkpoint = tune.get_checkpoint()  # this trial's own, after a retry
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = torch.load(os.path.join(d, STATE), weights_only=False)
    elif (earlier or {}).get(spec.run_id):  # the last checkpoint of an earlier sweep's attempt
        resume = torch.load(io.BytesIO(store.read_bytes(earlier[spec.run_id])), weights_only=False)

    def on_epoch(trainer, metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(trainer.state_dict(), os.path.join(tmp, STATE))
            with open(os.path.join(tmp, META), "w") as f:
                json.dump({"run_id": spec.run_id, "epoch": trainer.epoch}, f)
            tune.report({"run_id": spec.run_id, **metrics},
                        checkpoint=tune.Checkpoint.from_directory(tmp))
        _maybe_crash(spec.run_id, int(metrics["epoch"]), crash)

    try:
        record = trial.run(spec, store, resume=resume, on_epoch=on_epoch, data_root=data_dir,
                           num_workers=max(0, int(cpus) - 1))
    finally:
        _release_memory()
    tune.report({"run_id": spec.run_id, "epoch": spec.epochs, "test_accuracy": record["test_accuracy"],
                 "per_class_accuracy": record["per_class_accuracy"],
                 "per_class_n": record["per_class_n"], "n_test": record["n_test"],
                 "resumed_from_epoch": record["resumed_from_epoch"]})


def _release_memory() -> None:
    """Give a finished trial's memory back before the worker runs the next one (reuse_actors):
    collect its objects, then return freed heap pages to the OS (glibc malloc_trim)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# ----------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------
@dataclass
class SweepReport:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> error
    not_launched: dict[str, str] = field(default_factory=dict)  # run_id -> why
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_launched

    def format(self, max_listed: int = 40) -> str:
        lines = [f"sweep: {len(self.ran)} ran, {len(self.skipped)} skipped (already complete), "
                 f"{len(self.failed)} failed, {len(self.not_launched)} not launched, "
                 f"{self.seconds:.0f}s"]
        for run_id in sorted(self.ran)[:max_listed]:
            lines.append(f"  ran {run_id}")
        if len(self.ran) > max_listed:
            lines.append(f"  ... and {len(self.ran) - max_listed} more (the store lists every run)")
        for run_id, err in sorted(self.failed.items()):
            lines.append(f"  FAILED {run_id}: {err}")
        for run_id, why in sorted(self.not_launched.items()):
            lines.append(f"  NOT LAUNCHED {run_id}: {why}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------
def _run_stage(name: str, specs: list[RunSpec], store: Store, plan: Plan, *, wandb: WandbConfig,
               resources: Mapping[str, Mapping[str, float]] | None, use_gpu: bool,
               max_cpus: float | None, max_failures: int, data_dir: str | None, report: SweepReport,
               max_concurrent: int | None) -> None:
    from ray import tune

    if not specs:
        return
    by_id = {s.run_id: s for s in specs}
    earlier = earlier_checkpoints(store, set(by_id))
    for run_id in sorted(earlier):
        print(f"  {run_id}: resumes from an earlier sweep's checkpoint "
              f"({earlier[run_id].rsplit('/', 4)[-4]})")
    fn = tune.with_parameters(_fresh_trainable(), store_uri=store.uri, data_dir=data_dir,
                              crash=os.environ.get(CRASH_ENV), earlier=earlier)
    fn = tune.with_resources(fn, lambda config: resources_of(
        RunSpec.from_dict(config["spec"]), resources, use_gpu, max_cpus))
    callbacks = [tune_callback(wandb, plan.group)] if wandb.mode != "disabled" else []
    tuner = tune.Tuner(
        fn,
        param_space={"spec": tune.grid_search([s.to_dict() for s in specs])},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=store.path("tune"),
            storage_filesystem=store.fs, callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    results = tuner.fit()
    for result in results:
        run_id = RunSpec.from_dict(result.config["spec"]).run_id
        if result.error is not None:
            report.failed[run_id] = _one_line(result.error)
        elif store.is_complete(run_id):
            report.ran.append(run_id)
            # the run is committed: its resume checkpoints (optimiser state included, 1.3 GB
            # for BERT-base) are of no further use
            stale = [(c.filesystem, c.path) for c in [result.checkpoint] if c is not None]
            if run_id in earlier:
                stale.append((store.fs, earlier[run_id].rsplit("/", 1)[0]))
            for fs, path in stale:
                try:
                    fs.delete_dir(path)
                except OSError:
                    pass
        else:
            report.failed[run_id] = "trial ended but the run is not complete in the store"
        by_id.pop(run_id, None)
    for run_id in by_id:  # trials Tune never reported (should not happen)
        report.failed[run_id] = "no result from Ray Tune"


def _fresh_trainable():
    """A new function object each time: ``tune.with_resources`` mutates what it wraps."""
    def kdray_trial(config, store_uri, data_dir=None, crash=None, earlier=None):
        return trainable(config, store_uri, data_dir, crash, earlier)
    return kdray_trial


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    # Ray wraps the trial's exception; its last line is the original message
    last = [ln for ln in text if ln.strip()]
    return f"{type(error).__name__}: {last[-1] if last else ''}"[:500]


@contextlib.contextmanager
def _environ(values: Mapping[str, str]):
    """Set environment variables for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_sweep(experiments: Sequence[Experiment], store: Store | str, *,
              wandb: WandbConfig | None = None,
              resources: Mapping[str, Mapping[str, float]] | None = None,
              max_failures: int = 2, data_dir: str | None = None,
              use_gpu: bool | None = None, max_concurrent: int | None = None,
              num_cpus: int | None = None, log=print) -> SweepReport:
    """Run every missing run of ``experiments`` on Ray Tune; see the module docstring."""
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    wandb = wandb or WandbConfig(mode="disabled")
    plan = expand(experiments)
    status = store.statuses([s.run_id for s in plan.all])
    report = SweepReport(skipped=[r for r, st in status.items() if st.complete])
    stage1 = [s for s in plan.stage1 if not status[s.run_id].complete]
    pending2 = [s for s in plan.stage2 if not status[s.run_id].complete]
    log(f"plan: {len(plan)} runs ({len(plan.teachers)} teachers, {len(plan.nds)} NDS, "
        f"{len(plan.ds)} DS); {len(report.skipped)} complete in {store}")
    if not stage1 and not pending2:
        report.seconds = time.perf_counter() - t0
        return report

    where = init_ray(num_cpus=num_cpus)
    gpu = cluster_has_gpu() if use_gpu is None else use_gpu
    log(f"ray: {where} cluster, {'with' if gpu else 'no'} GPU")
    common = dict(wandb=wandb, resources=resources, use_gpu=gpu,
                  max_cpus=largest_node_cpus() if where == "local" else None,
                  max_failures=max_failures, data_dir=data_dir, report=report,
                  max_concurrent=max_concurrent)
    # W&B runs are created on the driver: Ray's WandbLoggerCallback reads WANDB_MODE from the
    # environment to decide whether it needs an API key
    env = {**wandb.env(), "TUNE_WARN_THRESHOLD_S": "5",  # W&B actors start in ~1 s per trial
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
           "RAY_AIR_NEW_OUTPUT": "0"}  # honour verbose=0
    with _environ(env):
        log(f"stage 1: {len(stage1)} teacher/NDS runs to train")
        _run_stage("stage1", stage1, store, plan, **common)
        stage2 = []
        for spec in pending2:
            teacher_id = spec.teacher_spec().run_id
            if teacher_id in report.failed:
                report.not_launched[spec.run_id] = f"its teacher {teacher_id} failed"
            elif not (status[teacher_id].complete or teacher_id in report.ran):
                report.not_launched[spec.run_id] = f"its teacher {teacher_id} is not complete"
            else:
                stage2.append(spec)
        log(f"stage 2: {len(stage2)} DS runs to train")
        _run_stage("stage2", stage2, store, plan, **common)
    report.seconds = time.perf_counter() - t0
    return report


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use a sweep script, e.g. python sweeps/quick.py")
