"""Where trials run: what each trial asks of the cluster, and the cluster a sweep joined.

The table. :data:`RESOURCES` is the Ray request of one trial per architecture: CPUs, a GPU
share, and the *node kind* it needs as a custom resource. Every GPU node carries a custom
resource naming its kind, as many units as it has GPUs (``gpu_small: 1`` on a
``g5.2xlarge``, ``gpu_large: 8`` on a ``p4d.24xlarge``), decided from its GPUs by one rule
(``kdray/sweep/node_kind.py``) on AWS and on a lab's own machines alike, and every
request names the kind it needs with the same fraction as its GPU share (``resnet20``:
``{cpu: 1, gpu: 0.25, gpu_small: 0.25}``, four per small node's GPU; ``resnet50``:
``{cpu: 8, gpu: 1, gpu_large: 1}``). :data:`DATASET_NODE_KINDS` names the datasets that need
a kind of their own (ImageNet is staged on the large nodes only). ``--resources`` overrides
a request (:func:`parse_resource_overrides`).

Placement by need (:func:`trial_resources`): a DS trial asks for the larger of its student's
and its teacher's request, kind included, and the largest kind its dataset needs. So
ImageNet-size trials and their DS runs only land on the large nodes, CIFAR-size trials pack
several per GPU on the small ones. :func:`placement` looks at the cluster the sweep joined
(``kdray/connect.py`` joins it): no GPU in the requests when it has none, no node kinds when
its nodes carry none (a workstation, a laptop's local Ray), and no request above its largest
node on a local Ray.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

NODE_KINDS = ("gpu_small", "gpu_large")  # custom resources of the GPU node types, smallest first

# Ray resources of one trial, per architecture. The GPU shares follow what one GPU does
# (docs/performance.md: H100 80GB, torch 2.11, 2026-11-26: 4-8 trials sharing a card give
# 3-4x the aggregate throughput of one; a PIL DataLoader needs ~8 workers for ImageNet; a
# ResNet-18 trains at ~12k img/s alone, ~6k with a ResNet-50 teacher) and the fp32
# activation memory autograd saves per training image (measured on CPU): ResNet-18 44 MiB at
# 224 px, 39 MiB at 64 px (small stem); ResNet-50 131 / 143 MiB; TinyViT-5M 103 MiB at
# 224 px; ViT-B/16 277 MiB at 224 px; DenseNet-121 / -169 52 / 71 MiB at 32 px.
# - ResNet-50 and TinyViT-5M at the paper's batch 512 on 224 px need 65 and 52 GiB in fp32:
#   a whole card and 8 DataLoader workers.
# - ViT-B/16 at batch 512 needs ~140 GiB in fp32, more than one card: bf16 and/or gradient
#   checkpointing or accumulation; it gets the most a single trial can have, a card, 8 CPUs.
# - ResNet-18 needs ~22 GiB at batch 512: two trials share a card, 4 workers each.
# - DenseNets run on CIFAR-100 only (32 px, batch 128: 6.5 / 9 GiB, data resident on the
#   GPU, no workers) and, like the CIFAR ResNets, share a card four ways; LeNet-5 eight ways.
# - BERT-Base fine-tuning at batch 32 x 128 tokens (HateXplain, ~15k posts held in memory,
#   no workers) saves ~8.5 GiB of fp32 activations (measured: 272 MiB per post) plus ~1.8 GB
#   of weights, gradients and AdamW state; DistilBERT ~4.3 GiB + 1.1 GB, and its DS trials
#   also run the BERT teacher's forward: half a small node's card and 2 CPUs each.
# Node kinds: ResNet-50, ViT-B/16 and TinyViT need a large node's card (gpu_large, an A100 of
# a p4d.24xlarge); the others run on the small nodes' cards (gpu_small, a g5.2xlarge's A10G),
# unless their teacher or their dataset needs a large node.
SMALL_QUARTER = {"cpu": 1, "gpu": 0.25, "gpu_small": 0.25}
LARGE_WHOLE = {"cpu": 8, "gpu": 1, "gpu_large": 1}
RESOURCES: dict[str, dict[str, float]] = {
    "resnet20": SMALL_QUARTER, "resnet56": SMALL_QUARTER,
    "lenet5": {"cpu": 1, "gpu": 0.125, "gpu_small": 0.125},
    "resnet18": {"cpu": 4, "gpu": 0.5, "gpu_small": 0.5}, "resnet50": LARGE_WHOLE,
    "densenet121": SMALL_QUARTER, "densenet169": SMALL_QUARTER,
    "vit_base": LARGE_WHOLE, "tiny_vit": LARGE_WHOLE,
    "bert_base": {"cpu": 2, "gpu": 0.5, "gpu_small": 0.5},
    "distilbert": {"cpu": 2, "gpu": 0.5, "gpu_small": 0.5},
}
DEFAULT_RESOURCES = SMALL_QUARTER  # an architecture registered without an entry (a test's)
DATASET_NODE_KINDS = {"imagenet": "gpu_large"}  # staged on the large nodes only (cluster/aws.yaml)


def resources_of_arch(arch: str) -> dict[str, float]:
    """The table's request for ``arch`` (a registered model)."""
    from kdray import models

    if arch not in models.MODELS:
        raise ValueError(f"arch: {arch!r} is not registered; expected one of "
                         f"{sorted(models.MODELS)}")
    return dict(RESOURCES.get(arch, DEFAULT_RESOURCES))


def node_kind_of(resources: Mapping[str, float]) -> str | None:
    """The largest node kind named in ``resources`` (None when it names none)."""
    return next((k for k in reversed(NODE_KINDS) if resources.get(k)), None)


def trial_resources(arch: str, teacher_arch: str | None = None, dataset: str | None = None,
                    overrides: Mapping[str, Mapping[str, float]] | None = None,
                    use_gpu: bool = True, max_cpus: float | None = None) -> dict[str, float]:
    """The Ray request of one trial training ``arch`` (distilled from ``teacher_arch``) on
    ``dataset``: the table's request (for a DS trial the larger of student's and
    teacher's), then ``overrides[arch]`` (``--resources``).

    The node kind is the largest one the student, the teacher or the dataset needs, in the
    table's amount (the larger of student's and teacher's). An override that names a node
    kind decides the kind instead (``KIND:0`` alone removes it); ``gpu:0`` keeps the kind.
    Without GPUs (``use_gpu=False``: a smoke test, a cluster without GPUs) the request drops
    the GPU and keeps the node kind, with CPUs at most ``max_cpus``: the trial still lands on
    a node of the kind it needs, as the real run's would (data staged for that kind, the
    autoscaler starting that node type), and Ray gives it no GPU, so it trains on the CPU
    there instead of failing on a node where CUDA is not usable
    (``kdray.sweep.runtime.require_cuda``). Where no node carries a kind (a workstation, a
    laptop's local Ray), :func:`placement` removes the kinds (:func:`without_node_kinds`),
    as a request naming one could never be placed.
    """
    student = resources_of_arch(arch)
    teacher = resources_of_arch(teacher_arch) if teacher_arch else {}  # a DS trial runs it too
    res = {k: max(student.get(k, 0), teacher.get(k, 0))
           for k in {*student, *teacher} if k not in NODE_KINDS}
    override = dict((overrides or {}).get(arch, {}))
    if any(k in override for k in NODE_KINDS):
        kind = node_kind_of(override)
        amount = override.get(kind, 0) if kind else 0
    else:
        needs = [node_kind_of(student), node_kind_of(teacher), DATASET_NODE_KINDS.get(dataset)]
        kind = max((k for k in needs if k), key=NODE_KINDS.index, default=None)
        amount = max((v for r in (student, teacher) for k, v in r.items() if k in NODE_KINDS),
                     default=0)
    res.update({k: v for k, v in override.items() if k not in NODE_KINDS})
    if kind is not None:
        res[kind] = amount
    if not use_gpu:
        res.pop("gpu", None)
    if max_cpus:
        res["cpu"] = min(res.get("cpu", 1), max_cpus)
    return {k: v for k, v in res.items() if v}


def resources_of(spec, overrides: Mapping[str, Mapping[str, float]] | None = None,
                 use_gpu: bool = True, max_cpus: float | None = None) -> dict[str, float]:
    """Ray resources of one trial of ``spec`` (a RunSpec; a cohort's first): the arch's
    request (for a DS run, the larger of its and its teacher's), with the node kind it needs
    (:func:`trial_resources`), then ``overrides[arch]``; without GPUs no GPU, the node kind
    kept, CPUs at most ``max_cpus`` (a local Ray's size)."""
    return trial_resources(spec.arch, spec.teacher_arch if spec.role == "ds" else None,
                           spec.dataset, overrides, use_gpu, max_cpus)


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


# ----------------------------------------------------------------------------------------
# The cluster the sweep joined
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Where the trials of a sweep go on the cluster it joined: with or without GPUs, the
    ``--resources`` overrides (node kinds dropped where no node carries one), and the most
    CPUs one trial may ask for (a local Ray's size; None on a cluster)."""

    use_gpu: bool
    overrides: Mapping[str, Mapping[str, float]]
    max_cpus: float | None = None

    def resources(self, spec) -> dict[str, float]:
        return resources_of(spec, self.overrides, self.use_gpu, self.max_cpus)


def placement(where: str, use_gpu: bool | None,
              overrides: Mapping[str, Mapping[str, float]]) -> Placement:
    """The :class:`Placement` on the Ray this process joined (``where``: ``"local"``,
    ``"cluster"`` or ``"existing"``, from ``kdray.connect.init_ray``); ``use_gpu`` None: GPUs
    when the cluster has (or can start) any."""
    gpu = cluster_has_gpu() if use_gpu is None else use_gpu
    if not available_node_kinds():  # e.g. a workstation: no node carries a kind
        overrides = without_node_kinds(overrides)
    return Placement(gpu, overrides, largest_node_cpus() if where == "local" else None)


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


def launcher_config() -> dict[str, Any]:
    """The cluster launcher's config on this head node, as Ray prepared it ({} elsewhere)."""
    import yaml

    path = launcher_config_path()
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _launcher_node_types() -> dict[str, dict[str, Any]]:
    """``available_node_types`` of the launcher config on this head node ({} elsewhere)."""
    return launcher_config().get("available_node_types", {}) or {}


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
