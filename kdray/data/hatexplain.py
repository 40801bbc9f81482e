"""``hatexplain``: HateXplain (Mathew et al. 2021), toxic vs normal posts, with gender and race
as sensitive attributes (paper Sec. 5).

Source: the Hugging Face dataset ``Hate-speech-CNERG/hatexplain`` (train 15,383 /
validation 1,922 / test 1,924 posts; the test split is our test set, validation is unused).
Each post has ``post_tokens``, ``rationales`` and ``annotators``, three annotators each
with a ``label`` (0 hatespeech, 1 normal, 2 offensive) and a list of ``target`` communities.
The hub copy is a loading script, which ``datasets`` >= 4 refuses to run; when
``load_dataset`` fails, the fetch builds the same ``DatasetDict`` (same features, splits
and order) from the two JSON files that script reads, ``dataset.json`` and
``post_id_divisions.json`` in the HateXplain GitHub repository.

What is derived, per post:

- label: toxic = 1 (hate speech or offensive) vs normal = 0. As in HateXplain's own
  two-class setup, the post's 3-class label is the one a strict majority of its annotators
  chose, then hate speech and offensive merge into toxic; a post without a majority (all
  three disagree) is dropped. The published splits already leave those 919 posts out, so
  on the real data nothing is dropped.
- targets: the communities a strict majority of annotators (2 of 3) selected, HateXplain's
  rule for its bias evaluation.
- race = 1 if the targets include one of HateXplain's race groups (African, Arab, Asian,
  Caucasian, Hispanic), else 0 (the complementary "no race" group); gender = 1 if they
  include one of its gender groups (Men, Women), else 0. Every other community (sexual
  orientation, religion, refugees, indigenous people, ...) counts as neither.
- text: ``" ".join(post_tokens)``, tokenized with the ``tokenizer`` option's tokenizer
  (default ``bert-base-uncased``, the vocabulary of both BERT-Base and DistilBERT),
  truncated and padded to ``max_length`` tokens.

Files: the dataset is saved under ``{data_dir}/hatexplain/`` and the tokenizer under
``{data_dir}/tokenizers/{name}/``, each fetched once per node (``kdray.data.fetch.fetched``;
on a cluster, copied from the results store, where the sweep driver put them once);
afterwards both load from disk without touching the network.
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from kdray.data import DatasetSplits, TensorData, register_dataset, register_tiny
from kdray.data.fetch import fetched, once

HUB_ID = "Hate-speech-CNERG/hatexplain"
RAW_URL = "https://raw.githubusercontent.com/hate-alert/HateXplain/master/Data/"
SPLITS = {"train": "train", "validation": "val", "test": "test"}  # HF split -> divisions key

LABEL_NAMES = ("hatespeech", "normal", "offensive")  # the HF ClassLabel order
TOXIC_LABELS = frozenset({0, 2})  # hatespeech, offensive
RACE_GROUPS = frozenset({"African", "Arab", "Asian", "Caucasian", "Hispanic"})
GENDER_GROUPS = frozenset({"Men", "Women"})
ATTRIBUTE_GROUPS = {"gender": GENDER_GROUPS, "race": RACE_GROUPS}
ATTRIBUTE_VALUES = ("not targeted", "targeted")  # 1: a majority named one of the attribute's groups


# ------------------------------------------------------------------ labels and attributes
def _majority(votes: Sequence[Any]) -> Any | None:
    """The value a strict majority of ``votes`` chose, or None when there is none."""
    if not votes:
        return None
    value, count = Counter(votes).most_common(1)[0]
    return value if 2 * count > len(votes) else None


def toxic_label(annotator_labels: Sequence[int]) -> int | None:
    """1 (toxic) or 0 (normal) from the annotators' 3-class labels; None without a majority."""
    label = _majority(list(annotator_labels))
    return None if label is None else int(label in TOXIC_LABELS)


def majority_targets(annotator_targets: Sequence[Iterable[str]]) -> set[str]:
    """Communities a strict majority of annotators selected (each annotator counted once)."""
    counts = Counter(t for targets in annotator_targets for t in set(targets))
    return {t for t, c in counts.items() if 2 * c > len(annotator_targets)}


def group_attributes(targets: set[str]) -> dict[str, int]:
    """``{"gender": 0/1, "race": 0/1}``: 1 when the targets include one of the attribute's groups."""
    return {name: int(bool(targets & groups)) for name, groups in ATTRIBUTE_GROUPS.items()}


def derive(split: Any) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Texts, labels and attributes of the posts of one HF split that have a majority label."""
    texts, labels, attrs = [], [], {name: [] for name in ATTRIBUTE_GROUPS}
    for post in split:
        annotators = post["annotators"]  # HF stores columns: {"label": [...], "target": [[...]]}
        label = toxic_label(annotators["label"])
        if label is None:
            continue
        texts.append(" ".join(post["post_tokens"]))
        labels.append(label)
        for name, value in group_attributes(majority_targets(annotators["target"])).items():
            attrs[name].append(value)
    return (texts, np.asarray(labels, dtype=np.int64),
            {k: np.asarray(v, dtype=np.int64) for k, v in attrs.items()})


# ------------------------------------------------------------------ fetching (once per node)
def features():
    """The HF dataset's features (those of its loading script)."""
    from datasets import ClassLabel, Features, Sequence, Value

    return Features({
        "id": Value("string"),
        "annotators": Sequence({"label": ClassLabel(names=list(LABEL_NAMES)),
                                "annotator_id": Value("int32"),
                                "target": Sequence(Value("string"))}),
        "rationales": Sequence(Sequence(Value("int32"))),
        "post_tokens": Sequence(Value("string")),
    })


def dataset_from_json(dataset_json: Path, divisions_json: Path):
    """The HF ``DatasetDict`` built from HateXplain's ``dataset.json`` and
    ``post_id_divisions.json``, the way the hub's loading script builds it."""
    import datasets

    posts = json.loads(Path(dataset_json).read_text(encoding="utf-8"))
    divisions = json.loads(Path(divisions_json).read_text(encoding="utf-8"))
    out = {}
    for split, key in SPLITS.items():
        columns = {name: [] for name in features()}
        for post_id in divisions[key]:
            post = posts[post_id]
            anns = post["annotators"]  # a list of per-annotator dicts; HF stores columns
            columns["id"].append(post_id)
            columns["annotators"].append({"label": [a["label"] for a in anns],
                                          "annotator_id": [a["annotator_id"] for a in anns],
                                          "target": [a["target"] for a in anns]})
            columns["rationales"].append(post["rationales"])
            columns["post_tokens"].append(post["post_tokens"])
        out[split] = datasets.Dataset.from_dict(columns, features=features())
    return datasets.DatasetDict(out)


def _download(target: Path) -> None:
    import datasets

    try:
        dd = datasets.load_dataset(HUB_ID)
    except Exception as hub_error:  # a loading script (refused by datasets >= 4), or no hub
        if datasets.config.HF_HUB_OFFLINE:
            raise RuntimeError(f"hatexplain: no local copy under {target.parent} and HF offline "
                               f"mode is on; fetch it once with network access") from hub_error
        try:
            with tempfile.TemporaryDirectory() as tmp:
                files = {}
                for name in ("dataset.json", "post_id_divisions.json"):
                    files[name] = Path(tmp) / name
                    urllib.request.urlretrieve(RAW_URL + name, files[name])
                dd = dataset_from_json(files["dataset.json"], files["post_id_divisions.json"])
        except Exception as raw_error:
            raise RuntimeError(f"hatexplain: could not fetch {HUB_ID} from the hub ({hub_error!r}) "
                               f"nor the JSON files from {RAW_URL} ({raw_error!r})") from raw_error
    dd.save_to_disk(str(target))


def _label_names(feats) -> list[str]:
    """The annotators' ClassLabel names (hatespeech, normal, offensive) from the dataset's
    features, however ``datasets`` nests them (``Sequence({...})`` or a dict of lists)."""
    annotators = feats["annotators"]
    label = (annotators.feature if hasattr(annotators, "feature") else annotators)["label"]
    label = getattr(label, "feature", label)  # a List(ClassLabel) in datasets >= 4
    return list(label.names)


def _tokenizer_dir(root: Path, name: str) -> Path:
    return root / "tokenizers" / name.replace("/", "--")


def load_tokenizer(root: Path, name: str):
    """The transformers tokenizer ``name``, saved under ``root/tokenizers/`` once per node."""
    from transformers import AutoTokenizer

    def build(tmp: Path) -> None:
        AutoTokenizer.from_pretrained(name).save_pretrained(str(tmp))

    folder = fetched(_tokenizer_dir(root, name), build, what=f"tokenizer {name}",
                     key=f"tokenizers/{_tokenizer_dir(root, name).name}")
    return AutoTokenizer.from_pretrained(str(folder))


# ------------------------------------------------------------------ the loader
@register_dataset("hatexplain", num_classes=2, batch_size=32,
                  downloadable=True,
                  defaults={"tokenizer": "bert-base-uncased", "max_length": 128},
                  attributes=("gender", "race"), modality="text", augmentation="none",
                  source=f"HF datasets {HUB_ID} (Mathew et al. 2021)")
def load_hatexplain(options: dict, root: Path) -> DatasetSplits:
    """Token ids ``[N, max_length]`` of the train and test posts, toxic labels, and the test
    posts' gender and race attributes. Batch 32: BERT fine-tuning's (the paper gives none)."""
    import datasets

    max_length = options["max_length"]
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length: {max_length!r} is not an integer >= 2 (dataset hatexplain)")
    folder = fetched(root / "hatexplain", _download, what=f"hatexplain ({HUB_ID})",
                     key="hatexplain")
    dd = datasets.load_from_disk(str(folder))
    tokenizer = load_tokenizer(root, str(options["tokenizer"]))
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer: {options['tokenizer']!r} has no padding token")

    def encode(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                        return_attention_mask=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.int64)

    train_texts, train_y, _ = derive(dd["train"])
    test_texts, test_y, attributes = derive(dd["test"])
    labels = _label_names(dd["train"].features)
    class_names = [labels[1], "toxic"]  # 0: "normal"; 1: "hatespeech" or "offensive"
    return DatasetSplits(train=TensorData(encode(train_texts), train_y),
                         test=TensorData(encode(test_texts), test_y),
                         num_classes=2, attributes=attributes, modality="text",
                         class_names=class_names,
                         attribute_values={name: list(ATTRIBUTE_VALUES) for name in attributes},
                         mean=None, std=None, vocab_size=len(tokenizer),
                         pad_token_id=int(tokenizer.pad_token_id), max_length=max_length)


# ------------------------------------------------------------------ tiny files for tests
TINY_TOKENIZER = "tiny-wordpiece"

# (3-class labels of the 3 annotators, targets of each annotator, text): placeholder texts,
# the labels and targets are what the tests check
_H, _N, _O = 0, 1, 2
_TINY_POSTS = [
    ((_H, _H, _O), (["African"], ["African"], ["African"]), "a hateful post about africans"),
    ((_O, _O, _N), (["Women"], ["Women"], ["None"]), "an offensive remark about women at work"),
    ((_N, _N, _N), (["None"], ["None"], ["None"]), "what a lovely day at the beach"),
    ((_H, _O, _H), (["Arab", "Men"], ["Arab"], ["Men", "Arab"]), "a hateful rant about arab men"),
    ((_N, _N, _H), (["Caucasian"], ["None"], ["None"]), "white bread is my favourite breakfast"),
    ((_O, _H, _O), (["Asian", "Women"], ["Women", "Asian"], ["Asian"]), "a rude joke about asian women"),
    ((_N, _O, _N), (["Women"], ["Women"], ["None"]), "my sister is a nurse and she loves it"),
    ((_H, _O, _N), (["Hispanic"], ["Hispanic"], ["None"]), "nobody agrees about this post at all"),
    ((_O, _O, _O), (["Homosexual"], ["Homosexual"], ["Homosexual"]), "an insult aimed at gay people"),
    ((_N, _N, _N), (["Islam"], ["None"], ["None"]), "ramadan starts next week for my neighbours"),
    ((_H, _H, _H), (["Jewish", "Caucasian"], ["Caucasian"], ["Jewish"]), "a conspiracy theory post"),
    ((_N, _N, _O), (["Men"], ["Men"], ["Men"]), "men are welcome to join the book club too"),
]


def _tiny_split(n: int, offset: int, long_every: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        votes, targets, text = _TINY_POSTS[(offset + i) % len(_TINY_POSTS)]
        tokens = text.split()
        if i % long_every == 0:  # some posts longer than max_length, to exercise truncation
            tokens = tokens + ["<user>", "said"] + tokens * 4
        rows.append({"id": f"{offset + i}_gab",
                     "annotators": {"label": list(votes), "annotator_id": [1, 2, 3],
                                    "target": [list(t) for t in targets]},
                     "rationales": [[j % 2 for j in range(len(tokens))]] * sum(v != _N for v in votes),
                     "post_tokens": tokens})
    return rows


def tiny_tokenizer(corpus: Iterable[str]):
    """A WordPiece tokenizer trained on ``corpus``, as a transformers fast tokenizer. Its
    padding id is not 0 (``[PAD]`` is the fourth special token), to catch code assuming 0."""
    from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@register_tiny("hatexplain")
def tiny_hatexplain(root: Path) -> dict:
    """A few dozen posts in the HF dataset's schema, saved where the loader looks, and a tiny
    WordPiece tokenizer trained on them (``tiny-wordpiece``); nothing is downloaded."""
    import datasets

    root = Path(root)
    splits = {"train": _tiny_split(24, 0), "validation": _tiny_split(4, 3), "test": _tiny_split(12, 5)}

    def build_data(tmp: Path) -> None:
        dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v, features=features())
                                   for k, v in splits.items()})
        dd.save_to_disk(str(tmp))

    def build_tokenizer(tmp: Path) -> None:
        corpus = [" ".join(r["post_tokens"]) for rows in splits.values() for r in rows]
        tiny_tokenizer(corpus).save_pretrained(str(tmp))

    once(root / "hatexplain", build_data, what="hatexplain (tiny)")
    once(_tokenizer_dir(root, TINY_TOKENIZER), build_tokenizer, what=f"tokenizer {TINY_TOKENIZER}")
    return {"tokenizer": TINY_TOKENIZER, "max_length": 32}
