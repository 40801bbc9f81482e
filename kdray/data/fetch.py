"""Fetch or build a dataset once per node, safely when several trials start at once.

``once(root / "cifar10", build)`` runs ``build(tmp_dir)`` under an inter-process file lock
only when ``root / "cifar10" / ".complete"`` is missing; ``build`` fills a temporary
sibling folder that is renamed into place, so a crash mid-download leaves nothing that
looks finished and a later call simply tries again.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Callable

from filelock import FileLock

MARKER = ".complete"


def is_ready(target: Path) -> bool:
    return (Path(target) / MARKER).exists()


def once(target: Path, build: Callable[[Path], None], *, what: str = "") -> Path:
    """Return ``target`` after making sure ``build`` has filled it exactly once on this node."""
    target = Path(target)
    if is_ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_ready(target):  # another process finished while we waited
            return target
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            build(tmp)
            (tmp / MARKER).write_text(what or target.name)
            if target.exists():  # a stale, unfinished folder from a crashed build
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def existing(target: Path, *, what: str, how: str) -> Path:
    """``target`` if it exists, else a clear error saying what is missing and how to get it."""
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{what}: {target} does not exist; {how}")
    return target
