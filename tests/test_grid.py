"""Grid expansion: counts, dedup, teacher/DS seed pairing, filters, invalid axes."""

import pytest

from kdray.sweep.grid import Experiment, expand, narrow

TRI = dict(name="tri", datasets=("trifeature-shape",), pairs=(("resnet20", "lenet5"),),
           temperatures=(2.0, 4.0, 8.0), alphas=(0.8,), seeds=(0, 1, 2, 3, 4), recipe={"epochs": 2})


@pytest.mark.parametrize("kw, counts", [
    ({}, (5, 5, 15)),
    ({"alphas": (0.6, 0.8)}, (5, 5, 30)),
    ({"datasets": ("trifeature-shape", "trifeature-texture")}, (10, 10, 30)),
    ({"pairs": (("resnet20", "lenet5"), ("resnet56", "lenet5"))}, (10, 5, 30)),
    ({"pairs": (("resnet56", "lenet5"), ("resnet56", "resnet20"))}, (5, 10, 30)),
    ({"seeds": (7,), "temperatures": (1.0,)}, (1, 1, 1)),
])
def test_counts(kw, counts):
    plan = expand([Experiment(**{**TRI, **kw})])
    assert (len(plan.teachers), len(plan.nds), len(plan.ds)) == counts
    ids = [s.run_id for s in plan.all]
    assert len(ids) == len(set(ids))


def test_overlapping_experiments_share_teachers_and_nds():
    a = Experiment(**TRI)
    b = Experiment(**{**TRI, "name": "tri-high", "temperatures": (20.0, 30.0, 40.0)})
    c = Experiment(**{**TRI, "name": "tri-again"})  # the same runs again
    plan = expand([a, b, c])
    assert (len(plan.teachers), len(plan.nds), len(plan.ds)) == (5, 5, 30)
    assert plan.experiment[plan.teachers[0].run_id] == "tri"


def test_ds_seed_k_uses_teacher_seed_k():
    plan = expand([Experiment(**TRI)])
    teachers = {t.run_id: t for t in plan.teachers}
    for ds in plan.ds:
        t = teachers[ds.teacher_spec().run_id]
        assert t.seed == ds.seed and t.arch == ds.teacher_arch and t.epochs == ds.epochs
    assert plan.group[plan.ds[0].run_id] == "trifeature-shape/resnet20-lenet5"
    assert plan.group[plan.teachers[0].run_id] == "trifeature-shape/resnet20-lenet5"


@pytest.mark.parametrize("kw, message", [
    ({"datasets": ()}, "tri: datasets: empty"),
    ({"temperatures": ()}, "tri: temperatures: empty"),
    ({"seeds": ()}, "tri: seeds: empty"),
    ({"datasets": ("mnist",)}, "tri: datasets: 'mnist' is not a registered dataset"),
    ({"pairs": (("resnet20", "lenet6"),)}, "tri: pairs: 'lenet6' is not a registered model"),
    ({"temperatures": (2.0, -1.0)}, "tri: temperatures: -1.0 is not > 0"),
    ({"temperatures": (0,)}, "tri: temperatures: 0 is not > 0"),
    ({"alphas": (1.2,)}, "tri: alphas: 1.2 is not in [0, 1]"),
    ({"temperatures": (2.0, 2.0)}, "tri: temperatures: 2.0 appears twice"),
    ({"seeds": (0, 0)}, "tri: seeds: 0 appears twice"),
    ({"seeds": (-1,)}, "tri: seeds: -1 is not an integer >= 0"),
    ({"recipe": {"epochs": 0}}, "tri: epochs: 0 is not >= 1"),
    ({"recipe": {"epoch": 3}}, "unexpected keyword"),
    ({"data": {"image_size": 3}}, "image_size"),
])
def test_invalid_axes(kw, message):
    with pytest.raises((ValueError, TypeError)) as e:
        Experiment(**{**TRI, **kw})
    assert message in str(e.value)


def test_duplicate_experiment_names():
    with pytest.raises(ValueError, match="appear twice"):
        expand([Experiment(**TRI), Experiment(**TRI)])


def test_narrow_filters_and_extends():
    exps = [Experiment(**TRI), Experiment(**{**TRI, "name": "tex", "datasets": ("trifeature-texture",)})]
    only = narrow(exps, datasets=["trifeature-texture"])
    assert [e.name for e in only] == ["tex"]
    ext = expand(narrow(exps, temperatures=[20, 30]))
    base = expand(exps)
    assert {s.run_id for s in ext.stage1} == {s.run_id for s in base.stage1}  # reused
    assert {s.temperature for s in ext.ds} == {20.0, 30.0}
    more = expand(narrow(exps, seeds=[0, 1, 2, 3, 4, 5]))
    assert len(more.ds) - len(base.ds) == 6 and len(more.teachers) == 12
    assert {s.epochs for s in expand(narrow(exps, recipe={"epochs": 9})).all} == {9}
    with pytest.raises(ValueError, match="--datasets: 'cifar10' is not in this sweep"):
        narrow(exps, datasets=["cifar10"])
