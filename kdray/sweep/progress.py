"""A sweep's progress, stage by stage, from Ray Tune's own callback API.

:class:`StageProgress` is a ``ray.tune.Callback``: Tune calls it when a trial starts,
reports an epoch, completes, errors or is retried, and after every step of its loop. It
counts *runs*, not trials (a trial that trains a cohort of several runs holds
``{"specs": [...]}`` in its config, a lone run ``{"spec": ...}``), and shows per stage:

- runs done / total, running, failed and pending;
- the epoch of each running trial;
- the elapsed time and an estimate of the time left (the elapsed time scaled by the
  run-epochs still to train over those trained so far);
- the Ray dashboard's address, when the cluster has one.

On a terminal it is one tqdm bar per stage, updated in place. When stdout is not a terminal
(a ``ray submit`` log, CI, a test's pipe) it prints a plain line, at most every
``$KDRAY_PROGRESS_INTERVAL`` seconds (default 30; ``--progress-interval`` of the sweep
scripts), and one when the stage ends::

    stage 1: 4/10 runs done, 2 running (epoch 3/10, 7/10), 0 failed, 4 pending; 1m02s elapsed, ~1m50s left

:func:`quiet_ray_hints` drops the Ray log records a user cannot act on (Ray Data's
progress-bar hint, Tune's "may be a performance bottleneck" timings, Tune's "Wrote the
latest version of all result files" note); every other warning and error still shows.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, Mapping, TextIO

from ray.tune import Callback

INTERVAL_ENV = "KDRAY_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between plain lines when stdout is not a terminal
TTY_REFRESH = 0.5  # seconds between in-place redraws of the elapsed time and estimate
MAX_EPOCHS_SHOWN = 8


def interval_from_env(default: float = DEFAULT_INTERVAL) -> float:
    """``$KDRAY_PROGRESS_INTERVAL`` as seconds > 0 (a ValueError naming it otherwise)."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None or text == "":
        return default
    return check_interval(text, f"${INTERVAL_ENV}")


def check_interval(value: Any, where: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{where}: {value!r} is not > 0")
    return seconds


def runs_of(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The run specs (dicts) a trial trains: ``config["specs"]`` (a cohort) or ``[config["spec"]]``."""
    return list(config.get("specs") or [config["spec"]])


def dashboard_url() -> str | None:
    """The Ray dashboard's address (``http://host:port``), or None when the cluster has none."""
    url = os.environ.get("RAY_OVERRIDE_DASHBOARD_URL")
    if not url:
        try:
            from ray._private import worker  # the address ray.init() returned; not kept elsewhere

            url = worker._global_node.webui_url if worker._global_node is not None else None
        except Exception:  # noqa: BLE001 - no node, or an older/newer Ray: just no address
            url = None
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class StageProgress(Callback):
    """Progress of one stage of a sweep (see the module docstring).

    Parameters
    ----------
    stage : the name shown, e.g. ``"stage 1"``.
    total_runs : the runs this stage trains (trials can hold several).
    interval : seconds between plain lines off a terminal (default ``$KDRAY_PROGRESS_INTERVAL``).
    stream : where to write (default ``sys.stdout``).
    tty : force terminal (tqdm, in place) or plain mode; default ``stream.isatty()``.
    """

    def __init__(self, stage: str, total_runs: int, *, interval: float | None = None,
                 stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stage, self.total = stage, int(total_runs)
        self.interval = interval_from_env() if interval is None else check_interval(interval, "interval")
        self.stream = stream or sys.stdout
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.t0 = time.monotonic()
        self.last_line = float("-inf")
        self.runs: dict[str, int] = {}  # trial_id -> runs it trains
        self.epochs: dict[str, int] = {}  # trial_id -> epochs of its runs
        self.epoch: dict[str, int] = {}  # running trial_id -> last epoch reported
        self.done = self.failed = self.retried = 0
        self.finished: set[str] = set()
        self.bar = None
        self.ended = False

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks with the experiment state: leave the stream and the bar
        out (they belong to this process); an unpickled copy writes to ``sys.stdout``."""
        return {**self.__dict__, "stream": None, "bar": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.stream is None:
            self.stream = sys.stdout

    # -- Tune's hooks ----------------------------------------------------------------------
    def setup(self, **info) -> None:
        self.t0 = time.monotonic()
        url = dashboard_url()
        if url:
            self._write(f"{self.stage}: Ray dashboard at {url}")
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.stage, unit="run", file=self.stream,
                            dynamic_ncols=True, leave=True, mininterval=0,
                            bar_format="{desc}: {n_fmt}/{total_fmt} runs done |{bar}|{postfix}")

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._know(trial)
        self.epoch.setdefault(trial.trial_id, 0)
        self._update(force=False)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._know(trial)
        if "epoch" in result and trial.trial_id not in self.finished:
            try:
                self.epoch[trial.trial_id] = int(result["epoch"])
            except (TypeError, ValueError):
                pass
        self._update(force=False)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, failed=True)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self.retried += 1  # it runs again from its last checkpoint
        self._update(force=False)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._update(force=False)

    def on_experiment_end(self, trials: list, **info) -> None:
        self.ended = True
        self._update(force=True)
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- state -----------------------------------------------------------------------------
    def _know(self, trial) -> None:
        if trial.trial_id not in self.runs:
            specs = runs_of(trial.config)
            self.runs[trial.trial_id] = len(specs)
            self.epochs[trial.trial_id] = max(int(s.get("epochs") or 0) for s in specs)

    def _finish(self, trial, failed: bool) -> None:
        self._know(trial)
        if trial.trial_id in self.finished:
            return
        self.finished.add(trial.trial_id)
        self.epoch.pop(trial.trial_id, None)
        n = self.runs[trial.trial_id]
        if failed:
            self.failed += n
        else:  # a cohort trial lists the runs it had to stop (e.g. a non-finite loss)
            stopped = min(n, len((getattr(trial, "last_result", None) or {}).get("failed") or {}))
            self.failed += stopped
            self.done += n - stopped
        self._update(force=True)

    def counts(self) -> dict[str, int]:
        running = sum(self.runs[t] for t in self.epoch)
        return {"done": self.done, "running": running, "failed": self.failed,
                "pending": max(0, self.total - self.done - self.failed - running)}

    def seconds_left(self, elapsed: float) -> float | None:
        """Elapsed time x (run-epochs left / run-epochs trained); None before any epoch."""
        unit = max(self.epochs.values(), default=0) or 1  # epochs of a run not yet seen
        trained = sum(self.runs[t] * self.epochs[t] for t in self.finished)
        trained += sum(self.runs[t] * e for t, e in self.epoch.items())
        total = sum(self.runs[t] * (self.epochs[t] or unit) for t in self.runs)
        total += (self.total - sum(self.runs.values())) * unit  # trials Tune has not created yet
        if trained <= 0:
            return None
        return max(0.0, elapsed * (total - trained) / trained)

    def line(self) -> str:
        c, elapsed = self.counts(), time.monotonic() - self.t0
        running = f"{c['running']} running"
        if self.epoch:
            shown = [f"{e}/{self.epochs[t]}" for t, e in sorted(self.epoch.items())]
            more = len(shown) - MAX_EPOCHS_SHOWN
            shown = shown[:MAX_EPOCHS_SHOWN] + ([f"+{more} more"] if more > 0 else [])
            running += f" (epoch {', '.join(shown)})"
        left = self.seconds_left(elapsed)
        eta = "" if self.ended else (f", ~{_duration(left)} left" if left is not None else ", ? left")
        return (f"{c['done']}/{self.total} runs done, {running}, {c['failed']} failed, "
                f"{c['pending']} pending; {_duration(elapsed)} elapsed{eta}"
                + (f", {self.retried} retried" if self.retried else ""))

    # -- output ----------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _update(self, force: bool) -> None:
        now = time.monotonic()
        if self.tty:
            if self.bar is None or (not force and now - self.last_line < TTY_REFRESH):
                return
            self.last_line = now
            self.bar.n = self.done + self.failed
            self.bar.set_postfix_str(self.line().split(" runs done, ", 1)[-1], refresh=False)
            self.bar.refresh()
            return
        # a plain line at most every `interval` seconds, and the stage's last one
        if self.ended or now - self.last_line >= self.interval:
            self.last_line = now
            self._write(f"{self.stage}: {self.line()}")


# ----------------------------------------------------------------------------------------
# Ray's messages a user cannot act on
# ----------------------------------------------------------------------------------------
HINTS: dict[str, tuple[str, ...]] = {
    # Ray Data, once per process: "Progress bars disabled. To enable, set ..."
    "ray.data._internal.progress": (r"^Progress bars (for operators )?disabled",),
    # Tune's timing hints ("The `callbacks.on_trial_result` operation took 6.1 s, which may be
    # a performance bottleneck."): the W&B callback starting a run, not the user's code
    "ray.tune.utils.util": (r"may be a performance bottleneck",),
    "ray.tune.execution.tune_controller": (r"may be a performance bottleneck",),
    # end-of-fit bookkeeping note
    "ray.tune.tune": (r"^Wrote the latest version of all result files",),
}


class _DropHints(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True  # errors always show
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to hide
            return True
        return not any(p.search(message) for p in self.patterns)


def quiet_ray_hints() -> None:
    """Drop the Ray log records listed in :data:`HINTS` (idempotent); others still show."""
    for name, patterns in HINTS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHints) for f in logger.filters):
            logger.addFilter(_DropHints(patterns))
