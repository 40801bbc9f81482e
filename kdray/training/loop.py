"""The training loop: one function of a RunSpec, runnable without Ray.

What a step computes (the KD loss of paper eq. 6, the device augmentation, the schedule,
the optimiser, micro-batch accumulation) is in ``kdray.training.step``; this module is the loop.

Data: in-memory datasets (``TensorData``) live on the device as uint8 and are augmented
there, batched, by view ids drawn per sample and epoch (``kdray.training.step.augment_views``).
Large datasets stream through a DataLoader with workers that augment on the CPU.
Training batches have a static shape (the last partial batch is dropped). In memory, each
batch is gathered on the device into preallocated buffers and the step has no allocation
and no host synchronisation: losses and accuracies accumulate on the device and are read
once per epoch. On CUDA that whole step (teacher forward, every student's forward, backward
and update) is captured in one CUDA graph and replayed per batch (``kdray.training.graph``); on the
CPU the same step runs eagerly.

Precision: training runs under bf16 autocast on CUDA; evaluation runs in fp32 everywhere
(no autocast, no TF32), so a prediction never depends on bf16 rounding of the logits.

Big models: ``RunSpec.micro_batch_size`` accumulates each batch's gradient over
micro-batches (``kdray.training.step.backward_in_micro_batches``); on CUDA, a model without batch
statistics that runs out of memory halves its micro-batch and retries the step.

Cohorts: the DS runs of one teacher seed that differ only in temperature and alpha train
together (:class:`Trainer` takes a list of specs): one data draw and one teacher forward per
batch, then each student's own loss and update. A lone run is a cohort of one. The
teacher's logits of a whole run can be recorded by one cohort and replayed by a later one of
the same data stream (an extension to new temperatures), which then runs no teacher at all
(``kdray.training.teacher_logits``).

Determinism and resume: the data order and the augmentation of epoch e come from a
generator seeded by (seed, e), and :meth:`Trainer.state_dict` holds the model, optimiser,
schedule and RNG state of every student, and the epoch; a run restored from it at an epoch
boundary ends with exactly the predictions of an uninterrupted run on the CPU. On a GPU,
without ``RunSpec.deterministic``, results equal a CPU-style rerun only to float tolerance
(cuDNN autotuning and atomics pick different summation orders).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdray.training import gpu
from kdray.data import DatasetSplits, TensorData, epoch_seed
from kdray.training.graph import StaticBatch, StepGraph
from kdray.training.teacher_logits import TeacherLogits
from kdray.models import build_model
from kdray.spec import RunSpec
from kdray.training.step import (N_VIEWS, PAD, augment_views, backward_in_micro_batches,  # noqa: F401
                        build_optimizer, float_lrs, kd_loss, lr_factor, with_own_flags)


# ----------------------------------------------------------------------------------------
# The trainer: a cohort of runs in lockstep
# ----------------------------------------------------------------------------------------
@dataclass
class Student:
    """One run of a cohort: its model, optimiser, schedule, RNG state and epoch tallies."""

    spec: RunSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng_cpu: torch.Tensor  # the global CPU RNG state this student's forward passes draw from
    rng_cuda: torch.Tensor | None
    lr: torch.Tensor | None = None  # the device lr the schedule writes (graph-ready optimiser)
    failed: str | None = None  # why it stopped (a non-finite loss), or None
    tally: dict[str, torch.Tensor] = field(default_factory=dict)  # zeroed, never replaced
    draws_random: bool = False  # its forward moved its RNG state (dropout, stochastic depth)

    @property
    def run_id(self) -> str:
        return self.spec.run_id


class Trainer:
    """Trains a *cohort*: runs of one dataset, arch, seed and recipe that differ only in
    temperature and alpha (``RunSpec.cohort_key``), in lockstep, epoch by epoch.

    Per batch the data is drawn once (exactly as a lone run draws it) and the frozen teacher
    runs once; then each student runs its own forward, loss (its own T and alpha), backward,
    optimiser and schedule step. Every student starts from ``torch.manual_seed(seed)`` and
    draws its forward passes' random numbers (dropout, stochastic depth) from its own saved
    RNG state, so each ends with exactly the weights and predictions of the same spec
    trained alone (on the CPU; a lone run is a cohort of one).

    A student whose loss becomes non-finite stops at the end of that epoch and is listed in
    :attr:`failed`; the others go on.

    ``cuda_graph``: capture the step in a CUDA graph (default ``$KDRAY_CUDA_GRAPH``, else
    on; see ``kdray.training.graph`` for when it is not, and :attr:`graph_off` for why).
    ``teacher_bf16``: cast the teacher's convolution and linear weights to bf16 once on CUDA
    (the same logits as autocast's per-step casts; its speed is unmeasured, so it is off).
    ``auto_micro_batch``: on a CUDA out-of-memory error in a student's step, halve its
    micro-batch and retry, for models without batch statistics and specs that set no
    ``micro_batch_size``.
    """

    def __init__(self, specs: RunSpec | Sequence[RunSpec], data: DatasetSplits, *,
                 device: str | torch.device | None = None, teacher: nn.Module | None = None,
                 num_workers: int = 4, cuda_graph: bool | None = None,
                 teacher_bf16: bool = False, auto_micro_batch: bool = True) -> None:
        specs = [specs] if isinstance(specs, RunSpec) else list(specs)
        if not specs:
            raise ValueError("specs: a cohort needs at least one RunSpec, got none")
        check_cohort(specs)
        spec = specs[0]
        if spec.role == "ds" and teacher is None:
            raise ValueError(f"teacher: a 'ds' spec needs a teacher model ({spec.run_id})")
        self.spec, self.data = spec, data  # the spec that defines the data stream
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.image = data.modality == "image"
        self.num_workers = num_workers
        gpu.set_determinism(spec.deterministic)  # per trainer: a reused worker resets it
        self.micro_batch = spec.micro_batch_size  # None: the whole batch at once
        self.auto_micro_batch = auto_micro_batch and spec.micro_batch_size is None
        self.graph_off = self._why_not_captured(cuda_graph)  # None: capture after warm-up
        self._graph: StepGraph | None = None

        self.teacher = None
        if teacher is not None:
            self.teacher = self._prepare(teacher).eval().requires_grad_(False)
            if teacher_bf16 and self.cuda:
                gpu.cast_matmul_weights(self.teacher, torch.bfloat16)
        if self.image:
            self.mean = torch.tensor(data.mean, device=self.device).view(1, -1, 1, 1)
            self.std = torch.tensor(data.std, device=self.device).view(1, -1, 1, 1)
        self.augment = self.image and spec.augmentation == "crop_flip"
        if data.in_memory:  # uint8 (or token ids) moved to the device once
            self.train_x, self.train_y = data.train.x.to(self.device), data.train.y.to(self.device)
            self.batch_size = min(spec.batch_size, len(data.train))
            self.steps_per_epoch = len(data.train) // self.batch_size
            self.static = StaticBatch(self.train_x, self.batch_size, with_views=self.augment)
        else:
            self.batch_size = spec.batch_size
            self.steps_per_epoch = max(1, len(data.train) // self.batch_size)
            if hasattr(data.train, "augmentation"):
                data.train.augmentation = spec.augmentation
        self.students = [self._student(s) for s in specs]
        self.epoch = 0
        self.teacher_logits: TeacherLogits | None = None  # record or replay: use_teacher_logits
        self.eval_batch_sizes: list[int] = []  # the last predict_all's, first the one asked

    def _why_not_captured(self, cuda_graph: bool | None) -> str | None:
        for reason, applies in (("turned off", not gpu.graphs_enabled(cuda_graph)),
                                ("not on CUDA", not self.cuda),
                                ("a streamed dataset", not self.data.in_memory),
                                ("accumulating micro-batches", self.micro_batch is not None)):
            if applies:
                return reason
        return None

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.cuda and self.image:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _student(self, spec: RunSpec) -> Student:
        torch.manual_seed(spec.seed)  # model initialisation is a function of the seed
        model = self._prepare(build_model(spec.arch, self.data.num_classes,
                                          pretrained=spec.pretrained, **self.data.model_kwargs()))
        optimizer, lr = build_optimizer(spec, model, self.device if self.graph_off is None else None)
        steps = self.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(spec, step / steps))
        tally = {"loss": torch.zeros((), device=self.device),
                 "correct": torch.zeros((), device=self.device, dtype=torch.int64),
                 "finite": torch.ones((), device=self.device, dtype=torch.bool)}
        return Student(spec, model, optimizer, scheduler, torch.get_rng_state(), self._cuda_rng(),
                       lr=lr, tally=tally)

    def _cuda_rng(self) -> torch.Tensor | None:
        return torch.cuda.get_rng_state(self.device) if self.cuda else None  # this device only

    # -- views of the cohort -------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The first student's model (the only one of a lone run)."""
        return self.students[0].model

    @property
    def active(self) -> list[Student]:
        return [s for s in self.students if s.failed is None]

    @property
    def failed(self) -> dict[str, str]:
        """run_id -> why, for the students that stopped."""
        return {s.run_id: s.failed for s in self.students if s.failed is not None}

    def teacher_logits_shape(self) -> tuple[int, int, int, int]:
        """``(epochs, steps per epoch, batch, classes)``: every teacher logit of a run."""
        return (self.spec.epochs, self.steps_per_epoch, self.batch_size, self.data.num_classes)

    def use_teacher_logits(self, logits: TeacherLogits) -> None:
        """Record the teacher's logits into ``logits``, or replay them from it (a DS
        cohort; before training: a captured step reads its buffer)."""
        if self.teacher is None:
            raise ValueError(f"teacher logits: {self.spec.run_id} has no teacher")
        self.teacher_logits, self._graph = logits, None

    @property
    def captured(self) -> bool:
        """Is the step running as a CUDA graph replay?"""
        return self._graph is not None and self._graph.ready

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue every student at the current epoch boundary
        (learning rates as floats: a GPU checkpoint resumes anywhere)."""
        return {"epoch": self.epoch, "students": {
            s.run_id: {"model": s.model.state_dict(),
                       "optimizer": float_lrs(s.optimizer.state_dict()),
                       "scheduler": float_lrs(s.scheduler.state_dict()), "rng_cpu": s.rng_cpu,
                       "rng_cuda": s.rng_cuda, "failed": s.failed}
            for s in self.students}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the students this checkpoint holds (it may hold more: e.g. runs an earlier
        cohort committed since). Checkpoints of one run from before cohorts load too."""
        if "students" not in state and "run_id" in state:  # a lone run's checkpoint, v1
            state = {"epoch": state["epoch"], "students": {state["run_id"]: {
                **state, "rng_cuda": None}}}
        saved = state["students"]
        missing = [s.run_id for s in self.students if s.run_id not in saved]
        if missing:
            raise ValueError(f"checkpoint: it belongs to run(s) {sorted(saved)}, not {missing}")
        for s in self.students:
            st = saved[s.run_id]
            s.model.load_state_dict(st["model"])
            s.optimizer.load_state_dict(with_own_flags(s.optimizer, st["optimizer"]))
            s.scheduler.load_state_dict(st["scheduler"])
            if s.lr is not None:  # the graph reads this tensor: keep it, with the saved value
                s.lr.fill_(float(s.optimizer.param_groups[0]["lr"]))
                for group in s.optimizer.param_groups:
                    group["lr"] = s.lr
            s.rng_cpu = st["rng_cpu"]
            if self.cuda and st.get("rng_cuda") is not None:
                s.rng_cuda = st["rng_cuda"]
            s.failed = st.get("failed")
        self.epoch = int(state["epoch"])
        self._graph = None  # the optimisers hold new state tensors: capture again

    # -- input pipeline ------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        if not self.image:
            return x
        if views is not None:
            x = augment_views(x, views)
        x = (x.float() / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def _epoch_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(epoch_seed(self.spec.seed, self.epoch))

    def _train_batches(self):
        """``(x, views, y)`` per step: uint8 images (or token ids), view ids or None, labels.
        In memory these are the static buffers, filled on the device for each step."""
        g = self._epoch_generator()
        if self.data.in_memory:
            n = len(self.train_y)
            order = torch.randperm(n, generator=g).to(self.device)
            views = torch.randint(0, N_VIEWS, (n,), generator=g).to(self.device) if self.augment else None
            b = self.batch_size
            for i in range(self.steps_per_epoch):
                self.static.fill(self.train_x, self.train_y, views, order[i * b:(i + 1) * b])
                yield self.static.x, self.static.views, self.static.y
        else:
            if hasattr(self.data.train, "set_epoch"):  # augmentation = f(seed, epoch, index)
                self.data.train.set_epoch(self.spec.seed, self.epoch)
            loader = torch.utils.data.DataLoader(
                self.data.train, batch_size=self.batch_size, shuffle=True, drop_last=True,
                generator=g, num_workers=self.num_workers, pin_memory=self.cuda,
                persistent_workers=False)
            for x, y in loader:
                yield x.to(self.device, non_blocking=True), None, y.to(self.device, non_blocking=True)

    def _autocast(self):
        capturing = self.cuda and torch.cuda.is_current_stream_capturing()
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda,
                              cache_enabled=not capturing)

    # -- training ------------------------------------------------------------------------
    def _cohort_step(self, students: list[Student], x: torch.Tensor, views: torch.Tensor | None,
                     y: torch.Tensor, host: bool = True, watch_rng: bool = False) -> None:
        """One batch: inputs, the teacher's forward once, then every student's update. With
        ``host=False`` only the device work (what a CUDA graph captures): no student RNG
        switching and no schedule step, which the caller does after each replay."""
        x = self._inputs(x, views)
        t_logits = None if self.teacher is None else self._teacher_forward(x)
        for s in students:
            if host:
                torch.set_rng_state(s.rng_cpu)
                if s.rng_cuda is not None:
                    torch.cuda.set_rng_state(s.rng_cuda, self.device)
            self._update(s, x, y, t_logits, host)
            if host:
                s.scheduler.step()
                rng_cpu, rng_cuda = torch.get_rng_state(), self._cuda_rng()
                if watch_rng:
                    s.draws_random |= not torch.equal(rng_cpu, s.rng_cpu) or (
                        rng_cuda is not None and not torch.equal(rng_cuda, s.rng_cuda))
                s.rng_cpu, s.rng_cuda = rng_cpu, rng_cuda

    def _teacher_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits of the batch, once for every student: replayed from
        :attr:`teacher_logits` when it holds them, else computed (and recorded into it)."""
        cache = self.teacher_logits
        if cache is not None and cache.replaying:
            return cache.current
        with torch.no_grad(), self._autocast():
            t_logits = self.teacher(x)
        if cache is not None:
            cache.keep(t_logits)
        return t_logits

    def _update(self, s: Student, x: torch.Tensor, y: torch.Tensor,
                t_logits: torch.Tensor | None, host: bool = True) -> None:
        """One student's forward, loss, backward (in micro-batches when set) and optimiser
        step; tallies stay on the device."""
        def loss_of(logits: torch.Tensor, rows: slice) -> torch.Tensor:
            if t_logits is None:
                return F.cross_entropy(logits.float(), y[rows])
            return kd_loss(logits, t_logits[rows], y[rows], s.spec.temperature, s.spec.alpha,
                           s.spec.kd_t_squared)

        while True:
            s.optimizer.zero_grad(set_to_none=True)
            try:
                loss, correct, finite = backward_in_micro_batches(
                    s.model, x, y, loss_of, self.micro_batch, self._autocast)
                break
            except torch.cuda.OutOfMemoryError:
                if not (host and self._may_shrink(len(y))):
                    raise
            self._shrink_micro_batch(s, len(y))  # here the failed attempt's tensors are freed
            torch.set_rng_state(s.rng_cpu)  # the retry draws what the attempt drew
            if s.rng_cuda is not None:
                torch.cuda.set_rng_state(s.rng_cuda, self.device)
        s.optimizer.step()
        t = s.tally
        t["loss"] += loss
        t["correct"] += correct
        t["finite"] &= finite

    def _may_shrink(self, batch: int) -> bool:
        return (self.auto_micro_batch and (self.micro_batch or batch) > 1
                and not any(gpu.has_batch_statistics(s.model) for s in self.students))

    def _shrink_micro_batch(self, s: Student, batch: int) -> None:
        old = self.micro_batch or batch
        self.micro_batch = (old + 1) // 2
        self.graph_off, self._graph = f"accumulating micro-batches of {self.micro_batch}", None
        gpu.release_cuda_memory()
        warnings.warn(f"{s.run_id}: out of GPU memory with micro-batches of {old}; "
                      f"accumulating micro-batches of {self.micro_batch} from now on")

    def _step_graph(self, students: list[Student]) -> StepGraph | None:
        """The CUDA graph of this set of students (a new one after a student failed)."""
        if self.graph_off is not None:
            return None
        key = tuple(s.run_id for s in students)
        if self._graph is None or self._graph.key != key:
            self._graph = StepGraph(key, self.device)
        return self._graph

    def _warm_up(self, graph: StepGraph, students: list[Student], x, views, y) -> None:
        """One eager step on the graph's side stream; then capture, once warm, unless a
        student draws random numbers (its own RNG state cannot be switched in a graph)."""
        with graph.warmup():
            self._cohort_step(students, x, views, y, watch_rng=True)
        random = [s.run_id for s in students if s.draws_random]
        if random:
            self.graph_off = f"{', '.join(random)} draw random numbers in their forward"
        if self.graph_off is not None:  # random numbers, or out of memory: eager from now on
            self._graph = None
        if self._graph is None or not graph.due:
            return
        try:
            graph.capture(lambda: self._cohort_step(students, x, views, y, host=False))
        except Exception as e:  # noqa: BLE001 - an optimisation: eager computes the same
            self.graph_off, self._graph = f"capture failed: {type(e).__name__}: {e}", None
            warnings.warn(f"CUDA graph {self.graph_off}; training eagerly")

    def train_epoch(self) -> dict[str, dict[str, float]]:
        """One epoch of every active student; returns ``{run_id: metrics}`` (mean loss,
        training accuracy, last lr, wall time). A student whose loss was non-finite in this
        epoch is marked failed and gets no metrics."""
        t0 = time.perf_counter()
        students = self.active
        for s in students:
            s.model.train()
            for key, value in s.tally.items():  # in place: a captured step adds into them
                value.fill_(1 if key == "finite" else 0)
        seen, graph, cache = 0, self._step_graph(students), self.teacher_logits
        for step, (x, views, y) in enumerate(self._train_batches()):
            if cache is not None:
                cache.before_step(self.epoch, step)
            if graph is not None and graph.ready:
                graph.replay()
                for s in students:  # the schedule on the host: writes each device lr
                    s.scheduler.step()
            elif graph is not None:
                self._warm_up(graph, students, x, views, y)
                graph = self._graph  # None when capture turned out impossible
            else:
                self._cohort_step(students, x, views, y)
            if cache is not None:
                cache.after_step(self.epoch, step, last=step == self.steps_per_epoch - 1)
            seen += len(y)
        self.epoch += 1
        seen, seconds = max(seen, 1), time.perf_counter() - t0
        out = {}
        for s in students:  # one host sync per student per epoch
            if not bool(s.tally["finite"]):
                s.failed = divergence_message(self.epoch)
                continue
            out[s.run_id] = {"epoch": self.epoch, "loss": float(s.tally["loss"]) / seen,
                             "train_accuracy": float(s.tally["correct"]) / seen,
                             "lr": float(s.optimizer.param_groups[0]["lr"]),
                             "epoch_seconds": seconds}
        return out

    def fit(self, on_epoch: Callable[["Trainer", dict[str, dict[str, float]]], None] | None = None
            ) -> None:
        """Train from the current epoch to ``spec.epochs``, calling ``on_epoch(self, metrics)``
        after each; stops early when every student has failed."""
        while self.epoch < self.spec.epochs and self.active:
            metrics = self.train_epoch()
            if on_epoch is not None:
                on_epoch(self, metrics)

    # -- evaluation ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Has training ended (every epoch trained, or every student failed)?"""
        return self.epoch >= self.spec.epochs or not self.active

    def release_training_memory(self) -> None:
        """Drop what only training needs: the captured step (its CUDA graph and memory pool)
        and the teacher-logit table (saved to the store before evaluation); then return the
        cached CUDA blocks to the driver. Training after this captures and runs the teacher
        again (the same logits); nothing a prediction reads is touched."""
        if self._graph is not None:
            self._graph.release()
        self._graph, self.teacher_logits = None, None
        gpu.release_cuda_memory()

    @torch.inference_mode()
    def predict_all(self, split: TensorData | torch.utils.data.Dataset | None = None,
                    batch_size: int = 512) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``({run_id: predicted labels}, true labels)`` of every active student on every
        sample of ``split`` (default: test), in order; each batch is prepared once. In fp32
        (no autocast, no TF32): bf16 logits (8 significant bits) would turn near-ties into
        exact ties that ``argmax`` gives to the lowest class index.

        After training (:attr:`finished`) it first frees what training held
        (:meth:`release_training_memory`). Out of memory, it halves the batch and goes on
        from the first sample not yet predicted: in eval mode a sample's logits do not depend
        on its batch, so the predictions are the same. :attr:`eval_batch_sizes` lists the
        sizes tried; below a batch of 1 it raises."""
        split = self.data.test if split is None else split
        if self.finished:
            self.release_training_memory()
        students = self.active
        for s in students:
            s.model.eval()
        out = _Predicted([s.run_id for s in students])
        self.eval_batch_sizes = [batch_size]
        while True:
            try:
                self._predict_from(students, split, out)
                break
            except RuntimeError as e:
                self.eval_batch_sizes.append(smaller_eval_batch(self.eval_batch_sizes[-1], e))
            gpu.release_cuda_memory()  # here the failed batch's tensors are freed
        return out.arrays()

    @property
    def eval_batch_size(self) -> int | None:
        """The evaluation batch the last :meth:`predict_all` ended with, when out of memory
        made it smaller than asked; else None."""
        sizes = self.eval_batch_sizes
        return sizes[-1] if len(sizes) > 1 else None

    def _predict_from(self, students: list[Student], split, out: "_Predicted") -> None:
        """Predict ``split`` from sample ``out.done`` on, in batches of the last size tried."""
        size = self.eval_batch_sizes[-1]
        if isinstance(split, TensorData):
            batches = ((split.x[i:i + size], split.y[i:i + size])
                       for i in range(out.done, len(split), size))
        else:
            rest = split if out.done == 0 else torch.utils.data.Subset(
                split, range(out.done, len(split)))
            batches = torch.utils.data.DataLoader(rest, batch_size=size, shuffle=False,
                                                  num_workers=self.num_workers, pin_memory=self.cuda)
        with gpu.fp32_precision() if self.cuda else contextlib.nullcontext():
            for x, y in batches:
                x = self._inputs(x.to(self.device, non_blocking=True))
                out.add([s.model(x).argmax(-1).cpu() for s in students], torch.as_tensor(y))

    def predict(self, split: TensorData | torch.utils.data.Dataset | None = None,
                batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Predicted and true labels of the first student (a lone run's) on ``split``."""
        preds, labels = self.predict_all(split, batch_size)
        return preds[self.students[0].run_id], labels



class _Predicted:
    """The predictions of :meth:`Trainer.predict_all` so far: a batch counts only whole
    (every student's labels of it), so a retry goes on from :attr:`done`."""

    def __init__(self, run_ids: list[str]) -> None:
        self.preds: dict[str, list[torch.Tensor]] = {r: [] for r in run_ids}
        self.labels: list[torch.Tensor] = []
        self.done = 0

    def add(self, batch: list[torch.Tensor], y: torch.Tensor) -> None:
        for p, run_preds in zip(batch, self.preds.values()):
            run_preds.append(p)
        self.labels.append(y)
        self.done += len(y)

    def arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return ({r: torch.cat(p).numpy().astype(np.int64) for r, p in self.preds.items()},
                torch.cat(self.labels).numpy().astype(np.int64))


def smaller_eval_batch(size: int, error: RuntimeError) -> int:
    """The next evaluation batch after ``error`` at ``size``: half of it, when ``error`` is an
    out-of-memory error and the batch can shrink; else ``error`` goes on (or a clear one)."""
    if not gpu.is_out_of_memory(error):
        raise error
    if size <= 1:
        raise RuntimeError(f"evaluation: out of memory with a batch of 1 sample; the model's "
                           f"forward pass does not fit in the device memory left") from error
    warnings.warn(f"evaluation: out of memory with batches of {size}; trying {size // 2}")
    return size // 2


def divergence_message(epoch: int) -> str:
    """Why a student stopped when its loss became non-finite, and what a user can try: the
    sweep's report and ``python -m kdray.trial`` print it as the run's error."""
    return (f"loss became non-finite in epoch {epoch} (the run diverged; try a lower lr, a "
            f"longer-trained teacher, or a warm-up: warmup_epochs in the recipe)")


def check_cohort(specs: Sequence[RunSpec]) -> None:
    """Raise ``ValueError`` unless ``specs`` are distinct and differ only in temperature/alpha."""
    keys = {s.cohort_key for s in specs}
    if len(keys) > 1:
        raise ValueError(f"cohort: runs {[s.run_id for s in specs]} differ in more than "
                         f"temperature and alpha; a cohort shares data, seed, arch and recipe")
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"cohort: run(s) {sorted({r for r in ids if ids.count(r) > 1})} "
                         f"appear twice")
