"""``cifar10`` and ``cifar100``: torchvision's CIFAR (Krizhevsky, 2009), held in memory.

Layout (torchvision's, under the data directory)::

    <data_dir>/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <data_dir>/cifar100/cifar-100-python/{train, test, meta}

Files already there are used as they are; otherwise ``torchvision.datasets.CIFAR10/100``
downloads them once per node (``download=True``, archive and file MD5s checked). Reading
goes through torchvision's own class with the MD5s of its file list set to ``None``, so
that its integrity check tests only that the files exist: user-placed copies and the tiny
test files load, and nothing is ever fetched when the files are present. The 50k/10k
uint8 images are decoded once per node into ``<data_dir>/npy/<name>/`` and returned as
:class:`TensorData` (labels: the 10 classes, or CIFAR-100's 100 fine labels). Once that
cache exists the raw files are not read again (delete it after replacing them). Class names
are the meta file's: ``batches.meta`` ``label_names`` (CIFAR-10), ``meta``
``fine_label_names`` (CIFAR-100), cached with the arrays.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from kdray.data import DatasetSplits, TensorData, register_dataset, register_tiny
from kdray.data.stream import cached_arrays, fetch_files

# per-channel mean/std of the training images (pixel values in [0, 1])
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
# what the release's batches.meta holds; written by the tiny writer only (the loader reads the file)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def _files_only(cls: type) -> type:
    """``cls`` whose integrity check only tests that each file exists (MD5s set to None)."""
    return type(f"{cls.__name__}Files", (cls,), {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


CIFAR10Files, CIFAR100Files = _files_only(CIFAR10), _files_only(CIFAR100)


def meta_class_names(base: Path, tv_cls: type) -> list[str] | None:
    """The class names in the release's meta pickle (``label_names`` / ``fine_label_names``),
    or None when the file is not there."""
    path = base / tv_cls.meta["filename"]
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[tv_cls.meta["key"]]]


def _load(name: str, tv_cls: type, files_cls: type, num_classes: int,
          mean: tuple, std: tuple, root: Path) -> DatasetSplits:
    raw = root / name
    base = raw / tv_cls.base_folder
    names = [f for f, _ in tv_cls.train_list + tv_cls.test_list] + [tv_cls.meta["filename"]]

    def download(tmp: Path) -> None:
        tv_cls(tmp, train=True, download=True)
        (tmp / tv_cls.filename).unlink(missing_ok=True)  # the extracted files are enough

    def decode() -> dict[str, np.ndarray]:  # runs once per node, while no cache exists
        fetch_files(raw, lambda: all((base / f).is_file() for f in names), download,
                    what=f"{name} (torchvision {tv_cls.__name__})")
        out = {}
        for split, train in (("train", True), ("test", False)):
            ds = files_cls(raw, train=train, download=False)
            out[f"x_{split}"] = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # NHWC -> NCHW
            out[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
        out["class_names"] = np.asarray(meta_class_names(base, tv_cls))
        return out

    arrays = cached_arrays(root / "npy" / name, decode)
    names = arrays.pop("class_names", None)  # absent from caches made before names were kept
    names = [str(n) for n in names] if names is not None else meta_class_names(base, tv_cls)
    a = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return DatasetSplits(train=TensorData(a["x_train"], a["y_train"]),
                         test=TensorData(a["x_test"], a["y_test"]), num_classes=num_classes,
                         mean=mean, std=std, image_size=32, in_channels=3, class_names=names)


@register_dataset("cifar10", num_classes=10, batch_size=128, defaults={},
                  downloadable=True,
                  source="torchvision.datasets.CIFAR10 (cifar-10-batches-py)")
def load_cifar10(options: dict, root: Path) -> DatasetSplits:
    return _load("cifar10", CIFAR10, CIFAR10Files, 10, CIFAR10_MEAN, CIFAR10_STD, root)


@register_dataset("cifar100", num_classes=100, batch_size=128, defaults={},
                  downloadable=True,
                  source="torchvision.datasets.CIFAR100 (cifar-100-python, fine labels)")
def load_cifar100(options: dict, root: Path) -> DatasetSplits:
    return _load("cifar100", CIFAR100, CIFAR100Files, 100, CIFAR100_MEAN, CIFAR100_STD, root)


# -- tiny files in the real format ------------------------------------------------------
def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _batch(rng: np.random.Generator, n: int, num_classes: int, key: str, label: str) -> dict:
    labels = [int(i % num_classes) for i in range(n)]
    return {"batch_label": label, key: labels, "filenames": [f"img_{i}.png" for i in range(n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}  # rows: R, G, B planes


@register_tiny("cifar10")
def tiny_cifar10(root: Path) -> dict:
    """Pickled batches as in cifar-10-python.tar.gz: 5 x 4 training images, 10 test images."""
    base = root / "cifar10" / CIFAR10.base_folder
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _pickle(base / f"data_batch_{i}", _batch(rng, 4, 10, "labels", f"training batch {i} of 5"))
    _pickle(base / "test_batch", _batch(rng, 10, 10, "labels", "testing batch 1 of 1"))
    _pickle(base / "batches.meta", {"label_names": list(CIFAR10_NAMES),
                                    "num_cases_per_batch": 4, "num_vis": 3072})
    return {}


@register_tiny("cifar100")
def tiny_cifar100(root: Path) -> dict:
    """``train``/``test``/``meta`` as in cifar-100-python.tar.gz, with fine and coarse labels
    (50 training and 50 test images, so CPU smoke runs of DenseNets stay short)."""
    base = root / "cifar100" / CIFAR100.base_folder
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("test", 50)):
        batch = _batch(rng, n, 100, "fine_labels", split)
        batch["fine_labels"] = [2 * i % 100 for i in range(n)]  # spread over 0..98
        batch["coarse_labels"] = [y // 5 for y in batch["fine_labels"]]
        _pickle(base / split, batch)
    _pickle(base / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return {}
