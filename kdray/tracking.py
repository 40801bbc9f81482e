"""Weights & Biases tracking: one W&B run per run (every student of a cohort has its own).

A run's W&B run: project (default ``kdray``), group = dataset and pair
(e.g. ``cifar100/resnet56-resnet20``), job_type = role, name = run_id, config = the spec,
tags ``T=…`` and ``alpha=…`` for DS runs. It logs per-epoch loss and accuracy, the final test
accuracy and the per-class accuracy as a ``wandb.Table``. ``python -m kdray.trial`` makes its
own (:class:`Tracker`). Which mode W&B runs in, where it writes by default and where the API
key comes from: ``kdray/connect.py``.

In a sweep the runs are created in the driver process by one background thread
(:func:`tune_callback`, :class:`DriverRuns`). Why in the driver: the API key is already in
the driver's environment (``$WANDB_API_KEY``, a ``wandb login`` entry in ``~/.netrc``, or
SSM through ``kdray.connect.key_from_ssm``), and wandb reads it there; it is passed to
nothing else, so it goes through nothing that Ray, Tune or kdray writes down (runtime envs,
actor arguments, Tune's experiment state, run.json, progress lines). Before, a logging actor
got the key in its ``runtime_env``, and Ray wrote that runtime env, key and all, into the
session's ``logs/runtime_env_agent.log``. A local Ray that a driver starts does not get it
either (``kdray.connect.init_ray``). Why a thread: Tune calls its callbacks from its control
loop, which must not wait for ``wandb.init`` (it starts a run's files, and online a network
round trip). Each call only puts a request on a queue; one thread creates and writes the
runs in order. wandb 0.31 creates several runs from a thread other than the main one with
``reinit="create_new"`` (checked on 2026-12-02: three offline runs from one thread, one
folder each).

Runs after faults (every run's W&B id is its run_id, :func:`wandb_id`):

- a trial retried within one sweep keeps its open W&B run: one run, one offline folder;
- a run resumed by a later sweep (its driver was killed, its trial ran out of retries)
  continues its own W&B run: same id, ``resume="allow"``; online W&B appends to it. Offline,
  W&B cannot resume a run, and ``wandb sync`` of two folders of one id uploads one over the
  other (wandb/wandb#3841). So the earlier offline folders of a run being started again are
  moved into ``{dir}/wandb/superseded/``, where ``wandb sync`` does not look
  (:func:`supersede_offline`): one folder per run id is left to sync, the newest attempt's,
  whose history starts at the epoch it resumed from (as does run.json's ``history``).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from kdray.spec import RunSpec

SUPERSEDED = "superseded"  # {dir}/wandb/superseded: earlier offline attempts, not to sync
_OFFLINE = re.compile(r"^offline-run-\d{8}_\d{6}-(?P<id>.+)$")

@dataclass(frozen=True)
class WandbConfig:
    """Where and how trials log: picklable, so Ray ships it to every trial."""

    mode: str = "offline"
    project: str = "kdray"
    entity: str | None = None
    dir: str | None = None  # absolute; offline runs land in {dir}/wandb/offline-run-*

    def env(self) -> dict[str, str]:
        """Environment of the process that creates the runs (Ray's W&B callback reads
        ``WANDB_MODE`` from it to decide whether it needs an API key)."""
        env = {"WANDB_MODE": self.mode, "WANDB_SILENT": "true"}
        if self.dir:
            env["WANDB_DIR"] = self.dir
        return env


def default_group(spec: RunSpec) -> str:
    if spec.role == "ds":
        return f"{spec.dataset}/{spec.teacher_arch}-{spec.arch}"
    return f"{spec.dataset}/{spec.arch}"


def tags(spec: RunSpec) -> list[str]:
    out = [spec.role]
    if spec.temperature is not None:
        out.append(f"T={spec.temperature:g}")
    if spec.alpha is not None:  # a DS, or a control (one per alpha)
        out.append(f"alpha={spec.alpha:g}")
    return out


def init_kwargs(spec: RunSpec, config: WandbConfig, group: str | None = None) -> dict[str, Any]:
    """``wandb.init`` arguments of a trial's run (the same standalone and under Ray Tune)."""
    return dict(project=config.project, entity=config.entity, group=group or default_group(spec),
                job_type=spec.role, name=spec.run_id, id=wandb_id(spec.run_id), resume="allow",
                config=spec.to_dict(), tags=tags(spec), dir=config.dir, mode=config.mode)


def epoch_log(metrics: Mapping[str, float]) -> dict[str, float]:
    """What a trial logs after each epoch."""
    return {"epoch": metrics["epoch"], "train/loss": metrics["loss"],
            "train/accuracy": metrics["train_accuracy"], "lr": metrics["lr"],
            "epoch_seconds": metrics["epoch_seconds"]}


def final_log(test_accuracy: float, per_class: Sequence[float | None],
              n_per_class: Sequence[int] | None = None,
              class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """What a trial logs at the end: test accuracy and the per-class accuracy as a wandb.Table
    (columns: label index, the dataset's class name, accuracy, test samples)."""
    import wandb

    n_per_class = list(n_per_class) if n_per_class is not None else [None] * len(per_class)
    names = list(class_names) if class_names is not None else [str(c) for c in range(len(per_class))]
    table = wandb.Table(columns=["class", "name", "accuracy", "n_test"],
                        data=[[c, name, a, None if n is None else int(n)]
                              for c, (name, a, n) in enumerate(zip(names, per_class, n_per_class))])
    return {"test/accuracy": test_accuracy, "test/per_class_accuracy": table}


class Tracker:
    """A standalone trial's W&B run (``python -m kdray.trial``), or nothing when disabled."""

    def __init__(self, spec: RunSpec, config: WandbConfig | None, group: str | None = None) -> None:
        self.run = None
        if config is None or config.mode == "disabled":
            return
        import wandb

        if config.dir:
            os.makedirs(config.dir, exist_ok=True)
        if config.mode == "offline":  # one folder per run to sync
            supersede_offline(config.dir, wandb_id(spec.run_id))
        self.run = wandb.init(**init_kwargs(spec, config, group), reinit="create_new")

    def log_epoch(self, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(epoch_log(metrics), step=int(metrics["epoch"]))

    def log_final(self, test_accuracy: float, per_class: Sequence[float | None],
                  n_per_class: Sequence[int], class_names: Sequence[str] | None = None) -> None:
        if self.run is not None:
            self.run.log(final_log(test_accuracy, per_class, n_per_class, class_names))
            self.run.summary["test_accuracy"] = test_accuracy

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


# ----------------------------------------------------------------------------------------
# A sweep's runs: created in the driver process, by one thread
# ----------------------------------------------------------------------------------------
def wandb_root(dir: str | None) -> str:
    """The folder wandb writes run folders into: ``{dir}/wandb`` (``$WANDB_DIR`` or the
    working directory when ``dir`` is None, as wandb does)."""
    return os.path.join(dir or os.environ.get("WANDB_DIR") or os.getcwd(), "wandb")


def offline_folders(dir: str | None, run_wandb_id: str) -> list[str]:
    """The offline run folders of W&B run ``run_wandb_id`` under ``dir``, oldest first."""
    root = wandb_root(dir)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(root, n) for n in names
                  if (m := _OFFLINE.match(n)) and m.group("id") == run_wandb_id)


def supersede_offline(dir: str | None, run_wandb_id: str) -> list[str]:
    """Move the earlier offline folders of ``run_wandb_id`` into ``{dir}/wandb/superseded/``
    (see the module docstring); returns where they went."""
    moved = []
    for folder in offline_folders(dir, run_wandb_id):
        target = os.path.join(wandb_root(dir), SUPERSEDED, os.path.basename(folder))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(folder, target)
        moved.append(target)
    return moved


class WandbRuns:
    """Many W&B runs in one process (``wandb.init(reinit="create_new")``), named by run_id;
    used from :class:`DriverRuns`'s thread only."""

    def __init__(self) -> None:
        self.runs: dict[str, Any] = {}

    def start(self, run_id: str, kwargs: dict[str, Any]) -> None:
        import wandb

        if run_id in self.runs:  # a retried trial keeps its students' runs
            return
        if kwargs.get("mode") == "offline":
            supersede_offline(kwargs.get("dir"), kwargs["id"])
        self.runs[run_id] = wandb.init(**kwargs, reinit="create_new")

    def log_epoch(self, run_id: str, metrics: dict[str, float]) -> None:
        if run_id in self.runs:
            self.runs[run_id].log(epoch_log(metrics), step=int(metrics["epoch"]))

    def log_final(self, run_id: str, metrics: dict[str, Any]) -> None:
        run = self.runs.get(run_id)
        if run is not None:
            run.log(final_log(metrics["test_accuracy"], metrics["per_class_accuracy"],
                              metrics.get("per_class_n"), metrics.get("class_names")))
            run.summary["test_accuracy"] = metrics["test_accuracy"]
            if metrics.get("teacher_logits"):  # a DS run: replayed, or computed and why
                run.summary["teacher_logits"] = metrics["teacher_logits"]

    def finish(self, run_id: str, exit_code: int = 0) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            run.finish(exit_code=exit_code)

    def finish_all(self, exit_code: int = 1) -> None:
        for run_id in list(self.runs):
            self.finish(run_id, exit_code)


class DriverRuns:
    """:class:`WandbRuns` behind a queue and one daemon thread: every method returns at once
    (Tune's loop never waits); :meth:`close` finishes what is open and waits for the thread.
    An error in one request is printed once per kind and does not stop the others."""

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.runs = WandbRuns()
        self.requests: queue.Queue = queue.Queue()
        self.warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self.warned: set[str] = set()
        self.thread = threading.Thread(target=self._work, name="kdray-wandb", daemon=True)
        self.thread.start()

    def start(self, run_id: str, kwargs: dict[str, Any]) -> None:
        self.requests.put(("start", (run_id, kwargs)))

    def log_epoch(self, run_id: str, metrics: dict[str, float]) -> None:
        self.requests.put(("log_epoch", (run_id, metrics)))

    def log_final(self, run_id: str, metrics: dict[str, Any]) -> None:
        self.requests.put(("log_final", (run_id, metrics)))

    def finish(self, run_id: str, exit_code: int = 0) -> None:
        self.requests.put(("finish", (run_id, exit_code)))

    def close(self, timeout: float | None = 300.0) -> None:
        self.requests.put(("finish_all", (1,)))  # runs still open ended with their trials
        self.requests.put(None)
        self.thread.join(timeout)

    def _work(self) -> None:
        while (request := self.requests.get()) is not None:
            name, args = request
            try:
                getattr(self.runs, name)(*args)
            except Exception as e:  # noqa: BLE001 - W&B is a copy; the store has the results
                if name not in self.warned:
                    self.warned.add(name)
                    self.warn(f"W&B: {name} failed ({type(e).__name__}: {e}); the results are "
                              f"in the store")


def tune_callback(config: WandbConfig, groups: Mapping[str, str]):
    """Ray Tune callback: one W&B run per *run* (every student of a cohort trial has its own),
    named by run_id, grouped by dataset and pair, job_type = role.

    The runs are created in the driver process by one background thread
    (:class:`DriverRuns`): only the head needs network access and an API key, which wandb
    reads from the driver's environment and which is passed to nothing else; calls to it
    never block Tune's loop.
    """
    from ray import tune

    class KdrayWandbCallback(tune.Callback):
        def __init__(self) -> None:
            self.writer: DriverRuns | None = None
            self.finished: set[str] = set()

        def __getstate__(self) -> dict:  # Tune pickles its callbacks: not the thread
            return {**self.__dict__, "writer": None}

        def setup(self, **info: Any) -> None:
            self.writer = DriverRuns()

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            for d in trial.config["specs"]:
                spec = RunSpec.from_dict(d)
                if spec.run_id not in self.finished:
                    self.writer.start(spec.run_id,
                                      init_kwargs(spec, config, groups.get(spec.run_id)))

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            for run_id, metrics in (result.get("students") or {}).items():
                self.writer.log_epoch(run_id, metrics)
            for run_id, metrics in (result.get("final") or {}).items():
                self.writer.log_final(run_id, metrics)
                self._finish(run_id, 0)
            for run_id in result.get("failed") or {}:
                self._finish(run_id, 1)

        def _finish(self, run_id: str, exit_code: int) -> None:
            if run_id not in self.finished:
                self.finished.add(run_id)
                self.writer.finish(run_id, exit_code)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            for d in trial.config["specs"]:
                self._finish(RunSpec.from_dict(d).run_id, 1)

        def on_experiment_end(self, trials, **info) -> None:
            if self.writer is not None:
                self.writer.close()  # finish what is open, flush
                self.writer = None

    if config.dir:
        os.makedirs(config.dir, exist_ok=True)
    return KdrayWandbCallback()


def wandb_id(run_id: str) -> str:
    """W&B run ids may not contain '.', so 'a0.8' becomes 'a0_8'."""
    return run_id.replace(".", "_")
