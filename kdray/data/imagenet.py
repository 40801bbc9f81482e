"""``imagenet``: ILSVRC-2012 (Deng et al., 2009), 1000 classes, streamed from its JPEGs.

ImageNet cannot be downloaded automatically (its licence needs a login at image-net.org).
Put it, in the usual ImageFolder layout (the validation images sorted into class folders,
e.g. with the common ``valprep.sh``), at ``$KDRAY_IMAGENET_DIR`` or else
``<data_dir>/imagenet``::

    train/<wnid>/*.JPEG    1,281,167 images in 1000 folders
    val/<wnid>/*.JPEG      50,000 images (the test split)

The location is an environment setting, not a dataset option, so that it never changes a
run's identity. Labels index the sorted train wnids (``torchvision.datasets.ImageFolder``);
val folders are mapped through the same index. A class is named by the first name of its
wnid in a synset mapping next to ``train/`` when there is one (``LOC_synset_mapping.txt`` of
the Kaggle release or Caffe's ``synset_words.txt``: ``<wnid> <name>, <synonym>, ...`` per
line), else by its wnid. Both splits are :class:`ImageFileDataset`:
the test transform is Resize(S * 256/224) + CenterCrop(S); training uses
``random_resized_crop_flip`` unless the recipe says otherwise.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from kdray.data import DatasetSplits, fetch, register_dataset, register_tiny
from kdray.data.stream import ImageFileDataset, int_option

IMAGENET_DIR_ENV = "KDRAY_IMAGENET_DIR"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
AUGMENTATION = "random_resized_crop_flip"
HOW = ("ImageNet (ILSVRC-2012) cannot be downloaded automatically: get it from "
       "https://image-net.org and put train/<wnid>/*.JPEG and val/<wnid>/*.JPEG under {base}, "
       "or set $" + IMAGENET_DIR_ENV + " to the folder that holds them (default: "
       "<data_dir>/imagenet, the data directory being the data-dir flag or $KDRAY_DATA_DIR)")


def imagenet_dir(root: Path) -> Path:
    """Where ImageNet is looked for: ``$KDRAY_IMAGENET_DIR``, else ``<data_dir>/imagenet``."""
    return Path(os.environ.get(IMAGENET_DIR_ENV) or Path(root) / "imagenet").expanduser()


MAPPING_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")


def synset_names(base: Path, wnids: list[str]) -> list[str]:
    """Each wnid's first name in the first synset mapping file found in ``base``; the wnid
    itself when there is no file or no entry."""
    table: dict[str, str] = {}
    for name in MAPPING_FILES:
        path = Path(base) / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                wnid, _, names = line.strip().partition(" ")
                if wnid:
                    table[wnid] = names.split(",")[0].strip()
            break
    return [table.get(w) or w for w in wnids]


def check_options(options: dict) -> int:
    """``image_size``, or a ValueError naming the bad value."""
    return int_option(options, "image_size", 8, "imagenet")


@register_dataset("imagenet", num_classes=1000, batch_size=512, defaults={"image_size": 224},
                  augmentation=AUGMENTATION, check=check_options,
                  source=f"ILSVRC-2012 train/ and val/ ImageFolder trees at ${IMAGENET_DIR_ENV} "
                         f"or <data_dir>/imagenet (not downloadable automatically)")
def load_imagenet(options: dict, root: Path) -> DatasetSplits:
    size = check_options(options)
    base = imagenet_dir(root)
    how = HOW.format(base=base)
    train_dir = fetch.existing(base / "train", what="imagenet", how=how)
    val_dir = fetch.existing(base / "val", what="imagenet", how=how)
    train = ImageFolder(train_dir, allow_empty=True)  # class folders are what define labels
    if len(train.classes) != 1000:
        raise ValueError(f"imagenet: {train_dir} has {len(train.classes)} class folders; "
                         f"expected the 1000 ILSVRC-2012 wnids")
    val = make_dataset(val_dir, train.class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not val:
        raise FileNotFoundError(f"imagenet: no images in {val_dir}/<wnid>/; {how}")
    test_labels = np.array([y for _, y in val], dtype=np.int64)
    return DatasetSplits(
        train=ImageFileDataset([p for p, _ in train.samples], train.targets, size,
                               resize_ratio=256 / 224, train=True, augmentation=AUGMENTATION),
        test=ImageFileDataset([p for p, _ in val], test_labels, size,
                              resize_ratio=256 / 224, train=False),
        num_classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=size, in_channels=3,
        test_labels=test_labels, class_names=synset_names(base, train.classes))


@register_tiny("imagenet")
def tiny_imagenet(root: Path) -> dict:
    """All 1000 train wnid folders under ``root/imagenet``, with one small non-square JPEG in
    every 50th (20 train images, so CPU smoke runs stay short), and a val image for the same
    20 wnids; loads at 32 px with labels in 0..999."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = root / "imagenet"
    wnids = [f"n{1440764 + 1009 * i:08d}" for i in range(1000)]
    images = []
    for mode in ("RGB", "L"):  # ImageNet has some grayscale (and CMYK) JPEGs
        buf = io.BytesIO()
        pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(buf, "JPEG")
        images.append(buf.getvalue())  # reused: file count and layout are what matter here
    for i, w in enumerate(wnids):
        data = images[1 if i % 7 == 3 else 0]
        (base / "train" / w).mkdir(parents=True)
        if i % 50 == 0:
            (base / "train" / w / f"{w}_{i}.JPEG").write_bytes(data)
            (base / "val" / w).mkdir(parents=True)
            (base / "val" / w / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(data)
    # the Kaggle release's mapping, one line per wnid in wnid order
    (base / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} tiny synset {i}, alias {i}\n" for i, w in enumerate(wnids)))
    return {"image_size": 32}
