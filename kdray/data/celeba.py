"""``celeba-smiling``, ``celeba-eyeglasses``: CelebA (Liu et al., 2015), streamed from its JPEGs.

Layout (torchvision's ``CelebA`` with ``root=<data_dir>``)::

    <data_dir>/celeba/img_align_celeba/000001.jpg ... 202599.jpg   (178 x 218, aligned)
    <data_dir>/celeba/list_attr_celeba.txt          count, 40 names, then -1/1 per image
    <data_dir>/celeba/list_eval_partition.txt       0 train, 1 valid, 2 test
    <data_dir>/celeba/identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt

torchvision's reader needs all five text files. Files already there are used as they are;
otherwise ``torchvision.datasets.CelebA`` downloads them once per node from Google Drive
(``download=True``, MD5s checked; it needs the ``gdown`` package, and Drive's quota often
refuses the download, in which case put the files there by hand). Reading goes through
torchvision's class with the MD5s of its file list set to ``None``, so its integrity check
tests only that the files exist.

The label is one binary attribute (Smiling or Eyeglasses, 1 = present); the sensitive
attributes ``young`` and ``male`` (1 = Young / Male) are returned for the test samples.
Training uses the ``train`` partition, randomly undersampled (``balance_seed``) so that both
label values have as many images as the rarer one, as in the paper's Table 4 (Smiling: 78,080
+ 78,080 of 162,770); the ``valid`` partition is not used; the test split is the ``test``
partition (19,962 images), never resampled.

Names: label and attribute values are named after the attribute's name in the header of
``list_attr_celeba.txt``: 0 = "not smiling", 1 = "smiling"; young: "not young"/"young";
male: "not male"/"male"; Eyeglasses: "no eyeglasses"/"eyeglasses".

Images are resized (shorter side) and center-cropped to ``image_size``; the default 224 is
the input size ResNet-50/ResNet-18 (the paper's CelebA teacher/student) were designed for.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from torchvision.datasets import CelebA

from kdray.data import DatasetSplits, register_dataset, register_tiny
from kdray.data.stream import ImageFileDataset, fetch_files, int_option

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SENSITIVE = {"young": "Young", "male": "Male"}
AUGMENTATION = "crop_flip"
TEXT_FILES = [name for _, _, name in CelebA.file_list if name.endswith(".txt")]


class CelebAFiles(CelebA):
    """torchvision's CelebA whose integrity check only tests that each file exists."""

    file_list = [(file_id, None, name) for file_id, _, name in CelebA.file_list]


def balance(labels: np.ndarray, seed: int) -> np.ndarray:
    """Sorted indices keeping, for each label value, as many samples as the rarest one has."""
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise ValueError(f"CelebA: the training label takes only the value(s) {values.tolist()}")
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == v), counts.min(), replace=False) for v in values]
    return np.sort(np.concatenate(keep))


ABSENT = {"eyeglasses": "no eyeglasses"}  # how to say "attribute is -1" where "not X" reads badly


def value_names(attr_name: str) -> list[str]:
    """``"Smiling"`` -> ``["not smiling", "smiling"]``: names of a binary CelebA attribute's 0 and 1."""
    name = attr_name.replace("_", " ").lower()
    return [ABSENT.get(name, f"not {name}"), name]


def check_options(options: dict) -> tuple[int, int]:
    """``(image_size, balance_seed)``, or a ValueError naming the bad option."""
    return (int_option(options, "image_size", 8, "celeba"),
            int_option(options, "balance_seed", 0, "celeba"))


def _download(tmp: Path) -> None:
    CelebA(tmp, split="all", download=True)  # writes tmp/celeba/...
    (tmp / "celeba" / "img_align_celeba.zip").unlink(missing_ok=True)
    for item in (tmp / "celeba").iterdir():
        shutil.move(str(item), tmp / item.name)
    (tmp / "celeba").rmdir()


def _load(label: str, options: dict, root: Path) -> DatasetSplits:
    size, seed = check_options(options)
    base = root / CelebA.base_folder
    fetch_files(base, lambda: (base / "img_align_celeba").is_dir()
                and all((base / f).is_file() for f in TEXT_FILES), _download,
                what="celeba (torchvision CelebA)")
    train, test = (CelebAFiles(root, split=s, target_type="attr") for s in ("train", "test"))
    column = {name: i for i, name in enumerate(train.attr_names)}
    y_train = train.attr[:, column[label]].numpy().astype(np.int64)
    keep = balance(y_train, seed)
    y_test = test.attr[:, column[label]].numpy().astype(np.int64)
    images = base / "img_align_celeba"
    return DatasetSplits(
        train=ImageFileDataset([images / train.filename[i] for i in keep], y_train[keep], size,
                               train=True, augmentation=AUGMENTATION),
        test=ImageFileDataset([images / f for f in test.filename], y_test, size, train=False),
        num_classes=2,
        attributes={key: test.attr[:, column[name]].numpy() for key, name in SENSITIVE.items()},
        mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=size, in_channels=3, test_labels=y_test,
        class_names=value_names(train.attr_names[column[label]]),  # the file's header name
        attribute_values={key: value_names(train.attr_names[column[name]])
                          for key, name in SENSITIVE.items()})


def _register(name: str, label: str) -> None:
    @register_dataset(name, num_classes=2, batch_size=256,
                      downloadable=True,
                      defaults={"image_size": 224, "balance_seed": 0},
                      attributes=tuple(SENSITIVE), augmentation=AUGMENTATION, check=check_options,
                      source=f"torchvision.datasets.CelebA (aligned), label {label}; train "
                             f"undersampled to balance it; test partition")
    def load(options: dict, root: Path) -> DatasetSplits:
        return _load(label, options, root)


_register("celeba-smiling", "Smiling")
_register("celeba-eyeglasses", "Eyeglasses")


# -- tiny files in the real format ------------------------------------------------------
ATTR_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


@register_tiny("celeba-smiling", "celeba-eyeglasses")
def tiny_celeba(root: Path) -> dict:
    """40 aligned-size (178 x 218) JPEGs and the five text files in their exact formats:
    24 train (16 smiling, 6 with eyeglasses), 8 valid, 8 test images; loads at 32 px."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    n, partition = 40, [0] * 24 + [1] * 8 + [2] * 8
    attrs = rng.choice([-1, 1], size=(n, len(ATTR_NAMES)))
    attrs[:24, ATTR_NAMES.index("Smiling")] = np.where(np.arange(24) < 16, 1, -1)
    attrs[:24, ATTR_NAMES.index("Eyeglasses")] = np.where(np.arange(24) % 4 == 0, 1, -1)
    attrs[32:, ATTR_NAMES.index("Young")] = [1, -1] * 4
    attrs[32:, ATTR_NAMES.index("Male")] = [1, 1, -1, -1] * 2
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    for f in files:
        buf = io.BytesIO()
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, "JPEG", quality=50)
        (base / "img_align_celeba" / f).write_bytes(buf.getvalue())

    def table(name: str, header: list[str] | None, rows: list[list[int]], width: int) -> None:
        lines = [] if header is None else [str(n), " ".join(header) + " "]
        lines += [f + " " + " ".join(f"{v:{width}d}" for v in row) for f, row in zip(files, rows)]
        (base / name).write_text("\n".join(lines) + "\n")

    table("list_attr_celeba.txt", list(ATTR_NAMES), attrs.tolist(), 2)
    table("list_eval_partition.txt", None, [[p] for p in partition], 1)
    table("identity_CelebA.txt", None, [[1 + i // 2] for i in range(n)], 1)
    table("list_bbox_celeba.txt", "image_id x_1 y_1 width height".split(),
          rng.integers(10, 300, (n, 4)).tolist(), 4)
    table("list_landmarks_align_celeba.txt",
          "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
          "rightmouth_x rightmouth_y".split(), rng.integers(60, 160, (n, 10)).tolist(), 4)
    return {"image_size": 32}
