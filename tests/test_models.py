"""Every registered model: forward and backward on a tiny batch, registry metadata, and the
parameter counts the literature gives (counted on the meta device: no memory, no time)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from kdray.models import MODELS, build_model, num_parameters  # noqa: E402
from kdray.models.vision import tiny_vit_window_sizes, vit_patch_size  # noqa: E402
from kdray.spec import FAMILY_RECIPES  # noqa: E402
from kdray.sweep.cluster import RESOURCES  # noqa: E402

IMAGE_SIZE = 32  # CIFAR's size, and tiny_vit's smallest (its total stride); ViT-B/16: 2x2 patches
TEXT_INPUT = dict(vocab_size=64, pad_token_id=3, max_length=16)  # pad id deliberately not 0
NUM_CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of 2 gain nothing from intra-op threads, and on a busy 2-core machine the
    threads spin: oneDNN spends ~10x the CPU time of one thread on a tiny DenseNet step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model_inputs(name: str, batch: int = 2) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if MODELS[name].modality == "text":
        ids = torch.randint(5, TEXT_INPUT["vocab_size"], (batch, TEXT_INPUT["max_length"]), generator=g)
        ids[:, 11:] = TEXT_INPUT["pad_token_id"]  # padded tails
        return dict(TEXT_INPUT), ids
    return dict(image_size=IMAGE_SIZE, in_channels=3), torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE,
                                                                     generator=g)


_BUILT: dict[str, nn.Module] = {}


def tiny_input_model(name: str) -> nn.Module:
    """``name`` built once per session for the inputs of :func:`model_inputs`."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = build_model(name, NUM_CLASSES, **model_inputs(name)[0])
    return _BUILT[name]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name, no_network):
    _, x = model_inputs(name)
    model = tiny_input_model(name)
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, NUM_CLASSES - 1])).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_metadata(name):
    info = MODELS[name]
    assert info.family in FAMILY_RECIPES
    assert info.modality in ("image", "text")
    assert (info.family == "bert") == (info.modality == "text")
    kinds = set(RESOURCES[name]) - {"cpu", "gpu"}
    assert len(kinds) == 1 and kinds <= {"gpu_small", "gpu_large"}  # the node kind it needs
    assert RESOURCES[name]["cpu"] >= 1
    assert 0 < RESOURCES[name]["gpu"] <= 1
    assert RESOURCES[name][kinds.pop()] == RESOURCES[name]["gpu"]  # per GPU of the node kind
    assert info.source


# (arch, num_classes, input kwargs, millions of parameters, where the number comes from)
PARAM_COUNTS = [
    ("resnet20", 10, dict(image_size=32), 0.27, "He et al. 2016, Table 6"),
    ("resnet56", 10, dict(image_size=32), 0.85, "He et al. 2016, Table 6"),
    ("lenet5", 10, dict(image_size=32), 0.06, "LeCun et al. 1998 (62,006 with 3 input planes)"),
    ("resnet18", 100, dict(image_size=32), 11.22, "CIFAR-100 ResNet-18, small stem"),
    ("resnet50", 100, dict(image_size=32), 23.71, "CIFAR-100 ResNet-50, small stem"),
    ("densenet121", 100, dict(image_size=32), 7.05, "CIFAR-100 DenseNet-121, small stem"),
    ("densenet169", 100, dict(image_size=32), 12.64, "CIFAR-100 DenseNet-169, small stem"),
    ("resnet18", 1000, dict(image_size=224), 11.69, "torchvision resnet18"),
    ("resnet50", 1000, dict(image_size=224), 25.56, "torchvision resnet50"),
    ("densenet121", 1000, dict(image_size=224), 7.98, "torchvision densenet121"),
    ("densenet169", 1000, dict(image_size=224), 14.15, "torchvision densenet169"),
    ("vit_base", 1000, dict(image_size=224), 86.57, "ViT-B/16, Dosovitskiy et al. 2021 (86M)"),
    ("tiny_vit", 1000, dict(image_size=224), 5.39, "TinyViT-5M, Wu et al. 2022 (5.4M)"),
    ("bert_base", 2, dict(vocab_size=30522, pad_token_id=0, max_length=128), 109.48,
     "bert-base-uncased (110M) + a 2-way head"),
    ("distilbert", 2, dict(vocab_size=30522, pad_token_id=0, max_length=128), 66.96,
     "distilbert-base-uncased (66M) + its 2-way head"),
]


@pytest.mark.parametrize("name,num_classes,kwargs,millions,source", PARAM_COUNTS,
                         ids=[f"{c[0]}-{c[1]}-{next(iter(c[2].values()))}" for c in PARAM_COUNTS])
def test_parameter_counts(name, num_classes, kwargs, millions, source, no_network):
    with torch.device("meta"):
        model = build_model(name, num_classes, **kwargs)
    assert abs(num_parameters(model) / 1e6 - millions) < 0.01, source


def test_every_model_has_a_parameter_count():
    assert {c[0] for c in PARAM_COUNTS} == set(MODELS)


# ------------------------------------------------------------------ image-model details
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_stems(name):
    with torch.device("meta"):
        small = build_model(name, 10, image_size=64)
        large = build_model(name, 10, image_size=224)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("name", ["densenet121", "densenet169"])
def test_densenet_stems(name):
    with torch.device("meta"):
        small = build_model(name, 10, image_size=32)
        large = build_model(name, 10, image_size=224)
    assert small.features.conv0.kernel_size == (3, 3) and small.features.conv0.stride == (1, 1)
    assert isinstance(small.features.pool0, nn.Identity)
    assert large.features.conv0.kernel_size == (7, 7)
    assert isinstance(large.features.pool0, nn.MaxPool2d)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121", "densenet169",
                                  "vit_base", "tiny_vit"])
def test_image_models_take_other_channel_counts(name):
    with torch.device("meta"):  # shapes only
        model = build_model(name, 3, image_size=64, in_channels=1).eval()
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)


def test_vit_patch_sizes():
    assert vit_patch_size(224) == vit_patch_size(32) == vit_patch_size(64) == 16
    assert vit_patch_size(24) == 8 and vit_patch_size(28) == 4
    with pytest.raises(ValueError, match="image_size: 30"):
        vit_patch_size(30)
    with torch.device("meta"):
        assert build_model("vit_base", 10, image_size=32).patch_embed.proj.kernel_size == (16, 16)


def test_tiny_vit_sizes():
    assert tiny_vit_window_sizes(224) == (7, 7, 14, 7)  # exactly tiny_vit_5m_224
    assert tiny_vit_window_sizes(64) == (7, 7, 4, 2)
    assert tiny_vit_window_sizes(32) == (7, 4, 2, 1)
    for bad in (16, 33, 48, 100):
        with pytest.raises(ValueError, match=f"image_size: {bad} is not a multiple of 32"):
            build_model("tiny_vit", 10, image_size=bad)
    for size in (64, 224):
        with torch.device("meta"):  # shapes only
            model = build_model("tiny_vit", 10, image_size=size).eval()
            assert model(torch.randn(1, 3, size, size)).shape == (1, 10)


# ------------------------------------------------------------------ text-model details
@pytest.mark.parametrize("name", ["bert_base", "distilbert"])
def test_text_models_mask_padding(name, no_network):
    """Extra padding (pad id 3, not 0) changes nothing: the mask comes from the pad id."""
    model = tiny_input_model(name).eval()
    ids = torch.randint(5, TEXT_INPUT["vocab_size"], (2, 8))
    padded = torch.cat([ids, torch.full((2, 8), TEXT_INPUT["pad_token_id"])], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(ids), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["bert_base", "distilbert"])
def test_text_model_config(name):
    with torch.device("meta"):
        model = build_model(name, 3, vocab_size=1000, pad_token_id=7, max_length=600)
    config = model.model.config
    assert config.vocab_size == 1000 and config.pad_token_id == 7 and config.num_labels == 3
    assert config.max_position_embeddings >= 600
    with pytest.raises(ValueError, match="pad_token_id"):
        build_model(name, 2, vocab_size=10, pad_token_id=10, max_length=16)
