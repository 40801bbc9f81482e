"""Retries of a sweep's trials: lost nodes without limit, a trial's own errors a bounded
number of times.

:class:`RetryPolicy`: Tune runs with ``FailureConfig(max_failures=-1)`` and this
callback decides. A trial whose node was lost (a spot preemption) is retried from its last
checkpoint however often it happens; a trial that fails by its own error (an exception, or
its process dying on a node that is still alive) gets ``max_failures`` retries, then ends and
is reported with that error.
"""

from __future__ import annotations

import os
import re
import time

LOST, OWN, UNKNOWN = "lost node", "own error", "unknown"


def failure_kind(error: BaseException | None) -> str:
    """What a trial's failure was, from Ray's error (checked on Ray 2.60):

    - ``OWN``: an exception raised by the trial (``RayTaskError``), an actor that failed to
      start, or an ``ActorDiedError`` saying its worker process died while its node lived
      (the node's raylet reported it: a segfault, an OOM kill, ``os._exit``);
    - ``LOST``: an ``ActorDiedError`` saying its node died, or one Ray knows was preempted;
    - ``UNKNOWN``: the actor cannot be reached (``ActorUnavailableError``: what the driver
      sees when a node vanishes before Ray has noticed): its node decides, dead or alive.
    """
    from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

    if isinstance(error, RayTaskError):
        cause = error.as_instanceof_cause()
        if not isinstance(cause, RayActorError):
            return OWN
        error = cause
    if isinstance(error, RayActorError):
        if error.actor_init_failed:
            return OWN
        if error.preempted or "its node has died" in str(error):
            return LOST
        return OWN if isinstance(error, ActorDiedError) else UNKNOWN
    return OWN


def _error_of(trial) -> tuple[BaseException | None, str]:
    """The trial's latest error (Tune pickles it on the driver) and one line of it."""
    import cloudpickle

    error = None
    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as f:
                error = cloudpickle.load(f)
        except Exception:  # noqa: BLE001 - an unpicklable error: its text still says what
            error = None
    text = ""
    if error is not None:
        text = str(error)
    elif getattr(trial, "error_file", None) and os.path.exists(trial.error_file):
        with open(trial.error_file) as f:
            text = f.read().rsplit("Failure #", 1)[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b.*:", last):  # the trial's own "Type: msg"
        return error, last[:500]
    return error, f"{type(error).__name__ if error is not None else 'Error'}: {last}"[:500]


def _alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


class RetryPolicy:
    """A Tune callback and stopper for ``FailureConfig(max_failures=-1)``: lost nodes are
    retried without limit, own errors ``max_failures`` times.

    Tune counts every failure alike (an actor lost with its node only escapes the count when
    Ray knows it was preempted). This policy looks at each failure when Tune retries the
    trial (``on_trial_recover``, :func:`failure_kind`): a trial whose node has died is not
    counted; an exception raised by the trial, or its process dying on a live node, is; a
    trial that cannot be reached is decided by its node (the one its last report named):
    dead, lost; still alive ``node_grace_s`` later, its own error. Once a
    trial has had ``max_failures`` own-error retries, the next own error ends it: it gets no
    further retry and, if Tune had already queued one, that attempt is stopped at its first
    report (:meth:`stopper`). ``gave_up`` maps its trial id to the error, for the report.
    """

    def __init__(self, max_failures: int, node_grace_s: float = 60.0, *,
                 name=str, log=None) -> None:
        from ray import tune

        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
            raise ValueError(f"--max-failures: {max_failures!r} is not an integer >= 0")
        self.max_failures, self.node_grace_s = max_failures, node_grace_s
        self.name, self.log = name, log  # name(trial): what the log lines call it; log: print
        self.own: dict[str, list[str]] = {}  # trial_id -> its own errors, in order
        self.lost: dict[str, int] = {}  # trial_id -> lost nodes
        self.gave_up: dict[str, str] = {}  # trial_id -> why it ended
        self._node: dict[str, str] = {}  # trial_id -> node of its latest report
        self._pending: dict[str, tuple[Any, str | None, float, str]] = {}
        self._checked = 0.0
        policy = self

        class Callback(tune.Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                node = result.get("node/node_id")
                if node:
                    policy._node[trial.trial_id] = node

            def on_trial_recover(self, iteration, trials, trial, **info):
                policy.failed(trial)

            def on_step_begin(self, iteration, trials, **info):
                policy.resolve()

        class Stopper(tune.Stopper):
            def __call__(self, trial_id, result):
                return trial_id in policy.gave_up

            def stop_all(self):
                return False

        self.callback, self.stopper = Callback(), Stopper()

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks and stopper with the experiment state: keep the counts,
        not the log function or the trials awaiting a verdict (a restored sweep starts anew)."""
        return {**self.__dict__, "log": None, "_pending": {}}

    def _say(self, text: str) -> None:
        if self.log is None:
            print(text, flush=True)
        else:
            self.log(text)

    def failed(self, trial, error: BaseException | None = None, line: str | None = None) -> None:
        """Account for one failure of ``trial`` that Tune is about to retry."""
        if error is None and line is None:
            error, line = _error_of(trial)
        line = line or f"{type(error).__name__}: {error}"
        kind = failure_kind(error)
        node = self._node.get(trial.trial_id)
        if kind == UNKNOWN and node is not None and node not in _alive_nodes():
            kind = LOST
        if kind == LOST:
            self._lost(trial, line)
        elif kind == UNKNOWN and node is not None:  # is its node gone? decided in resolve()
            self._pending[trial.trial_id] = (trial, node, time.monotonic(), line)
        else:
            self._own(trial, line)

    def resolve(self, now: float | None = None) -> None:
        """Decide the vanished trial processes: node dead -> lost; alive past the grace -> own."""
        if not self._pending:
            return
        now = time.monotonic() if now is None else now
        if now - self._checked < 1.0:
            return
        self._checked = now
        alive = _alive_nodes()
        for trial_id, (trial, node, since, line) in list(self._pending.items()):
            if node not in alive:
                del self._pending[trial_id]
                self._lost(trial, line)
            elif now - since >= self.node_grace_s:
                del self._pending[trial_id]
                self._own(trial, line + " (its process died; its node stayed alive)")

    def _lost(self, trial, line: str) -> None:
        n = self.lost[trial.trial_id] = self.lost.get(trial.trial_id, 0) + 1
        self._say(f"  {self.name(trial)}: lost with its node ({n} so far), retried from its "
                 f"last checkpoint: {line.splitlines()[0][:200]}")

    def _own(self, trial, line: str) -> None:
        errors = self.own.setdefault(trial.trial_id, [])
        errors.append(line)
        if len(errors) > self.max_failures:
            self.gave_up[trial.trial_id] = (
                f"{line} (failed {len(errors)} times by its own error; --max-failures "
                f"{self.max_failures})")
            trial.max_failures = 0  # Tune's own check: no retry after its next failure
            self._say(f"  {self.name(trial)}: failed by its own error {len(errors)} times; "
                     f"not retried again: {line[:300]}")
        else:
            self._say(f"  {self.name(trial)}: failed by its own error ({len(errors)} of "
                     f"{self.max_failures + 1} attempts), retried: {line[:300]}")
