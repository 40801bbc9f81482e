"""Every image dataset loads from tiny files in its real on-disk format, offline.

Each registered image dataset with a tiny-data writer (``kdray.data.write_tiny``) is written
into a fresh folder and read back by its real loader (torchvision's CIFAR/SVHN/CelebA
readers, ImageFolder, the Tiny ImageNet tree, a ``save_to_disk`` HF copy) with every
download function replaced by one that fails, so a loader that tried to fetch would fail.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import kdray.data as kd
from kdray.data import DATASETS, TINY_WRITERS, TensorData, fetch, load_dataset, write_tiny
from kdray.data.stream import AUGMENTATIONS

IMAGE_DATASETS = sorted(n for n, info in DATASETS.items()
                        if info.modality == "image" and n in TINY_WRITERS)
STREAMED = ("imagenet", "celeba-smiling", "celeba-eyeglasses")


def _no_network(*args, **kwargs):
    raise RuntimeError("network access attempted by a loader in an offline test")


def forbid_network(setattr_=setattr) -> None:
    """Replace every download entry point the loaders could reach with :func:`_no_network`."""
    import datasets
    import torchvision.datasets.celeba as tv_celeba
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.svhn as tv_svhn
    import torchvision.datasets.utils as tv_utils

    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, names in ((tv_utils, ("download_url", "download_and_extract_archive",
                                      "download_file_from_google_drive")),
                          (tv_cifar, ("download_and_extract_archive",)),
                          (tv_svhn, ("download_url",)),
                          (tv_celeba, ("download_file_from_google_drive",)),
                          (datasets, ("load_dataset",))):
        for name in names:
            setattr_(module, name, _no_network)
    connect = socket.socket.connect

    def local_only(sock, address):  # DataLoader workers pass tensors over Unix sockets
        if sock.family != socket.AF_UNIX:
            _no_network()
        return connect(sock, address)
    setattr_(socket.socket, "connect", local_only)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("KDRAY_IMAGENET_DIR", raising=False)
    forbid_network(monkeypatch.setattr)


def _check_images(x: torch.Tensor, size: int) -> None:
    assert x.dtype == torch.uint8 and tuple(x.shape[-3:]) == (3, size, size), (x.dtype, x.shape)


# -- every dataset ------------------------------------------------------------------------
@pytest.mark.parametrize("name", IMAGE_DATASETS)
def test_loads_from_tiny_real_format(name, tmp_path):
    info = DATASETS[name]
    options = write_tiny(name, tmp_path)
    assert set(options) <= set(info.defaults), "tiny options must be dataset options (RunSpec)"
    splits = load_dataset(name, options, root=tmp_path)
    size = splits.image_size
    assert size == {**info.defaults, **options}.get("image_size", size) and size > 0
    assert splits.num_classes == info.num_classes and splits.modality == "image"
    assert len(splits.mean) == len(splits.std) == splits.in_channels == 3
    assert len(splits.train) > 0 and len(splits.test) > 0
    for split in (splits.train, splits.test):
        if isinstance(split, TensorData):
            _check_images(split.x, size)
            labels = split.y.numpy()
        else:
            for i in (0, len(split) - 1):
                x, y = split[i]
                _check_images(x, size)
                assert isinstance(y, int)
            labels = split.labels
        assert labels.dtype == np.int64 and 0 <= labels.min() and labels.max() < info.num_classes
    if not splits.in_memory:
        np.testing.assert_array_equal(splits.test_labels, splits.test.labels)
    assert set(splits.attributes) == set(info.attributes)
    for values in splits.attributes.values():
        assert len(values) == len(splits.test) and values.min() >= 0
        if name.startswith("celeba"):
            assert set(values.tolist()) <= {0, 1}


@pytest.mark.parametrize("name,bad", [("tinyimagenet", {"source": "kaggle"}),
                                      ("tinyimagenet", {"image_size": "64"}),
                                      ("imagenet", {"image_size": 0}),
                                      ("celeba-smiling", {"balance_seed": -1}),
                                      ("celeba-eyeglasses", {"image_size": 32.0})])
def test_bad_options_are_refused_before_any_work(name, bad, tmp_path):
    from kdray.models import MODELS
    from kdray.spec import RunSpec

    key = next(iter(bad))
    with pytest.raises(ValueError, match=f"data: .*{key}"):
        arch = next(n for n, info in MODELS.items() if info.modality == "image")
        RunSpec(dataset=name, role="teacher", arch=arch, data=bad)
    with pytest.raises(ValueError, match=key):
        load_dataset(name, bad, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_env_data_dir(tmp_path, monkeypatch):
    write_tiny("cifar10", tmp_path)
    monkeypatch.setenv(kd.DATA_DIR_ENV, str(tmp_path))
    assert len(load_dataset("cifar10").train) == 20


# -- what each format means -------------------------------------------------------------
def test_cifar_pixels_and_labels(tmp_path):
    write_tiny("cifar10", tmp_path)
    with open(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    train = load_dataset("cifar10", root=tmp_path).train
    # a row of CIFAR's "data" is the R, G and B planes, row-major: exactly x[i] in CHW
    np.testing.assert_array_equal(train.x[0].numpy().reshape(-1), batch["data"][0])
    assert train.y[:4].tolist() == batch["labels"]
    cifar100 = load_dataset("cifar100", write_tiny("cifar100", tmp_path), root=tmp_path)
    assert cifar100.train.y.max() == 98 and len(cifar100.train) == 50


def test_svhn_ten_means_zero(tmp_path):
    splits = load_dataset("svhn", write_tiny("svhn", tmp_path), root=tmp_path)
    assert splits.train.y.tolist() == [i % 10 for i in range(20)]


def test_tinyimagenet_folder_and_hf_agree(tmp_path):
    write_tiny("tinyimagenet", tmp_path)
    folder = load_dataset("tinyimagenet", {"source": "folder", "image_size": 64}, root=tmp_path)
    hf = load_dataset("tinyimagenet", {"source": "hf", "image_size": 64}, root=tmp_path)
    release = tmp_path / "tinyimagenet" / "tiny-imagenet-200"
    wnids = sorted((release / "wnids.txt").read_text().split())
    annotations = (release / "val" / "val_annotations.txt").read_text().splitlines()
    val_wnids = [row.split("\t")[1] for row in annotations]
    assert folder.test.y.tolist() == [wnids.index(w) for w in val_wnids]
    assert len(folder.train) == 50 and len(folder.test) == 50
    for a, b in ((folder.train, hf.train), (folder.test, hf.test)):  # same images, other row order
        ia, ib = torch.argsort(a.y, stable=True), torch.argsort(b.y, stable=True)
        assert torch.equal(a.y[ia], b.y[ib]) and torch.equal(a.x[ia], b.x[ib])


def test_imagenet_labels_follow_train_wnids(tmp_path, monkeypatch):
    options = write_tiny("imagenet", tmp_path / "elsewhere")
    monkeypatch.setenv("KDRAY_IMAGENET_DIR", str(tmp_path / "elsewhere" / "imagenet"))
    splits = load_dataset("imagenet", options, root=tmp_path / "data")
    assert len(splits.train) == 20 and splits.train.labels.tolist() == list(range(0, 1000, 50))
    assert splits.test_labels.tolist() == list(range(0, 1000, 50))


def test_missing_imagenet_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically") as err:
        load_dataset("imagenet", root=tmp_path)
    assert str(tmp_path / "imagenet") in str(err.value)


@pytest.mark.parametrize("name,label", [("celeba-smiling", "Smiling"),
                                        ("celeba-eyeglasses", "Eyeglasses")])
def test_celeba_balanced_train_and_attributes(name, label, tmp_path):
    options = write_tiny(name, tmp_path)
    def read(name):
        return [line.split() for line in (tmp_path / "celeba" / name).read_text().splitlines()]

    rows = read("list_attr_celeba.txt")
    header, values = rows[1], np.array([[int(v) for v in r[1:]] for r in rows[2:]])
    parts = np.array([int(r[1]) for r in read("list_eval_partition.txt")])

    def binary(mask, column):  # the file's -1/1 as 0/1
        return ((values[mask, header.index(column)] + 1) // 2).tolist()

    train_y = binary(parts == 0, label)
    splits = load_dataset(name, options, root=tmp_path)
    counts = np.bincount(splits.train.labels, minlength=2)
    assert counts[0] == counts[1] == np.bincount(train_y).min()  # undersampled to the rarer label
    assert len(splits.test) == (parts == 2).sum()
    assert splits.test_labels.tolist() == binary(parts == 2, label)
    for attr, column in (("young", "Young"), ("male", "Male")):
        assert splits.attributes[attr].tolist() == binary(parts == 2, column)
    again = load_dataset(name, options, root=tmp_path)
    assert again.train.paths.tolist() == splits.train.paths.tolist()  # the seed fixes the sample
    other = load_dataset(name, {**options, "balance_seed": 1}, root=tmp_path)
    assert np.bincount(other.train.labels).tolist() == counts.tolist()


# -- streaming ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in STREAMED if n in IMAGE_DATASETS])
def test_streamed_through_dataloader_workers(name, tmp_path):
    splits = load_dataset(name, write_tiny(name, tmp_path), root=tmp_path)
    assert not splits.in_memory
    size, train = splits.image_size, splits.train
    assert train.augmentation == DATASETS[name].augmentation
    for augmentation in AUGMENTATIONS:
        train.augmentation = augmentation
        loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, num_workers=2,
                                             drop_last=True)
        x, y = next(iter(loader))
        _check_images(x, size)
        assert x.shape[0] == 4 and y.dtype == torch.int64
    test = torch.utils.data.DataLoader(splits.test, batch_size=len(splits.test), num_workers=2)
    x, y = next(iter(test))
    assert torch.equal(x, torch.stack([splits.test[i][0] for i in range(len(splits.test))]))
    assert y.tolist() == splits.test_labels.tolist()
    with pytest.raises(ValueError, match="test split"):
        splits.test.augmentation = "crop_flip"
    assert pickle.loads(pickle.dumps(train)).augmentation == train.augmentation


# -- fetching -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", [("cifar10", {}), ("cifar100", {}), ("svhn", {}),
                                          ("tinyimagenet", {"source": "folder"}),
                                          ("tinyimagenet", {"source": "hf"}),
                                          ("celeba-smiling", {})])
def test_missing_files_are_downloaded_in_a_build_that_leaves_nothing(name, options, tmp_path):
    with pytest.raises(RuntimeError, match="network access attempted"):
        load_dataset(name, options, root=tmp_path)
    left = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert left == []


def test_incomplete_user_folder_is_reported_not_deleted(tmp_path):
    write_tiny("cifar10", tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="does not hold the complete dataset"):
        load_dataset("cifar10", root=tmp_path)
    assert (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1").is_file()


def _load_in_child(name: str, options: dict, root: str, barrier, results) -> None:
    torch.set_num_threads(1)  # a forked child, like a DataLoader worker
    barrier.wait(timeout=60)
    splits = load_dataset(name, options, root=root)
    results.put((int(splits.train.x.sum()), int(splits.test.y.sum())))


def test_concurrent_trials_build_once(tmp_path, monkeypatch):
    """Two trials starting at once on one node: both load, the decode runs in one of them."""
    options = write_tiny("tinyimagenet", tmp_path)
    log, once = tmp_path / "builds.log", fetch.once

    def counting_once(target, build, **kwargs):
        def counted(tmp):
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {Path(target).name}\n")
            build(tmp)
        return once(target, counted, **kwargs)

    monkeypatch.setattr(fetch, "once", counting_once)
    ctx = multiprocessing.get_context("fork")  # inherits the patches; no re-import
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_load_in_child,
                         args=("tinyimagenet", options, str(tmp_path), barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outcomes[0] == outcomes[1]
    builds = log.read_text().splitlines()
    assert len(builds) == 1 and builds[0].endswith("tinyimagenet-folder-32"), builds
