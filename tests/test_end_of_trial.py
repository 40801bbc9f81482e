"""The end of a trial, on the CPU: evaluation that runs out of memory halves its batch and
predicts exactly what an unconstrained evaluation predicts; after training, evaluation
first frees what only training held."""

import numpy as np
import pytest
import torch

from conftest import STABLE_LR
from kdray import RunSpec
from kdray.data import TensorData
from kdray.training import gpu
from kdray.training.loop import Trainer
from kdray.training.teacher_logits import TeacherLogits

pytestmark = pytest.mark.trains

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _trained(digits, teacher=None, **kw):
    spec = RunSpec(**{"dataset": "digits", "role": "teacher", "arch": "lenet5", "epochs": 1,
                      "batch_size": 100, "data": {"image_size": 16}, "lr": STABLE_LR, **kw})
    trainer = Trainer(spec, digits, device="cpu", teacher=teacher, num_workers=0)
    trainer.fit()
    return trainer


def _fail_above(model, limit: int, error=OOM("CUDA out of memory. Tried to allocate 2 GiB")):
    """Make ``model`` raise ``error`` on a batch of more than ``limit`` samples."""
    def hook(_module, args):
        if len(args[0]) > limit:
            raise error
    return model.register_forward_pre_hook(hook)


class _Listed(torch.utils.data.Dataset):
    """The test split as a map-style dataset: the DataLoader path of predict_all."""

    def __init__(self, split: TensorData) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i):
        return self.split.x[i], self.split.y[i]


@pytest.mark.parametrize("listed", [False, True], ids=["in-memory", "dataloader"])
def test_out_of_memory_halves_the_batch_and_predicts_the_same(digits, listed):
    trainer = _trained(digits)
    split = _Listed(digits.test) if listed else digits.test
    expected, labels = trainer.predict_all(split, batch_size=200)
    assert trainer.eval_batch_sizes == [200] and trainer.eval_batch_size is None
    _fail_above(trainer.model, 30)
    with pytest.warns(UserWarning, match="out of memory with batches of 200"):
        preds, labels2 = trainer.predict_all(split, batch_size=200)
    assert trainer.eval_batch_sizes == [200, 100, 50, 25]
    assert trainer.eval_batch_size == 25
    assert np.array_equal(preds[trainer.spec.run_id], expected[trainer.spec.run_id])
    assert np.array_equal(labels2, labels)


def test_a_batch_that_fails_late_is_predicted_again_not_twice(digits):
    """Out of memory at the third batch only: the two batches done are kept, the rest is
    predicted in halves, and no sample is predicted twice."""
    trainer = _trained(digits)
    expected, labels = trainer.predict_all(batch_size=64)
    assert len(labels) > 3 * 64
    seen = []

    def third_fails(_module, args):
        seen.append(len(args[0]))
        if len(seen) == 3:
            raise OOM("CUDA out of memory")
    trainer.model.register_forward_pre_hook(third_fails)
    with pytest.warns(UserWarning, match="batches of 64; trying 32"):
        preds, labels2 = trainer.predict_all(batch_size=64)
    assert trainer.eval_batch_sizes == [64, 32]
    assert seen[:4] == [64, 64, 64, 32] and sum(seen) - 64 == len(labels)  # the failed one aside
    assert np.array_equal(preds[trainer.spec.run_id], expected[trainer.spec.run_id])
    assert np.array_equal(labels2, labels)


def test_out_of_memory_at_one_sample_fails_clearly_and_other_errors_pass(digits):
    trainer = _trained(digits)
    handle = _fail_above(trainer.model, 0)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="batch of 1 sample") as e:
        trainer.predict_all(batch_size=4)
    assert trainer.eval_batch_sizes == [4, 2, 1] and isinstance(e.value.__cause__, OOM)
    handle.remove()
    handle = _fail_above(trainer.model, 0, ValueError("not memory"))
    with pytest.raises(ValueError, match="not memory"):
        trainer.predict_all(batch_size=4)
    handle.remove()
    _fail_above(trainer.model, 0, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        trainer.predict_all(batch_size=4)
    assert trainer.eval_batch_sizes == [4]


def test_out_of_memory_errors_are_recognised():
    assert gpu.is_out_of_memory(OOM("CUDA out of memory"))
    assert gpu.is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert gpu.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not gpu.is_out_of_memory(RuntimeError("size mismatch"))
    assert not gpu.is_out_of_memory(ValueError("out of memory"))


def test_evaluation_after_training_frees_the_teacher_logit_table(digits, digits_teacher):
    trainer = _trained(digits, teacher=digits_teacher, role="ds", teacher_arch="resnet20",
                       temperature=4.0, alpha=0.8)
    # a second trainer records the table while training the same spec: same predictions
    recording = Trainer(trainer.spec, digits, device="cpu", teacher=digits_teacher)
    recording.use_teacher_logits(TeacherLogits(recording.teacher_logits_shape(), recording.device))
    recording.fit()
    assert recording.teacher_logits.complete
    preds, _ = recording.predict_all()
    assert recording.teacher_logits is None and recording._graph is None
    assert np.array_equal(preds[trainer.spec.run_id], trainer.predict()[0])


def test_evaluation_during_training_keeps_the_table(digits, digits_teacher):
    spec = RunSpec(dataset="digits", role="ds", arch="lenet5", teacher_arch="resnet20",
                   temperature=4.0, alpha=0.8, epochs=2, batch_size=100,
                   data={"image_size": 16}, lr=STABLE_LR)
    trainer = Trainer(spec, digits, device="cpu", teacher=digits_teacher)
    trainer.use_teacher_logits(TeacherLogits(trainer.teacher_logits_shape(), trainer.device))
    trainer.train_epoch()
    trainer.predict_all()
    assert not trainer.finished and trainer.teacher_logits is not None


# ----------------------------------------------------------------------------------------
# A checkpoint after the last epoch: a trial that fails in evaluation trains nothing again
# ----------------------------------------------------------------------------------------
def test_a_trial_that_fails_in_evaluation_resumes_at_its_last_epoch(tmp_path, monkeypatch):
    import json
    import os

    from ray import tune

    from kdray.store import Store
    from kdray.sweep.checkpoints import META, Cadence
    from kdray.sweep.trainable import Reporter
    from kdray.training.state import STATE, load_state
    from kdray.trial import run

    spec = RunSpec(dataset="digits", role="teacher", arch="lenet5", epochs=2, batch_size=100,
                   data={"image_size": 16}, lr=STABLE_LR)
    undisturbed = run(spec, Store(str(tmp_path / "undisturbed")), device="cpu", num_workers=0)
    saved = []  # what Tune keeps of each checkpoint a report carries

    def report(row, checkpoint=None):
        if checkpoint is not None:
            with checkpoint.as_directory() as d, open(os.path.join(d, META)) as f:
                saved.append((json.load(f), load_state(os.path.join(d, STATE))))
    monkeypatch.setattr(tune, "report", report)
    epochs, predict = [], Trainer.predict_all

    def counted(trainer):
        epochs.append(trainer.epoch)
        return train_epoch(trainer)

    def fails_once(trainer, *a, **kw):
        if not failed:
            failed.append(trainer.epoch)
            raise OOM("CUDA out of memory (in evaluation)")
        return predict(trainer, *a, **kw)
    failed = []
    train_epoch = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", counted)
    monkeypatch.setattr(Trainer, "predict_all", fails_once)
    store = Store(str(tmp_path / "store"))
    cadence = Cadence(every_epochs=10)  # no checkpoint by the cadence in 2 epochs
    with pytest.raises(OOM, match="in evaluation"):
        run(spec, store, device="cpu", num_workers=0, on_epoch=Reporter([spec], cadence, 0).epoch)
    assert epochs == [0, 1] and failed == [2] and [meta["epoch"] for meta, _ in saved] == [2]
    assert not store.status(spec.run_id).complete
    torch.manual_seed(777)  # a retry is a fresh process: nothing comes from this one
    record = run(spec, store, device="cpu", num_workers=0, resume=saved[0][1],
                 on_epoch=Reporter([spec], cadence, 2).epoch)
    assert epochs == [0, 1]  # the retry trained no epoch: it evaluated and committed
    assert record["resumed_from_epoch"] == 2 and "eval_batch_size" not in record
    for key in ("predictions_sha256", "model_sha256"):  # bitwise the undisturbed run's
        assert record[key] == undisturbed[key], key
