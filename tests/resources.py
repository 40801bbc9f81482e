"""What a test starts, said by markers, so that a scheduler (CI's ``.ci/run``, or a developer's
``pytest -n``) knows what can run beside what.

| marker    | the test starts                                              | how the tests command runs it |
| --------- | ------------------------------------------------------------ | ----------------------------- |
| `ray`     | a local Ray: the session's shared one (fixture `ray_local`), or its own (a sweep it runs) | in parallel, first; a module's tests of the shared Ray on one pytest-xdist worker (group `ray_local:<module>`), each worker with its one shared Ray |
| `cluster` | several Ray nodes, ssh machines or SLURM daemons              | alone, one at a time, after the parallel tests |
| `s3`      | a moto S3 server on 127.0.0.1 (one per pytest process)       | in parallel |
| `trains`  | trains a model (its float path matters)                       | in parallel; the ones that start no Ray again on another float path |

The markers come from the fixtures a test uses (:data:`FIXTURE_MARKS`, transitively), so a
test that uses ``ray_local``, ``s3_uri`` or a cluster fixture cannot forget them. What no
fixture says is checked while the tests run:

- each pytest process gives Ray a folder of its own (``$RAY_TMPDIR``, inherited by every sweep
  a test starts), and a test that leaves a new Ray session there without the ``ray`` or
  ``cluster`` marker fails, naming the marker;
- a cluster helper (``multinode.LocalCluster``, ``launcher.LocalMachines``,
  ``slurm.LocalSlurm``) calls
  :func:`require` ``("cluster")``, which fails a test that is not marked so.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

MARKERS = {
    "ray": "starts a local Ray: the session's shared one (fixture ray_local) or its own, in a "
           "sweep it runs. A module's tests of the shared Ray run on one pytest-xdist worker "
           "(group ray_local:<module>); each worker has one shared Ray",
    "cluster": "starts several Ray nodes, ssh machines or SLURM daemons: run alone, after the "
               "parallel tests (README's test command)",
    "s3": "starts a moto S3 server on 127.0.0.1 (one per pytest process; safe in parallel)",
    "trains": "trains a model; must pass on any x86-64 CPU's float path (CI runs the ones that "
              "start no Ray a second time on another float path, .ci/run)",
}
# fixture -> the markers of every test that uses it, directly or through another fixture
FIXTURE_MARKS = {
    "ray_local": ("ray",),
    "s3_endpoint": ("s3",),
    "starts_cluster": ("cluster",),  # every fixture that starts several nodes asks for it
    "digits_teacher": ("trains",),
}
SHARED_RAY_GROUP = "ray_local"
_current: dict = {"item": None, "sessions": set()}


def own_ray_tmpdir() -> str:
    """A Ray temporary folder for this pytest process (and every sweep its tests start), under
    the folder the run began with: a session there is one of this process's tests. Short, as
    Ray's socket paths live below it."""
    base = os.environ.setdefault("KDRAY_TEST_TMP_BASE", os.environ.get("RAY_TMPDIR", "/tmp"))
    path = tempfile.mkdtemp(prefix="kdray-ray-", dir=base)
    os.environ["RAY_TMPDIR"] = path
    return path


def share_the_cores() -> None:
    """Under pytest-xdist, give each worker's torch (and every sweep its tests start) its share
    of the cores, at least one thread: with a thread per core in every worker, OpenMP's
    threads wait for each other's cores (on a 2-core machine the parallel step then took as long
    as the serial run, 24 min 47 s, and used 26 min 52 s of user CPU, where the whole serial CI
    used 18 min 28 s)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def ray_sessions() -> set[str]:
    folder = Path(os.environ["RAY_TMPDIR"], "ray")
    return {p.name for p in folder.glob("session_2*")} if folder.is_dir() else set()


def marks_of(item: pytest.Item) -> set[str]:
    return {m.name for m in item.iter_markers()}


def apply_markers(items: list[pytest.Item]) -> None:
    """Mark each test from its fixtures. The tests of one module that use the shared Ray go
    to one xdist worker (its module-scoped sweeps are built once, on that worker's Ray); the
    tests that start a Ray come first, so that the long ones do not end the run alone."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for name in FIXTURE_MARKS.get(fixture, ()):
                item.add_marker(name)
        if "ray_local" in getattr(item, "fixturenames", ()):
            module = item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(f"{SHARED_RAY_GROUP}:{module}"))
    items.sort(key=lambda item: "ray" not in marks_of(item))  # stable


def require(marker: str) -> None:
    """Fail the running test unless it carries ``marker`` (for helpers that start a resource
    no fixture names)."""
    item = _current["item"]
    if item is not None and marker not in marks_of(item):
        pytest.fail(f"{item.nodeid} starts what the '{marker}' marker says but is not marked so: "
                    f"use the '{marker}' fixture or add @pytest.mark.{marker} (tests/resources.py)",
                    pytrace=False)


def begin(item: pytest.Item) -> None:
    _current.update(item=item, sessions=ray_sessions())


def end(item: pytest.Item) -> None:
    """After the test's fixtures are torn down: did it leave a Ray session it did not declare?"""
    new = ray_sessions() - _current["sessions"]
    _current.update(item=None, sessions=set())
    if new and not {"ray", "cluster"} & marks_of(item):
        pytest.fail(f"{item.nodeid} started a Ray ({sorted(new)[0]} in $RAY_TMPDIR) but is not "
                    f"marked 'ray': use the ray_local fixture or add @pytest.mark.ray "
                    f"(tests/resources.py)", pytrace=False)
