"""Class names and the names of sensitive attribute values: every dataset carries them, from
its own metadata where it has some; run.json records them; tables.md, the CSVs and the
figures use them (Trifeature, and a tiny CIFAR-10 in its real format)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import STABLE_LR, TINY_TRIFEATURE
from kdray.data import DATASETS, TINY_WRITERS, DatasetSplits, TensorData, load_dataset, write_tiny
from kdray.data.trifeature import COLOURS, SHAPES, TEXTURES

TINY_DATASETS = sorted(n for n in DATASETS if n in TINY_WRITERS)
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def expected(name: str, root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """What each dataset's names must be, read here from the tiny files' own metadata."""
    if name == "trifeature-shape":
        return list(SHAPES), {"color": list(COLOURS), "texture": list(TEXTURES)}
    if name == "trifeature-texture":
        return list(TEXTURES), {"color": list(COLOURS), "shape": list(SHAPES)}
    if name in ("digits", "svhn"):
        return [str(d) for d in range(10)], {}
    if name == "cifar10":
        with open(root / "cifar10" / "cifar-10-batches-py" / "batches.meta", "rb") as f:
            return pickle.load(f)["label_names"], {}
    if name == "cifar100":
        with open(root / "cifar100" / "cifar-100-python" / "meta", "rb") as f:
            return pickle.load(f)["fine_label_names"], {}
    if name == "tinyimagenet":
        release = root / "tinyimagenet" / "tiny-imagenet-200"
        words = dict(line.split("\t") for line in (release / "words.txt").read_text().splitlines())
        wnids = sorted((release / "wnids.txt").read_text().split())
        return [words[w].split(",")[0] for w in wnids], {}
    if name == "imagenet":
        mapping = dict(line.split(" ", 1) for line in
                       (root / "imagenet" / "LOC_synset_mapping.txt").read_text().splitlines())
        wnids = sorted(p.name for p in (root / "imagenet" / "train").iterdir())
        return [mapping[w].split(",")[0] for w in wnids], {}
    if name.startswith("celeba"):
        label = {"celeba-smiling": ["not smiling", "smiling"],
                 "celeba-eyeglasses": ["no eyeglasses", "eyeglasses"]}[name]
        return label, {"young": ["not young", "young"], "male": ["not male", "male"]}
    if name == "hatexplain":
        return ["normal", "toxic"], {"gender": ["not targeted", "targeted"],
                                     "race": ["not targeted", "targeted"]}
    raise AssertionError(f"no expected names for {name}: add them here")


@pytest.mark.parametrize("name", TINY_DATASETS)
def test_every_dataset_names_its_classes_and_attribute_values(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    options = write_tiny(name, tmp_path)
    data = load_dataset(name, options, tmp_path)
    classes, values = expected(name, tmp_path)
    assert data.class_names == classes
    assert len(data.class_names) == data.num_classes == DATASETS[name].num_classes
    assert set(data.attribute_values) == set(data.attributes) == set(DATASETS[name].attributes)
    assert data.attribute_values == values


def test_names_come_from_the_cifar_meta_file(tmp_path):
    """Renaming the classes in batches.meta renames them in the loaded dataset."""
    write_tiny("cifar10", tmp_path)
    meta = tmp_path / "cifar10" / "cifar-10-batches-py" / "batches.meta"
    with open(meta, "rb") as f:
        d = pickle.load(f)
    assert d["label_names"] == CIFAR10  # the release's names
    d["label_names"] = [f"renamed {i}" for i in range(10)]
    with open(meta, "wb") as f:
        pickle.dump(d, f, protocol=2)
    assert load_dataset("cifar10", {}, tmp_path).class_names == d["label_names"]
    # the decoded cache keeps them: the raw files are not read again
    meta.unlink()
    assert load_dataset("cifar10", {}, tmp_path).class_names == d["label_names"]


def test_names_default_to_indices_and_are_checked():
    x, y = np.zeros((4, 3, 8, 8), np.uint8), np.array([0, 1, 2, 0])
    split = TensorData(x, y)
    data = DatasetSplits(train=split, test=split, num_classes=3, attributes={"g": [0, 1, 1, 0]})
    assert data.class_names == ["0", "1", "2"] and data.attribute_values == {"g": ["0", "1"]}
    with pytest.raises(ValueError, match="class_names: 2 names for 3 classes"):
        DatasetSplits(train=split, test=split, num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"attribute_values\['g'\]: 1 names"):
        DatasetSplits(train=split, test=split, num_classes=3, attributes={"g": [0, 1, 1, 0]},
                      attribute_values={"g": ["only"]})


@pytest.mark.trains
def test_run_json_records_the_names(tmp_path, data_root):
    from kdray.spec import RunSpec
    from kdray.store import Store
    from kdray.trial import run

    spec = RunSpec(dataset="trifeature-shape", role="nds", arch="lenet5", epochs=1,
                   batch_size=100, lr=STABLE_LR, data=TINY_TRIFEATURE)
    store = Store(tmp_path / "store")
    run(spec, store, data_root=data_root, device="cpu", num_workers=0)
    record = store.read_run_json(spec.run_id)
    assert record["class_names"] == list(SHAPES)
    assert record["attribute_values"] == {"color": list(COLOURS), "texture": list(TEXTURES)}


def test_wandb_per_class_table_uses_the_names(tmp_path):
    """The final W&B log's per-class table: label index, class name, accuracy, test samples."""
    import wandb

    from kdray.tracking import final_log

    run = wandb.init(mode="offline", dir=str(tmp_path), project="kdray-test")
    try:
        log = final_log(0.5, [1.0, 0.0, None], [2, 1, 0], class_names=["cat", "dog", "emu"])
    finally:
        run.finish()
    table = log["test/per_class_accuracy"]
    assert table.columns == ["class", "name", "accuracy", "n_test"]
    assert [row[:2] for row in table.data] == [[0, "cat"], [1, "dog"], [2, "emu"]]


# ----------------------------------------------------------------------------------------
# End to end: dataset -> run.json -> tables.md, CSVs, figures
# ----------------------------------------------------------------------------------------
def _cifar10_with_more_test_images(root: Path) -> dict:
    """The tiny CIFAR-10 files (real format, the release's batches.meta), with 100 test images
    so that per-class statistics have samples to work on."""
    from kdray.data.cifar import _batch, _pickle

    options = write_tiny("cifar10", root)
    base = root / "cifar10" / "cifar-10-batches-py"
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        _pickle(base / f"data_batch_{i}", _batch(rng, 20, 10, "labels", f"training batch {i} of 5"))
    _pickle(base / "test_batch", _batch(rng, 100, 10, "labels", "testing batch 1 of 1"))
    return options


@pytest.mark.ray
@pytest.mark.trains
@pytest.mark.parametrize("dataset", ["trifeature-shape", "cifar10"])
def test_class_names_reach_tables_csvs_and_figures(dataset, tmp_path, ray_local, monkeypatch):
    """One epoch on tiny files (CIFAR's with random labels) leaves every run at chance, so the
    collapse rule is switched off here: this test follows the names, not the learning."""
    import matplotlib

    from kdray import collapse

    monkeypatch.setattr(collapse, "MARGIN", -1.0)  # no run collapses

    matplotlib.use("Agg")
    from kdray import analysis
    from kdray.analysis.figures import draw
    from matplotlib.text import Text

    from kdray.sweep.grid import Experiment, expand
    from kdray.store import Store
    from kdray.trial import run

    root = tmp_path / "data"
    if dataset == "cifar10":
        options = _cifar10_with_more_test_images(root)
        classes, values = CIFAR10, {}
    else:
        options = dict(TINY_TRIFEATURE)
        classes, values = list(SHAPES), {"color": list(COLOURS), "texture": list(TEXTURES)}
    exp = Experiment("names", (dataset,), (("resnet20", "lenet5"),), (2.0,), (0.8,), (0, 1),
                     recipe={"epochs": 1, "batch_size": 20, "lr": STABLE_LR}, data=options)
    store = Store(tmp_path / "store")
    plan = expand([exp])
    for spec in plan.stage1 + plan.stage2:
        run(spec, store, data_root=root, device="cpu", num_workers=0)

    # a level of 0.999 lists (nearly) every tested class as significant, by name
    result = analysis.run(store.uri, level=0.999, wandb_mode="disabled")
    md = (tmp_path / "store" / "analysis" / "tables.md").read_text()
    assert not re.search(r"\bclass \d+\b(?! as positive)", md), md  # no "class 3" labels
    listed = re.findall(r"^- T=2: (.*)$", md, flags=re.M)
    assert listed, md
    named = [n for n in classes if n in listed[0]]
    assert named, listed[0]
    for attribute, names in values.items():  # the groups of each attribute, by name
        assert f"- {attribute}: " + ", ".join(f"{v} = {n}" for v, n in enumerate(names)) in md

    # the per-class CSV names every class beside its index
    import pandas as pd

    csvs = list((tmp_path / "store" / "analysis").rglob("*.csv"))
    named_csvs = [pd.read_csv(p) for p in csvs if "class_name" in pd.read_csv(p, nrows=0).columns]
    assert named_csvs, [p.name for p in csvs]
    for frame in named_csvs:
        for c, name in frame[["class", "class_name"]].drop_duplicates().itertuples(index=False):
            assert name == classes[int(c)]

    # figures: the class-accuracy legend and the disagreement heatmap's ticks name the classes
    texts: dict[str, set[str]] = {}
    for spec in result.report.figures:
        fig = draw(spec)
        texts[spec.name] = {t.get_text() for t in fig.findobj(Text)}
        matplotlib.pyplot.close(fig)
    class_fig = [n for n in texts if n.endswith("_class_accuracy.png")]
    heatmap = [n for n in texts if n.endswith("_disagreement.png")]
    assert class_fig and heatmap, sorted(texts)
    for name in class_fig + heatmap:
        assert set(classes) <= texts[name], (name, sorted(texts[name]))
