"""The static-buffer step (``kdray.training.graph``), run eagerly on the CPU, equals the plain loop it
replaced bitwise: weights and predictions, for a teacher, a DS cohort with mixed alphas, a
student whose forward draws random numbers, and AdamW with warm-up and a cosine schedule.
Also: the buffers and tallies a CUDA graph would read keep their storage, the graph-ready
optimisers (device learning rate) track the schedule and resume exactly, and the switches
that turn capture off."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import STABLE_LR
from kdray import RunSpec
from kdray.training import gpu
from kdray.training.graph import StaticBatch
from kdray.models import build_model
from kdray.training.loop import N_VIEWS, Trainer, augment_views, epoch_seed, kd_loss, lr_factor

pytestmark = pytest.mark.trains


# ----------------------------------------------------------------------------------------
# The reference: the training loop as it was before the static-buffer step
# ----------------------------------------------------------------------------------------
def reference_run(specs, data, teacher=None):
    """The plain loop (kdray.training.loop before this change), written out: per batch, gather by
    advanced indexing, augment, normalise, the teacher's forward once, then per student its
    own CPU RNG state, forward, loss, zero_grad, backward, optimiser (fused, as
    ``kdray.training.step.build_optimizer`` makes it on the CPU) and schedule step.
    Returns ``[(model, test predictions)]`` in the order of ``specs``."""
    spec = specs[0]
    b = min(spec.batch_size, len(data.train))
    steps = len(data.train) // b
    students = []
    for sp in specs:
        torch.manual_seed(sp.seed)
        model = build_model(sp.arch, data.num_classes, pretrained=False, **data.model_kwargs())
        decay, no_decay = [], []
        for _, p in model.named_parameters():
            (no_decay if p.ndim <= 1 and sp.optimizer == "adamw" else decay).append(p)
        groups = [{"params": decay, "weight_decay": sp.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = (torch.optim.SGD(groups, lr=sp.lr, momentum=sp.momentum or 0.0, fused=True)
               if sp.optimizer == "sgd" else torch.optim.AdamW(groups, lr=sp.lr, fused=True))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k, sp=sp: lr_factor(sp, k / steps))
        students.append({"spec": sp, "model": model, "opt": opt, "sched": sched,
                         "rng": torch.get_rng_state()})
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    augment = spec.augmentation == "crop_flip"
    x_all, y_all = data.train.x, data.train.y
    for epoch in range(spec.epochs):
        for st in students:
            st["model"].train()
        g = torch.Generator().manual_seed(epoch_seed(spec.seed, epoch))
        order = torch.randperm(len(y_all), generator=g)
        views = torch.randint(0, N_VIEWS, (len(y_all),), generator=g) if augment else None
        for i in range(steps):
            idx = order[i * b:(i + 1) * b]
            xb = augment_views(x_all[idx], views[idx]) if augment else x_all[idx]
            x, y = (xb.float() / 255.0 - mean) / std, y_all[idx]
            t = None
            if teacher is not None:
                with torch.no_grad():
                    t = teacher(x)
            for st in students:
                sp = st["spec"]
                torch.set_rng_state(st["rng"])
                logits = st["model"](x)
                loss = (kd_loss(logits, t, y, sp.temperature, sp.alpha) if t is not None
                        else F.cross_entropy(logits.float(), y))
                st["opt"].zero_grad(set_to_none=True)
                loss.backward()
                st["opt"].step()
                st["sched"].step()
                st["rng"] = torch.get_rng_state()
    out = []
    with torch.inference_mode():
        x_test = (data.test.x.float() / 255.0 - mean) / std
        for st in students:
            st["model"].eval()
            preds = torch.cat([st["model"](x_test[i:i + 512]).argmax(-1)
                               for i in range(0, len(x_test), 512)])
            out.append((st["model"], preds.numpy()))
    return out


def assert_bitwise(trainer: Trainer, reference) -> None:
    assert not trainer.failed  # NaN weights are never equal: a diverged run says so here
    preds, _ = trainer.predict_all()
    for s, (model, ref_preds) in zip(trainer.students, reference):
        ours, theirs = s.model.state_dict(), model.state_dict()
        assert list(ours) == list(theirs)
        for k in ours:
            assert torch.equal(ours[k], theirs[k]), (s.run_id, k)
        assert np.array_equal(preds[s.run_id], ref_preds), s.run_id


# ----------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------
@pytest.fixture
def teacher(digits_teacher):
    return digits_teacher


def spec_(role="teacher", arch="resnet20", **kw):
    return RunSpec(**{"dataset": "digits", "role": role, "arch": arch, "epochs": 2,
                      "batch_size": 64, "data": {"image_size": 16}, "lr": STABLE_LR, **kw})


def ds(t, a=0.8, arch="lenet5", **kw):
    return spec_("ds", arch, teacher_arch="resnet20", temperature=t, alpha=a, **kw)


# ----------------------------------------------------------------------------------------
# Bitwise equal to the plain loop
# ----------------------------------------------------------------------------------------
def test_teacher_equals_the_plain_loop(digits):
    spec = spec_()
    tr = Trainer(spec, digits, device="cpu")
    tr.fit()
    assert tr.graph_off == "not on CUDA" and not tr.captured
    assert_bitwise(tr, reference_run([spec], digits))


def test_ds_cohort_with_mixed_alphas_equals_the_plain_loop(digits, teacher):
    specs = [ds(2.0), ds(8.0, 0.6), ds(4.0, 1.0)]
    tr = Trainer(specs, digits, device="cpu", teacher=teacher)
    tr.fit()
    assert_bitwise(tr, reference_run(specs, digits, teacher))


def test_students_with_dropout_equal_the_plain_loop(digits, teacher, dropout_arch):
    specs = [ds(2.0, arch=dropout_arch), ds(4.0, 0.5, arch=dropout_arch)]
    tr = Trainer(specs, digits, device="cpu", teacher=teacher)
    tr.fit()
    assert_bitwise(tr, reference_run(specs, digits, teacher))
    assert all(not s.draws_random for s in tr.students)  # watched only while warming a graph


def test_adamw_warmup_cosine_without_augmentation_equals_the_plain_loop(digits):
    spec = spec_("nds", "lenet5", optimizer="adamw", lr=1e-3, weight_decay=0.05,
                 lr_schedule="cosine", lr_milestones=(), warmup_epochs=0.5, augmentation="none")
    tr = Trainer(spec, digits, device="cpu")
    tr.fit()
    assert_bitwise(tr, reference_run([spec], digits))


# ----------------------------------------------------------------------------------------
# What a CUDA graph needs of the step, checked on the CPU
# ----------------------------------------------------------------------------------------
def test_static_buffers_are_filled_in_place():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y, views = torch.randint(0, 10, (50,)), torch.randint(0, N_VIEWS, (50,))
    batch = StaticBatch(x, 16, with_views=True)
    ptrs = (batch.x.data_ptr(), batch.y.data_ptr(), batch.views.data_ptr())
    order = torch.randperm(50)
    for i in range(3):
        idx = order[i * 16:(i + 1) * 16]
        batch.fill(x, y, views, idx)
        assert torch.equal(batch.x, x[idx]) and torch.equal(batch.y, y[idx])
        assert torch.equal(batch.views, views[idx])
        assert (batch.x.data_ptr(), batch.y.data_ptr(), batch.views.data_ptr()) == ptrs


def test_tallies_keep_their_storage_across_epochs(digits):
    tr = Trainer(spec_("nds", "lenet5"), digits, device="cpu")
    tally = tr.students[0].tally
    ptrs = {k: v.data_ptr() for k, v in tally.items()}
    first = tr.train_epoch()[tr.spec.run_id]
    second = tr.train_epoch()[tr.spec.run_id]
    assert {k: v.data_ptr() for k, v in tr.students[0].tally.items()} == ptrs
    assert tr.students[0].tally is tally
    assert 0 < second["loss"] < first["loss"]  # zeroed per epoch, not summed across epochs


class GraphReadyOnCPU(Trainer):
    """The CUDA path's graph-ready optimisers (learning rate on the device, written by the
    schedule) run eagerly on the CPU: the graph itself needs CUDA."""

    def _why_not_captured(self, cuda_graph):
        return None

    def _step_graph(self, students):
        return None


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_graph_ready_optimisers_follow_the_schedule_on_one_lr_tensor(digits, optimizer):
    recipe = ({"lr": 1e-3, "lr_schedule": "cosine", "lr_milestones": (), "warmup_epochs": 0.5}
              if optimizer == "adamw" else {"lr": 0.05, "lr_milestones": (1,)})
    spec = spec_("nds", "lenet5", optimizer=optimizer, **recipe)
    tr = GraphReadyOnCPU(spec, digits, device="cpu")
    s = tr.students[0]
    assert s.lr is not None and all(g["lr"] is s.lr for g in s.optimizer.param_groups)
    for epoch in range(2):
        metrics = tr.train_epoch()[spec.run_id]
        expected = spec.lr * lr_factor(spec, epoch + 1)
        assert all(g["lr"] is s.lr for g in s.optimizer.param_groups)  # written in place
        assert float(s.lr) == pytest.approx(expected, rel=1e-6)
        assert metrics["lr"] == pytest.approx(expected, rel=1e-6)
    # the same training as the plain optimiser (a float lr), up to rounding
    plain = Trainer(spec, digits, device="cpu")
    plain.fit()
    for (k, a), b in zip(s.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), k


def test_graph_ready_checkpoint_holds_floats_and_resumes_exactly(digits):
    spec = spec_("nds", "lenet5", epochs=3, lr=0.01)
    full = GraphReadyOnCPU(spec, digits, device="cpu")
    full.fit()
    part = GraphReadyOnCPU(spec, digits, device="cpu")
    part.train_epoch()
    state = part.state_dict()
    st = state["students"][spec.run_id]
    assert all(isinstance(g["lr"], float) for g in st["optimizer"]["param_groups"])
    assert all(isinstance(v, float) for v in st["scheduler"]["_last_lr"])
    resumed = GraphReadyOnCPU(spec, digits, device="cpu")
    lr = resumed.students[0].lr
    resumed.load_state_dict(state)
    assert all(g["lr"] is lr for g in resumed.students[0].optimizer.param_groups)
    resumed.fit()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    # a plain (CPU) trainer resumes from it with its own optimiser (a float lr), and back
    plain = Trainer(spec, digits, device="cpu")
    plain.load_state_dict(state)
    group = plain.students[0].optimizer.param_groups[0]
    assert isinstance(group["lr"], float) and group["fused"] and not group.get("capturable")
    plain.train_epoch()
    again = GraphReadyOnCPU(spec, digits, device="cpu")
    again.load_state_dict(plain.state_dict())
    assert again.students[0].optimizer.param_groups[0]["fused"]
    again.fit()  # the same training, up to the kernels' rounding
    for (k, a), b in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        if a.is_floating_point():
            assert float((a - b).norm() / a.norm()) < 1e-2, k


def test_capture_switches(digits, monkeypatch):
    assert gpu.graphs_enabled(None, {}) and not gpu.graphs_enabled(False, {})
    assert not gpu.graphs_enabled(None, {gpu.GRAPH_ENV: "0"})
    assert gpu.graphs_enabled(True, {gpu.GRAPH_ENV: "off"})
    assert Trainer(spec_("nds", "lenet5"), digits, device="cpu",
                   cuda_graph=False).graph_off == "turned off"
    monkeypatch.setenv(gpu.GRAPH_ENV, "false")
    assert Trainer(spec_("nds", "lenet5"), digits, device="cpu").graph_off == "turned off"
    monkeypatch.delenv(gpu.GRAPH_ENV)
    assert Trainer(spec_("nds", "lenet5", micro_batch_size=16), digits,
                   device="cpu", cuda_graph=True).graph_off == "not on CUDA"

    tr = Trainer(spec_("nds", "lenet5"), digits, device="cpu")
    tr.cuda = True  # what a CUDA trainer decides
    assert tr._why_not_captured(None) is None
    assert tr._why_not_captured(False) == "turned off"
    tr.micro_batch = 16
    assert tr._why_not_captured(None) == "accumulating micro-batches"
