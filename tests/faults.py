"""Faults injected into a sweep from outside kdray: a trial's process killed, or paused, after
it reported an epoch (kdray itself has no fault injection).

A test puts :func:`environment` into the environment of the process that drives the sweep
(:func:`inject` for this process): ``$KDRAY_CRASH_AFTER_EPOCH`` = ``"<epoch>:<marker dir>"``
(or ``"...:pause"``), and ``$RAY_TUNE_CALLBACKS`` = ``faults.CrashAfterEpoch``, which Ray Tune
reads to add this callback to every Tuner the driver builds. Once a trial has reported epoch
N, and Tune has registered that report's checkpoint, the callback

- kills the trial's process (SIGKILL), once per trial (a ``<run_id>.crashed`` marker names
  its first run), like a crash on a node that stays alive: Tune retries it from that
  checkpoint, or gives up as ``--max-failures`` says; or
- with ``pause``, stops it (SIGSTOP) and writes ``<run_id>.paused`` (JSON: the epoch and the
  node the trial reported first) for each of its runs; every stopped trial continues
  (SIGCONT) once ``<marker dir>/release`` exists, at most 10 minutes later. A test kills a
  node while its trials are stopped there.

The callback signals the process id Tune reports, so driver and trials share this machine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from ray import tune

CRASH_ENV = "KDRAY_CRASH_AFTER_EPOCH"
TESTS = str(Path(__file__).resolve().parent)
MAX_PAUSE_S = 600.0


def environment(setting: str) -> dict[str, str]:
    """The environment of a sweep driver (a subprocess) whose trials crash or pause."""
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
    return {CRASH_ENV: setting, "RAY_TUNE_CALLBACKS": "faults.CrashAfterEpoch",
            "PYTHONPATH": path}


def inject(monkeypatch, setting: str) -> None:
    """Crash (or pause) the trials of every sweep this process drives, for this test."""
    for key, value in environment(setting).items():
        monkeypatch.setenv(key, value)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # gone already (its node was killed)
        pass


class CrashAfterEpoch(tune.Callback):
    """See the module docstring; inactive when ``$KDRAY_CRASH_AFTER_EPOCH`` is not set."""

    def __init__(self) -> None:
        at, _, rest = os.environ.get(CRASH_ENV, "").partition(":")
        marker_dir, _, mode = rest.partition(":")
        self.epoch = int(at) if at else None
        self.markers, self.pause = Path(marker_dir), mode == "pause"
        self.nodes: dict[str, dict] = {}  # trial_id -> the node of its first report
        self.due: dict[str, tuple[int, list[str]]] = {}  # trial_id -> (pid, run_ids)
        self.stopped: dict[int, float] = {}  # pid -> when it was stopped

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if self.epoch is None:
            return
        node = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("node/")}
        if node:
            self.nodes[trial.trial_id] = node
        if result.get("epoch") == self.epoch and result.get("students"):
            due = (result["pid"], list(result["students"]))
            if result.get("checkpoint_dir_name"):
                self.due[trial.trial_id] = due  # act once Tune has registered the checkpoint
            else:
                self._act(trial, *due)

    def on_trial_save(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.due:
            self._act(trial, *self.due.pop(trial.trial_id))

    def on_step_begin(self, iteration, trials, **info) -> None:
        released = (self.markers / "release").exists()
        for pid, since in list(self.stopped.items()):
            if released or time.monotonic() - since > MAX_PAUSE_S:
                _signal(pid, signal.SIGCONT)
                del self.stopped[pid]

    def _act(self, trial, pid: int, run_ids: list[str]) -> None:
        self.markers.mkdir(parents=True, exist_ok=True)
        if not self.pause:
            marker = self.markers / f"{run_ids[0]}.crashed"
            if not marker.exists():
                marker.touch()
                _signal(pid, signal.SIGKILL)
            return
        fresh = [r for r in run_ids if not (self.markers / f"{r}.paused").exists()]
        if fresh and not (self.markers / "release").exists():
            _signal(pid, signal.SIGSTOP)
            self.stopped[pid] = time.monotonic()
        for run_id in fresh:
            marker = self.markers / f"{run_id}.paused"
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"epoch": self.epoch, **self.nodes.get(trial.trial_id, {})}))
            os.replace(tmp, marker)
