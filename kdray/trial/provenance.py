"""What ran, on what, from which code: the provenance a run records in its run.json.

- :func:`code_version` is kdray's version plus the commit of the code that runs:
  ``$KDRAY_COMMIT`` when set (an image built from a commit), else git, else the commit read
  from the checkout's ``.git`` folder directly (a node whose image has no ``git`` binary; the
  cluster launcher syncs ``.git`` with the project, see ``cluster/aws.yaml``).
- :func:`device_name` names the device a run trained on.
- :class:`Provenance` is a run's record of both, with its timing, its cohort and the node
  it ran on (a Ray trial names its node: ``kdray/sweep/runtime.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import kdray

COMMIT_ENV = "KDRAY_COMMIT"


def _git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / ".git"
        if candidate.is_dir():
            return candidate
    return None


def _commit_from_git_dir(git_dir: Path) -> str:
    """HEAD's commit read from the files of a ``.git`` folder (no git binary needed)."""
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head  # a detached HEAD holds the commit itself
    ref = head.split(":", 1)[1].strip()
    loose = git_dir / ref
    if loose.is_file():
        return loose.read_text().strip()
    packed = git_dir / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.endswith(" " + ref) and not line.startswith(("#", "^")):
                return line.split()[0]
    return ""


def source_commit(start: str | os.PathLike | None = None) -> str:
    """The commit of the running code: ``$KDRAY_COMMIT``, else ``git`` (with ``-dirty`` when
    tracked files differ from it), else HEAD read from ``.git``; ``""`` when none is known."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV].strip()
    here = Path(start or Path(kdray.__file__).parent).resolve()
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=here)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True,
                                   timeout=10, cwd=here).returncode == 1
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    git_dir = _git_dir(here)
    if git_dir is not None:
        try:
            return _commit_from_git_dir(git_dir)
        except OSError:
            return ""
    return ""


def code_version(start: str | os.PathLike | None = None) -> str:
    """``<kdray version>+<commit, 12 hex digits>[-dirty]``, or the bare version without one."""
    commit = source_commit(start)
    if not commit:
        return kdray.__version__
    dirty = commit.endswith("-dirty")
    return f"{kdray.__version__}+{commit.removesuffix('-dirty')[:12]}{'-dirty' if dirty else ''}"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    """``<GPU name>`` for a CUDA device, otherwise ``cpu (<model>, <ISA ATen uses>, <N>
    threads)``: ``cpu (Intel(R) Xeon(R) Processor, AVX512, 1 threads)``. The ISA is named
    because it changes the float path, so results differ between CPU kinds."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"cpu ({cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads)")


class Provenance:
    """What a cohort's run.json records about how it ran, besides its results: the teacher it
    read, its cohort, when it started and finished, what code on which device and node.

    Made when the trial starts (the clock starts); :meth:`record` gives one student's fields
    when it commits (its ``finished`` time and ``wall_seconds`` then)."""

    def __init__(self, cohort: list[str], teacher_run_id: str | None,
                 node: dict[str, Any]) -> None:
        self.cohort, self.teacher_run_id, self.node = cohort, teacher_run_id, node
        self.teacher_logits: str | None = None  # a DS cohort's: replayed, or computed and why
        self.eval_batch_size: int | None = None  # the evaluation batch, when memory shrank it
        self.cuda_graph = "captured"  # or why the step trained eagerly (Trainer.graph_off)
        self.started, self.t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()

    def record(self, history: list[dict[str, float]], resumed_from_epoch: int,
               code: str, device: str) -> dict[str, Any]:
        """One student's provenance; ``code`` and ``device`` from :func:`code_version` and
        :func:`device_name` (looked up once per cohort: a git call each)."""
        finished = dt.datetime.now(dt.timezone.utc)
        shrunk = {} if self.eval_batch_size is None else {"eval_batch_size": self.eval_batch_size}
        return {**shrunk, "teacher_run_id": self.teacher_run_id, "teacher_logits": self.teacher_logits,
                "cohort": self.cohort, "cuda_graph": self.cuda_graph,
                "history": history, "resumed_from_epoch": resumed_from_epoch,
                "wall_seconds": time.perf_counter() - self.t0,
                "started": self.started.isoformat(), "finished": finished.isoformat(),
                "code_version": code, "torch_version": _torch_version(),
                "python_version": platform.python_version(), "device": device,
                "host": platform.node(),
                "node": self.node}  # the Ray node (id, type, kind) it trained on, if any


def _torch_version() -> str:
    import torch

    return torch.__version__


def this_host() -> dict[str, Any]:
    """Where a run outside Ray trains: the host only (a Ray trial names its node instead,
    ``kdray.sweep.runtime.node_info``)."""
    return {"hostname": socket.gethostname()}
