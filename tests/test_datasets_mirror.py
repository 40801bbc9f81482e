"""A downloadable dataset is fetched once into the store and every node reads it from there.

The store is a real S3 server (moto on 127.0.0.1). The sweep driver stages each dataset
(``kdray.sweep.staging``) from its data directory into ``{store}/datasets``; a second
"node" with an empty data directory and no network then loads it from the store alone, and
gets exactly the arrays and files the driver has.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from kdray.data import DATASETS, TensorData, fetch, load_dataset, write_tiny
from kdray.sweep.cluster import DATASET_NODE_KINDS
from kdray.sweep.staging import stage_datasets
from kdray.store import Store
from test_datasets_images import forbid_network

Run = namedtuple("Run", "run_id dataset data")
DOWNLOADABLE = sorted(n for n, info in DATASETS.items() if info.downloadable)
KEYS = {"cifar10": ["cifar10"], "cifar100": ["cifar100"], "svhn": ["svhn"],
        "tinyimagenet": ["tinyimagenet"], "celeba-smiling": ["celeba"],
        "celeba-eyeglasses": ["celeba"], "hatexplain": ["hatexplain", "tokenizers/tiny-wordpiece"]}


def test_the_downloadable_datasets_are_the_papers():
    assert DOWNLOADABLE == ["celeba-eyeglasses", "celeba-smiling", "cifar10", "cifar100",
                            "hatexplain", "svhn", "tinyimagenet"]
    assert not DATASETS["imagenet"].downloadable  # a licence: put there by the user
    assert DATASET_NODE_KINDS["imagenet"] == "gpu_large"


def _same(a, b) -> None:
    if isinstance(a, TensorData):
        assert np.array_equal(a.x.numpy(), b.x.numpy()) and np.array_equal(a.y.numpy(), b.y.numpy())
    else:  # streamed from image files: same files (by content), same labels
        assert np.array_equal(a.labels, b.labels)
        assert [Path(p).read_bytes() for p in a.paths] == [Path(p).read_bytes() for p in b.paths]


@pytest.mark.parametrize("name", [n for n in DOWNLOADABLE if n != "celeba-eyeglasses"])
def test_staged_once_then_every_node_reads_the_store(name, s3_uri, tmp_path, monkeypatch):
    driver, node = tmp_path / "driver", tmp_path / "node"
    options = write_tiny(name, driver)  # the files the driver has (here: tiny, real format)
    runs = [Run(f"{name}-run-{i}", name, options) for i in range(2)]
    assert stage_datasets(runs, Store(s3_uri), driver, log=lambda _: None) == {}
    store = Store(s3_uri)
    for key in KEYS[name]:
        record = fetch.staged_record(store, key)
        assert record is not None and record["files"] > 0 and len(record["sha256"]) == 64

    forbid_network(monkeypatch.setattr)  # the node may not download anything
    got = load_dataset(name, options, node, mirror=Store(s3_uri))
    want = load_dataset(name, options, driver)
    _same(got.train, want.train)
    _same(got.test, want.test)
    assert got.num_classes == want.num_classes
    for attr, values in want.attributes.items():
        assert np.array_equal(got.attributes[attr], values)
    for key in KEYS[name]:  # the node's copy is the store's, marked complete
        assert fetch.is_ready(node / key)


def test_a_dataset_is_downloaded_once_for_the_whole_cluster(s3_uri, tmp_path, monkeypatch):
    calls = []

    def download(tmp: Path) -> None:  # what torchvision or HF would fetch
        calls.append(tmp)
        (tmp / "data.bin").write_bytes(b"\x01\x02" * 1000)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.txt").write_text("labels")

    with fetch.mirror(Store(s3_uri), publish=True):  # the driver, staging
        fetch.fetched(tmp_path / "head" / "ds", download, key="ds")
    assert len(calls) == 1 and fetch.in_store(Store(s3_uri), "ds")
    with fetch.mirror(Store(s3_uri), publish=True):  # a second sweep: already in the store
        fetch.fetched(tmp_path / "head" / "ds", download, key="ds")
    for node in ("node1", "node2"):  # trials on other nodes
        with fetch.mirror(Store(s3_uri)):
            folder = fetch.fetched(tmp_path / node / "ds", download, key="ds")
        assert (folder / "data.bin").read_bytes() == b"\x01\x02" * 1000
        assert (folder / "sub" / "meta.txt").read_text() == "labels"
    assert len(calls) == 1  # downloaded once, by the driver


def test_a_corrupted_copy_in_the_store_is_refused(s3_uri, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("x" * 5000)
    store = Store(s3_uri)
    assert fetch.publish(store, "ds", src) and not fetch.publish(store, "ds", src)
    tar_path, _ = fetch.mirror_paths(store, "ds")
    data = bytearray(store.read_bytes(tar_path))
    data[600] ^= 0xFF  # inside a.txt's bytes
    store.write_bytes(tar_path, bytes(data))
    with fetch.mirror(Store(s3_uri)), pytest.raises(OSError, match="does not match the SHA-256"):
        fetch.fetched(tmp_path / "node" / "ds", lambda tmp: None, key="ds")
    assert not (tmp_path / "node" / "ds").exists()  # nothing that looks finished


def test_a_dataset_that_cannot_be_fetched_stops_only_its_runs(s3_uri, tmp_path, monkeypatch):
    forbid_network(monkeypatch.setattr)  # the head has no copy and cannot download one
    runs = [Run("svhn-a", "svhn", {}), Run("digits-b", "digits", {})]
    failed = stage_datasets(runs, Store(s3_uri), tmp_path / "empty", log=lambda _: None)
    assert list(failed) == ["svhn-a"]
    assert "dataset svhn could not be staged into the store" in failed["svhn-a"]


def test_a_trials_enclosing_mirror_reaches_load_dataset(s3_uri, tmp_path, monkeypatch):
    """A trial opens the store's mirror around everything it loads (kdray/sweep/trainable.py)
    and calls load_dataset without ``mirror=``: the enclosing mirror stays in force."""
    driver, node = tmp_path / "driver", tmp_path / "node"
    options = write_tiny("cifar10", driver)
    assert stage_datasets([Run("c-0", "cifar10", options)], Store(s3_uri), driver,
                          log=lambda _: None) == {}
    forbid_network(monkeypatch.setattr)
    with fetch.mirror(Store(s3_uri)):
        got = load_dataset("cifar10", options, node)
    _same(got.test, load_dataset("cifar10", options, driver).test)
    assert fetch.is_ready(node / "cifar10")
