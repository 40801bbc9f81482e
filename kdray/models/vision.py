"""Image models from torchvision and timm: ``resnet18``, ``resnet50``, ``densenet121``,
``densenet169``, ``vit_base`` (ViT-B/16) and ``tiny_vit`` (TinyViT-5M).

Stems. The paper trains DenseNet-169/121 on CIFAR-100 (32 px) and ResNet-50/18 on Tiny
ImageNet (64 px) from scratch. Its CIFAR-100 DenseNet accuracies (72.4% / 70.2%) imply the
standard small-image implementations of the common CIFAR and Tiny ImageNet code bases,
which replace the ImageNet stem (7x7 stride-2 convolution + 3x3 stride-2 max-pool: a 32 px
image is 8 px before the first block) with a 3x3 stride-1 convolution and no max-pool. So
for ``image_size <= 64`` the CNNs here use that small-image stem; at larger sizes
(ImageNet, CelebA, Trifeature at 224 px) the torchvision ImageNet stem, unchanged. With ``pretrained=True``
the small-image stem's convolution (or the first convolution, for ``in_channels != 3``) is
new, randomly initialised; everything after it loads the ImageNet weights.

ViT-B/16 is timm's ``vit_base_patch16_224`` at ``img_size=image_size``: patch 16 whenever
16 divides the image size (32 px gives 2x2 patches, 64 px 4x4), otherwise the largest of
8 or 4 that divides it; other sizes raise ``ValueError``.

TinyViT-5M is timm's ``tiny_vit_5m_224``. It is fully convolutional up to its windowed
attention: total stride 32 (4 in the patch embedding, then 2 per stage), window sizes 7,
7, 14, 7 in stages 0-3. Supported sizes are multiples of 32 (32, 64, ..., 224), so that
every stage halves its input exactly; anything else raises ``ValueError``. Below 224 px a
stage's feature map can be smaller than its window (at 32 px stages 1-3 are 4, 2 and 1 px
wide); timm would zero-pad it to the window, and the padded positions would take part in
attention as keys. Each window is therefore clipped to its stage's feature-map size
(attention over the whole map, which is what the window covered at 224 px); at 224 px
the model is exactly ``tiny_vit_5m_224``.

``pretrained=True`` loads ImageNet-1k weights trained without distillation, so a
"pretrained" student has not already been distilled (torchvision ``IMAGENET1K_V1``, timm
``vit_base_patch16_224.augreg_in1k`` and ``tiny_vit_5m_224.in1k``), and replaces the
classifier for ``num_classes``; it needs network access (a cluster). Nothing is downloaded
when ``pretrained=False``.
"""

from __future__ import annotations

import torch.nn as nn

from kdray.models import register_model

SMALL_STEM_MAX_SIZE = 64  # image sizes up to this get the small-image (CIFAR) stem

CNN_SOURCE = "torchvision.models"
TIMM_SOURCE = "timm"


def _small_stem(image_size: int) -> bool:
    return image_size <= SMALL_STEM_MAX_SIZE


def _check_size(name: str, image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size: {image_size!r} is not a positive integer (model {name})")
    return image_size


# ---------------------------------------------------------------------------- ResNets
def _resnet(name: str, num_classes: int, image_size: int, in_channels: int,
            pretrained: bool) -> nn.Module:
    import torchvision

    _check_size(name, image_size)
    ctor = getattr(torchvision.models, name)
    if pretrained:
        model = ctor(weights="IMAGENET1K_V1")
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model = ctor(weights=None, num_classes=num_classes)
    small = _small_stem(image_size)
    if small or in_channels != 3:
        k, s, p = (3, 1, 1) if small else (7, 2, 3)
        model.conv1 = nn.Conv2d(in_channels, 64, k, s, p, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if small:
        model.maxpool = nn.Identity()
    return model


@register_model("resnet18", family="cnn",
                source=f"{CNN_SOURCE}.resnet18 (He et al. 2016); 3x3 stem, no max-pool at <= 64 px")
def resnet18(num_classes: int, *, image_size: int, in_channels: int = 3,
             pretrained: bool = False) -> nn.Module:
    return _resnet("resnet18", num_classes, image_size, in_channels, pretrained)


@register_model("resnet50", family="cnn",
                source=f"{CNN_SOURCE}.resnet50 (He et al. 2016); 3x3 stem, no max-pool at <= 64 px")
def resnet50(num_classes: int, *, image_size: int, in_channels: int = 3,
             pretrained: bool = False) -> nn.Module:
    return _resnet("resnet50", num_classes, image_size, in_channels, pretrained)


# ---------------------------------------------------------------------------- DenseNets
def _densenet(name: str, num_classes: int, image_size: int, in_channels: int,
              pretrained: bool) -> nn.Module:
    import torchvision

    _check_size(name, image_size)
    ctor = getattr(torchvision.models, name)
    if pretrained:
        model = ctor(weights="IMAGENET1K_V1")
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
        nn.init.zeros_(model.classifier.bias)
    else:
        model = ctor(weights=None, num_classes=num_classes)
    small = _small_stem(image_size)
    if small or in_channels != 3:
        k, s, p = (3, 1, 1) if small else (7, 2, 3)
        out = model.features.conv0.out_channels  # 2 x growth rate = 64
        model.features.conv0 = nn.Conv2d(in_channels, out, k, s, p, bias=False)
        nn.init.kaiming_normal_(model.features.conv0.weight)
    if small:
        model.features.pool0 = nn.Identity()
    return model


@register_model("densenet121", family="cnn",
                source=f"{CNN_SOURCE}.densenet121 (Huang et al. 2017); 3x3 stem, no max-pool at <= 64 px")
def densenet121(num_classes: int, *, image_size: int, in_channels: int = 3,
                pretrained: bool = False) -> nn.Module:
    return _densenet("densenet121", num_classes, image_size, in_channels, pretrained)


@register_model("densenet169", family="cnn",
                source=f"{CNN_SOURCE}.densenet169 (Huang et al. 2017); 3x3 stem, no max-pool at <= 64 px")
def densenet169(num_classes: int, *, image_size: int, in_channels: int = 3,
                pretrained: bool = False) -> nn.Module:
    return _densenet("densenet169", num_classes, image_size, in_channels, pretrained)


# ---------------------------------------------------------------------------- ViTs
VIT_BASE = "vit_base_patch16_224.augreg_in1k"  # the tag only matters when pretrained
TINY_VIT = "tiny_vit_5m_224.in1k"
VIT_PATCH_SIZES = (16, 8, 4)  # ViT-B/16's patch, then smaller ones for sizes 16 doesn't divide


def vit_patch_size(image_size: int) -> int:
    """The patch size ``vit_base`` uses at ``image_size``: 16 if it divides, else 8, else 4."""
    _check_size("vit_base", image_size)
    for p in VIT_PATCH_SIZES:
        if image_size % p == 0:
            return p
    raise ValueError(f"image_size: {image_size} is not a multiple of any vit_base patch size "
                     f"{VIT_PATCH_SIZES}")


@register_model("vit_base", family="vit",
                source=f"{TIMM_SOURCE} vit_base_patch16_224 (Dosovitskiy et al. 2021) at image_size")
def vit_base(num_classes: int, *, image_size: int, in_channels: int = 3,
             pretrained: bool = False) -> nn.Module:
    import timm

    patch = vit_patch_size(image_size)
    return timm.create_model(VIT_BASE, pretrained=pretrained, num_classes=num_classes,
                             img_size=image_size, patch_size=patch, in_chans=in_channels)


TINY_VIT_STRIDE = 32
TINY_VIT_WINDOWS = (7, 7, 14, 7)  # tiny_vit_5m_224's window size per stage


def tiny_vit_window_sizes(image_size: int) -> tuple[int, ...]:
    """Per-stage windows of ``tiny_vit`` at ``image_size``: the 224 px windows, each clipped
    to its stage's feature-map size (stage i > 0 runs at image_size / 2**(i + 2))."""
    _check_size("tiny_vit", image_size)
    if image_size % TINY_VIT_STRIDE:
        raise ValueError(f"image_size: {image_size} is not a multiple of {TINY_VIT_STRIDE} "
                         f"(tiny_vit's total stride; e.g. 32, 64, 224)")
    return tuple(w if i == 0 else min(w, image_size // 2 ** (i + 2))
                 for i, w in enumerate(TINY_VIT_WINDOWS))


@register_model("tiny_vit", family="vit",
                source=f"{TIMM_SOURCE} tiny_vit_5m_224 (Wu et al. 2022), windows clipped to feature maps")
def tiny_vit(num_classes: int, *, image_size: int, in_channels: int = 3,
             pretrained: bool = False) -> nn.Module:
    import timm

    windows = tiny_vit_window_sizes(image_size)
    return timm.create_model(TINY_VIT, pretrained=pretrained, num_classes=num_classes,
                             in_chans=in_channels, window_sizes=list(windows))
