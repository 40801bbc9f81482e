"""Models by name, built from configs with random weights (or hub weights when asked for).

Every model maps an input batch to logits ``[B, num_classes]``: images as float
``[B, C, H, W]``, text as int64 token ids ``[B, L]`` (the model derives its attention mask
from the padding id). Register a model with::

    @register_model("resnet20", family="cnn", source="He et al. 2016")
    def resnet20(num_classes: int, *, image_size: int, in_channels: int = 3,
                 pretrained: bool = False) -> nn.Module: ...

``family`` picks the default recipe (``kdray.spec.FAMILY_RECIPES``), ``modality`` the input
it takes (``image`` or ``text``), ``source`` where the architecture comes from. Where a
model's trials run (its Ray resources) is not the registry's business: ``kdray/sweep/cluster.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    family: str = "cnn"
    modality: str = "image"
    source: str = ""


MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, *, family: str = "cnn", modality: str = "image",
                   source: str = "") -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelInfo(name, fn, family, modality, source)
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
