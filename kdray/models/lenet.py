"""``lenet5``: LeNet-5 (LeCun et al. 1998) adapted to colour input of any size.

conv 5x5 (6) - ReLU - max-pool 2 - conv 5x5 (16) - ReLU - max-pool 2 - fc 120 - fc 84 - fc.
Adapted: ``in_channels`` input planes, ReLU instead of scaled tanh, and the first fully
connected layer sized to the feature map the given ``image_size`` produces (16 x 5 x 5 at
32 px, as in the original). Inputs smaller than 32 px are zero-padded to 32 px, as LeNet-5
padded MNIST's 28 px digits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdray.models import register_model


class LeNet5(nn.Module):
    relu_layers = ("conv1", "conv2", "fc1", "fc2")  # whose outputs pass through a ReLU

    def __init__(self, num_classes: int, image_size: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.pad = max(0, 32 - image_size)
        side = image_size + self.pad
        side = ((side - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            p = self.pad // 2
            x = F.pad(x, (p, self.pad - p, p, self.pad - p))
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@register_model("lenet5", family="cnn",
                source="LeCun et al. 1998, adapted to colour input of any size")
def lenet5(num_classes: int, *, image_size: int = 32, in_channels: int = 3,
           pretrained: bool = False) -> nn.Module:
    if pretrained:
        raise ValueError("pretrained: lenet5 has no published weights; train it (pretrained=False)")
    return LeNet5(num_classes, image_size=image_size, in_channels=in_channels)
