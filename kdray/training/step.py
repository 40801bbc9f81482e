"""What one training step computes, as functions: the KD loss (paper eq. 6), the device
augmentation, the learning-rate schedule, the optimiser, and gradient accumulation over
micro-batches. The loop that calls them is ``kdray.training.loop``.

Teachers and non-distilled students (NDS) minimise cross-entropy. Distilled students (DS)
minimise the paper's eq. (6) with Hinton et al.'s KD term::

    L = alpha * T^2 * KL( softmax(t / T) || softmax(s / T) ) + (1 - alpha) * CE(s, y)

where ``s`` and ``t`` are the student's and the (eval-mode, frozen) teacher's logits on the
same augmented batch. The T^2 factor keeps the soft term's gradient scale comparable across
temperatures (its gradient w.r.t. ``s`` shrinks as 1/T^2). The paper's eq. (6) as printed
has no such factor; a spec with ``kd_t_squared=False`` trains without it.

Recipe (all from the spec): SGD with momentum or AdamW; the learning rate follows a
per-step schedule (``multistep``: x ``lr_gamma`` at each milestone epoch; ``cosine``;
``linear``), after a linear warm-up of ``warmup_epochs``.

Augmentation: each sample of each epoch draws a *view id* in [0, 162): a crop offset of the
4-pixel zero-padded image (9 x 9 offsets) and a horizontal flip, so the 162 possible views of
a 32 px image are enumerable. The stored teacher logits (``kdray.training.teacher_logits``)
are indexed by (epoch, step) instead: a cohort key fixes the whole sequence of batches.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdray.spec import RunSpec

PAD = 4  # crop padding of the in-memory augmentation
N_VIEWS = (2 * PAD + 1) ** 2 * 2  # 9 x 9 crop offsets x 2 flips = 162
FUSED_DEVICES = ("cpu", "cuda")  # where the optimisers run their fused kernels

# A graph-ready AdamW (capturable) also runs uncaptured: in the warm-up steps, and for the
# whole run when the step cannot be captured (a student with dropout); torch warns then.
warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")


# ----------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------
def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float, t_squared: bool = True) -> torch.Tensor:
    """Paper eq. (6): ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``;
    without the ``T^2`` when ``t_squared`` is False (the equation as the paper prints it).

    KL is summed over classes and averaged over the batch. Computed in float32.
    """
    s, t = student.float(), teacher.float()
    kl = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                  reduction="batchmean", log_target=True)
    scale = temperature ** 2 if t_squared else 1.0
    return alpha * scale * kl + (1.0 - alpha) * F.cross_entropy(s, labels)


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
# Learning-rate schedule and optimiser
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


def build_optimizer(spec: RunSpec, model: nn.Module, device_lr: torch.device | None = None
                    ) -> tuple[torch.optim.Optimizer, torch.Tensor | None]:
    """The spec's optimiser over two groups: decayed weights, and (AdamW) biases and norm
    weights without weight decay. Returns ``(optimizer, lr tensor or None)``.

    The optimisers are the fused ones (one kernel per parameter tensor for the whole update)
    on CPU and CUDA, the same family on both, so a CPU run exercises the kernels a GPU run
    uses. ``benchmarks/optimizer_step.py`` on the 2-core development machine (one thread)
    timed a step, fused against PyTorch's default implementation: AdamW on LeNet-5 112
    against 350 us, on ResNet-20 504 against 1,625 us; SGD with momentum on ResNet-20 258
    against 649 us. On other devices (MPS) the default implementation runs.

    With ``device_lr`` (a CUDA step to be graph-captured) the learning rate is one 0-d
    tensor on that device, shared by both groups, and the optimisers read it there: fused
    SGD, AdamW with ``capturable=True`` (fused). Each group's ``initial_lr`` is the float
    ``spec.lr``, so the LambdaLR schedule computes its value on the host once per step and
    writes the tensor in place (``fill_``), never replacing it.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 and spec.optimizer == "adamw" else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    lr = None if device_lr is None else torch.tensor(spec.lr, dtype=torch.float32, device=device_lr)
    on = device_lr if device_lr is not None else next(model.parameters()).device
    kernels = {"fused": True} if on.type in FUSED_DEVICES else {}
    if spec.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=spec.lr if lr is None else lr,
                                    momentum=spec.momentum or 0.0, **kernels)
    else:
        optimizer = torch.optim.AdamW(groups, lr=spec.lr if lr is None else lr, **kernels,
                                      capturable=lr is not None and on.type == "cuda")
    if lr is not None:
        for group in optimizer.param_groups:
            group["initial_lr"] = spec.lr
    return optimizer, lr


def with_own_flags(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """A saved optimiser state with ``optimizer``'s own implementation flags (fused,
    capturable, ...), so a GPU graph run's checkpoint resumes on a CPU and back: the flags
    decide where AdamW's step counts live and which kernels run."""
    keys = ("foreach", "fused", "capturable", "differentiable")
    groups = [{**g, **{k: own[k] for k in keys if k in own}}
              for g, own in zip(saved["param_groups"], optimizer.param_groups)]
    return {**saved, "param_groups": groups}


def float_lrs(state: dict[str, Any]) -> dict[str, Any]:
    """An optimiser's or schedule's state dict with its learning rates as floats (a device
    lr tensor would tie the checkpoint to that device and to this optimiser's tensor)."""
    def plain(v):
        return float(v) if isinstance(v, torch.Tensor) else v
    state = dict(state)
    if "param_groups" in state:
        state["param_groups"] = [{**g, "lr": plain(g["lr"])} for g in state["param_groups"]]
    if "_last_lr" in state:
        state["_last_lr"] = [plain(v) for v in state["_last_lr"]]
    return state


# ----------------------------------------------------------------------------------------
# Gradient accumulation
# ----------------------------------------------------------------------------------------
def backward_in_micro_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                              loss_fn: Callable[[torch.Tensor, slice], torch.Tensor],
                              micro_batch: int | None = None,
                              autocast: Callable[[], Any] = contextlib.nullcontext
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward of one batch, whole or in micro-batches of ``micro_batch``
    samples, accumulating into the parameters' ``.grad``. ``loss_fn(logits, rows)`` is the
    mean loss of the samples ``rows`` (a slice of the batch). Returns ``(summed loss,
    correct predictions, loss finite)`` as device tensors (no host synchronisation).

    The batch's loss is the mean over its ``B`` samples, so micro-batch ``k`` of ``n_k``
    samples contributes ``(n_k / B) * mean_k``: the accumulated gradient is the whole
    batch's gradient, up to float rounding, *for a model whose output for a sample depends
    on that sample only* (LayerNorm: ViT, BERT; in eval mode anything). BatchNorm in
    training normalises with the statistics of the batch it sees, so with micro-batches
    each micro-batch is normalised by its own mean and variance (noisier, as with a
    smaller batch), and its running statistics take one update per micro-batch: that is a
    different training, not the same one in less memory. Dropout draws different numbers
    for different micro-batch shapes, so runs agree in distribution only.
    """
    b = len(y)
    m = b if micro_batch is None else min(micro_batch, b)
    total = None
    for start in range(0, b, m):
        rows = slice(None) if m == b else slice(start, start + m)
        with autocast():
            logits = model(x[rows])
        loss = loss_fn(logits, rows)
        n = b if m == b else len(y[rows])
        (loss if m == b else loss * (n / b)).backward()
        loss = loss.detach()
        part = (loss * n, (logits.detach().argmax(-1) == y[rows]).sum(), torch.isfinite(loss))
        total = part if total is None else (total[0] + part[0], total[1] + part[1],
                                            total[2] & part[2])
    return total
