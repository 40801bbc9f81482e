"""The Ray Tune trainable: one trial trains one cohort (a teacher or an NDS is a cohort of one).

As in Ray Tune's examples, :func:`train` is a function of the trial's ``config``
(``{"specs": [RunSpec dicts]}``): it sets up the process, finds the state to resume from, and
runs the trial (``kdray/trial/``) with a :class:`Reporter` that reports every epoch to Tune
and writes a resume checkpoint at the cadence and after the last epoch
(``kdray/sweep/checkpoints.py``): a retry of a trial that failed after training resumes at
its last epoch and only evaluates and commits.

What a trial reports: first its node and device (``kdray/sweep/runtime.py``; it fails at once
when Ray gave it a GPU that CUDA cannot use), then per epoch ``{"epoch", "students": {run_id:
metrics}, "failed": {run_id: why}}``, and at the end ``{"final": {run_id: test metrics},
"failed": ...}``; each student commits its own run folder. Datasets come from the store's
mirror (``{store}/datasets``), never the internet.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Mapping

from kdray import trial
from kdray.data import fetch
from kdray.spec import RunSpec
from kdray.store import Store
from kdray.sweep import runtime
from kdray.sweep.checkpoints import Cadence, write_checkpoint
from kdray.sweep.options import SweepOptions
from kdray.training.state import STATE, load_state


def train(config: dict[str, Any], *, store_uri: str, options: SweepOptions,
          earlier: Mapping[str, str]) -> None:
    """Train the cohort ``config["specs"]`` into the store at ``store_uri``; ``earlier`` maps a
    run_id to the checkpoint an earlier sweep left for it (``earlier_checkpoints``)."""
    from ray import tune

    specs = [RunSpec.from_dict(d) for d in config["specs"]]
    store = Store(store_uri)
    cpus = set_up_process(specs)
    pending = [s for s in specs  # an earlier attempt's commits count; a teacher's weights too
               if not store.status(s.run_id, verify_model=s.role == "teacher").complete]
    if not pending:
        tune.report({"epoch": specs[0].epochs, "final": {}, "failed": {}, "already_complete": True})
        return
    resume = resume_state(store, earlier.get(pending[0].run_id))
    reporter = Reporter(pending, options.cadence, int(resume["epoch"]) if resume else 0)
    try:
        with fetch.mirror(store):  # datasets come from {store}/datasets, not the internet
            result = trial.run_cohort(pending, store, resume=resume, on_epoch=reporter.epoch,
                                      data_root=options.data_dir, node=runtime.node_info(),
                                      num_workers=max(0, int(cpus) - 1),
                                      cuda_graph=False if options.cuda_graph == "off" else None)
    finally:
        release_memory()
    reporter.final(result)


def set_up_process(specs: list[RunSpec]) -> float:
    """This worker for the trial: CUDA settings before CUDA starts, the first report (node and
    device), the fail-fast CUDA check, torch threads and the GPU memory share of its Ray
    request. Returns the CPUs Ray gave it."""
    import torch
    from ray import tune

    from kdray.training import gpu

    gpu.prepare_process(deterministic=any(s.deterministic for s in specs))  # before CUDA starts
    tune.report(runtime.trial_report())  # first: the node and the device
    runtime.require_cuda()  # Ray gave a GPU that CUDA cannot use: fail now, naming the node
    requested = tune.get_context().get_trial_resources().required_resources
    cpus = requested.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    gpu.limit_memory(requested.get("GPU", 0))  # a trial sharing a card stays in its share
    return cpus


def resume_state(store: Store, earlier: str | None) -> dict[str, Any] | None:
    """The trainer state to continue from: this trial's own checkpoint after a retry, else the
    last checkpoint of an earlier sweep (``earlier``, a store path), else None. Loaded to
    the CPU, whatever device it was saved from. An earlier sweep's checkpoint that cannot be
    read (damaged) is passed over: the run trains from its first epoch."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            return load_state(os.path.join(d, STATE))
    if not earlier:
        return None
    try:
        return load_state(store.read_bytes(earlier))
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint: train from the start
        print(f"{earlier}: unreadable checkpoint ({type(e).__name__}); training from the "
              f"first epoch", file=sys.stderr)
        return None


class Reporter:
    """What a trial tells Tune: every epoch's metrics, with a resume checkpoint whenever the
    cadence says one is due and after the last epoch, and the final results."""

    def __init__(self, specs: list[RunSpec], cadence: Cadence, start_epoch: int) -> None:
        self.run_ids = [s.run_id for s in specs]
        self.epochs = specs[0].epochs
        self.clock = cadence.clock(start_epoch)

    def epoch(self, trainer, metrics: dict[str, dict[str, float]]) -> None:
        from ray import tune

        row = {"epoch": trainer.epoch, "students": metrics, "failed": dict(trainer.failed)}
        if not self.clock.due(trainer.epoch, final_epoch=self.epochs):
            tune.report(row)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(tmp, trainer.state_dict(), self.run_ids, trainer.epoch, trainer.failed)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(tmp))
        self.clock.saved(trainer.epoch)

    def final(self, result: trial.CohortResult) -> None:
        """Each committed student's test metrics (W&B logs them on the driver), the failed."""
        from ray import tune

        # class names as a tuple: Tune's TensorBoard logger skips it (a list of strings makes
        # it warn that it cannot log it)
        final = {run_id: {**{k: r[k] for k in ("test_accuracy", "per_class_accuracy",
                                               "per_class_n", "n_test", "resumed_from_epoch")},
                          "class_names": tuple(r["class_names"]),
                          "teacher_logits": r.get("teacher_logits")}
                 for run_id, r in result.items()}
        tune.report({"epoch": self.epochs, "final": final, "failed": dict(result.failed)})


def release_memory() -> None:
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
