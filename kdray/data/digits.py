"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download).

A small real-data check of the whole path. Images are upsampled to ``image_size`` (bilinear)
and repeated to 3 channels so every image model in the registry accepts them; the split is
a fixed stratified one (``test_fraction``, ``split_seed``), the same for every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdray.data import DatasetSplits, TensorData, register_dataset, register_tiny


@register_dataset("digits", num_classes=10, batch_size=128,
                  defaults={"image_size": 32, "test_fraction": 0.25, "split_seed": 0},
                  source="sklearn.datasets.load_digits (bundled with scikit-learn)")
def load_digits(options: dict, root: Path) -> DatasetSplits:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # [N,1,8,8] in [0,1]
    size = int(options["image_size"])
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    x = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=float(options["test_fraction"]),
                              random_state=int(options["split_seed"]), stratify=bunch.target)
    tr, te = np.sort(tr), np.sort(te)
    return DatasetSplits(train=TensorData(x[tr], y[tr]), test=TensorData(x[te], y[te]),
                         num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3,
                         image_size=size, in_channels=3,
                         class_names=[str(c) for c in bunch.target_names])  # the digits 0-9


@register_tiny("digits")
def tiny_digits(root: Path) -> dict:
    """digits is bundled with scikit-learn: nothing to write; a small image size keeps it fast."""
    return {"image_size": 16}
