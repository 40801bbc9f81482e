"""The sweep driver: a study's runs as Ray Tune trials, in two stages, safe to re-run.

``run_sweep(experiments, store)``:

1. expands and validates the grid (``kdray.sweep.grid``) and checks the store: every complete run
   (run.json present, checksum matching) is skipped;
2. stage 1 runs the missing teachers and non-distilled students, stage 2 the missing
   distilled students whose teacher is complete, grouped into *cohorts*: the pending DS runs
   of one teacher seed that differ only in temperature and alpha train as one trial, sharing
   each batch and the teacher's forward (``kdray.sweep.grid.cohorts``, at most
   ``kdray.sweep.grid.COHORT_MAX`` per trial); each student still commits its own run folder and a
   student whose loss becomes non-finite fails alone. A DS run whose teacher failed is not
   launched and is listed; a teacher whose weights no longer match its run.json is trained
   again first;
3. each trial is ``tune.with_resources(trainable, resources_of(spec))``: CPUs, a GPU
   fraction and the node kind per architecture (``kdray.models`` defaults, overridable;
   placement by need, ``kdray.sweep.cluster``), CPU-only when the cluster has no GPU. A trial
   first reports its node and device (and fails at once when Ray gave it a GPU that CUDA
   cannot use, ``kdray.sweep.runtime``), then reports every epoch, with a resume checkpoint
   (model, optimiser, schedule, RNG) at the cadence of ``kdray.training.state``. A trial lost
   with its node resumes from its last checkpoint however often that happens; one failing
   by its own error gets ``max_failures`` retries (``kdray.sweep.cluster.RetryPolicy``). Before
   any trial, the downloadable datasets are staged into ``{store}/datasets`` once, and
   every node reads them there (``kdray.data.fetch.stage_datasets``). Tune's experiment state
   lives under ``{store}/tune/``;
4. W&B: one run per *run* (each student of a cohort has its own), created on the driver's
   node by one logging actor (``kdray.sweep.tracking.tune_callback``), so only the head needs an
   API key; named by run_id, grouped by dataset and pair;
5. the returned :class:`SweepReport` says what ran, what was skipped, what failed (with the
   error) and what was not launched; ``fit()`` does not raise on failed trials, we check.

The driver joins a running Ray cluster (``RAY_ADDRESS`` or ``ray.init(address="auto")``)
and starts a local Ray otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kdray.connect import init_ray
from kdray.sweep import runtime
from kdray.training.state import DEFAULT as DEFAULT_CADENCE, STATE, Cadence, load_state, save_state
from kdray.sweep.cluster import (available_node_kinds, cluster_has_gpu, resources_of,
                           largest_node_cpus, parse_resource_overrides, trial_resources,
                           without_node_kinds)
from kdray.data import fetch
from kdray.data.fetch import stage_datasets
from kdray.sweep.retries import RetryPolicy
from kdray.sweep.grid import Experiment, Plan, cohorts, expand
from kdray.sweep.progress import StageProgress, quiet_ray_hints
from kdray.spec import RunSpec
from kdray.store import Store
from kdray.sweep.tracking import WandbConfig, tune_callback

CRASH_ENV = "KDRAY_CRASH_AFTER_EPOCH"  # fault injection for tests: "<epoch>:<marker dir>[:pause]"
META = "checkpoint.json"  # beside checkpoint.STATE in a trial checkpoint: {run_id, epoch}


def earlier_checkpoints(store: Store, run_ids: set[str]) -> dict[str, str]:
    """For runs an earlier sweep started but did not finish (its driver died, a trial ran out
    of retries), the store path of the latest epoch checkpoint Tune kept under ``{store}/tune``.
    A cohort's checkpoint serves each of its students that had not failed."""
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
        epoch, failed = int(meta.get("epoch", 0)), set(meta.get("failed", ()))
        state = info.path.rsplit("/", 1)[0] + "/" + STATE
        for run_id in meta.get("run_ids") or [meta.get("run_id")]:
            if run_id in run_ids and run_id not in failed and epoch > best.get(run_id, (0, ""))[0]:
                if store.exists(state):
                    best[run_id] = (epoch, state)
    return {run_id: path for run_id, (_, path) in best.items()}


# ----------------------------------------------------------------------------------------
# The trainable (runs inside a Ray worker)
# ----------------------------------------------------------------------------------------
def _maybe_crash(run_id: str, epoch: int, setting: str | None) -> None:
    """Fault injection for tests (``$KDRAY_CRASH_AFTER_EPOCH`` = "<epoch>:<marker dir>" on the
    driver): kill this worker once per run right after reporting epoch N, like a preemption.
    With "<epoch>:<marker dir>:pause" the trial instead writes ``<run_id>.paused`` (its node)
    and waits, at most 10 minutes, for ``<marker dir>/release``: a test kills its node then."""
    if not setting:
        return
    at, _, rest = setting.partition(":")
    marker_dir, _, mode = rest.partition(":")
    marker = os.path.join(marker_dir, f"{run_id}.{'paused' if mode == 'pause' else 'crashed'}")
    if epoch == int(at) and not os.path.exists(marker):
        os.makedirs(marker_dir, exist_ok=True)
        if mode == "pause":
            with open(marker + ".tmp", "w") as f:
                json.dump({"epoch": epoch, **runtime.node_info()}, f)
            os.replace(marker + ".tmp", marker)
            for _ in range(6000):
                if os.path.exists(os.path.join(marker_dir, "release")):
                    return
                time.sleep(0.1)
            return
        open(marker, "w").close()
        os._exit(17)


def trainable(config: dict[str, Any], store_uri: str, data_dir: str | None = None,
              crash: str | None = None, earlier: Mapping[str, str] | None = None,
              cadence: Cadence = DEFAULT_CADENCE) -> None:
    """Tune function trainable: one cohort (``config["specs"]``; a teacher or NDS is a cohort
    of one), resumable: a checkpoint with every student's state at ``cadence``.

    Reports first its node and device (and fails at once if Ray gave it a GPU that CUDA
    cannot use, ``kdray.sweep.runtime``), then every epoch; datasets come from the store's mirror.

    Reports per epoch ``{"epoch", "students": {run_id: metrics}, "failed": {run_id: why}}``
    and at the end ``{"final": {run_id: test metrics}, "failed": ...}``; each student commits
    its own run folder."""
    import torch
    from ray import tune

    from kdray import trial
    from kdray.training import gpu

    specs = [RunSpec.from_dict(d) for d in config["specs"]]
    store = Store(store_uri)
    gpu.prepare_process(deterministic=any(s.deterministic for s in specs))  # before CUDA starts
    tune.report(runtime.trial_report())  # first: the node and the device (kdray.sweep.runtime)
    runtime.require_cuda()  # Ray gave a GPU that CUDA cannot use: fail now, naming the node
    requested = tune.get_context().get_trial_resources().required_resources
    cpus = requested.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    gpu.limit_memory(requested.get("GPU", 0))  # a trial sharing a card stays in its share
    pending = [s for s in specs  # an earlier attempt's commits count; a teacher's weights too
               if not store.status(s.run_id, verify_model=s.role == "teacher").complete]
    if not pending:
        tune.report({"epoch": specs[0].epochs, "final": {}, "failed": {}, "already_complete": True})
        return

    resume = None
    checkpoint = tune.get_checkpoint()  # this trial's own, after a retry
    if checkpoint is not None:
        with checkpoint.as_directory() as d:  # to the CPU, whatever it was saved from
            resume = load_state(os.path.join(d, STATE))
    elif (earlier or {}).get(pending[0].run_id):  # the last checkpoint of an earlier sweep
        resume = load_state(store.read_bytes(earlier[pending[0].run_id]))
    clock = cadence.clock(int(resume["epoch"]) if resume else 0)
    node = runtime.node_info()

    def on_epoch(trainer, metrics: dict[str, dict[str, float]]) -> None:
        row = {"epoch": trainer.epoch, "students": metrics, "failed": dict(trainer.failed)}
        if not clock.due(trainer.epoch, final_epoch=pending[0].epochs):
            tune.report(row)  # metrics every epoch; a resume checkpoint at the cadence
        else:
            with tempfile.TemporaryDirectory() as tmp:
                save_state(trainer.state_dict(), tmp)
                with open(os.path.join(tmp, META), "w") as f:
                    json.dump({"run_ids": [s.run_id for s in pending], "epoch": trainer.epoch,
                               "failed": sorted(trainer.failed)}, f)
                tune.report(row, checkpoint=tune.Checkpoint.from_directory(tmp))
            clock.saved(trainer.epoch)
        for run_id in metrics:
            _maybe_crash(run_id, trainer.epoch, crash)

    try:
        with fetch.mirror(store.uri):  # datasets come from {store}/datasets, not the internet
            result = trial.run_cohort(pending, store, resume=resume, on_epoch=on_epoch, node=node,
                                      data_root=data_dir, num_workers=max(0, int(cpus) - 1))
    finally:
        _release_memory()
    # class names for the W&B per-class table, as a tuple: Tune's TensorBoard logger skips
    # it (a list of strings makes it warn that it cannot log it)
    final = {run_id: {**{k: r[k] for k in ("test_accuracy", "per_class_accuracy", "per_class_n",
                                           "n_test", "resumed_from_epoch")},
                      "class_names": tuple(r["class_names"])}
             for run_id, r in result.items()}
    tune.report({"epoch": specs[0].epochs, "final": final, "failed": dict(result.failed)})


def _release_memory() -> None:
    """Give a finished trial's memory back before the worker runs the next one (reuse_actors):
    collect its objects, return its cached CUDA blocks to the driver (``empty_cache``, when
    CUDA started here), then return freed heap pages to the OS (glibc malloc_trim)."""
    import ctypes
    import gc

    from kdray.training import gpu

    gc.collect()
    gpu.release_cuda_memory()
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
               max_concurrent: int | None, cohort_sizes: Mapping[str, int] | None,
               checkpoint: Cadence = DEFAULT_CADENCE) -> None:
    from ray import tune

    if not specs:
        return
    earlier = earlier_checkpoints(store, {s.run_id for s in specs})
    for path in sorted(set(earlier.values())):
        runs = sorted(r for r, p in earlier.items() if p == path)
        print(f"  {', '.join(runs)}: resume from an earlier sweep's checkpoint "
              f"({path.rsplit('/', 4)[-4]})")
    groups = cohorts(specs, cohort_sizes, earlier)
    if len(groups) < len(specs):
        print(f"  {len(specs)} runs in {len(groups)} cohort trials")
    fn = tune.with_parameters(_fresh_trainable(), store_uri=store.uri, data_dir=data_dir,
                              crash=os.environ.get(CRASH_ENV), earlier=earlier, cadence=checkpoint)
    fn = tune.with_resources(fn, lambda config: resources_of(
        RunSpec.from_dict(config["specs"][0]), resources, use_gpu, max_cpus))
    callbacks = [tune_callback(wandb, plan.group)] if wandb.mode != "disabled" else []
    quiet_ray_hints()
    callbacks.append(StageProgress(name.replace("stage", "stage "), len(specs)))  # runs, not trials
    retries = RetryPolicy(max_failures, name=lambda t: ", ".join(  # lost nodes: no limit;
        RunSpec.from_dict(d).run_id for d in t.config["specs"]))  # own errors: max_failures
    callbacks.append(retries.callback)
    tuner = tune.Tuner(
        fn,
        param_space={"specs": tune.grid_search([[s.to_dict() for s in g] for g in groups])},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=store.path("tune"),
            storage_filesystem=store.fs, callbacks=callbacks, verbose=0, stop=retries.stopper,
            failure_config=tune.FailureConfig(max_failures=-1),  # RetryPolicy decides
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    results = tuner.fit()
    unreported = {s.run_id for s in specs}
    teachers = {s.run_id for s in specs if s.role == "teacher"}
    for result in results:
        ids = [RunSpec.from_dict(d).run_id for d in result.config["specs"]]
        diverged = (result.metrics or {}).get("failed") or {}
        gave_up = retries.gave_up.get((result.metrics or {}).get("trial_id"))
        for run_id in ids:
            unreported.discard(run_id)
            if store.status(run_id, verify_model=run_id in teachers).complete:
                report.ran.append(run_id)
            elif run_id in diverged:
                report.failed[run_id] = diverged[run_id]
            elif gave_up or result.error is not None:
                report.failed[run_id] = gave_up or _one_line(result.error)
            else:
                report.failed[run_id] = "trial ended but the run is not complete in the store"
        if result.error is None and not gave_up:
            # every student committed or failed for good: the resume checkpoints (optimiser
            # state included, 1.3 GB for BERT-base) are of no further use
            stale = [(c.filesystem, c.path) for c in [result.checkpoint] if c is not None]
            stale += [(store.fs, p) for p in {earlier[r].rsplit("/", 1)[0] for r in ids if r in earlier}]
            for fs, path in stale:
                try:
                    fs.delete_dir(path)
                except OSError:
                    pass
    for run_id in unreported:  # trials Tune never reported (should not happen)
        report.failed[run_id] = "no result from Ray Tune"


def _fresh_trainable():
    """A new function object each time: ``tune.with_resources`` mutates what it wraps."""
    def kdray_trial(config, store_uri, data_dir=None, crash=None, earlier=None,
                    cadence=DEFAULT_CADENCE):
        return trainable(config, store_uri, data_dir, crash, earlier, cadence)
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
              num_cpus: int | None = None, cohort_sizes: Mapping[str, int] | None = None,
              checkpoint: Cadence | None = None, log=print) -> SweepReport:
    """Run every missing run of ``experiments`` on Ray Tune; see the module docstring."""
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    wandb = wandb or WandbConfig(mode="disabled")
    plan = expand(experiments)
    status = store.statuses([s.run_id for s in plan.all])
    # the teachers that pending DS runs will read: their weights must match their run.json,
    # or they are trained again first (no student is distilled from damaged weights)
    needed = sorted({s.teacher_spec().run_id for s in plan.stage2 if not status[s.run_id].complete})
    status.update(store.statuses(needed, verify_model=needed))
    for run_id in needed:
        if not status[run_id].complete and status[run_id].reason != "missing":
            log(f"  {run_id}: trained again ({status[run_id].reason})")
    report = SweepReport(skipped=[r for r, st in status.items() if st.complete])
    stage1 = [s for s in plan.stage1 if not status[s.run_id].complete]
    pending2 = [s for s in plan.stage2 if not status[s.run_id].complete]
    log(f"plan: {len(plan)} runs ({len(plan.teachers)} teachers, {len(plan.nds)} NDS, "
        f"{len(plan.ds)} DS); {len(report.skipped)} complete in {store}")
    if not stage1 and not pending2:
        report.seconds = time.perf_counter() - t0
        return report
    # downloadable datasets go into {store}/datasets once, here; no node downloads them
    unstaged = stage_datasets(stage1 + pending2, store, data_dir, log=log)
    report.not_launched.update(unstaged)
    stage1 = [s for s in stage1 if s.run_id not in unstaged]
    pending2 = [s for s in pending2 if s.run_id not in unstaged]

    where = init_ray(num_cpus=num_cpus)
    gpu = cluster_has_gpu() if use_gpu is None else use_gpu
    log(f"ray: {where} cluster, {'with' if gpu else 'no'} GPU")
    if gpu and not available_node_kinds():  # e.g. a workstation: no node carries a kind
        resources = without_node_kinds(resources)
    common = dict(wandb=wandb, resources=resources, use_gpu=gpu,
                  max_cpus=largest_node_cpus() if where == "local" else None,
                  max_failures=max_failures, data_dir=data_dir, report=report,
                  max_concurrent=max_concurrent, cohort_sizes=cohort_sizes,
                  checkpoint=checkpoint or DEFAULT_CADENCE)
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
