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

import os
import subprocess
from pathlib import Path

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
