"""``tinyimagenet``: Tiny ImageNet (Le and Yang, 2015), 200 classes of 64x64 images, in memory.

Two sources (option ``source``), each labelled in its own class order:

``"folder"`` (default), the standard release, ``tiny-imagenet-200.zip`` from CS231n::

    <data_dir>/tinyimagenet/tiny-imagenet-200/wnids.txt
        train/<wnid>/images/<wnid>_<k>.JPEG        500 per class
        val/images/val_<k>.JPEG + val/val_annotations.txt  (file, wnid, box; tab-separated)

  Labels index the sorted wnids (ImageFolder's order); a class is named by the first of its
  wnid's names in the release's ``words.txt`` (``<wnid> TAB <name>, <synonym>, ...``), or by
  its wnid when that file has none.

``"hf"``, the Hugging Face datasets copy ``zh-plus/tiny-imagenet`` (columns ``image``,
``label``; splits ``train`` and ``valid``) saved with ``save_to_disk`` at
``<data_dir>/tinyimagenet-hf/``. Labels are its ``ClassLabel`` indices, named by its names.

The test split is the 10,000-image validation set: the release's test labels are not
public. Files already there are used as they are; otherwise the zip (MD5 checked) or the
HF copy is fetched once per node. The 110k JPEGs are decoded once per node (resized to
``image_size`` if it is not 64) into ``<data_dir>/npy/tinyimagenet-<source>-<size>/``,
which is what later loads read (delete it after replacing the raw files).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets.utils as tv_utils

from kdray.data import DatasetSplits, TensorData, register_dataset, register_tiny
from kdray.data.stream import cached_arrays, decode_all, fetch_files, int_option

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
HF_NAME = "zh-plus/tiny-imagenet"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SOURCES = ("folder", "hf")


def words(release: Path, wnids: list[str]) -> list[str]:
    """Each wnid's first name in the release's ``words.txt``; the wnid itself without one."""
    path = release / "words.txt"
    table = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            wnid, _, names = line.partition("\t")
            table[wnid.strip()] = names.split(",")[0].strip()
    return [table.get(w) or w for w in wnids]


def _folder_names(root: Path) -> list[str] | None:
    release = root / "tinyimagenet" / "tiny-imagenet-200"
    if not (release / "wnids.txt").is_file():
        return None
    return words(release, sorted((release / "wnids.txt").read_text().split()))


def _hf_names(root: Path) -> list[str] | None:
    copy = root / "tinyimagenet-hf"
    if not (copy / "dataset_dict.json").is_file():
        return None
    import datasets

    return list(datasets.load_from_disk(str(copy))["train"].features["label"].names)


def _folder_items(root: Path) -> dict[str, tuple[list, list]]:
    release = root / "tinyimagenet" / "tiny-imagenet-200"
    annotations = release / "val" / "val_annotations.txt"
    fetch_files(root / "tinyimagenet",
                lambda: (release / "wnids.txt").is_file() and annotations.is_file(),
                lambda tmp: tv_utils.download_and_extract_archive(URL, tmp, md5=MD5,
                                                                  remove_finished=True),
                what="tinyimagenet (tiny-imagenet-200.zip)")
    wnids = sorted((release / "wnids.txt").read_text().split())
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids
             for p in sorted((release / "train" / w / "images").glob("*.JPEG"))]
    rows = [line.split("\t") for line in annotations.read_text().splitlines() if line]
    val = [(release / "val" / "images" / r[0], index[r[1]]) for r in rows]
    return {split: ([p for p, _ in items], [y for _, y in items])
            for split, items in (("train", train), ("test", val))}


def _hf_items(root: Path) -> dict[str, tuple[list, list]]:
    import datasets

    copy = root / "tinyimagenet-hf"
    fetch_files(copy, lambda: (copy / "dataset_dict.json").is_file(),
                lambda tmp: datasets.load_dataset(HF_NAME).save_to_disk(str(tmp)),
                what=f"tinyimagenet (Hugging Face {HF_NAME})")
    dd = datasets.load_from_disk(str(copy))
    out = {}
    for split, hf_split in (("train", "train"), ("test", "valid")):
        ds = dd[hf_split].cast_column("image", datasets.Image(decode=False))
        images = [im["bytes"] if im.get("bytes") else im["path"] for im in ds["image"]]
        out[split] = (images, list(ds["label"]))
    return out


def check_options(options: dict) -> tuple[str, int]:
    """``(source, image_size)``; a ValueError for an unknown source or a bad size."""
    if options["source"] not in SOURCES:
        raise ValueError(f"tinyimagenet: option 'source' must be one of {SOURCES}, "
                         f"got {options['source']!r}")
    return options["source"], int_option(options, "image_size", 8, "tinyimagenet")


@register_dataset("tinyimagenet", num_classes=200, batch_size=512, check=check_options,
                  downloadable=True,
                  defaults={"source": "folder", "image_size": 64},
                  source="Tiny ImageNet: tiny-imagenet-200.zip (folder) or HF "
                         "zh-plus/tiny-imagenet (hf); test = the labelled validation set")
def load_tinyimagenet(options: dict, root: Path) -> DatasetSplits:
    source, size = check_options(options)

    def decode() -> dict[str, np.ndarray]:
        items = (_folder_items if source == "folder" else _hf_items)(root)
        out = {}
        for split, (images, labels) in items.items():
            out[f"x_{split}"] = decode_all(images, size)
            out[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
        out["class_names"] = np.asarray(names(root))
        return out

    names = _folder_names if source == "folder" else _hf_names
    cache = root / "npy" / f"tinyimagenet-{source}-{size}"
    arrays = cached_arrays(cache, decode)
    class_names = arrays.pop("class_names", None)  # absent from caches made before names were kept
    class_names = [str(n) for n in class_names] if class_names is not None else names(root)
    a = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return DatasetSplits(train=TensorData(a["x_train"], a["y_train"]),
                         test=TensorData(a["x_test"], a["y_test"]), num_classes=200,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=size, in_channels=3,
                         class_names=class_names)


# -- tiny files in the real format ------------------------------------------------------
def _jpeg(rng: np.random.Generator, h: int, w: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=75)
    return buf.getvalue()


@register_tiny("tinyimagenet")
def tiny_tinyimagenet(root: Path) -> dict:
    """The release's folder tree for all 200 wnids (a 64x64 train and val JPEG for every 4th,
    so CPU smoke runs stay short) and the same images as an HF ``save_to_disk`` copy
    (``train``/``valid``); loads the folder at 32 px."""
    import datasets

    rng = np.random.default_rng(0)
    release = root / "tinyimagenet" / "tiny-imagenet-200"
    wnids = [f"n{1443537 + 7919 * i:08d}" for i in range(200)]  # wnid-shaped, not sorted
    rng.shuffle(wnids)
    (release / "val" / "images").mkdir(parents=True, exist_ok=True)
    (release / "wnids.txt").write_text("\n".join(wnids) + "\n")
    # words.txt names more wnids than the 200 (82,115 in the release), in wnid order
    entries = sorted([(w, f"tiny thing {i}, alias {i}") for i, w in enumerate(wnids)]
                     + [("n00001740", "entity"), ("n99999999", "unused, never a class")])
    (release / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in entries))
    hf = {"train": ([], []), "valid": ([], [])}
    names = sorted(wnids)
    annotations = []
    for i, w in enumerate(wnids):
        (release / "train" / w / "images").mkdir(parents=True)
        if i % 4:
            (release / "train" / w / f"{w}_boxes.txt").write_text("")
            continue
        boxes = []
        for k in range(1):
            data = _jpeg(rng, 64, 64)
            (release / "train" / w / "images" / f"{w}_{k}.JPEG").write_bytes(data)
            boxes.append(f"{w}_{k}.JPEG\t0\t0\t63\t63")
            hf["train"][0].append({"bytes": data, "path": None})
            hf["train"][1].append(names.index(w))
        (release / "train" / w / f"{w}_boxes.txt").write_text("\n".join(boxes) + "\n")
        data = _jpeg(rng, 64, 64)
        (release / "val" / "images" / f"val_{len(annotations)}.JPEG").write_bytes(data)
        annotations.append(f"val_{len(annotations)}.JPEG\t{w}\t0\t0\t63\t63")
        hf["valid"][0].append({"bytes": data, "path": None})
        hf["valid"][1].append(names.index(w))
    (release / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")

    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=names)})
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        for split, (images, labels) in hf.items()})
    dd.save_to_disk(str(root / "tinyimagenet-hf"))
    return {"source": "folder", "image_size": 32}
