"""At most one trainer per run, whichever driver launched it: run leases in the store.

Two sweeps on one store (two researchers extending one study, a script started twice, a
rerun while the first driver still trains) must not train a run twice: that doubles the
GPU bill, and two trainings of one run_id race to commit different bytes (GPU arithmetic
is not bitwise repeatable). Each driver (:class:`Owner`: a sweep, ``python -m kdray.trial``)
therefore leases every run before it trains it::

    {store}/leases/runs/{run_id}.json    {"owner", "host", "pid", "taken"}
    {store}/leases/owners/{owner}.json   {"owner", "host", "machine", "pid", "started", "heartbeat"}

Why a lease per run rather than one sweep per store: drivers with overlapping grids (the
main study, and an extension to more temperatures) then share the store, each training the
runs it leased first; one lock per store would make the second wait for, or fail on, a
sweep it does not overlap.

The protocol:

1. Before a stage, the driver claims each pending run: it creates the run's lease only if
   there is none (an atomic create). Holding it, it reads the run's status again: a run
   another driver committed meanwhile is complete, released and not trained.
2. A lease whose owner is alive is left alone: the run is not launched and the sweep's
   report lists it as running elsewhere (its owner's host and pid).
3. An owner is alive while its heartbeat file is younger than :data:`STALE_AFTER_S`
   (5 minutes; it is rewritten every :data:`HEARTBEAT_S`, 30 s, from a thread). An owner
   on this machine (same host name and Linux boot id: :func:`machine`) whose pid is gone
   is dead at once (a sweep killed and run again here). A dead owner's lease is taken over
   by replacing it only if it still is the lease that was read (a compare-and-swap), so
   two drivers cannot both take it over.
4. A driver releases its leases and its heartbeat when it ends (its runs committed or
   failed for good; a failed run can then be retried by any driver). A lease left on a
   committed run is harmless: every driver checks completeness before it claims.

What makes each step atomic:

- S3: conditional writes. Creating is ``PutObject`` with ``If-None-Match: *``, taking over
  is ``PutObject`` with ``If-Match: <the ETag read>``, releasing is ``DeleteObject`` with
  ``If-Match: <our ETag>``; S3 applies each condition atomically and answers 412
  PreconditionFailed (or 409 ConditionalRequestConflict for a concurrent write) when it
  does not hold (Amazon S3 User Guide, "How to prevent object overwrites with conditional
  writes" and "How to perform conditional deletes": docs.aws.amazon.com/AmazonS3/latest/
  userguide/conditional-writes.html, conditional-deletes.html; a delete with ``If-Match``
  needs s3:GetObject as well as s3:DeleteObject). pyarrow's S3FileSystem (26.0.1) sends
  no conditional headers, so leases go through boto3 (:mod:`kdray.s3`) with the endpoint,
  region and credentials of the store's own pyarrow filesystem. Checked on 2026-12-02 with
  boto3 1.44.8 against moto 5.2.5 (the tests' S3 server): a second ``If-None-Match: *`` put, a put and a delete with a stale ``If-Match``
  each got 412; the matching ones succeeded. (moto checks a condition and then writes in
  two steps; the tests serialise its writes, as S3 itself does.)
- A local store: every lease operation holds an exclusive ``fcntl.flock`` on
  ``{store}/leases/.lock``: atomic on one machine, and across nodes on a shared mount whose
  locks span them (NFSv4).

Heartbeats compare one host's clock with another's: the hosts' clocks must agree to well
within :data:`STALE_AFTER_S`. A driver that stalls for longer than that (a suspended
laptop) can lose its leases to another driver, and both may then train a run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from kdray import s3
from kdray.store import Store

HEARTBEAT_S = 30.0  # seconds between an owner's heartbeats
STALE_AFTER_S = 300.0  # an owner silent this long is dead; its leases are taken over
LEASES = "leases"


# ----------------------------------------------------------------------------------------
# Atomic lease files: create if absent, replace or delete only what was read
# ----------------------------------------------------------------------------------------
class _LocalFiles:
    """Lease files in a local store; each operation under an exclusive flock."""

    def __init__(self, store: Store) -> None:
        self.root = os.path.join(store.root, LEASES)

    @contextmanager
    def _locked(self):
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, ".lock"), "a") as f:  # a new open file per call:
            fcntl.flock(f, fcntl.LOCK_EX)  # threads of one process exclude each other too
            yield

    def _read(self, name: str) -> tuple[bytes, str] | None:
        try:
            with open(os.path.join(self.root, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()

    def read(self, name: str) -> tuple[bytes, str] | None:
        with self._locked():
            return self._read(name)

    def put(self, name: str, data: bytes) -> None:
        with self._locked():
            self._write(name, data)

    def create(self, name: str, data: bytes) -> str | None:
        with self._locked():
            return None if self._read(name) is not None else self._write(name, data)

    def replace(self, name: str, data: bytes, token: str) -> str | None:
        with self._locked():
            now = self._read(name)
            return self._write(name, data) if now is not None and now[1] == token else None

    def delete(self, name: str, token: str | None = None) -> bool:
        with self._locked():
            now = self._read(name)
            if now is None or (token is not None and now[1] != token):
                return False
            os.unlink(os.path.join(self.root, name))
            return True


class _S3Files:
    """Lease files in an S3 store, with S3's conditional writes (through boto3)."""

    LOST = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "409", "412"}

    def __init__(self, store: Store) -> None:
        self.client = s3.client(s3.fs_options(store.fs))
        self.bucket, prefix = s3.split(store.root)
        self.prefix = "/".join(p for p in (prefix, LEASES) if p)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def _lost(self, error: Exception) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(error, ClientError) and error.response["Error"]["Code"] in self.LOST

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn(**kwargs)``, or None when S3 refused its condition (or the key is gone)."""
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as e:  # noqa: BLE001 - only a refused condition is expected
            if self._lost(e):
                return None
            raise

    def read(self, name: str) -> tuple[bytes, str] | None:
        got = self._call(self.client.get_object, Key=self._key(name))
        return None if got is None else (got["Body"].read(), got["ETag"])

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def create(self, name: str, data: bytes) -> str | None:
        got = self._call(self.client.put_object, Key=self._key(name), Body=data, IfNoneMatch="*")
        return None if got is None else got["ETag"]

    def replace(self, name: str, data: bytes, token: str) -> str | None:
        got = self._call(self.client.put_object, Key=self._key(name), Body=data, IfMatch=token)
        return None if got is None else got["ETag"]

    def delete(self, name: str, token: str | None = None) -> bool:
        kwargs = {"IfMatch": token} if token is not None else {}
        return self._call(self.client.delete_object, Key=self._key(name), **kwargs) is not None


def lease_files(store: Store):
    return _LocalFiles(store) if store.is_local else _S3Files(store)


# ----------------------------------------------------------------------------------------
# An owner: a driver's identity, heartbeat and leases
# ----------------------------------------------------------------------------------------
@dataclass
class Claim:
    """What :meth:`Owner.claim` got: ``mine`` (leased, still to train), ``elsewhere``
    (run_id -> who holds it) and ``complete`` (committed by another driver meanwhile)."""

    mine: list[str] = field(default_factory=list)
    elsewhere: dict[str, str] = field(default_factory=dict)
    complete: list[str] = field(default_factory=list)


def _parse(data: bytes) -> dict[str, Any] | None:
    """A lease or heartbeat file's fields; ``None`` when damaged (treated as no owner)."""
    try:
        d = json.loads(data)
    except ValueError:
        return None
    return d if isinstance(d, dict) and isinstance(d.get("owner"), str) else None


def machine() -> str:
    """This machine: its host name and, on Linux, the kernel's boot id (two containers named
    alike on different machines differ; one machine rebooted is another)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{platform.node()}/{boot}"


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class Owner:
    """One driver's leases on ``store`` (see the module docstring); a context manager that
    starts the heartbeat on entry and releases everything on exit."""

    def __init__(self, store: Store, *, log: Callable[[str], None] = print,
                 heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S) -> None:
        self.store, self.log = store, log
        self.id = uuid.uuid4().hex[:12]
        self.host, self.machine, self.pid = platform.node(), machine(), os.getpid()
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.files = lease_files(store)
        self.held: dict[str, str] = {}  # run_id -> token (ETag or digest) of our lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"owner {self.id} ({self.host}, pid {self.pid})"

    # -- heartbeat -------------------------------------------------------------------------
    def __enter__(self) -> "Owner":
        self.started = time.time()
        self._beat()  # before any lease: a lease's owner always has a heartbeat
        self._thread = threading.Thread(target=self._beating, name="kdray-lease-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release(list(self.held))
        self.files.delete(f"owners/{self.id}.json")

    def _beat(self) -> None:
        self.files.put(f"owners/{self.id}.json", json.dumps(
            {"owner": self.id, "host": self.host, "machine": self.machine, "pid": self.pid,
             "started": self.started,
             "heartbeat": time.time()}).encode())

    def _beating(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._beat()
            except Exception as e:  # noqa: BLE001 - a missed beat is retried; say it once
                self.log(f"lease: heartbeat of {self} not written ({type(e).__name__}: {e})")

    # -- leases ----------------------------------------------------------------------------
    def claim(self, run_ids: Iterable[str], verify_model: Iterable[str] = (),
              recheck: bool = True) -> Claim:
        """Lease each run (in parallel). With ``recheck``, runs committed meanwhile are
        released again (their status checked as :meth:`kdray.store.Store.statuses` does,
        the weights of ``verify_model`` too)."""
        run_ids, claim = list(run_ids), Claim()
        if not run_ids:
            return claim
        with ThreadPoolExecutor(max_workers=min(16, len(run_ids))) as pool:
            whys = list(pool.map(self._claim_one, run_ids))
        claim.elsewhere = {r: why for r, why in zip(run_ids, whys) if why}
        got = [r for r, why in zip(run_ids, whys) if not why]
        if not recheck:
            claim.mine = got
            return claim
        status = self.store.statuses(got, verify_model=verify_model)  # committed meanwhile?
        claim.complete = [r for r in got if status[r].complete]
        self.release(claim.complete)
        claim.mine = [r for r in got if not status[r].complete]
        return claim

    def release(self, run_ids: Iterable[str]) -> None:
        for run_id in list(run_ids):
            token = self.held.pop(run_id, None)
            if token is not None:
                self.files.delete(f"runs/{run_id}.json", token)  # unless taken over since

    def _claim_one(self, run_id: str) -> str | None:
        """None when the lease is ours now; else who holds it."""
        name, mine = f"runs/{run_id}.json", json.dumps(
            {"owner": self.id, "host": self.host, "pid": self.pid, "taken": time.time()}).encode()
        for _ in range(5):
            token = self.files.create(name, mine)
            if token is None:
                current = self.files.read(name)
                if current is None:
                    continue  # released between our create and read: create again
                lease = _parse(current[0])
                if lease is not None and lease["owner"] == self.id:  # ours (a retried request)
                    token = current[1]
                else:
                    why = self.holder(lease)
                    if why:
                        return why
                    token = self.files.replace(name, mine, current[1])
                    if token is None:
                        continue  # another driver replaced it first: read again
                    self.log(f"lease: {run_id}: taken over from "
                             f"{'a damaged lease' if lease is None else lease['owner']} (stale)")
            self.held[run_id] = token
            return None
        return "its lease kept changing hands while this driver tried to take it"

    def holder(self, lease: dict[str, Any] | None) -> str | None:
        """Who holds ``lease`` when its owner is alive ("leased by ..."); None when dead."""
        if lease is None:
            return None
        beat = self.files.read(f"owners/{lease['owner']}.json")
        info = _parse(beat[0]) if beat is not None else None
        if info is None or not isinstance(info.get("heartbeat"), (int, float)):
            return None
        if info.get("machine") == self.machine and not _pid_alive(info.get("pid")):
            return None
        age = time.time() - info["heartbeat"]
        if age > self.stale_after_s:
            return None
        return (f"leased by driver {info['owner']} on {info.get('host')} (pid {info.get('pid')}), "
                f"heartbeat {max(0, age):.0f} s ago")


class RunningElsewhere(RuntimeError):
    """A run to train is leased by another live driver."""


@contextmanager
def leased(store: Store, run_ids: Iterable[str], log: Callable[[str], None] = print):
    """Hold the leases of ``run_ids`` for the block (``python -m kdray.trial``, which trains
    what it is told, complete or not); ``RunningElsewhere`` when another live driver holds
    one of them, before any work."""
    with Owner(store, log=log) as owner:
        busy = owner.claim(run_ids, recheck=False).elsewhere
        if busy:
            raise RunningElsewhere("; ".join(f"{r} is running elsewhere: {why}"
                                             for r, why in sorted(busy.items())))
        yield owner
