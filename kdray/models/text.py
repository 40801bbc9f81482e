"""Text models from transformers: ``bert_base`` (BERT-Base, Devlin et al. 2019) and
``distilbert`` (DistilBERT, Sanh et al. 2019), the paper's HateXplain teacher and student.

Built from their configs: ``BertConfig()`` and ``DistilBertConfig()`` defaults are
bert-base-uncased (12 layers, hidden 768, 12 heads, 110M parameters) and
distilbert-base-uncased (6 layers, hidden 768, 67M parameters), with random weights,
the dataset tokenizer's ``vocab_size`` and ``pad_token_id``, and at least ``max_length``
positions. ``pretrained=True`` loads the hub checkpoints instead (network access, a
cluster) with a new classification head; their 30,522-token uncased vocabulary is the
default ``bert-base-uncased`` tokenizer's, and a different ``vocab_size`` resizes the
token embeddings.

Every model takes int64 token ids ``[B, L]`` and returns logits ``[B, num_classes]``, like
the image models: the attention mask is ``ids != pad_token_id``, so the training loop, the
KD loss and the teacher-logit cache treat text and images the same way.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdray.models import register_model

DEFAULT_POSITIONS = 512  # BERT's and DistilBERT's max_position_embeddings


class SequenceClassifier(nn.Module):
    """A transformers sequence classifier as ``ids [B, L] -> logits [B, num_classes]``."""

    def __init__(self, model: nn.Module, pad_token_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_token_id = int(pad_token_id)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_token_id).to(torch.long)
        return self.model(input_ids=ids, attention_mask=mask).logits


def _check_inputs(name: str, vocab_size: int, pad_token_id: int, max_length: int) -> None:
    for key, value, minimum in (("vocab_size", vocab_size, 2), ("pad_token_id", pad_token_id, 0),
                                ("max_length", max_length, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{key}: {value!r} is not an integer >= {minimum} (model {name})")
    if pad_token_id >= vocab_size:
        raise ValueError(f"pad_token_id: {pad_token_id} is not < vocab_size {vocab_size} (model {name})")


def _build(name: str, hub_id: str, config_cls_name: str, num_classes: int, vocab_size: int,
           pad_token_id: int, max_length: int, pretrained: bool) -> nn.Module:
    import transformers

    _check_inputs(name, vocab_size, pad_token_id, max_length)
    if pretrained:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            hub_id, num_labels=num_classes)
        if max_length > model.config.max_position_embeddings:
            raise ValueError(f"max_length: {max_length} is more than {hub_id}'s "
                             f"{model.config.max_position_embeddings} positions")
        if model.config.vocab_size != vocab_size:
            model.resize_token_embeddings(vocab_size)
        model.config.pad_token_id = pad_token_id
    else:
        config = getattr(transformers, config_cls_name)(
            vocab_size=vocab_size, pad_token_id=pad_token_id, num_labels=num_classes,
            max_position_embeddings=max(DEFAULT_POSITIONS, max_length))
        model = transformers.AutoModelForSequenceClassification.from_config(config)
    return SequenceClassifier(model, pad_token_id)


@register_model("bert_base", family="bert", modality="text",
                source="transformers BertConfig() = bert-base-uncased (Devlin et al. 2019)")
def bert_base(num_classes: int, *, vocab_size: int, pad_token_id: int, max_length: int,
              pretrained: bool = False) -> nn.Module:
    return _build("bert_base", "bert-base-uncased", "BertConfig", num_classes, vocab_size,
                  pad_token_id, max_length, pretrained)


@register_model("distilbert", family="bert", modality="text",
                source="transformers DistilBertConfig() = distilbert-base-uncased (Sanh et al. 2019)")
def distilbert(num_classes: int, *, vocab_size: int, pad_token_id: int, max_length: int,
               pretrained: bool = False) -> nn.Module:
    return _build("distilbert", "distilbert-base-uncased", "DistilBertConfig", num_classes,
                  vocab_size, pad_token_id, max_length, pretrained)
