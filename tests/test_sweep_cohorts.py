"""Cohorts in the sweep: grouping and caps, the plan's cohort column, a killed cohort trial
resumed from its checkpoint, a diverging student failing alone, a damaged teacher trained
again before its students (a real local Ray, tiny Trifeature)."""

import os

import numpy as np
import pytest

import faults
from conftest import STABLE_LR, TINY_TRIFEATURE
from kdray.sweep.grid import COHORT_MAX, Experiment, cohort_cap, cohorts, expand, parse_cohort_sizes
from kdray.sweep.plan import cohort_gpu_hours, format_plan, gpu_hours, plan_json
from kdray.store import MODEL, Store
from kdray.sweep.checkpoints import Cadence
from kdray.sweep.driver import run_sweep
from kdray.training.loop import divergence_message

EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0, 4.0), (0.8,), (0, 1),
                 recipe={"epochs": 2, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)
PAPER_T = tuple(float(t) for t in range(1, 11)) + (20.0, 30.0, 40.0)


def test_a_cohort_is_the_ds_runs_of_one_teacher_seed():
    exp = EXP.replace(temperatures=(1.0, 2.0, 4.0), alphas=(0.6, 0.8))
    plan = expand([exp])
    groups = cohorts(plan.ds)
    assert len(groups) == 2  # one per seed: 3 temperatures x 2 alphas each
    for g in groups:
        assert len(g) == 6 and len({s.teacher_spec().run_id for s in g}) == 1
        assert [(s.temperature, s.alpha) for s in g] == sorted((s.temperature, s.alpha) for s in g)
    assert [len(g) for g in cohorts(plan.stage1)] == [1] * 4  # teachers and NDS train alone
    # another recipe or dataset option is another cohort
    other = expand([exp.replace(name="lr", recipe={**exp.recipe, "lr": 0.05})]).ds
    assert len(cohorts(plan.ds + other)) == 4


def test_cohort_size_caps():
    paper = expand([EXP.replace(temperatures=PAPER_T, seeds=(0,))]).ds
    assert [len(g) for g in cohorts(paper)] == [13]  # the paper's 13 per teacher seed: one trial
    assert [len(g) for g in cohorts(paper, {"cnn": 5})] == [5, 5, 3]
    assert parse_cohort_sizes(["4"]) == dict.fromkeys(COHORT_MAX, 4)
    assert parse_cohort_sizes(["vit=2", "cnn=8"]) == {"vit": 2, "cnn": 8}
    for bad in ("0", "x", "resnet=2", "vit=-1"):
        with pytest.raises(ValueError, match=f"--cohort-size: {bad!r}"):
            parse_cohort_sizes([bad])
    imagenet = expand([Experiment("in", ("imagenet",), (("resnet50", "resnet18"),), PAPER_T,
                                  seeds=(0,))]).ds
    assert cohort_cap(imagenet[0]) == COHORT_MAX["imagenet"] == 4
    assert [len(g) for g in cohorts(imagenet)] == [4, 4, 4, 1]


def test_extension_makes_cohorts_of_only_the_new_runs(tmp_path):
    done = expand([EXP]).all
    wider = expand([EXP.replace(temperatures=(2.0, 4.0, 20.0, 30.0, 40.0))])
    pending = [s for s in wider.all if s.run_id not in {d.run_id for d in done}]
    groups = cohorts(pending)
    assert [sorted(s.temperature for s in g) for g in groups] == [[20.0, 30.0, 40.0]] * 2


def test_plan_charges_the_teacher_once_per_cohort(tmp_path):
    exp = EXP.replace(temperatures=PAPER_T, seeds=(0, 1, 2), recipe={}, data={})  # the paper's sizes
    plan = expand([exp])
    store = Store(tmp_path / "store")
    status = store.statuses([s.run_id for s in plan.all])
    text = format_plan(plan, status)
    stage2 = next(ln for ln in text.splitlines() if ln.startswith("tri") and ln.split()[1] == "2")
    runs, done, todo, trials = map(int, stage2.split()[2:6])
    assert (runs, done, todo, trials) == (39, 0, 39, 3)
    cohort_hours, alone_hours = map(float, stage2.split()[6:8])
    groups = cohorts(plan.ds)
    assert cohort_hours == pytest.approx(sum(cohort_gpu_hours(g) for g in groups), abs=0.06)
    assert alone_hours == pytest.approx(sum(gpu_hours(s) for s in plan.ds), abs=0.06)
    assert cohort_hours < alone_hours
    entries = plan_json(plan, status)
    assert len(entries) == len(plan)  # one entry per run
    by_cohort = {}
    for e in entries:
        by_cohort.setdefault(e["cohort"], []).append(e)
    ds_trials = [v for v in by_cohort.values() if v[0]["role"] == "ds"]
    assert len(ds_trials) == 3 and all(len(v) == 13 and v[0]["cohort_size"] == 13 for v in ds_trials)
    assert "cohorts: 45 runs in 9 trials" in text


@pytest.mark.ray
@pytest.mark.trains
def test_killed_cohort_resumes_every_student_from_its_checkpoint(ray_local, data_root, tmp_path,
                                                                 monkeypatch):
    one = EXP.replace(seeds=(0,))
    plan = expand([one])
    clean = Store(tmp_path / "clean")
    assert run_sweep([one], clean, data_dir=data_root).ok
    faults.inject(monkeypatch, f"1:{tmp_path / 'markers'}")  # each trial dies after epoch 1
    crashed = Store(tmp_path / "crashed")
    report = run_sweep([one], crashed, data_dir=data_root, max_failures=1,
                       cadence=Cadence(every_epochs=1))  # a resume checkpoint every epoch
    assert report.ok, report.format()
    assert len(os.listdir(tmp_path / "markers")) == len(plan.stage1) + 1  # the cohort died once
    records = {s.run_id: crashed.read_run_json(s.run_id) for s in plan.ds}
    assert all(r["resumed_from_epoch"] == 1 for r in records.values())
    assert all(r["cohort"] == sorted(records) for r in records.values())  # one trial, both
    for spec in plan.all:
        a = crashed.read_predictions(spec.run_id).column("pred").to_numpy()
        assert np.array_equal(a, clean.read_predictions(spec.run_id).column("pred").to_numpy())


@pytest.mark.ray
@pytest.mark.trains
def test_a_diverging_student_fails_alone_and_is_trained_again(ray_local, data_root, tmp_path):
    # T = 1e-39: the student's logits / T overflow float32, a NaN loss from the first batch
    one = EXP.replace(seeds=(0,), temperatures=(2.0, 1e-39, 4.0))
    store = Store(tmp_path / "store")
    report = run_sweep([one], store, data_dir=data_root)
    plan = expand([one])
    bad = next(s.run_id for s in plan.ds if s.temperature == 1e-39)
    assert report.failed == {bad: divergence_message(1)}
    assert "FAILED " + bad + ": loss became non-finite in epoch 1 (the run diverged; try a lower lr" \
        in report.format()
    assert set(report.ran) == {s.run_id for s in plan.all} - {bad}  # the others committed
    again = run_sweep([one], store, data_dir=data_root)
    assert set(again.failed) == {bad} and bad not in again.skipped  # trained again, not skipped


@pytest.mark.ray
@pytest.mark.trains
def test_a_teacher_with_damaged_weights_is_trained_again_first(ray_local, data_root, tmp_path):
    one = EXP.replace(seeds=(0,), temperatures=(2.0,))
    plan = expand([one])
    store = Store(tmp_path / "store")
    assert run_sweep([one.replace(temperatures=(4.0,))], store, data_dir=data_root).ok
    teacher = plan.teachers[0].run_id
    path = store.run_path(teacher, MODEL)
    damaged = bytearray(store.read_bytes(path))
    damaged[-1] ^= 0xFF  # one flipped bit pattern, same size
    store.write_bytes(path, bytes(damaged))
    assert store.status(teacher).complete and not store.status(teacher, verify_model=True).complete
    report = run_sweep([one], store, data_dir=data_root)
    assert report.ok and set(report.ran) == {teacher, plan.ds[0].run_id}
    record = store.read_run_json(plan.ds[0].run_id)
    assert record["started"] >= store.read_run_json(teacher)["finished"]
    assert store.status(teacher, verify_model=True).complete
