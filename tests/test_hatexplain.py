"""HateXplain: labels and attributes on hand-made posts, the tiny files through the real
loader with the network refused, and the JSON path the cluster fetch falls back to."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from kdray.data import DATASETS, load_dataset, write_tiny  # noqa: E402
from kdray.data import hatexplain as hx  # noqa: E402
from kdray.data.fetch import is_ready  # noqa: E402

H, N, O = 0, 1, 2  # the HF ClassLabel ids: hatespeech, normal, offensive


@pytest.fixture
def tiny(tmp_path, no_network, monkeypatch):
    """Tiny files under a fresh data dir; the loader may not fetch anything."""
    def no_fetch(target):
        raise AssertionError("the loader tried to fetch HateXplain although a local copy exists")

    options = write_tiny("hatexplain", tmp_path)
    monkeypatch.setattr(hx, "_download", no_fetch)
    return tmp_path, options


# ------------------------------------------------------------------ labels and attributes
@pytest.mark.parametrize("votes,expected", [
    ((H, H, O), 1), ((O, O, N), 1), ((H, O, O), 1), ((N, N, H), 0), ((N, N, N), 0),
    ((H, O, N), None),        # no majority: dropped, as in HateXplain
    ((H, H, N, N), None),     # a tie is no majority
    ((O, O, O, N), 1),
])
def test_toxic_label_by_majority(votes, expected):
    assert hx.toxic_label(votes) == expected


def test_targets_by_majority_and_grouping():
    targets = hx.majority_targets([["African", "Women"], ["African", "African"], ["Women", "Jewish"]])
    assert targets == {"African", "Women"}  # Jewish: 1 of 3; an annotator counts once
    assert hx.majority_targets([["Arab"], ["None"], ["Asian"]]) == set()
    assert hx.group_attributes({"African", "Women"}) == {"gender": 1, "race": 1}
    assert hx.group_attributes({"Men"}) == {"gender": 1, "race": 0}
    for race in ("African", "Arab", "Asian", "Caucasian", "Hispanic"):
        assert hx.group_attributes({race}) == {"gender": 0, "race": 1}
    for neither in ({"None"}, {"Homosexual"}, {"Islam", "Jewish"}, {"Indian", "Refugee"}, set()):
        assert hx.group_attributes(neither) == {"gender": 0, "race": 0}


def _post(post_id, votes, targets, text):
    return {"id": post_id,
            "annotators": {"label": list(votes), "annotator_id": list(range(len(votes))),
                           "target": [list(t) for t in targets]},
            "rationales": [], "post_tokens": text.split()}


def test_derive_on_hand_made_posts():
    import datasets

    posts = [
        _post("a", (H, H, O), (["African"], ["African"], ["None"]), "post a"),  # toxic, race
        _post("b", (N, N, O), (["Women"], ["Women"], ["Women"]), "post b"),      # normal, gender
        _post("c", (H, O, N), (["Arab"], ["Arab"], ["Arab"]), "post c"),         # no majority: dropped
        _post("d", (O, O, N), (["Caucasian"], ["Men"], ["None"]), "post d"),     # toxic, no target
        _post("e", (O, H, O), (["Asian", "Men"], ["Men", "Asian"], []), "post e"),  # toxic, both
    ]
    split = datasets.Dataset.from_list(posts, features=hx.features())
    texts, labels, attrs = hx.derive(split)
    assert texts == ["post a", "post b", "post d", "post e"]
    assert labels.tolist() == [1, 0, 1, 1]
    assert attrs["race"].tolist() == [1, 0, 0, 1]
    assert attrs["gender"].tolist() == [0, 1, 0, 1]


# ------------------------------------------------------------------ the loader on tiny files
def test_registry_entry():
    info = DATASETS["hatexplain"]
    assert (info.num_classes, info.batch_size) == (2, 32)
    assert (info.modality, info.augmentation) == ("text", "none")
    assert info.attributes == ("gender", "race")
    assert set(info.defaults) == {"tokenizer", "max_length"}


def test_tiny_files_through_the_real_loader(tiny):
    root, options = tiny
    assert is_ready(root / "hatexplain") and is_ready(root / "tokenizers" / options["tokenizer"])
    splits = load_dataset("hatexplain", options, root=root)
    L = options["max_length"]

    # what the loader should derive, straight from the saved HF dataset
    import datasets
    dd = datasets.load_from_disk(str(root / "hatexplain"))
    for name, data in (("train", splits.train), ("test", splits.test)):
        texts, labels, attrs = hx.derive(dd[name])
        assert len(texts) < len(dd[name])  # the tiny data has posts without a majority
        assert data.x.shape == (len(texts), L) and data.x.dtype == torch.int64
        assert data.y.tolist() == labels.tolist()
        assert set(labels.tolist()) == {0, 1}
    _, _, test_attrs = hx.derive(dd["test"])
    assert set(splits.attributes) == {"gender", "race"}
    for name in ("gender", "race"):
        assert splits.attributes[name].tolist() == test_attrs[name].tolist()
        assert set(splits.attributes[name].tolist()) == {0, 1}

    assert (splits.num_classes, splits.modality, splits.max_length) == (2, "text", L)
    assert splits.mean is None and splits.std is None and splits.in_memory

    # the tokenizer's own ids: [CLS] first, [SEP] last real token, its padding id (3, not 0) after
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(root / "tokenizers" / options["tokenizer"]))
    assert splits.vocab_size == len(tok) and splits.pad_token_id == tok.pad_token_id == 3
    x = splits.train.x
    assert (x[:, 0] == tok.cls_token_id).all()
    lengths = (x != splits.pad_token_id).sum(1)
    assert lengths.max() == L and lengths.min() < L  # some truncated, some padded
    for row, n in zip(x, lengths):
        assert row[n - 1] == tok.sep_token_id and (row[n:] == splits.pad_token_id).all()
    assert x.max() < splits.vocab_size
    assert tok.decode(x[0, 1:4]).split() == dd["train"][0]["post_tokens"][:3]


def test_loaded_splits_feed_the_text_models(tiny):
    from kdray.models import build_model

    root, options = tiny
    splits = load_dataset("hatexplain", options, root=root)
    model = build_model("distilbert", splits.num_classes, **splits.model_kwargs()).eval()
    with torch.no_grad():
        assert model(splits.test.x[:3]).shape == (3, 2)


def test_max_length_option(tiny):
    root, options = tiny
    splits = load_dataset("hatexplain", {**options, "max_length": 8}, root=root)
    assert splits.train.x.shape[1] == splits.max_length == 8
    with pytest.raises(ValueError, match="max_length"):
        load_dataset("hatexplain", {**options, "max_length": "8"}, root=root)


def test_specs_use_the_bert_recipe():
    from kdray.spec import RunSpec

    spec = RunSpec(dataset="hatexplain", role="ds", arch="distilbert", teacher_arch="bert_base",
                   temperature=4, alpha=0.8)
    assert (spec.batch_size, spec.optimizer, spec.augmentation) == (32, "adamw", "none")
    assert dict(spec.data) == DATASETS["hatexplain"].defaults
    with pytest.raises(ValueError, match="text"):
        RunSpec(dataset="hatexplain", role="teacher", arch="resnet18")


# ------------------------------------------------------------------ the cluster fetch's JSON path
def test_dataset_from_raw_json(tmp_path, no_network):
    """HateXplain's dataset.json (per-annotator dicts, string labels) becomes the HF schema."""
    def raw(post_id, labels, targets, text):
        return {"post_id": post_id, "post_tokens": text.split(), "rationales": [],
                "annotators": [{"label": l, "annotator_id": i, "target": t}
                               for i, (l, t) in enumerate(zip(labels, targets))]}

    posts = {
        "1_gab": raw("1_gab", ["hatespeech", "offensive", "hatespeech"],
                     [["African"], ["African"], ["Women"]], "one"),
        "2_twitter": raw("2_twitter", ["normal", "normal", "offensive"],
                         [["None"], ["Women"], ["Women"]], "two"),
        "3_gab": raw("3_gab", ["offensive", "offensive", "normal"],
                     [["Men"], ["Men"], ["None"]], "three"),
    }
    (tmp_path / "dataset.json").write_text(json.dumps(posts))
    (tmp_path / "divisions.json").write_text(json.dumps(
        {"train": ["3_gab", "1_gab"], "val": [], "test": ["2_twitter"]}))
    dd = hx.dataset_from_json(tmp_path / "dataset.json", tmp_path / "divisions.json")
    assert list(dd) == ["train", "validation", "test"]
    assert [len(dd[k]) for k in dd] == [2, 0, 1]
    assert dd["train"].features == hx.features()
    assert dd["train"][1]["annotators"]["label"] == [H, O, H]
    texts, labels, attrs = hx.derive(dd["train"])
    assert texts == ["three", "one"] and labels.tolist() == [1, 1]
    assert attrs["gender"].tolist() == [1, 0] and attrs["race"].tolist() == [0, 1]
    _, labels, attrs = hx.derive(dd["test"])
    assert labels.tolist() == [0] and attrs["gender"].tolist() == [1]


def test_fetch_without_network_fails_clearly(tmp_path, no_network, monkeypatch):
    import datasets

    def hub_refuses(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found hatexplain.py")

    monkeypatch.setattr(datasets, "load_dataset", hub_refuses)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with pytest.raises(RuntimeError, match="could not fetch .* nor the JSON files"):
        hx._download(tmp_path / "out")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="offline mode is on"):
        hx._download(tmp_path / "out")
    assert not (tmp_path / "out").exists()
