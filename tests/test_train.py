"""The training loop: KD loss, device augmentation, schedule, determinism, exact resume."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdray import RunSpec
from kdray.data import load_dataset
from kdray.train import N_VIEWS, Trainer, augment_views, kd_loss, lr_factor


def test_kd_loss_against_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    for T, alpha in [(1.0, 0.5), (4.0, 0.8), (20.0, 1.0), (2.0, 0.0)]:
        p_t = torch.softmax(t / T, dim=1)
        p_s = torch.softmax(s / T, dim=1)
        kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()  # KL(p_t || p_s), per sample, averaged
        ce = -torch.log_softmax(s, dim=1)[torch.arange(6), y].mean()
        expected = alpha * T * T * kl + (1 - alpha) * ce
        assert torch.allclose(kd_loss(s, t, y, T, alpha), expected, atol=1e-6)


def test_kd_term_vanishes_when_student_matches_teacher():
    s = torch.randn(4, 10)
    y = torch.zeros(4, dtype=torch.long)
    assert torch.allclose(kd_loss(s, s.clone(), y, 4.0, 1.0), torch.tensor(0.0), atol=1e-6)


def test_augment_views_is_crop_pad4_and_flip():
    x = torch.randint(0, 256, (N_VIEWS, 3, 8, 8), dtype=torch.uint8)
    x[:] = x[0]  # one image, every view
    views = torch.arange(N_VIEWS)
    out = augment_views(x, views)
    padded = F.pad(x[0], (4, 4, 4, 4))
    for v in [0, 1, 17, 80, 81, 161]:
        dy, dx, flip = (v // 2) // 9, (v // 2) % 9, v % 2
        expected = padded[:, dy:dy + 8, dx:dx + 8]
        if flip:
            expected = expected.flip(-1)
        assert torch.equal(out[v], expected), v
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert len({out[v].numpy().tobytes() for v in range(N_VIEWS)}) > 100  # views differ


def test_lr_schedules():
    s = RunSpec(dataset="digits", role="nds", arch="lenet5", epochs=100)
    assert [lr_factor(s, e) for e in (0, 29.9, 30, 60, 90, 99)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001, 0.001])
    c = s.replace(lr_schedule="cosine", lr_milestones=(), warmup_epochs=10.0)
    assert lr_factor(c, 5) == pytest.approx(0.5)
    assert lr_factor(c, 10) == pytest.approx(1.0)
    assert lr_factor(c, 55) == pytest.approx(0.5)
    lin = s.replace(lr_schedule="linear", lr_milestones=(), warmup_epochs=0.0)
    assert lr_factor(lin, 75) == pytest.approx(0.25)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {"image_size": 16})


def _spec(**kw):
    return RunSpec(**{"dataset": "digits", "role": "teacher", "arch": "resnet20", "epochs": 3,
                      "batch_size": 64, "data": {"image_size": 16}, **kw})


def _train(spec, data, teacher=None, stop_after=None, resume=None):
    tr = Trainer(spec, data, device="cpu", teacher=teacher)
    if resume is not None:
        tr.load_state_dict(resume)
    while tr.epoch < spec.epochs:
        tr.train_epoch()
        if stop_after is not None and tr.epoch == stop_after:
            return tr, tr.state_dict()
    return tr, None


def test_training_learns_and_is_deterministic(digits):
    spec = _spec(epochs=4, lr_milestones=())
    a, _ = _train(spec, digits)
    b, _ = _train(spec, digits)
    pa, labels = a.predict()
    pb, _ = b.predict()
    assert np.array_equal(pa, pb)
    assert (pa == labels).mean() > 0.5  # 4 epochs of ResNet-20 on 16 px digits: well above chance
    c, _ = _train(_spec(epochs=4, lr_milestones=(), seed=1), digits)
    assert not np.array_equal(c.predict()[0], pa) or not torch.equal(
        next(iter(c.model.state_dict().values())), next(iter(a.model.state_dict().values())))


def test_resume_equals_uninterrupted(digits):
    spec = _spec(epochs=3)
    full, _ = _train(spec, digits)
    _, state = _train(spec, digits, stop_after=2)
    # a fresh process would start from scratch: scramble the global RNG to prove it is restored
    torch.manual_seed(12345)
    resumed, _ = _train(spec, digits, resume=state)
    assert np.array_equal(full.predict()[0], resumed.predict()[0])
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_resume_of_a_distilled_student_equals_uninterrupted(digits):
    teacher, _ = _train(_spec(epochs=1), digits)
    spec = RunSpec(dataset="digits", role="ds", arch="lenet5", teacher_arch="resnet20",
                   temperature=4.0, alpha=0.8, epochs=2, batch_size=64, data={"image_size": 16})
    full, _ = _train(spec, digits, teacher=teacher.model)
    _, state = _train(spec, digits, teacher=teacher.model, stop_after=1)
    resumed, _ = _train(spec, digits, teacher=teacher.model, resume=state)
    assert np.array_equal(full.predict()[0], resumed.predict()[0])


def test_checkpoint_of_another_run_is_refused(digits):
    _, state = _train(_spec(epochs=2), digits, stop_after=1)
    other = Trainer(_spec(epochs=2, seed=5), digits, device="cpu")
    with pytest.raises(ValueError, match="belongs to run"):
        other.load_state_dict(state)


def test_ds_without_teacher_model_is_refused(digits):
    spec = RunSpec(dataset="digits", role="ds", arch="lenet5", teacher_arch="resnet20",
                   temperature=4.0, alpha=0.8, data={"image_size": 16})
    with pytest.raises(ValueError, match="teacher"):
        Trainer(spec, digits, device="cpu")


def test_epoch_metrics_are_finite(digits):
    tr = Trainer(_spec(epochs=1), digits, device="cpu")
    m = tr.train_epoch()
    assert m["epoch"] == 1 and math.isfinite(m["loss"]) and 0 <= m["train_accuracy"] <= 1
