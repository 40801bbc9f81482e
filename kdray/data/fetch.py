"""Fetch or build a dataset once per node, and download a dataset once per *study*.

``once(root / "cifar10", build)`` runs ``build(tmp_dir)`` under an inter-process file lock
only when ``root / "cifar10" / ".complete"`` is missing; ``build`` fills a temporary
sibling folder that is renamed into place, so a crash mid-download leaves nothing that
looks finished and a later call simply tries again.

The store as the datasets' mirror. On a cluster, every node going to the internet for
the same files is slow and fragile (CelebA's Google Drive quota refuses a 16-node
cluster). So a dataset that is downloaded (CIFAR, SVHN, Tiny ImageNet, CelebA, HateXplain
and its tokenizer) is copied *once* into the results store, as one tar file per folder::

    {store}/datasets/{key}.tar     the folder a fetch fills (e.g. key "cifar10")
    {store}/datasets/{key}.json    its SHA-256, size and file count: written last

and every node reads it from there. :func:`fetched` is :func:`once` for such a folder: under
``with mirror(store):`` a node that lacks the folder copies it from the store (checksum
verified) instead of downloading it, and only downloads it when the store does not have it;
under ``with mirror(store, publish=True)`` (the sweep driver, before any trial starts,
``kdray.sweep.staging``) the folder, downloaded or already on disk, is also written
to the store when the store lacks it. Derived caches (decoded ``.npy`` arrays) stay local.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

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


# ----------------------------------------------------------------------------------------
# The store as the datasets' mirror
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Mirror:
    store: Any  # a kdray.store.Store, passed in: this module sits below the store
    publish: bool


_MIRROR: contextvars.ContextVar[_Mirror | None] = contextvars.ContextVar("kdray_mirror", default=None)


@contextlib.contextmanager
def mirror(store, *, publish: bool = False) -> Iterator[None]:
    """Within the block, :func:`fetched` copies datasets from ``{store}/datasets`` (``store``
    a :class:`kdray.store.Store`; and, with ``publish``, writes the ones the store lacks
    there). ``None`` turns it off."""
    token = _MIRROR.set(_Mirror(store, publish) if store is not None else None)
    try:
        yield
    finally:
        _MIRROR.reset(token)


def mirror_paths(store, key: str) -> tuple[str, str]:
    """``({store}/datasets/{key}.tar, {store}/datasets/{key}.json)``."""
    return store.path("datasets", f"{key}.tar"), store.path("datasets", f"{key}.json")


def in_store(store, key: str) -> bool:
    return store.exists(mirror_paths(store, key)[1])


class _Hashing:
    """A file-like wrapper that hashes and counts the bytes passing through it."""

    def __init__(self, f) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.f.write(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def publish(store, key: str, folder: Path) -> bool:
    """Write ``folder`` to the store as ``datasets/{key}.tar`` + ``.json`` unless it is there
    already; True when it wrote it. The JSON (checksum, size) is written last, so a reader
    never sees a half-written tar as complete."""
    if in_store(store, key):
        return False
    tar_path, json_path = mirror_paths(store, key)
    store.fs.create_dir(tar_path.rsplit("/", 1)[0], recursive=True)
    target = f"{tar_path}.tmp-{uuid.uuid4().hex}" if store.is_local else tar_path
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MARKER)
    with store.fs.open_output_stream(target) as out:  # S3: one multipart upload
        hashing = _Hashing(out)
        with tarfile.open(fileobj=hashing, mode="w|") as tar:
            for path in files:
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    if store.is_local:
        store.fs.move(target, tar_path)
    store.write_json(json_path, {"key": key, "sha256": hashing.sha.hexdigest(),
                                 "bytes": hashing.size, "files": len(files)})
    return True


def download(store, key: str, folder: Path) -> None:
    """Extract ``datasets/{key}.tar`` from the store into ``folder``, checking its SHA-256."""
    tar_path, json_path = mirror_paths(store, key)
    manifest = store.read_json(json_path)
    with store.fs.open_input_stream(tar_path) as f:
        hashing = _Hashing(f)
        with tarfile.open(fileobj=hashing, mode="r|") as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(folder, filter="data")  # no absolute paths, links out, devices
            else:
                tar.extractall(folder)
        while hashing.read(1 << 20):  # the tar's zero padding, so the checksum covers it all
            pass
    if hashing.sha.hexdigest() != manifest["sha256"]:
        raise OSError(f"dataset {key!r}: {tar_path} does not match the SHA-256 of "
                      f"{json_path}; delete both and run the sweep again to re-stage it")


def fetched(target: Path, build: Callable[[Path], None], *, key: str, what: str = "") -> Path:
    """:func:`once` for a folder that ``build`` downloads from the internet; within
    :func:`mirror`, the copy in the store is used instead of the internet (and, publishing,
    the folder is written to the store when it lacks it)."""
    target, m = Path(target), _MIRROR.get()
    store = m.store if m is not None else None

    def copy_or_build(tmp: Path) -> None:
        if store is not None and in_store(store, key):
            download(store, key, tmp)
        else:
            build(tmp)

    once(target, copy_or_build, what=what)
    if store is not None and m.publish:
        publish(store, key, target)
    return target


def publish_present(target: Path, *, key: str) -> None:
    """Within ``mirror(..., publish=True)``: write a dataset folder that was already on this
    node (put there by a user or a test, not by a fetch) to the store when it lacks it."""
    m = _MIRROR.get()
    if m is not None and m.publish:
        publish(m.store, key, Path(target))


def staged_record(store, key: str) -> dict | None:
    """The store's record of a staged dataset folder (None when it is not there)."""
    try:
        return store.read_json(mirror_paths(store, key)[1])
    except FileNotFoundError:
        return None
