"""Connect to Ray as a researcher expects: the running cluster if there is one, else a local Ray.

- Ray already initialised in this process (a test, a sweep script calling the analysis):
  reuse it.
- ``RAY_ADDRESS`` set (``ray job submit`` sets it): connect there; a failure is an error,
  never a silent fallback to a laptop-sized local Ray.
- Otherwise ``ray.init(address="auto")`` joins a cluster running on this machine (the head
  node under ``ray submit``, or ``ray start --head``), and a local Ray starts when none is.

Placement by need (:func:`trial_resources`): every GPU node type of ``cluster/aws.yaml``
carries a custom resource naming its kind, as many units as it has GPUs (``gpu_small: 1`` on
a ``g5.2xlarge``, ``gpu_large: 8`` on a ``p4d.24xlarge``), and every architecture's request
in the model registry names the kind it needs with the same fraction as its GPU share
(``resnet20``: ``{cpu: 1, gpu: 0.25, gpu_small: 0.25}``, four per small node's GPU;
``resnet50``: ``{cpu: 8, gpu: 1, gpu_large: 1}``). A DS trial asks for the larger of its
student's and its teacher's request, kind included, and a dataset can require a kind of its
own (ImageNet is staged on the large nodes only). So ImageNet-size trials and their DS runs
only land on the large nodes, CIFAR-size trials pack several per GPU on the small ones.

Retries (:class:`RetryPolicy`): Tune runs with ``FailureConfig(max_failures=-1)`` and this
callback decides. A trial whose node was lost (a spot preemption) is retried from its last
checkpoint however often it happens; a trial that fails by its own error (an exception, or
its process dying on a node that is still alive) gets ``max_failures`` retries, then ends and
is reported with that error.
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any, Mapping, Sequence

from kdray.sweep.runtime import NODE_KINDS


def init_ray(*, quiet: bool = True, num_cpus: int | None = None) -> str:
    """Make sure Ray is initialised; returns ``"existing"``, ``"cluster"`` or ``"local"``."""
    import ray

    if ray.is_initialized():
        return "existing"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=not quiet)
        return "cluster"
    try:
        ray.init(address="auto", log_to_driver=not quiet)
        return "cluster"
    except ConnectionError:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet)
        return "local"


# The cluster launcher's copy of cluster/aws.yaml on the head node (Ray Tune reads it too);
# $KDRAY_LAUNCHER_CONFIG names another (the fake autoscaler's config of a test cluster).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
LAUNCHER_CONFIG_ENV = "KDRAY_LAUNCHER_CONFIG"


def launcher_config_path() -> str:
    return os.path.expanduser(os.environ.get(LAUNCHER_CONFIG_ENV) or BOOTSTRAP_CONFIG)


def cluster_has_gpu() -> bool:
    """GPUs in the cluster now, or in a worker type the autoscaler can start: an autoscaling
    cluster starts with its head alone, before any GPU node is up."""
    import ray

    if ray.cluster_resources().get("GPU", 0) > 0:
        return True
    return any((t.get("resources") or {}).get("GPU", 0) > 0 for t in _launcher_node_types().values())


def largest_node_cpus() -> float:
    """CPUs of the biggest alive node (a trial asking for more could never be placed)."""
    import ray

    return max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)


# ----------------------------------------------------------------------------------------
# Placement by need
# ----------------------------------------------------------------------------------------
def node_kind_of(resources: Mapping[str, float]) -> str | None:
    """The largest node kind named in ``resources`` (None when it names none)."""
    return next((k for k in reversed(NODE_KINDS) if resources.get(k)), None)


def trial_resources(arch: str, teacher_arch: str | None = None, dataset: str | None = None,
                    overrides: Mapping[str, Mapping[str, float]] | None = None,
                    use_gpu: bool = True, max_cpus: float | None = None) -> dict[str, float]:
    """The Ray request of one trial training ``arch`` (distilled from ``teacher_arch``) on
    ``dataset``: the registry's request (for a DS trial the larger of student's and
    teacher's), then ``overrides[arch]`` (``--resources``).

    The node kind is the largest one the student, the teacher or the dataset needs, in the
    registry's amount (the larger of student's and teacher's). An override that names a node
    kind decides the kind instead (``KIND:0`` alone removes it); ``gpu:0`` keeps the kind.
    Without GPUs (``use_gpu=False``) the request is CPUs only, at most ``max_cpus``.
    """
    from kdray import models
    from kdray.data import DATASETS

    def registered(name: str) -> dict[str, float]:
        if name not in models.MODELS:
            raise ValueError(f"arch: {name!r} is not registered; expected one of "
                             f"{sorted(models.MODELS)}")
        return dict(models.MODELS[name].resources)

    student = registered(arch)
    teacher = registered(teacher_arch) if teacher_arch else {}  # a DS trial also runs it
    res = {k: max(student.get(k, 0), teacher.get(k, 0))
           for k in {*student, *teacher} if k not in NODE_KINDS}
    override = dict((overrides or {}).get(arch, {}))
    if any(k in override for k in NODE_KINDS):
        kind = node_kind_of(override)
        amount = override.get(kind, 0) if kind else 0
    else:
        info = DATASETS.get(dataset) if dataset else None
        needs = [node_kind_of(student), node_kind_of(teacher), getattr(info, "node_kind", None)]
        kind = max((k for k in needs if k), key=NODE_KINDS.index, default=None)
        amount = max((v for r in (student, teacher) for k, v in r.items() if k in NODE_KINDS),
                     default=0)
    res.update({k: v for k, v in override.items() if k not in NODE_KINDS})
    if kind is not None:
        res[kind] = amount
    if not use_gpu:
        res = {k: v for k, v in res.items() if k != "gpu" and k not in NODE_KINDS}
    if max_cpus:
        res["cpu"] = min(res.get("cpu", 1), max_cpus)
    return {k: v for k, v in res.items() if v}


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*$")


def parse_resource_overrides(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """``["resnet20=cpu:2,gpu:0.5", "resnet50=gpu:1,gpu_large:1"]`` ->
    ``{"resnet20": {"cpu": 2.0, "gpu": 0.5}, "resnet50": {"gpu": 1.0, "gpu_large": 1.0}}``.

    Keys: ``cpu``, ``gpu`` and custom resources (a node kind such as ``gpu_small`` or
    ``gpu_large``, or any other name a node type defines). Amounts are >= 0; like Ray, an
    amount above 1 of a GPU or a custom resource must be whole. Naming a node kind replaces
    the registry's (``gpu_large:0`` alone drops it); ``gpu:0`` drops the GPU, not the kind."""
    from kdray import models

    out: dict[str, dict[str, float]] = {}
    for item in items:
        arch, _, spec = item.partition("=")
        if arch not in models.MODELS or not spec:
            raise ValueError(f"--resources: {item!r} is not ARCH=cpu:N,gpu:F[,RESOURCE:F] with "
                             f"a registered ARCH (one of {sorted(models.MODELS)})")
        res: dict[str, float] = {}
        for part in spec.split(","):
            key, _, value = part.partition(":")
            try:
                v = float(value)
            except ValueError:
                v = -1.0
            if not _NAME.match(key) or not math.isfinite(v) or v < 0:
                raise ValueError(f"--resources: {part!r} in {item!r} is not cpu:N, gpu:F or "
                                 f"RESOURCE:F with F >= 0 (RESOURCE a custom resource name, "
                                 f"e.g. {' or '.join(NODE_KINDS)})")
            if key != "cpu" and v > 1 and v != int(v):
                raise ValueError(f"--resources: {part!r} in {item!r}: an amount above 1 of "
                                 f"{key} must be a whole number")
            if key in res:
                raise ValueError(f"--resources: {key!r} appears twice in {item!r}")
            res[key] = v
        out[arch] = res
    return out


def _launcher_node_types() -> dict[str, dict[str, Any]]:
    """``available_node_types`` of the launcher config on this head node ({} elsewhere)."""
    import yaml

    path = launcher_config_path()
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("available_node_types", {}) or {}


def available_node_kinds() -> set[str]:
    """The node kinds this cluster has now or can start (its launcher's node types)."""
    import ray

    kinds = {k for n in ray.nodes() if n.get("Alive") for k in NODE_KINDS
             if n.get("Resources", {}).get(k)}
    for node_type in _launcher_node_types().values():
        kinds |= {k for k in NODE_KINDS if (node_type.get("resources") or {}).get(k)}
    return kinds


def without_node_kinds(overrides: Mapping[str, Mapping[str, float]] | None
                       ) -> dict[str, dict[str, float]]:
    """``overrides`` with every node kind of every architecture set to 0: for a cluster whose
    nodes carry no kind resources (a workstation with GPUs), where a request naming one could
    never be placed."""
    from kdray import models

    out = {a: dict(r) for a, r in (overrides or {}).items()}
    for arch in models.MODELS:
        out.setdefault(arch, {}).update({k: 0.0 for k in NODE_KINDS})
    return out


# ----------------------------------------------------------------------------------------
# Retries: lost nodes without limit, a trial's own errors a bounded number of times
# ----------------------------------------------------------------------------------------
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
