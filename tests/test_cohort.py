"""Cohorts: the DS runs of one teacher seed trained in lockstep end exactly as they would
alone (CPU): weights and predictions, with mixed alphas, after a resume, with dropout in the
student, and with a student that diverges and fails alone."""

import io

import numpy as np
import pytest
import torch

from conftest import STABLE_LR
from kdray import RunSpec
from kdray.data import load_dataset
from kdray.training.loop import Trainer, check_cohort, divergence_message

pytestmark = pytest.mark.trains


@pytest.fixture
def teacher(digits_teacher):
    return digits_teacher


def ds(temperature, alpha=0.8, arch="lenet5", **kw):
    return RunSpec(dataset="digits", role="ds", arch=arch, teacher_arch="resnet20",
                   temperature=temperature, alpha=alpha, epochs=2, batch_size=64,
                   data={"image_size": 16}, **{"lr": STABLE_LR, **kw})


def train(specs, data, teacher, stop_after=None, resume=None):
    tr = Trainer(specs, data, device="cpu", teacher=teacher)
    if resume is not None:  # through bytes, as a checkpoint file is
        buf = io.BytesIO()
        torch.save(resume, buf)
        buf.seek(0)
        tr.load_state_dict(torch.load(buf, weights_only=False))
    while tr.epoch < tr.spec.epochs and tr.active:
        tr.train_epoch()
        if stop_after is not None and tr.epoch == stop_after:
            return tr, tr.state_dict()
    return tr, None


def assert_same_run(a: Trainer, run_a: str, b: Trainer, run_b: str) -> None:
    ma = next(s for s in a.students if s.run_id == run_a).model.state_dict()
    mb = next(s for s in b.students if s.run_id == run_b).model.state_dict()
    assert list(ma) == list(mb)
    for k in ma:
        assert torch.equal(ma[k], mb[k]), (run_a, k)
    pa, la = a.predict_all()
    pb, lb = b.predict_all()
    assert np.array_equal(la, lb) and np.array_equal(pa[run_a], pb[run_b]), run_a


@pytest.mark.parametrize("members", [
    [(4.0, 0.8)],
    [(2.0, 0.8), (8.0, 0.6)],
    [(1.0, 0.8), (2.0, 0.6), (4.0, 0.8), (8.0, 1.0), (20.0, 0.0)],
], ids=["1", "2", "5-mixed-alphas"])
def test_every_student_of_a_cohort_ends_as_it_would_alone(digits, teacher, members):
    specs = [ds(t, a) for t, a in members]
    cohort, _ = train(specs, digits, teacher)
    for spec in specs:
        alone, _ = train([spec], digits, teacher)
        assert_same_run(cohort, spec.run_id, alone, spec.run_id)


def test_resumed_cohort_equals_uninterrupted(digits, teacher):
    specs = [ds(2.0), ds(4.0), ds(4.0, 0.6)]
    full, _ = train(specs, digits, teacher)
    _, state = train(specs, digits, teacher, stop_after=1)
    torch.manual_seed(999)  # a new process: the global RNG is whatever it is
    resumed, _ = train(specs, digits, teacher, resume=state)
    for spec in specs:
        assert_same_run(full, spec.run_id, resumed, spec.run_id)
    # a checkpoint may hold more students than the cohort resuming from it (runs committed since)
    part, _ = train(specs[1:], digits, teacher, resume=state)
    for spec in specs[1:]:
        assert_same_run(full, spec.run_id, part, spec.run_id)


def test_students_draw_random_numbers_from_their_own_rng(digits, teacher, dropout_arch):
    specs = [ds(2.0, arch=dropout_arch), ds(4.0, arch=dropout_arch), ds(8.0, 0.5, arch=dropout_arch)]
    cohort, _ = train(specs, digits, teacher)
    for spec in specs:
        alone, _ = train([spec], digits, teacher)
        assert_same_run(cohort, spec.run_id, alone, spec.run_id)


def test_a_diverging_student_fails_alone(digits, teacher):
    # T = 1e-39: the student's logits / T overflow float32, so its loss is NaN from the start
    good, bad = ds(4.0), ds(1e-39)
    cohort, _ = train([good, bad], digits, teacher)
    assert cohort.failed == {bad.run_id: divergence_message(1)}
    assert [s.run_id for s in cohort.active] == [good.run_id]
    assert cohort.epoch == 2
    alone, _ = train([good], digits, teacher)
    assert_same_run(cohort, good.run_id, alone, good.run_id)
    preds, _ = cohort.predict_all()
    assert set(preds) == {good.run_id}


def test_cohort_membership_is_checked():
    check_cohort([ds(2.0), ds(4.0, 0.6)])
    with pytest.raises(ValueError, match="differ in more than temperature and alpha"):
        check_cohort([ds(2.0), ds(4.0, seed=1)])
    with pytest.raises(ValueError, match="appear twice"):
        check_cohort([ds(2.0), ds(2.0)])
    assert ds(2.0).cohort_key == ds(40.0, 0.1).cohort_key != ds(2.0, lr=0.05).cohort_key


def test_streamed_augmentation_does_not_depend_on_the_worker_count(tmp_path):
    """ImageNet/CelebA: a sample's crop is a function of (seed, epoch, index) alone."""
    from kdray.data import write_tiny

    data = load_dataset("imagenet", write_tiny("imagenet", tmp_path), root=tmp_path)
    train = data.train
    train.augmentation = "random_resized_crop_flip"

    def epoch(workers: int, seed: int, number: int) -> torch.Tensor:
        train.set_epoch(seed, number)
        loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(number))
        return torch.cat([x for x, _ in loader])

    alone = epoch(0, seed=0, number=1)
    assert torch.equal(alone, epoch(2, seed=0, number=1))  # another worker count: same crops
    assert not torch.equal(alone, epoch(0, seed=0, number=2))  # another epoch: other crops
