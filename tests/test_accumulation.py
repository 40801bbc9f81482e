"""Gradient accumulation over micro-batches (``RunSpec.micro_batch_size``): the gradient of a
whole batch, up to float rounding, for models without batch statistics (a small timm ViT,
a BERT config through kdray's text wrapper), with the CE and the KD loss, micro-batches that
divide the batch or not; a different gradient with BatchNorm (documented, not a bug); the
trainer's accumulated training; and the automatic halving on (simulated) CUDA OOM."""

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdray import RunSpec
from kdray.data import DatasetSplits, TensorData
from kdray.models import MODELS, build_model, register_model
from kdray.models.text import SequenceClassifier
from kdray.training.loop import Trainer, backward_in_micro_batches, kd_loss

B = 24


def tiny_vit(num_classes: int, *, image_size: int, in_channels: int = 3,
             pretrained: bool = False) -> nn.Module:
    """timm's ViT (the ``vit_base`` family) at a test size: 2 blocks of width 192."""
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=image_size,
                             patch_size=4, in_chans=in_channels, num_classes=num_classes, depth=2)


def tiny_bert(num_classes: int, *, vocab_size: int, pad_token_id: int, max_length: int,
              pretrained: bool = False) -> nn.Module:
    """A BERT config (the ``bert_base`` family) at a test size, no dropout."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=vocab_size, pad_token_id=pad_token_id, num_labels=num_classes,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=max(64, max_length), hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    return SequenceClassifier(
        transformers.AutoModelForSequenceClassification.from_config(config), pad_token_id)


class OutOfMemoryAbove(nn.Module):
    """The tiny ViT, raising CUDA's out-of-memory error for batches above ``limit`` (what a
    too-big batch does on a GPU), so the automatic micro-batch runs on the CPU."""

    limit = 8

    def __init__(self, num_classes, **kw):
        super().__init__()
        self.vit = tiny_vit(num_classes, **kw)

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"simulated: a batch of {len(x)} > {self.limit}")
        return self.vit(x)


@pytest.fixture(scope="module", autouse=True)
def test_archs():
    names = {"acc_tiny_vit": (tiny_vit, "vit", "image"), "acc_tiny_bert": (tiny_bert, "bert", "text"),
             "acc_oom_vit": (lambda n, **kw: OutOfMemoryAbove(n, **kw), "vit", "image")}
    for name, (fn, family, modality) in names.items():
        register_model(name, family=family, modality=modality)(fn)
    yield
    for name in names:
        del MODELS[name]


def gradients(model, x, y, loss_fn, micro):
    model.zero_grad(set_to_none=True)
    loss, correct, finite = backward_in_micro_batches(model, x, y, loss_fn, micro)
    return [p.grad.clone() for p in model.parameters()], float(loss), int(correct), bool(finite)


def losses(y, teacher_logits=None):
    def ce(logits, rows):
        return F.cross_entropy(logits.float(), y[rows])

    def kd(logits, rows):
        return kd_loss(logits, teacher_logits[rows], y[rows], 4.0, 0.8)
    return {"ce": ce, "kd": kd} if teacher_logits is not None else {"ce": ce}


def image_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 3, 16, 16, generator=g), torch.randint(0, 10, (B,), generator=g)


def text_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (B, 12), generator=g)
    ids[::3, 8:] = 0  # padding
    return ids, torch.randint(0, 3, (B,), generator=g)


@pytest.mark.parametrize("arch, batch, kwargs, classes", [
    ("acc_tiny_vit", image_batch, dict(image_size=16), 10),
    ("acc_tiny_bert", text_batch, dict(vocab_size=50, pad_token_id=0, max_length=12), 3),
], ids=["vit", "bert"])
@pytest.mark.parametrize("micro", [8, 5], ids=["dividing", "uneven"])
def test_micro_batches_give_the_batch_gradient(arch, batch, kwargs, classes, micro):
    torch.manual_seed(0)
    model = build_model(arch, classes, **kwargs).train()
    x, y = batch()
    teacher_logits = torch.randn(B, classes, generator=torch.Generator().manual_seed(1)) * 3
    for name, loss_fn in losses(y, teacher_logits).items():
        whole, loss_w, correct_w, finite_w = gradients(model, x, y, loss_fn, None)
        parts, loss_p, correct_p, finite_p = gradients(model, x, y, loss_fn, micro)
        assert finite_w and finite_p and correct_w == correct_p
        assert loss_p == pytest.approx(loss_w, rel=1e-5)
        scale = max(g.abs().max() for g in whole)
        for gw, gp in zip(whole, parts):
            assert torch.allclose(gw, gp, rtol=1e-4, atol=1e-6 * scale), name
        assert any(g.abs().max() > 0 for g in whole)


def test_batchnorm_micro_batches_are_a_different_gradient():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, image_size=16).train()
    x, y = image_batch()
    whole = gradients(model, x, y, losses(y)["ce"], None)[0]
    parts = gradients(model, x, y, losses(y)["ce"], 8)[0]
    rel = max(float((a - b).norm() / a.norm()) for a, b in zip(whole, parts) if a.norm() > 0)
    assert rel > 1e-2  # each micro-batch normalised by its own statistics


def vit_spec(**kw):
    return RunSpec(**{"dataset": "digits", "role": "nds", "arch": "acc_tiny_vit", "epochs": 1,
                      "batch_size": 32, "data": {"image_size": 16}, **kw})


# SGD for the end-to-end comparisons: AdamW's normalised step turns the rounding noise of a
# gradient that is zero in exact arithmetic (attention's key bias) into a step of size lr,
# so two AdamW trainings that differ only in rounding part ways on such weights
SGD = dict(optimizer="sgd", lr=0.01, momentum=0.9)


def assert_close_models(a: Trainer, b: Trainer):
    for (k, u), v in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(u, v, rtol=1e-4, atol=1e-6), (k, float((u - v).abs().max()))


@pytest.mark.trains
def test_trainer_accumulates_micro_batches_of_the_spec(digits):
    whole = Trainer(vit_spec(**SGD), digits, device="cpu")
    whole.fit()
    parts = Trainer(vit_spec(micro_batch_size=8, **SGD), digits, device="cpu")
    assert parts.micro_batch == 8
    parts.fit()
    assert_close_models(whole, parts)
    assert vit_spec(micro_batch_size=8).run_id != vit_spec().run_id


@pytest.mark.trains
def test_trainer_accumulates_text_micro_batches():
    g = torch.Generator().manual_seed(0)
    ids, labels = torch.randint(1, 50, (96, 12), generator=g), torch.randint(0, 2, (96,), generator=g)
    data = DatasetSplits(train=TensorData(ids[:64], labels[:64]), test=TensorData(ids[64:], labels[64:]),
                         num_classes=2, modality="text", mean=None, std=None, vocab_size=50,
                         pad_token_id=0, max_length=12)
    spec = RunSpec(dataset="hatexplain", role="nds", arch="acc_tiny_bert", epochs=1, batch_size=16,
                   **SGD)
    whole = Trainer(spec, data, device="cpu")
    whole.fit()
    parts = Trainer(spec.replace(micro_batch_size=4), data, device="cpu")
    parts.fit()
    assert_close_models(whole, parts)


@pytest.mark.trains
def test_out_of_memory_halves_the_micro_batch_and_retries(digits):
    reference = Trainer(vit_spec(micro_batch_size=8), digits, device="cpu")
    reference.fit()
    oom = Trainer(vit_spec(arch="acc_oom_vit"), digits, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        oom.fit()
    assert oom.micro_batch == 8 and oom.graph_off == "accumulating micro-batches of 8"
    assert [str(w.message).split(";")[0].split(": ", 1)[1] for w in caught
            if "out of GPU memory" in str(w.message)] == [
        "out of GPU memory with micro-batches of 32", "out of GPU memory with micro-batches of 16"]
    # the retries leave no trace: bitwise the run that used micro-batches of 8 throughout
    ref = list(reference.model.state_dict().values())
    got = list(oom.model.state_dict().values())  # the wrapper adds a "vit." prefix
    assert len(ref) == len(got) and all(torch.equal(u, v) for u, v in zip(ref, got))


def test_out_of_memory_is_raised_when_accumulation_is_not_automatic(digits):
    with pytest.raises(torch.cuda.OutOfMemoryError):  # the spec fixed its micro-batch
        Trainer(vit_spec(arch="acc_oom_vit", micro_batch_size=16), digits, device="cpu").fit()
    with pytest.raises(torch.cuda.OutOfMemoryError):  # turned off
        Trainer(vit_spec(arch="acc_oom_vit"), digits, device="cpu", auto_micro_batch=False).fit()


def test_micro_batch_size_is_checked():
    with pytest.raises(ValueError, match=r"^micro_batch_size: 0 is not >= 1"):
        vit_spec(micro_batch_size=0)
    with pytest.raises(ValueError, match=r"^micro_batch_size: 64 is not <= batch_size 32"):
        vit_spec(micro_batch_size=64)
    with pytest.raises(ValueError, match=r"^micro_batch_size: 1.5 is not an integer"):
        vit_spec(micro_batch_size=1.5)
