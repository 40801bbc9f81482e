"""The sweep driver: a study's runs as Ray Tune trials, in two stages, safe to re-run.

``run_plan(plan, store, options)`` (``run_sweep(experiments, store, ...)`` expands the grid
first, ``kdray/sweep/grid.py``):

1. checks the store: every complete run (run.json present and well formed, checksum
   matching) is skipped; every teacher's weights are verified too, whether or not a student
   needs them now (``kdray.sweep.plan.plan_statuses``); a damaged run is listed as trained
   again. Before each stage the driver leases the runs it will train (``kdray/lease.py``):
   a run another live driver holds is not launched but listed as running elsewhere, and
   one another driver committed meanwhile is skipped;
2. stages the downloadable datasets into ``{store}/datasets`` once, from here; every node
   reads them there (``kdray.sweep.staging``);
3. joins Ray (``kdray/connect.py``) and places trials by need (``kdray/sweep/cluster.py``);
4. stage 1 runs the missing teachers and non-distilled students, stage 2 the missing
   distilled students whose teacher is complete, grouped into *cohorts*: the pending DS runs
   of one teacher seed that differ only in temperature and alpha train as one trial, sharing
   each batch and the teacher's forward (``kdray.sweep.grid.cohorts``); each student still
   commits its own run folder and a student whose loss becomes non-finite fails alone. A DS
   run whose teacher failed is not launched and is listed;
5. each trial is ``tune.with_resources(train, its request)`` (``kdray/sweep/trainable.py``):
   it reports every epoch, with a resume checkpoint at the cadence; a trial lost with its
   node resumes from its last checkpoint however often that happens, one failing by its own
   error gets ``max_failures`` retries (``kdray/sweep/retries.py``). Tune's experiment state
   lives under ``{store}/tune/``, one folder per stage and driver (its lease owner id);
6. W&B: one run per *run* (each student of a cohort has its own), created in the driver
   process by one thread (``kdray.tracking.tune_callback``), so only the head needs an API
   key and the key is passed to nothing; named by run_id, grouped by dataset and pair;
7. the returned :class:`SweepReport` says what ran, what was skipped, what failed (with the
   error) and what was not launched; ``fit()`` does not raise on failed trials, we check.
   It counts the runs it trained that *collapsed* (``kdray/collapse.py``: complete, but at
   chance) beside the failed ones, each named; they do not make the sweep fail (a run that
   learned nothing is a result), and the analysis keeps them out of every number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kdray.collapse import collapse_reason
from kdray.connect import init_ray
from kdray.lease import Claim, Owner
from kdray.spec import RunSpec
from kdray.store import RunStatus, Store
from kdray.sweep import trainable
from kdray.sweep.checkpoints import earlier_checkpoints
from kdray.sweep.cluster import Placement, placement
from kdray.sweep.grid import Experiment, Plan, cohorts, expand
from kdray.sweep.options import SweepOptions
from kdray.sweep.plan import plan_statuses
from kdray.sweep.progress import StageProgress, quiet_ray_hints
from kdray.sweep.retries import RetryPolicy
from kdray.sweep.staging import stage_datasets
from kdray.tracking import tune_callback


@dataclass
class SweepReport:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> error
    collapsed: dict[str, str] = field(default_factory=dict)  # run_id -> why (complete, at chance)
    not_launched: dict[str, str] = field(default_factory=dict)  # run_id -> why
    running_elsewhere: dict[str, str] = field(default_factory=dict)  # run_id -> who
    trained_again: dict[str, str] = field(default_factory=dict)  # run_id -> what was wrong
    interrupted: list[str] = field(default_factory=list)  # Tune stopped (Ctrl-C) before them
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_launched and not self.interrupted

    def add(self, stage: "StageResult") -> None:
        self.ran += stage.ran
        self.skipped += stage.skipped
        self.failed.update(stage.failed)
        self.collapsed.update(stage.collapsed)
        self.interrupted += stage.interrupted

    def claimed(self, claim: Claim) -> None:
        """What leasing a stage's runs found: held by another live driver, or committed."""
        self.running_elsewhere.update(claim.elsewhere)
        self.skipped += claim.complete

    def format(self, max_listed: int = 40) -> str:
        lines = [f"sweep: {len(self.ran)} ran, {len(self.skipped)} skipped (already complete), "
                 f"{len(self.failed)} failed, {len(self.not_launched)} not launched, "
                 f"{len(self.collapsed)} collapsed, "
                 + (f"{len(self.interrupted)} interrupted, " if self.interrupted else "")
                 + (f"{len(self.running_elsewhere)} running elsewhere, "
                    if self.running_elsewhere else "") + f"{self.seconds:.0f}s"]
        for run_id, why in sorted(self.trained_again.items()):
            lines.append(f"  TRAINED AGAIN {run_id}: {why}")
        for run_id in sorted(self.ran)[:max_listed]:
            lines.append(f"  ran {run_id}")
        if len(self.ran) > max_listed:
            lines.append(f"  ... and {len(self.ran) - max_listed} more (the store lists every run)")
        for run_id, err in sorted(self.failed.items()):
            lines.append(f"  FAILED {run_id}: {err}")
        for run_id, why in sorted(self.collapsed.items()):
            lines.append(f"  COLLAPSED {run_id}: {why}")
        for run_id, why in sorted(self.not_launched.items()):
            lines.append(f"  NOT LAUNCHED {run_id}: {why}")
        for run_id, why in sorted(self.running_elsewhere.items()):
            lines.append(f"  RUNNING ELSEWHERE {run_id}: {why}")
        if self.interrupted:
            lines.append(f"  INTERRUPTED: {len(self.interrupted)} runs stopped or never started "
                         "(Ctrl-C, or Tune ended early); run the same command again to go on "
                         "from their checkpoints")
        return "\n".join(lines)


@dataclass
class StageResult:
    """What one stage's trials did: the runs now complete, those a trial found complete
    (another driver committed them after they were leased), the failed ones with why, and
    the ones it ran that collapsed (:func:`kdray.collapse.collapse_reason`)."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    collapsed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------
def run_sweep(experiments: Sequence[Experiment], store: Store | str,
              options: SweepOptions | None = None, **fields: Any) -> SweepReport:
    """Run every missing run of ``experiments`` on Ray Tune (see the module docstring);
    ``options`` (:class:`SweepOptions`), or single ``fields`` of it
    (``run_sweep(experiments, store, max_failures=0)``)."""
    options = dataclasses.replace(options or SweepOptions(), **fields)
    return run_plan(expand(experiments), store, options)


def run_plan(plan: Plan, store: Store | str, options: SweepOptions) -> SweepReport:
    """Run every missing run of ``plan`` (``kdray.sweep.grid.expand``'s) on Ray Tune."""
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    status = plan_statuses(store, plan)  # every teacher's weights verified too
    report = _first_report(status)
    stage1 = [s for s in plan.stage1 if not status[s.run_id].complete]
    pending2 = [s for s in plan.stage2 if not status[s.run_id].complete]
    print(f"plan: {plan.counts()}; {len(report.skipped)} complete in {store}")
    if stage1 or pending2:
        # downloadable datasets go into {store}/datasets once, here; no node downloads them
        report.not_launched.update(stage_datasets(stage1 + pending2, store, options.data_dir))
        stage1 = [s for s in stage1 if s.run_id not in report.not_launched]
        pending2 = [s for s in pending2 if s.run_id not in report.not_launched]
        where = init_ray()
        place = placement(where, options.use_gpu, options.resources)
        print(f"ray: {where} cluster, {'with' if place.use_gpu else 'no'} GPU")
        with _environ(_driver_environment(options)), Owner(store) as owner:
            print(f"driver {owner.id}: {owner.host}, pid {owner.pid}")  # one trainer per run
            stage1 = _claim(owner, stage1, report)
            print(f"stage 1: {len(stage1)} teacher/NDS/control runs to train")
            report.add(_run_stage("stage1", stage1, store, plan, options, place, owner.id))
            if report.interrupted:  # Ctrl-C: stop here, as the user asked
                print("stage 2: not started (the sweep was interrupted)")
                report.seconds = time.perf_counter() - t0
                return report
            stage2 = _claim(owner, _with_teachers(pending2, store, report), report)
            print(f"stage 2: {len(stage2)} DS runs to train")
            report.add(_run_stage("stage2", stage2, store, plan, options, place, owner.id))
    report.seconds = time.perf_counter() - t0
    return report


def _first_report(status: Mapping[str, RunStatus]) -> SweepReport:
    """The report before any stage: the complete runs skipped, the damaged ones (any reason
    but "missing") listed as trained again."""
    report = SweepReport(skipped=[r for r, st in status.items() if st.complete])
    for run_id, st in status.items():
        if not st.complete and st.reason != "missing":
            report.trained_again[run_id] = st.reason
            print(f"  {run_id}: trained again ({st.reason})")
    return report


def _claim(owner: Owner, specs: list[RunSpec], report: SweepReport) -> list[RunSpec]:
    """Lease ``specs`` for ``owner`` before their stage; returns those to train. The others
    go into ``report``: running elsewhere, or skipped when another driver committed them."""
    claim = owner.claim([s.run_id for s in specs],
                        verify_model=[s.run_id for s in specs if s.role == "teacher"])
    report.claimed(claim)
    mine = set(claim.mine)
    return [s for s in specs if s.run_id in mine]


def _with_teachers(pending: list[RunSpec], store: Store, report: SweepReport) -> list[RunSpec]:
    """The pending DS runs whose teacher is complete now (trained in stage 1, already
    complete, or committed meanwhile by another driver); the others go into ``report`` with
    why: not launched, or running elsewhere while their teacher is."""
    ready: dict[str, bool] = {}
    out = []
    for spec in pending:
        teacher_id = spec.teacher_spec().run_id
        if teacher_id not in ready:
            if teacher_id in report.running_elsewhere and store.status(teacher_id, True).complete:
                del report.running_elsewhere[teacher_id]  # committed by the other driver
                report.skipped.append(teacher_id)
            ready[teacher_id] = teacher_id in report.ran or teacher_id in report.skipped
        if ready[teacher_id]:
            out.append(spec)
        elif teacher_id in report.failed:
            report.not_launched[spec.run_id] = f"its teacher {teacher_id} failed"
        elif teacher_id in report.running_elsewhere:
            report.running_elsewhere[spec.run_id] = (f"waits for its teacher {teacher_id}, "
                                                     f"{report.running_elsewhere[teacher_id]}")
        else:
            report.not_launched[spec.run_id] = f"its teacher {teacher_id} is not complete"
    return out


def _driver_environment(options: SweepOptions) -> dict[str, str]:
    """The driver's environment while Tune runs: W&B runs are created on the driver, and Ray's
    WandbLoggerCallback reads WANDB_MODE from the environment to decide whether it needs an
    API key."""
    return {**options.wandb.env(), "TUNE_WARN_THRESHOLD_S": "5",  # W&B actors start in ~1 s
            "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
            "RAY_AIR_NEW_OUTPUT": "0"}  # honour verbose=0


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


# ----------------------------------------------------------------------------------------
# One stage
# ----------------------------------------------------------------------------------------
def _run_stage(name: str, specs: list[RunSpec], store: Store, plan: Plan,
               options: SweepOptions, place: Placement, driver: str) -> StageResult:
    """Train ``specs`` as one Tune experiment (cohorts of DS runs, teachers and NDS alone),
    in ``{store}/tune/{name}-{time}-{driver}``: ``driver``, the lease owner's id, keeps two
    drivers that start a stage in the same second apart."""
    from ray import tune

    if not specs:
        return StageResult()
    earlier = earlier_checkpoints(store, {s.run_id for s in specs})
    for path in sorted(set(earlier.values())):
        runs = sorted(r for r, p in earlier.items() if p == path)
        print(f"  {', '.join(runs)}: resume from an earlier sweep's checkpoint "
              f"({path.rsplit('/', 4)[-4]})")
    groups = cohorts(specs, options.cohort_sizes, earlier)
    if len(groups) < len(specs):
        print(f"  {len(specs)} runs in {len(groups)} cohort trials")
    fn = tune.with_parameters(_fresh_trainable(), store_uri=store.uri, options=options,
                              earlier=earlier)
    fn = tune.with_resources(fn, lambda config: place.resources(RunSpec.from_dict(config["specs"][0])))
    retries = RetryPolicy(options.max_failures, name=_trial_name)  # lost nodes: no limit
    tuner = tune.Tuner(
        fn,
        param_space={"specs": tune.grid_search([[s.to_dict() for s in g] for g in groups])},
        tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{driver}",
            storage_path=store.path("tune"),
            storage_filesystem=store.fs, verbose=0, stop=retries.stopper,
            callbacks=_callbacks(name, len(specs), plan, options, retries),
            failure_config=tune.FailureConfig(max_failures=-1),  # RetryPolicy decides
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    return _outcome(tuner.fit(), specs, store, earlier, retries)


def _fresh_trainable():
    """A new function object each time: ``tune.with_resources`` mutates what it wraps."""
    def kdray_trial(config, store_uri, options, earlier):
        return trainable.train(config, store_uri=store_uri, options=options, earlier=earlier)
    return kdray_trial


def _trial_name(trial) -> str:
    return ", ".join(RunSpec.from_dict(d).run_id for d in trial.config["specs"])


def _callbacks(name: str, n_runs: int, plan: Plan, options: SweepOptions,
               retries: RetryPolicy) -> list:
    """The stage's Tune callbacks: W&B (unless disabled), the progress view, the retries."""
    callbacks = [tune_callback(options.wandb, plan.group)] if options.wandb.mode != "disabled" else []
    quiet_ray_hints()
    callbacks.append(StageProgress(name.replace("stage", "stage "), n_runs,  # runs, not trials
                                   interval=options.progress_interval))
    callbacks.append(retries.callback)
    return callbacks


def _outcome(results, specs: list[RunSpec], store: Store, earlier: Mapping[str, str],
             retries: RetryPolicy) -> StageResult:
    """Each run of the stage: complete in the store (ran; skipped when its trial found it
    complete already), failed with its error, or interrupted. Tune returns with runs that are
    neither complete nor failed by an error of their own only when it was stopped (Ctrl-C):
    those are interrupted, and their resume checkpoints stay for the next sweep."""
    out = StageResult()
    unreported = {s.run_id for s in specs}
    teachers = {s.run_id for s in specs if s.role == "teacher"}
    errors = [_one_line(r.error) for r in results if not r.config and r.error is not None]
    for result in results:
        if not result.config:  # a trial Tune could not start: no config says whose it was
            continue
        ids = [RunSpec.from_dict(d).run_id for d in result.config["specs"]]
        unreported -= set(ids)
        _judge(result, ids, store, teachers, retries, out)
        finished = not set(ids) & set(out.interrupted)  # an interrupted run resumes from them
        if finished and result.error is None and not retries.gave_up.get(
                (result.metrics or {}).get("trial_id")):
            _delete_checkpoints(result, ids, store, earlier)
    for run_id in sorted(unreported):  # trials Tune never started
        if errors:
            out.failed[run_id] = f"no result from Ray Tune (a trial that never started: {errors[0]})"
        else:
            out.interrupted.append(run_id)
    out.collapsed = collapsed_runs(store, out.ran)
    return out


def _judge(result, ids: list[str], store: Store, teachers: set[str], retries: RetryPolicy,
           out: StageResult) -> None:
    """Put each run of one trial's result into ``out``: ran, skipped, failed or interrupted."""
    metrics = result.metrics or {}
    diverged = metrics.get("failed") or {}
    gave_up = retries.gave_up.get(metrics.get("trial_id"))
    for run_id in ids:
        if store.status(run_id, verify_model=run_id in teachers).complete:
            (out.skipped if metrics.get("already_complete") else out.ran).append(run_id)
        elif run_id in diverged:
            out.failed[run_id] = diverged[run_id]
        elif gave_up or result.error is not None:
            out.failed[run_id] = gave_up or _one_line(result.error)
        else:  # the trial ended with no error and no result: Tune stopped it
            out.interrupted.append(run_id)


def collapsed_runs(store: Store, run_ids: list[str]) -> dict[str, str]:
    """The complete runs among ``run_ids`` that collapsed, with why (from their run.json's
    ``per_class_accuracy``; a run.json without it is not judged)."""
    out = {}
    for run_id in run_ids:
        record = store.read_run_json(run_id) or {}
        why = collapse_reason(record.get("per_class_accuracy") or [])
        if why:
            out[run_id] = why
    return out


def _delete_checkpoints(result, ids: list[str], store: Store, earlier: Mapping[str, str]) -> None:
    """Every student committed or failed for good: the resume checkpoints (optimiser state
    included, 1.3 GB for BERT-base) are of no further use."""
    stale = [(c.filesystem, c.path) for c in [result.checkpoint] if c is not None]
    stale += [(store.fs, p) for p in {earlier[r].rsplit("/", 1)[0] for r in ids if r in earlier}]
    for fs, path in stale:
        try:
            fs.delete_dir(path)
        except OSError:
            pass


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    # Ray wraps the trial's exception; its last line is the original message
    last = [ln for ln in text if ln.strip()]
    return f"{type(error).__name__}: {last[-1] if last else ''}"[:500]
