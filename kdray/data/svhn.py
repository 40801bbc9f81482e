"""``svhn``: torchvision's SVHN, cropped digits (Netzer et al., 2011), held in memory.

Layout (torchvision's, under the data directory)::

    <data_dir>/svhn/{train_32x32.mat, test_32x32.mat}

Each ``.mat`` holds ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] with 10 for the digit 0;
torchvision's reader maps 10 to 0, so labels are the digits 0-9. The splits are ``train``
(73,257) and ``test`` (26,032); the ``extra`` set is not used. Files already there are used
as they are; otherwise ``torchvision.datasets.SVHN`` downloads them once per node
(``download=True``, MD5 checked). Reading goes through torchvision's class with the MD5s set
to ``None``, so its integrity check tests only that the file exists (user-placed copies and
the tiny test files load). Decoded once per node into ``<data_dir>/npy/svhn/``, which is
what later loads read (delete it after replacing the raw files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import SVHN

from kdray.data import DatasetSplits, TensorData, register_dataset, register_tiny
from kdray.data.stream import cached_arrays, fetch_files

SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
SPLITS = ("train", "test")


class SVHNFiles(SVHN):
    """torchvision's SVHN whose integrity check only tests that the ``.mat`` file exists."""

    split_list = {k: [url, name, None] for k, (url, name, _) in SVHN.split_list.items()}


@register_dataset("svhn", num_classes=10, batch_size=128, defaults={},
                  downloadable=True,
                  source="torchvision.datasets.SVHN (cropped digits, train/test .mat)")
def load_svhn(options: dict, root: Path) -> DatasetSplits:
    raw = root / "svhn"

    def download(tmp: Path) -> None:
        for split in SPLITS:
            SVHN(tmp, split=split, download=True)

    def decode() -> dict[str, np.ndarray]:  # runs once per node, while no cache exists
        fetch_files(raw, lambda: all((raw / SVHN.split_list[s][1]).is_file() for s in SPLITS),
                    download, what="svhn (torchvision SVHN)")
        out = {}
        for split in SPLITS:
            ds = SVHNFiles(raw, split=split, download=False)
            out[f"x_{split}"] = np.ascontiguousarray(ds.data)  # already [N, 3, 32, 32]
            out[f"y_{split}"] = ds.labels.astype(np.int64)
        return out

    a = {k: torch.from_numpy(v) for k, v in cached_arrays(root / "npy" / "svhn", decode).items()}
    return DatasetSplits(train=TensorData(a["x_train"], a["y_train"]),
                         test=TensorData(a["x_test"], a["y_test"]), num_classes=10,
                         mean=SVHN_MEAN, std=SVHN_STD, image_size=32, in_channels=3,
                         class_names=[str(d) for d in range(10)])  # label d is the digit d


@register_tiny("svhn")
def tiny_svhn(root: Path) -> dict:
    """``train_32x32.mat`` (20 digits) and ``test_32x32.mat`` (10) as MATLAB files, 10 = zero."""
    from scipy.io import savemat

    raw = root / "svhn"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        digits = np.arange(n) % 10
        savemat(raw / SVHN.split_list[split][1],
                {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                 "y": np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]})
    return {}
