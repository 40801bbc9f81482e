"""Shared pieces of the image loaders: fetching raw files, decoding them, streaming them.

- :func:`fetch_files` makes sure a dataset's raw files are under the data directory: files
  already in the expected layout are used as they are (never a network call); otherwise
  they are copied from the results store's mirror of them, or ``build`` downloads them, once
  per node under a file lock (:func:`kdray.data.fetch.fetched`).
- :func:`cached_arrays` decodes a small dataset once per node into ``.npy`` files (uint8
  images, int64 labels) so that later trials load it in a second.
- :class:`ImageFileDataset` streams a large dataset (ImageNet, CelebA) from its image files
  through a ``torch.utils.data.DataLoader`` with workers: PIL decodes, then
  ``torchvision.transforms.v2`` resizes and augments the uint8 tensor.
"""

from __future__ import annotations

import io
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from kdray.vocabulary import AUGMENTATIONS
from kdray.data import epoch_seed, fetch


# -- options, raw files and caches -------------------------------------------------------
def int_option(options: dict, key: str, minimum: int, dataset: str) -> int:
    """``options[key]`` as an int, or a ValueError naming the dataset, option and value."""
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{dataset}: option {key!r} must be an int >= {minimum}, got {value!r}")
    return int(value)


def fetch_files(target: Path, present: Callable[[], bool], build: Callable[[Path], None],
                *, what: str, key: str | None = None) -> Path:
    """``target`` holding a dataset's raw files, downloading them once per node if needed.

    ``present()`` says whether the files are already there in the expected layout (put there
    by a user, a test, or an earlier fetch); then nothing is fetched. Otherwise
    ``build(tmp)`` fills a temporary folder that :func:`fetch.fetched` renames to ``target``
    under a file lock, so concurrent trials on one node download once; within
    :func:`fetch.mirror`, the copy in the results store (``datasets/{key}.tar``, ``key``
    defaulting to the folder's name) is used instead of the internet. A ``target`` that
    exists but is incomplete and was not made by a fetch is reported, never deleted.
    """
    target = Path(target)
    key = key or target.name
    if present():
        fetch.publish_present(target, key=key)  # only while the sweep driver stages datasets
        return target
    if target.exists() and not fetch.is_ready(target):
        raise FileNotFoundError(f"{what}: {target} exists but does not hold the complete "
                                f"dataset; complete it, or remove it to download it again")
    fetch.fetched(target, build, key=key, what=what)
    if not present():
        raise FileNotFoundError(f"{what}: {target} was fetched but its files are incomplete; "
                                f"remove it to download it again")
    return target


def cached_arrays(target: Path,
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays saved as ``target/<key>.npy`` by ``build()``, which runs once per node."""
    def save(tmp: Path) -> None:
        for key, value in build().items():
            np.save(tmp / f"{key}.npy", value)
    fetch.once(Path(target), save, what=str(target))
    return {p.stem: np.load(p) for p in sorted(Path(target).glob("*.npy"))}


# -- decoding -----------------------------------------------------------------------------
def read_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """An image file (path or encoded bytes) as an RGB PIL image (grayscale/CMYK converted)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        return im.convert("RGB")


def decode_all(sources: Sequence[str | os.PathLike | bytes], size: int) -> np.ndarray:
    """Decode every image into one uint8 array [N, 3, size, size] (resized when needed)."""
    out = np.empty((len(sources), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        im = read_rgb(sources[i])
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)  # antialiased when shrinking
        out[i] = np.asarray(im).transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        list(pool.map(one, range(len(sources))))
    return out


# -- streaming ----------------------------------------------------------------------------
def make_transform(augmentation: str, size: int, resize_ratio: float) -> v2.Compose:
    """The uint8 -> uint8 [3, size, size] transform for one augmentation.

    ``none`` (the test transform): resize the shorter side to ``round(size * resize_ratio)``
    and center-crop ``size`` (ImageNet's 256/224 protocol with ``resize_ratio=256/224``).
    ``crop_flip``: that, then a random ``size`` crop of the image zero-padded by
    ``size // 8`` (the 4 px of CIFAR's recipe at 32 px) and a horizontal flip.
    ``random_resized_crop_flip``: ``RandomResizedCrop(size)`` (scale 0.08-1) and a flip.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation: {augmentation!r} is not one of {AUGMENTATIONS}")
    test = [v2.Resize(round(size * resize_ratio), antialias=True), v2.CenterCrop(size)]
    if augmentation == "none":
        return v2.Compose(test)
    if augmentation == "crop_flip":
        return v2.Compose(test + [v2.RandomCrop(size, padding=size // 8),
                                  v2.RandomHorizontalFlip()])
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])


class ImageFileDataset(torch.utils.data.Dataset):
    """A split streamed from image files: item ``i`` is ``(uint8 tensor [3, S, S], int label)``.

    Parameters
    ----------
    paths, labels : one image file and one class index per sample.
    image_size : S, the side of every returned image.
    resize_ratio : the test transform resizes the shorter side to ``S * resize_ratio`` and
        center-crops ``S`` (see :func:`make_transform`).
    train : a training split; only it takes an augmentation other than ``"none"``.
    augmentation : one of :data:`AUGMENTATIONS`; the training loop may set
        ``dataset.augmentation`` before it builds its DataLoader.

    The random augmentation of sample ``i`` is a function of ``(seed, epoch, i)`` alone, set
    by :meth:`set_epoch` before each epoch: not of which DataLoader worker loads it. So a
    run draws the same crops whatever its worker count, and the students of a cohort see
    exactly the batches of their lone runs.

    Paths are held in a NumPy array, not a list of ``str``, so forked DataLoader workers
    share them instead of copying them page by page as reference counts change.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], labels: Sequence[int], image_size: int,
                 *, resize_ratio: float = 1.0, train: bool = True, augmentation: str = "none"):
        if len(paths) != len(labels):
            raise ValueError(f"ImageFileDataset: {len(paths)} paths but {len(labels)} labels")
        self.paths = np.array([os.fspath(p) for p in paths])
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size = int(image_size)
        self.resize_ratio = float(resize_ratio)
        self.train = bool(train)
        self.augmentation = augmentation
        self.epoch_seed = 0

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Make the augmentation draws those of run seed ``seed``, epoch ``epoch``."""
        self.epoch_seed = epoch_seed(int(seed), int(epoch)) * 2_654_435_761

    @property
    def augmentation(self) -> str:
        return self._augmentation

    @augmentation.setter
    def augmentation(self, value: str) -> None:
        if not self.train and value != "none":
            raise ValueError(f"augmentation: {value!r} on a test split; a test split is "
                             f"always read with the deterministic transform ('none')")
        self._transform = make_transform(value, self.image_size, self.resize_ratio)
        self._augmentation = value

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = v2.functional.pil_to_tensor(read_rgb(str(self.paths[index])))  # uint8 [3, H, W]
        if self._augmentation != "none":  # v2's random transforms draw from the global RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.epoch_seed + int(index)) % (2 ** 63))
                image = self._transform(image)
        else:
            image = self._transform(image)
        return image.contiguous(), int(self.labels[index])
