"""The static-buffer training step and its capture in one CUDA graph.

At the paper's batch size a CIFAR-size step is bound by kernel launches, not arithmetic
(``docs/performance.md``: about 900 launches, ~15 ms of host time, against ~0.5 ms of
GPU work per DS step; on an H100 the captured step ran ~4x the eager one). Replaying the whole cohort step (teacher forward, then every
student's forward, backward and optimiser step) as one CUDA graph removes that host time.
A graph replays fixed kernels on fixed addresses, so the step is written for it:

- **Static inputs.** :class:`StaticBatch` holds preallocated input buffers ``x`` (uint8
  images or token ids), ``y`` and ``views``; before each step they are filled on the device
  from the epoch's device-resident permutation and view ids (``index_select(..., out=)``),
  outside the graph. Everything downstream (augmentation, normalisation, the models)
  reads only these buffers.
- **The learning rate as a device tensor.** On CUDA the optimisers are graph-capturable
  (``kdray.training.step.build_optimizer``: fused SGD, AdamW with ``capturable=True``, ``lr`` a
  0-d tensor shared by the param groups). The LambdaLR schedule runs on the host once per
  step, after the replay, and writes that tensor in place (``fill_``); nothing in the graph
  reads a Python float that changes.
- **No allocation, no host synchronisation** inside the step: losses, correct counts and
  finite flags accumulate into per-student device tensors that are zeroed, not replaced,
  each epoch and read once per epoch.
- **Warm-up on a side stream, then capture.** :class:`StepGraph` runs the first steps
  eagerly on a side stream (they are real training steps: cuDNN picks its algorithms, the
  optimisers create their state), then captures one step and replays it for every
  following batch.

Randomness: capture records the default CUDA generator's draws as offsets into one philox
stream per replay, but each student of a cohort keeps its own RNG state (dropout,
stochastic depth) and restores it around its forward, which a graph cannot do. So a
cohort whose students draw random numbers (seen during warm-up: a student's RNG state
moved) is not captured and trains eagerly on CUDA, exactly as on the CPU.

Not captured either, with the reason in ``Trainer.graph_off``: CPU runs, streamed datasets
(a DataLoader's host batches), accumulation over micro-batches, and the ``cuda_graph=False``
flag (``python -m kdray.trial --no-cuda-graph``, ``$KDRAY_CUDA_GRAPH=0``).

On the CPU the same static-buffer step runs eagerly and equals the plain loop bitwise
(``tests/test_static_step.py``). The capture itself has not run on a GPU yet.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's recipe uses 3)


class StaticBatch:
    """Preallocated device buffers of one training batch, filled in place per step."""

    def __init__(self, x_source: torch.Tensor, batch_size: int, with_views: bool) -> None:
        device = x_source.device
        self.x = torch.empty((batch_size, *x_source.shape[1:]), dtype=x_source.dtype, device=device)
        self.y = torch.empty(batch_size, dtype=torch.int64, device=device)
        self.views = torch.empty(batch_size, dtype=torch.int64, device=device) if with_views else None

    def fill(self, x_source: torch.Tensor, y_source: torch.Tensor,
             views_source: torch.Tensor | None, idx: torch.Tensor) -> None:
        """Batch = samples ``idx`` (a slice of the device-resident permutation): gathered on
        the device into the buffers, no allocation, no host synchronisation."""
        torch.index_select(x_source, 0, idx, out=self.x)
        torch.index_select(y_source, 0, idx, out=self.y)
        if self.views is not None:
            torch.index_select(views_source, 0, idx, out=self.views)


class StepGraph:
    """One cohort step captured as a CUDA graph, for one set of active students (``key``)."""

    def __init__(self, key: tuple[str, ...], device: torch.device,
                 warmup_steps: int = WARMUP_STEPS) -> None:
        self.key, self.device = key, device
        self.warmup_steps, self.warmed = warmup_steps, 0
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None

    @property
    def ready(self) -> bool:
        return self.graph is not None

    @property
    def due(self) -> bool:
        """Enough eager warm-up steps ran: capture before the next step."""
        return self.graph is None and self.warmed >= self.warmup_steps

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        """Run one eager step on the side stream (ordered after everything queued before)."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)
        self.warmed += 1

    def capture(self, body: Callable[[], None]) -> None:
        """Record ``body`` (the device part of a step: no Python-side state may change
        meaning between replays). Nothing runs during capture."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device), torch.cuda.graph(graph):
            body()
        self.graph = graph

    def replay(self) -> None:
        self.graph.replay()

    def release(self) -> None:
        """Free the captured graph and its private memory pool (no replay after this)."""
        if self.graph is not None:
            self.graph.reset()
        self.graph = None
