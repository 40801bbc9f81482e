"""The teacher's logits of every training step of a cohort, recorded once and replayed.

A DS cohort's batches (order and augmentation views) come from ``(seed, epoch)`` only, and
its teacher is frozen, so the teacher's logits at step ``s`` of epoch ``e`` are the same for
every cohort of one cohort key (``RunSpec.cohort_key``: every field but temperature and
alpha). Extending a study to T = 20, 30, 40 trains new cohorts of the same keys: they can
replay the logits the study's cohorts recorded instead of running the teacher again; the
students read the very numbers the teacher gave, so they end exactly as with it running.
On the CPU the teacher's forward is most of a small DS cohort's step: three LeNet-5
students of a ResNet-20 at 24 px (Trifeature) trained 2.61x faster replaying
(``benchmarks/teacher_logits.py``, one thread, 2-core Intel Xeon, 2026-12-03).

The table is indexed by (epoch, step), not by (sample, view): replayed, a batch's logits are
those the teacher gave that very batch, wherever a sample fell in it, and the table holds
only the views the run draws (a (sample, view) table of every view would take more teacher
forwards to fill, 162 per sample, than 100 epochs of training take).

:class:`TeacherLogits` is the table ``[epochs, steps, batch, classes]`` on the trainer's
device and one static buffer, :attr:`TeacherLogits.current`, the step reads. The trainer
calls :meth:`before_step` (replay: the step's logits into ``current``) and
:meth:`after_step` (record: ``current`` into the table) around each step, outside any CUDA
graph, so a captured step reads and writes one fixed address. Persisting the table in the
store is ``kdray/trial/teacher_logits.py``.
"""

from __future__ import annotations

import torch


class TeacherLogits:
    """Record (no ``table``) or replay (``table`` given) a cohort's teacher logits.

    ``shape`` is ``(epochs, steps per epoch, batch size, classes)``; a replayed table must
    have exactly that shape. A recorded table takes the dtype of the teacher's first output
    (float32 on the CPU, bf16 under CUDA autocast), so it holds exactly what the students read."""

    def __init__(self, shape: tuple[int, int, int, int], device: torch.device,
                 table: torch.Tensor | None = None) -> None:
        if table is not None and tuple(table.shape) != tuple(shape):
            raise ValueError(f"teacher logits: a table of shape {tuple(table.shape)}, "
                             f"expected {tuple(shape)}")
        self.shape, self.device = tuple(shape), device
        self.replaying = table is not None
        self.table = table.to(device) if self.replaying else None
        self.current = torch.empty(shape[2:], dtype=table.dtype, device=device) \
            if self.replaying else None
        self.recorded = [self.replaying] * shape[0]  # per epoch: every step in the table

    @property
    def complete(self) -> bool:
        """Does the table hold every step of every epoch?"""
        return all(self.recorded)

    def keep(self, logits: torch.Tensor) -> None:
        """Recording, inside the step: the teacher's output into :attr:`current` (allocated at
        the first, eager, step: a CUDA graph is captured only after warm-up steps)."""
        if self.current is None:
            self.table = torch.empty(self.shape, dtype=logits.dtype, device=self.device)
            self.current = torch.empty(self.shape[2:], dtype=logits.dtype, device=self.device)
        self.current.copy_(logits)

    def before_step(self, epoch: int, step: int) -> None:
        if self.replaying:
            self.current.copy_(self.table[epoch, step])

    def after_step(self, epoch: int, step: int, last: bool) -> None:
        """After the step kept its teacher output; ``last``: the epoch's last step."""
        if not self.replaying and self.current is not None:
            self.table[epoch, step].copy_(self.current)
            if last:
                self.recorded[epoch] = True
