"""Datasets by name. Each name is one task: a source plus its label.

A loader takes the dataset's resolved options and a data directory and returns a
:class:`DatasetSplits`. Small datasets come back as :class:`TensorData` (uint8 images or
int64 token ids, held whole and moved to the GPU once); large ones as a
``torch.utils.data.Dataset`` of ``(uint8 CHW tensor, label)`` that the training loop
streams through a DataLoader with workers.

Register a dataset with::

    @register_dataset("cifar10", num_classes=10, batch_size=128, defaults={...})
    def load_cifar10(options: dict, data_dir: Path) -> DatasetSplits: ...
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

DATA_DIR_ENV = "KDRAY_DATA_DIR"


@dataclass
class TensorData:
    """A whole split in memory: ``x`` uint8 [N, C, H, W] (images) or int64 [N, L] (tokens)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"TensorData: {len(self.x)} inputs but {len(self.y)} labels")
        self.y = torch.as_tensor(self.y, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DatasetSplits:
    """What a loader returns.

    ``attributes`` maps each sensitive attribute name (e.g. ``"young"``) to an int64 array
    with one value per *test* sample, in test order. ``mean``/``std`` normalise images in
    [0, 1] per channel; text datasets leave them ``None`` and set ``vocab_size`` and
    ``pad_token_id``.

    ``class_names[c]`` names label ``c`` and ``attribute_values[name][v]`` names value ``v``
    of a sensitive attribute, from the dataset's own metadata where it has some (CIFAR's
    ``batches.meta``, Tiny ImageNet's ``words.txt``, ...); a loader that has none leaves
    them out and they default to ``"0"``, ``"1"``, ...
    """

    train: TensorData | torch.utils.data.Dataset
    test: TensorData | torch.utils.data.Dataset
    num_classes: int
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    modality: str = "image"
    mean: tuple[float, ...] | None = (0.5, 0.5, 0.5)
    std: tuple[float, ...] | None = (0.5, 0.5, 0.5)
    image_size: int | None = None
    in_channels: int = 3
    vocab_size: int | None = None
    pad_token_id: int | None = None
    max_length: int | None = None
    test_labels: np.ndarray | None = None  # labels of a streamed test set (for the store)
    class_names: list[str] | None = None  # default "0".."num_classes-1"
    attribute_values: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.test)
        for name, values in self.attributes.items():
            if len(values) != n:
                raise ValueError(f"attribute {name!r}: {len(values)} values for {n} test samples")
            self.attributes[name] = np.asarray(values, dtype=np.int64)
        self.class_names = [str(c) for c in (self.class_names or range(self.num_classes))]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names: {len(self.class_names)} names for "
                             f"{self.num_classes} classes")
        extra = set(self.attribute_values) - set(self.attributes)
        if extra:
            raise ValueError(f"attribute_values: {sorted(extra)} are not attributes of the data "
                             f"({sorted(self.attributes)})")
        for name, values in self.attributes.items():
            names = self.attribute_values.get(name)
            if names is None:  # "0".."max value"
                names = range(int(values.max()) + 1 if len(values) else 0)
            names = [str(v) for v in names]
            if len(values) and (values.min() < 0 or values.max() >= len(names)):
                raise ValueError(f"attribute_values[{name!r}]: {len(names)} names, but the "
                                 f"attribute takes values {int(values.min())}..{int(values.max())}")
            self.attribute_values[name] = names

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, TensorData)

    def model_kwargs(self) -> dict[str, Any]:
        """What a model builder needs to know about the input besides the class count."""
        if self.modality == "text":
            return dict(vocab_size=self.vocab_size, pad_token_id=self.pad_token_id,
                        max_length=self.max_length)
        return dict(image_size=self.image_size, in_channels=self.in_channels)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Callable[[dict, Path], DatasetSplits]
    num_classes: int
    batch_size: int  # the paper's batch size for this dataset (Appendix C)
    defaults: dict[str, Any] = field(default_factory=dict)
    attributes: tuple[str, ...] = ()
    modality: str = "image"
    augmentation: str = "crop_flip"
    source: str = ""
    check: Callable[[dict], Any] | None = None  # raises ValueError on bad options, before any work
    downloadable: bool = False  # fetched from the internet: staged once into {store}/datasets


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, **fields: Any) -> Callable:
    """Register the decorated loader as dataset ``name``; ``fields`` are :class:`DatasetInfo`'s
    (``num_classes`` and ``batch_size`` required)."""
    def deco(fn: Callable[[dict, Path], DatasetSplits]) -> Callable:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        info = DatasetInfo(name, fn, **fields)
        DATASETS[name] = dataclasses.replace(info, defaults=dict(info.defaults or {}),
                                             attributes=tuple(info.attributes))
        return fn
    return deco


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Where raw datasets live on this node: ``path``, else ``$KDRAY_DATA_DIR``, else ~/.cache/kdray/data."""
    p = path or os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "kdray" / "data"
    return Path(p).expanduser().resolve()


def load_dataset(name: str, options: dict[str, Any] | None = None,
                 root: str | os.PathLike | None = None, *,
                 mirror=None, publish: bool = False) -> DatasetSplits:
    """Load dataset ``name`` with ``options`` (merged over its defaults) from ``root``; with
    ``mirror`` (a :class:`kdray.store.Store`), raw files this node lacks are copied from
    ``{store}/datasets`` rather than downloaded, and with ``publish`` the ones the store lacks
    are written there (``kdray.data.fetch``)."""
    if name not in DATASETS:
        raise ValueError(f"dataset: {name!r} is not registered; expected one of {sorted(DATASETS)}")
    info = DATASETS[name]
    opts = {**info.defaults, **(options or {})}
    if mirror is None:  # an enclosing fetch.mirror(...) (a trial's) stays in force
        splits = info.loader(opts, data_dir(root))
    else:
        with fetch.mirror(mirror, publish=publish):
            splits = info.loader(opts, data_dir(root))
    missing = set(info.attributes) - set(splits.attributes)
    if missing:
        raise RuntimeError(f"dataset {name!r}: loader returned no attribute(s) {sorted(missing)}")
    return splits


# Tiny files in each dataset's real on-disk format, for tests and ``--smoke-test`` runs.
TINY_WRITERS: dict[str, Callable[[Path], dict[str, Any]]] = {}


def register_tiny(*names: str) -> Callable:
    """Register ``fn(root) -> options`` that writes tiny real-format files for ``names`` under
    ``root`` and returns the dataset options (e.g. a small ``image_size``) that load them."""
    def deco(fn: Callable[[Path], dict[str, Any]]) -> Callable:
        for name in names:
            TINY_WRITERS[name] = fn
        return fn
    return deco


def write_tiny(name: str, root: str | os.PathLike) -> dict[str, Any]:
    """Write tiny files for dataset ``name`` under ``root``; returns the options that load them."""
    if name not in TINY_WRITERS:
        raise ValueError(f"dataset: {name!r} has no tiny-data writer; expected one of {sorted(TINY_WRITERS)}")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # save_to_disk's bars
    return dict(TINY_WRITERS[name](Path(root)))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of run seed ``seed``'s epoch ``epoch``: its data order and augmentation draws
    (the in-memory loop's generator, and a streamed sample's crop with its index added)."""
    return seed * 1_000_003 + epoch


# The registrations (imported for their side effect).
from kdray.data import fetch  # noqa: E402
from kdray.data import digits as _digits  # noqa: E402,F401
from kdray.data import trifeature as _trifeature  # noqa: E402,F401
from kdray.data import cifar as _cifar  # noqa: E402,F401
from kdray.data import svhn as _svhn  # noqa: E402,F401
from kdray.data import tinyimagenet as _tinyimagenet  # noqa: E402,F401
from kdray.data import imagenet as _imagenet  # noqa: E402,F401
from kdray.data import celeba as _celeba  # noqa: E402,F401
from kdray.data import hatexplain as _hatexplain  # noqa: E402,F401
