"""The CIFAR ResNets of He et al. 2016 (Sec. 4.2): ``resnet20`` and ``resnet56``.

Three stages of n basic blocks at 16/32/64 channels (depth 6n + 2), stride-2 at the start
of stages 2 and 3, and option-A shortcuts: parameter-free, subsampling by 2 and zero-padding
the new channels. 0.27M (resnet20) and 0.85M (resnet56) parameters at 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdray.models import register_model


class _ShortcutA(nn.Module):
    """Option A: take every other pixel, zero-pad the extra channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _ShortcutA(cout - cin) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth: {depth} is not 6n + 2")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("resnet20", family="cnn",
                source="He et al. 2016, Sec. 4.2 (CIFAR ResNet, option-A shortcuts)")
def resnet20(num_classes: int, *, image_size: int | None = None, in_channels: int = 3,
             pretrained: bool = False) -> nn.Module:
    _no_pretrained("resnet20", pretrained)
    return CifarResNet(20, num_classes, in_channels)


@register_model("resnet56", family="cnn",
                source="He et al. 2016, Sec. 4.2 (CIFAR ResNet, option-A shortcuts)")
def resnet56(num_classes: int, *, image_size: int | None = None, in_channels: int = 3,
             pretrained: bool = False) -> nn.Module:
    _no_pretrained("resnet56", pretrained)
    return CifarResNet(56, num_classes, in_channels)


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"pretrained: {name} has no published weights; train it (pretrained=False)")
