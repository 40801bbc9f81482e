"""The training loop: one function of a RunSpec, runnable without Ray.

Teachers and non-distilled students (NDS) minimise cross-entropy. Distilled students (DS)
minimise the paper's eq. (6) with Hinton et al.'s KD term::

    L = alpha * T^2 * KL( softmax(t / T) || softmax(s / T) ) + (1 - alpha) * CE(s, y)

where ``s`` and ``t`` are the student's and the (eval-mode, frozen) teacher's logits on the
same augmented batch. The T^2 factor keeps the soft term's gradient scale comparable across
temperatures (its gradient w.r.t. ``s`` shrinks as 1/T^2).

Recipe (all from the spec): SGD with momentum or AdamW; the learning rate follows a
per-step schedule (``multistep``: x ``lr_gamma`` at each milestone epoch; ``cosine``;
``linear``), after a linear warm-up of ``warmup_epochs``.

Data: in-memory datasets (``TensorData``) live on the device as uint8 and are augmented
there, batched: each sample of each epoch draws a *view id* in [0, 162): a crop offset of the
4-pixel zero-padded image (9 x 9 offsets) and a horizontal flip, so the 162 possible views of
a 32 px image are enumerable (a cache of teacher logits could be indexed by (sample, view)).
Large datasets stream through a DataLoader with workers that augment on the CPU.
Training batches have a static shape (the last partial batch is dropped) and the step has
no host synchronisation: losses and accuracies accumulate on the device and are read once
per epoch, so the step could later be captured whole in a CUDA graph.

Determinism and resume: the data order and the augmentation of epoch e come from a
generator seeded by (seed, e), and :meth:`Trainer.state_dict` holds the model, optimiser,
schedule, epoch and global RNG states; a run restored from it at an epoch boundary ends with
exactly the predictions of an uninterrupted run on the CPU.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdray.data import DatasetSplits, TensorData
from kdray.models import build_model
from kdray.spec import RunSpec

PAD = 4  # crop padding of the in-memory augmentation
N_VIEWS = (2 * PAD + 1) ** 2 * 2  # 9 x 9 crop offsets x 2 flips = 162


# ----------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------
def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Paper eq. (6): ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    KL is summed over classes and averaged over the batch. Computed in float32.
    """
    s, t = student.float(), teacher.float()
    kl = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                  reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * kl + (1.0 - alpha) * F.cross_entropy(s, labels)


# ----------------------------------------------------------------------------------------
# Augmentation on the device
# ----------------------------------------------------------------------------------------
def augment_views(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Apply view ids to a uint8 batch ``x`` [B, C, H, W]: random crop (padding 4) + flip.

    View v: crop offset ``(v // 2) // 9`` rows and ``(v // 2) % 9`` columns into the
    zero-padded image, flipped horizontally when ``v % 2 == 1``. All on ``x``'s device.
    """
    b, _, h, w = x.shape
    xp = F.pad(x, (PAD, PAD, PAD, PAD))
    crop, flip = views // 2, (views % 2).bool()
    dy, dx = crop // (2 * PAD + 1), crop % (2 * PAD + 1)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)  # advanced indexing put channels last


# ----------------------------------------------------------------------------------------
# Learning-rate schedule
# ----------------------------------------------------------------------------------------
def lr_factor(spec: RunSpec, epoch: float) -> float:
    """Multiplier of ``spec.lr`` at a (fractional) epoch."""
    w, total = spec.warmup_epochs, spec.epochs
    if w > 0 and epoch < w:
        return max(epoch / w, 1e-3)  # linear warm-up from lr / 1000
    if spec.lr_schedule == "multistep":
        return spec.lr_gamma ** sum(1 for m in spec.lr_milestones if epoch >= m)
    progress = min(1.0, (epoch - w) / max(1e-8, total - w))
    if spec.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)  # linear


# ----------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------
class Trainer:
    """Trains ``spec``'s model on ``data`` (with ``teacher`` for a DS spec), epoch by epoch."""

    def __init__(self, spec: RunSpec, data: DatasetSplits, *, device: str | torch.device | None = None,
                 teacher: nn.Module | None = None, num_workers: int = 4) -> None:
        if spec.role == "ds" and teacher is None:
            raise ValueError(f"teacher: a 'ds' spec needs a teacher model ({spec.run_id})")
        self.spec, self.data = spec, data
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.image = data.modality == "image"
        self.num_workers = num_workers

        torch.manual_seed(spec.seed)  # model initialisation is a function of the seed
        self.model = self._prepare(build_model(spec.arch, data.num_classes, pretrained=spec.pretrained,
                                               **data.model_kwargs()))
        self.teacher = None
        if teacher is not None:
            self.teacher = self._prepare(teacher).eval().requires_grad_(False)

        if self.image:
            self.mean = torch.tensor(data.mean, device=self.device).view(1, -1, 1, 1)
            self.std = torch.tensor(data.std, device=self.device).view(1, -1, 1, 1)
        if data.in_memory:  # uint8 (or token ids) moved to the device once
            self.train_x, self.train_y = data.train.x.to(self.device), data.train.y.to(self.device)
            self.batch_size = min(spec.batch_size, len(data.train))
            self.steps_per_epoch = len(data.train) // self.batch_size
        else:
            self.batch_size = spec.batch_size
            self.steps_per_epoch = max(1, len(data.train) // self.batch_size)
            if hasattr(data.train, "augmentation"):
                data.train.augmentation = spec.augmentation

        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 and spec.optimizer == "adamw" else decay).append(p)
        groups = [{"params": decay, "weight_decay": spec.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if spec.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum or 0.0)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=spec.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(spec, step / self.steps_per_epoch))
        self.epoch = 0

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.cuda and self.image:
            model = model.to(memory_format=torch.channels_last)
        return model

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue at the current epoch boundary."""
        return {"epoch": self.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if self.cuda else None,
                "run_id": self.spec.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("run_id") != self.spec.run_id:
            raise ValueError(f"checkpoint: it belongs to run {state.get('run_id')!r}, "
                             f"not {self.spec.run_id!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if self.cuda and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.epoch = int(state["epoch"])

    # -- input pipeline ------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        if not self.image:
            return x
        if views is not None:
            x = augment_views(x, views)
        x = (x.float() / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def _epoch_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.spec.seed * 1_000_003 + self.epoch)

    def _train_batches(self):
        g = self._epoch_generator()
        if self.data.in_memory:
            n = len(self.train_y)
            order = torch.randperm(n, generator=g).to(self.device)
            augment = self.image and self.spec.augmentation == "crop_flip"
            views = torch.randint(0, N_VIEWS, (n,), generator=g).to(self.device) if augment else None
            for i in range(self.steps_per_epoch):
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self._inputs(self.train_x[idx], views[idx] if augment else None), self.train_y[idx]
        else:
            loader = torch.utils.data.DataLoader(
                self.data.train, batch_size=self.batch_size, shuffle=True, drop_last=True,
                generator=g, num_workers=self.num_workers, pin_memory=self.cuda,
                persistent_workers=False)
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                yield self._inputs(x), y.to(self.device, non_blocking=True)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda)

    # -- training ------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """One epoch; returns its mean loss, training accuracy, last lr and wall time."""
        spec, t0 = self.spec, time.perf_counter()
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for x, y in self._train_batches():
            with self._autocast():
                logits = self.model(x)
                if self.teacher is not None:
                    with torch.no_grad():
                        t_logits = self.teacher(x)
                    loss = kd_loss(logits, t_logits, y, spec.temperature, spec.alpha)
                else:
                    loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(-1) == y).sum()
            seen += len(y)
        self.epoch += 1
        seen = max(seen, 1)
        return {"epoch": self.epoch, "loss": float(loss_sum) / seen,
                "train_accuracy": float(correct) / seen,
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_seconds": time.perf_counter() - t0}

    def fit(self, on_epoch: Callable[["Trainer", dict[str, float]], None] | None = None) -> None:
        """Train from the current epoch to ``spec.epochs``, calling ``on_epoch`` after each."""
        while self.epoch < self.spec.epochs:
            metrics = self.train_epoch()
            if on_epoch is not None:
                on_epoch(self, metrics)

    # -- evaluation ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, split: TensorData | torch.utils.data.Dataset | None = None,
                batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Predicted and true labels of every sample of ``split`` (default: test), in order."""
        split = self.data.test if split is None else split
        self.model.eval()
        preds, labels = [], []
        if isinstance(split, TensorData):
            batches = ((split.x[i:i + batch_size], split.y[i:i + batch_size])
                       for i in range(0, len(split), batch_size))
        else:
            batches = torch.utils.data.DataLoader(split, batch_size=batch_size, shuffle=False,
                                                  num_workers=self.num_workers, pin_memory=self.cuda)
        for x, y in batches:
            with self._autocast():
                logits = self.model(self._inputs(x.to(self.device, non_blocking=True)))
            preds.append(logits.argmax(-1).cpu())
            labels.append(torch.as_tensor(y))
        return torch.cat(preds).numpy().astype(np.int64), torch.cat(labels).numpy().astype(np.int64)


def per_class_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> list[float | None]:
    """Accuracy on each class's test samples (``None`` for a class with no test sample)."""
    total = np.bincount(labels, minlength=num_classes)
    hit = np.bincount(labels[labels == preds], minlength=num_classes)
    return [float(h / t) if t else None for h, t in zip(hit, total)]
