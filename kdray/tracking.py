"""Weights & Biases tracking: one W&B run per run (every student of a cohort has its own).

A run's W&B run: project (default ``kdray``), group = dataset and pair
(e.g. ``cifar100/resnet56-resnet20``), job_type = role, name = run_id, config = the spec,
tags ``T=…`` and ``alpha=…`` for DS runs. It logs per-epoch loss and accuracy, the final test
accuracy and the per-class accuracy as a ``wandb.Table``. In a sweep the runs are created
by one logging actor on the driver's node (:func:`tune_callback`); ``python -m kdray.trial``
makes its own (:class:`Tracker`). Which mode W&B runs in, and where the API key comes from:
``kdray/connect.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kdray.spec import RunSpec

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


def default_dir(store) -> str:
    """Where W&B writes by default: ``{store}/wandb`` for a local store, ``./wandb`` otherwise."""
    return os.path.join(store.root, "wandb") if store.is_local else os.path.abspath("wandb")


def default_group(spec: RunSpec) -> str:
    if spec.role == "ds":
        return f"{spec.dataset}/{spec.teacher_arch}-{spec.arch}"
    return f"{spec.dataset}/{spec.arch}"


def tags(spec: RunSpec) -> list[str]:
    out = [spec.role]
    if spec.role == "ds":
        out += [f"T={spec.temperature:g}", f"alpha={spec.alpha:g}"]
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


class WandbRuns:
    """Many W&B runs in one process (``wandb.init(reinit="create_new")``): the Ray actor
    behind :func:`tune_callback`, one per sweep stage, on the driver's node."""

    def __init__(self, env: Mapping[str, str]) -> None:
        os.environ.update(env)
        self.runs: dict[str, Any] = {}

    def start(self, run_id: str, kwargs: dict[str, Any]) -> None:
        import wandb

        if run_id not in self.runs:  # a retried trial keeps its students' runs
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

    def finish(self, run_id: str, exit_code: int = 0) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            run.finish(exit_code=exit_code)

    def finish_all(self, exit_code: int = 1) -> int:
        for run_id in list(self.runs):
            self.finish(run_id, exit_code)
        return 0


def tune_callback(config: WandbConfig, groups: Mapping[str, str]):
    """Ray Tune callback: one W&B run per *run* (every student of a cohort trial has its own),
    named by run_id, grouped by dataset and pair, job_type = role.

    The runs live in one logging actor pinned to the driver's node (so only the head needs
    network access and an API key), whatever the number of trials and students: the head
    runs one W&B process, not one per trial. Calls to it never block the driver.
    """
    import ray
    from ray import tune

    class KdrayWandbCallback(tune.Callback):
        def __init__(self) -> None:
            self.actor = None
            self.finished: set[str] = set()

        def setup(self, **info: Any) -> None:
            self.actor = _logging_actor(config)

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            for d in trial.config["specs"]:
                spec = RunSpec.from_dict(d)
                if spec.run_id not in self.finished:
                    self.actor.start.remote(spec.run_id,
                                            init_kwargs(spec, config, groups.get(spec.run_id)))

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            for run_id, metrics in (result.get("students") or {}).items():
                self.actor.log_epoch.remote(run_id, metrics)
            for run_id, metrics in (result.get("final") or {}).items():
                self.actor.log_final.remote(run_id, metrics)
                self._finish(run_id, 0)
            for run_id in result.get("failed") or {}:
                self._finish(run_id, 1)

        def _finish(self, run_id: str, exit_code: int) -> None:
            if run_id not in self.finished:
                self.finished.add(run_id)
                self.actor.finish.remote(run_id, exit_code)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            for d in trial.config["specs"]:
                self._finish(RunSpec.from_dict(d).run_id, 1)

        def on_experiment_end(self, trials, **info) -> None:
            if self.actor is not None:
                ray.get(self.actor.finish_all.remote(), timeout=300)  # flush, then close
                ray.kill(self.actor)
                self.actor = None

    if config.dir:
        os.makedirs(config.dir, exist_ok=True)
    return KdrayWandbCallback()


def _logging_actor(config: WandbConfig):
    """The :class:`WandbRuns` actor on this (the driver's) node. The API key is read here, in
    the driver, and handed to the actor's environment, never kept on the callback: Tune
    pickles its callbacks into the experiment state (tuner.pkl in the store)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    key = os.environ.get("WANDB_API_KEY")
    env = {**config.env(), **({"WANDB_API_KEY": key} if key else {})}
    node = ray.get_runtime_context().get_node_id()
    return ray.remote(WandbRuns).options(
        num_cpus=0, max_restarts=-1, max_task_retries=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        runtime_env={"env_vars": env}).remote(config.env())


def wandb_id(run_id: str) -> str:
    """W&B run ids may not contain '.', so 'a0.8' becomes 'a0_8'."""
    return run_id.replace(".", "_")
