"""Models by name, built from configs with random weights (or hub weights when asked for).

Every model maps an input batch to logits ``[B, num_classes]``: images as float
``[B, C, H, W]``, text as int64 token ids ``[B, L]`` (the model derives its attention mask
from the padding id). Register a model with::

    @register_model("resnet20", family="cnn", resources={"cpu": 1, "gpu": 0.25, "gpu_small": 0.25})
    def resnet20(num_classes: int, *, image_size: int, in_channels: int = 3,
                 pretrained: bool = False) -> nn.Module: ...

``family`` picks the default recipe (``kdray.spec.FAMILY_RECIPES``); ``resources`` is the
Ray request of one trial training this model (fractional GPUs share a card), with the kind
of node it needs as a custom resource (``gpu_small`` or ``gpu_large``, the same fraction as
its GPU share; ``kdray.sweep.cluster.trial_resources`` explains placement by need).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

DEFAULT_RESOURCES = {"cpu": 1, "gpu": 0.25, "gpu_small": 0.25}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    family: str = "cnn"
    modality: str = "image"
    resources: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    source: str = ""


MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, *, family: str = "cnn", modality: str = "image",
                   resources: dict[str, float] | None = None, source: str = "") -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelInfo(name, fn, family, modality,
                                 dict(resources or DEFAULT_RESOURCES), source)
        return fn
    return deco


def build_model(name: str, num_classes: int, *, pretrained: bool = False,
                **input_kwargs: Any) -> nn.Module:
    """Build ``name`` for ``num_classes`` classes; ``input_kwargs`` from ``DatasetSplits.model_kwargs()``."""
    if name not in MODELS:
        raise ValueError(f"arch: {name!r} is not registered; expected one of {sorted(MODELS)}")
    return MODELS[name].builder(num_classes, pretrained=pretrained, **input_kwargs)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The registrations (imported for their side effect).
from kdray.models import cifar_resnet as _cifar_resnet  # noqa: E402,F401
from kdray.models import lenet as _lenet  # noqa: E402,F401
from kdray.models import vision as _vision  # noqa: E402,F401
from kdray.models import text as _text  # noqa: E402,F401
