"""CUDA hygiene for trials that share a GPU, determinism on demand, and fp32 evaluation.

Every function here is safe to call on a machine without CUDA (it does nothing there, and
never initialises CUDA itself), so a trial calls them unconditionally.

Several trials per GPU (Ray fractional GPUs):

- :func:`configure_allocator` sets ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``
  before CUDA starts in the process: segments grow in place instead of fragmenting, which
  matters when trials of different sizes come and go on one card.
- :func:`limit_memory` bounds this process's CUDA caching allocator to its Ray GPU share
  (``torch.cuda.set_per_process_memory_fraction``), less an allowance for the CUDA context,
  which the allocator does not count: one trial's peak then fails that trial with an
  out-of-memory error instead of its neighbours.
- :func:`release_cuda_memory` returns a finished trial's cached blocks to the driver, so a
  reused Ray worker does not sit on its last trial's memory.

The trainer's RNG state is that of its own device only (``torch.cuda.get_rng_state(device)``
in ``kdray.training.loop``), never ``get_rng_state_all``, which touches every visible GPU.

Determinism (:func:`set_determinism`, ``RunSpec.deterministic``) and the fp32 evaluation
context (:func:`fp32_precision`) are process-wide switches; they are set per trainer, so a
reused worker never carries one trial's setting into the next.

None of the CUDA branches here has run on a GPU yet (written and unit-tested on CPU only).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, MutableMapping

ALLOC_ENV = "PYTORCH_CUDA_ALLOC_CONF"
ALLOC_CONF = "expandable_segments:True"
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"  # NVIDIA's setting for reproducible cuBLAS results
GRAPH_ENV = "KDRAY_CUDA_GRAPH"  # "0" turns CUDA-graph capture off in every trial
CONTEXT_BYTES = 768 * 2 ** 20  # a CUDA context's own memory, outside the allocator (estimate)


def _torch():
    """torch if this process imported it, else None (so nothing here imports it early)."""
    return sys.modules.get("torch")


def _cuda_initialized() -> bool:
    torch = _torch()
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


# ----------------------------------------------------------------------------------------
# Switches
# ----------------------------------------------------------------------------------------
def graphs_enabled(flag: bool | None = None,
                   environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether to capture the training step in a CUDA graph: ``flag`` when given, else
    ``$KDRAY_CUDA_GRAPH`` (``0``/``false``/``off``/``no`` turn it off), else on."""
    if flag is not None:
        return bool(flag)
    value = (os.environ if environ is None else environ).get(GRAPH_ENV, "1")
    return value.strip().lower() not in ("0", "false", "off", "no")


def configure_allocator(environ: MutableMapping[str, str] | None = None) -> str:
    """Ask for expandable segments before CUDA starts in this process: sets
    ``$PYTORCH_CUDA_ALLOC_CONF`` unless the user set it (then it is left alone). When CUDA
    already started (a reused worker), the setting is applied to the running allocator.
    Returns the allocator setting in force."""
    env = os.environ if environ is None else environ
    if ALLOC_ENV not in env:
        env[ALLOC_ENV] = ALLOC_CONF
    conf = env[ALLOC_ENV]
    if environ is None and _cuda_initialized():
        setter = getattr(_torch().cuda.memory, "_set_allocator_settings", None)
        if setter is not None and "expandable_segments" in conf:
            setter(conf)
    return conf


def prepare_process(deterministic: bool = False) -> None:
    """A trial worker's CUDA settings, before CUDA starts in it: expandable segments
    (:func:`configure_allocator`) and, for a deterministic trial, cuBLAS's reproducible
    workspace (read once, when cuBLAS first runs in the process)."""
    configure_allocator()
    if deterministic:
        os.environ.setdefault(CUBLAS_ENV, CUBLAS_DETERMINISTIC)


def memory_fraction(gpu_share: float, total_bytes: int,
                    context_bytes: int = CONTEXT_BYTES) -> float | None:
    """The allocator fraction of a trial given ``gpu_share`` of a card of ``total_bytes``:
    its share of the card less the CUDA context it also holds; ``None`` for a whole card
    (or more, or no GPU), where nothing needs bounding.

    >>> memory_fraction(0.25, 80 * 2**30, 2**30)
    0.2375
    """
    if not gpu_share or gpu_share >= 1 or total_bytes <= 0:
        return None
    return max(0.01, gpu_share - context_bytes / total_bytes)


def limit_memory(gpu_share: float, device: int | str | None = None) -> float | None:
    """Bound this process's CUDA allocator to its Ray GPU share (see :func:`memory_fraction`);
    returns the fraction set, or ``None`` (no CUDA, or a whole card)."""
    import torch

    if not torch.cuda.is_available() or not gpu_share or gpu_share >= 1:
        return None
    index = torch.device(device if device is not None else "cuda").index
    index = torch.cuda.current_device() if index is None else index
    fraction = memory_fraction(gpu_share, torch.cuda.get_device_properties(index).total_memory)
    if fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def release_cuda_memory() -> bool:
    """Return the cached CUDA blocks of a finished trial to the driver (``empty_cache``) and
    reset the peak statistics; nothing when CUDA never started here. True when it did."""
    if not _cuda_initialized():
        return False
    torch = _torch()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return True


def is_out_of_memory(error: BaseException) -> bool:
    """Is ``error`` an out-of-memory error: torch's own class (``torch.OutOfMemoryError``,
    ``torch.cuda.OutOfMemoryError`` in older torch), or a ``RuntimeError`` that says so (a
    CPU allocator's, some backends')?"""
    torch = _torch()
    kinds = tuple({getattr(torch, "OutOfMemoryError", None),
                   getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)} - {None})
    if kinds and isinstance(error, kinds):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def set_determinism(on: bool) -> None:
    """Deterministic algorithms on (``RunSpec.deterministic``) or off, process-wide:
    ``torch.use_deterministic_algorithms`` (an op with no deterministic CUDA kernel warns,
    naming itself: ``warn_only``), cuDNN deterministic without autotuning, and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (read when cuBLAS starts: it also goes into the
    trial's environment before CUDA does). Off: cuDNN autotunes (``benchmark``), which
    pays for a training step's fixed shapes."""
    import torch

    if on:
        os.environ.setdefault(CUBLAS_ENV, CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def tf32_switches() -> list[tuple[object, str, object]]:
    """``(object, attribute, fp32 value)`` of each TF32 switch of this torch: the
    ``fp32_precision`` API where it exists (torch 2.9 documents it; the ``allow_tf32`` flags
    are deprecated there), else the ``allow_tf32`` flags that torch 2.4 (the floor) has."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    conv = getattr(cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee"), (matmul, "fp32_precision", "ieee")]
    return [(cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]


@contextlib.contextmanager
def fp32_precision() -> Iterator[None]:
    """Full fp32 inside the block: no TF32 in cuDNN convolutions (on by default) or in
    matmuls, so evaluation logits are IEEE fp32 on a GPU as on a CPU. Restores the settings.
    Through whichever switches this torch has (:func:`tf32_switches`)."""
    switches = tf32_switches()
    saved = [getattr(obj, name) for obj, name, _ in switches]
    for obj, name, fp32 in switches:
        setattr(obj, name, fp32)
    try:
        yield
    finally:
        for (obj, name, _), value in zip(switches, saved):
            setattr(obj, name, value)


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------
def has_batch_statistics(model) -> bool:
    """Does ``model`` normalise with batch statistics in training (BatchNorm)? Then a
    micro-batch is not a slice of the batch's computation."""
    import torch.nn as nn

    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def cast_matmul_weights(model, dtype):
    """Cast the weights and biases of ``model``'s convolutions and linear layers to ``dtype``
    in place (norm layers stay fp32) and return it. Under bf16 autocast this gives bitwise
    the logits of the fp32 model, since autocast casts those same tensors to bf16 on every
    forward; cast once, the teacher skips those casts."""
    import torch.nn as nn

    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    for m in model.modules():
        if isinstance(m, kinds):
            m.to(dtype)
    return model

