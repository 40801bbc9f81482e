"""RunSpec: defaults, identity (stable, round trip), teacher spec, every invalid case."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdray import RunSpec
from kdray.spec import ADDED_FIELDS

TEACHER = dict(dataset="trifeature-shape", role="teacher", arch="resnet20", seed=0)
DS = dict(dataset="trifeature-shape", role="ds", arch="lenet5", teacher_arch="resnet20",
          temperature=4, alpha=0.8, seed=3)


def test_defaults_are_the_papers_recipe():
    s = RunSpec(**TEACHER)
    assert (s.epochs, s.batch_size, s.optimizer, s.lr, s.momentum, s.weight_decay) == \
        (100, 64, "sgd", 0.1, 0.9, 1e-3)
    assert s.lr_schedule == "multistep" and s.lr_milestones == (30, 60, 90) and s.lr_gamma == 0.1
    assert s.augmentation == "crop_flip"
    assert s.data["image_size"] == 224  # the paper's Trifeature size
    assert RunSpec(dataset="digits", role="nds", arch="lenet5").batch_size == 128


def test_shorter_runs_scale_the_milestones():
    assert RunSpec(**TEACHER, epochs=10).lr_milestones == (3, 6, 9)
    assert RunSpec(**TEACHER, epochs=3).lr_milestones == (1, 2)
    assert RunSpec(**TEACHER, epochs=10, lr_milestones=(5,)).lr_milestones == (5,)


def test_run_id_is_readable_and_pinned():
    s = RunSpec(**DS)
    assert s.run_id.startswith("trifeature-shape-lenet5-ds-T4-a0.8-s3-")
    assert RunSpec(**TEACHER).run_id.startswith("trifeature-shape-resnet20-teacher-s0-")
    # a change to the canonical JSON would silently orphan every stored run: pin one
    assert RunSpec(dataset="digits", role="teacher", arch="resnet20").canonical_json() == (
        '{"alpha":null,"arch":"resnet20","augmentation":"crop_flip","batch_size":128,'
        '"data":{"image_size":32,"split_seed":0,"test_fraction":0.25},"dataset":"digits",'
        '"epochs":100,"lr":0.1,"lr_gamma":0.1,"lr_milestones":[30,60,90],"lr_schedule":"multistep",'
        '"momentum":0.9,"optimizer":"sgd","pretrained":false,"role":"teacher","seed":0,'
        '"teacher_arch":null,"temperature":null,"warmup_epochs":0.0,"weight_decay":0.001}')


def test_run_id_is_stable_across_processes():
    code = ("from kdray import RunSpec; print(RunSpec(dataset='trifeature-shape', role='ds', "
            "arch='lenet5', teacher_arch='resnet20', temperature=4, alpha=0.8, seed=3).run_id)")
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": h}).stdout.strip() for h in ("1", "2")}
    assert ids == {RunSpec(**DS).run_id}


def test_equal_specs_equal_ids_and_ints_equal_floats():
    assert RunSpec(**DS).run_id == RunSpec(**{**DS, "temperature": 4.0}).run_id
    assert RunSpec(**DS) == RunSpec(**{**DS, "temperature": 4.0})
    assert len({RunSpec(**DS), RunSpec(**DS)}) == 1  # hashable
    assert RunSpec(**DS).run_id != RunSpec(**{**DS, "seed": 4}).run_id


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.01, 100), a=st.floats(0, 1),
       epochs=st.integers(1, 300), bs=st.integers(1, 1024), size=st.sampled_from([16, 32, 64]))
def test_round_trip(seed, t, a, epochs, bs, size):
    s = RunSpec(**{**DS, "seed": seed, "temperature": t, "alpha": a, "epochs": epochs,
                   "batch_size": bs, "data": {"image_size": size}})
    d = json.loads(json.dumps(s.to_dict()))
    assert RunSpec.from_dict(d) == s and RunSpec.from_dict(d).run_id == s.run_id


def test_teacher_spec_of_a_ds_spec():
    ds = RunSpec(**DS, epochs=7, data={"image_size": 32})
    t = ds.teacher_spec()
    assert (t.role, t.arch, t.seed, t.dataset, dict(t.data), t.epochs) == \
        ("teacher", "resnet20", 3, "trifeature-shape", dict(ds.data), 7)
    assert t.temperature is None and t.alpha is None and t.teacher_arch is None
    # every temperature and alpha of one seed reads the same teacher
    other = RunSpec(**{**DS, "temperature": 40, "alpha": 0.6}, epochs=7, data={"image_size": 32})
    assert other.teacher_spec().run_id == t.run_id
    assert t == RunSpec(dataset="trifeature-shape", role="teacher", arch="resnet20", seed=3,
                        epochs=7, data={"image_size": 32})


@pytest.mark.parametrize("changes, field, value", [
    ({"dataset": "mnist"}, "dataset", "'mnist'"),
    ({"arch": "resnet99"}, "arch", "'resnet99'"),
    ({"role": "student"}, "role", "'student'"),
    ({"teacher_arch": None}, "teacher_arch", "None"),
    ({"temperature": None}, "temperature", "None"),
    ({"alpha": None}, "alpha", "None"),
    ({"teacher_arch": "resnet99"}, "teacher_arch", "'resnet99'"),
    ({"temperature": 0}, "temperature", "0"),
    ({"temperature": -1.5}, "temperature", "-1.5"),
    ({"alpha": 1.5}, "alpha", "1.5"),
    ({"alpha": -0.1}, "alpha", "-0.1"),
    ({"epochs": 0}, "epochs", "0"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"seed": -1}, "seed", "-1"),
    ({"seed": 1.5}, "seed", "1.5"),
    ({"data": {"colour": 1}}, "data", "colour"),
    ({"optimizer": "lamb"}, "optimizer", "'lamb'"),
])
def test_invalid_ds_specs(changes, field, value):
    with pytest.raises(ValueError) as e:
        RunSpec(**{**DS, **changes})
    assert str(e.value).startswith(f"{field}:") and value in str(e.value)


@pytest.mark.parametrize("role", ["teacher", "nds"])
@pytest.mark.parametrize("key, value", [("temperature", 4.0), ("alpha", 0.8), ("teacher_arch", "resnet56")])
def test_ds_only_fields_refused_on_teacher_and_nds(role, key, value):
    with pytest.raises(ValueError, match=f"^{key}: .*only .*'ds' specs"):
        RunSpec(**{**TEACHER, "role": role, key: value})


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(ValueError, match="unknown field"):
        RunSpec.from_dict({**TEACHER, "temprature": 4})


def test_spec_data_is_read_only():
    s = RunSpec(**TEACHER)
    with pytest.raises(TypeError):
        s.data["image_size"] = 32


# run_ids computed by the code before ``deterministic`` and ``micro_batch_size`` existed
# (kdray/spec.py at commit 7a6e33f): every stored run must keep its id
RUN_IDS_BEFORE_ADDED_FIELDS = {
    "digits-resnet20-teacher-s0-d16d9828": dict(dataset="digits", role="teacher", arch="resnet20"),
    "trifeature-shape-lenet5-ds-T4-a0.8-s3-74ddc72f": DS,
    "cifar100-resnet20-ds-T4-a0.8-s0-4d48c7d6": dict(
        dataset="cifar100", role="ds", arch="resnet20", teacher_arch="resnet56", temperature=4,
        alpha=0.8, epochs=20, lr=0.05),
}


@pytest.mark.parametrize("run_id", sorted(RUN_IDS_BEFORE_ADDED_FIELDS))
def test_fields_added_later_leave_existing_run_ids_unchanged(run_id):
    fields = RUN_IDS_BEFORE_ADDED_FIELDS[run_id]
    s = RunSpec(**fields)
    assert s.run_id == run_id
    assert not set(ADDED_FIELDS) & set(s.to_dict())  # at their defaults: not in the identity
    assert RunSpec(**fields, deterministic=False, micro_batch_size=None,
                   kd_t_squared=True).run_id == run_id
    assert RunSpec.from_dict(s.to_dict()) == s  # a run.json written before them reads back


@pytest.mark.parametrize("field, value", [("deterministic", True), ("micro_batch_size", 16)])
def test_an_added_field_set_is_part_of_the_identity(field, value):
    s = RunSpec(**TEACHER)
    other = s.replace(**{field: value})
    assert other.run_id != s.run_id and other.to_dict()[field] == value
    assert f'"{field}":{json.dumps(value)}' in other.canonical_json()
    assert RunSpec.from_dict(json.loads(json.dumps(other.to_dict()))) == other
    assert other.cohort_key != s.cohort_key
    assert set(ADDED_FIELDS) <= {f.name for f in dataclasses.fields(RunSpec)}


def test_added_fields_are_checked():
    with pytest.raises(ValueError, match=r"^deterministic: 1 is not a bool"):
        RunSpec(**TEACHER, deterministic=1)
    with pytest.raises(ValueError, match=r"^micro_batch_size: 128 is not <= batch_size 64"):
        RunSpec(**TEACHER, micro_batch_size=128)
    with pytest.raises(ValueError, match=r"^kd_t_squared: 'no' is not a bool"):
        RunSpec(**DS, kd_t_squared="no")


def test_a_ds_without_the_t_squared_factor_is_another_run_of_the_same_teacher():
    plain = RunSpec(**DS)
    printed = plain.replace(kd_t_squared=False)  # the paper's eq. (6) as printed
    assert printed.run_id != plain.run_id and printed.cohort_key != plain.cohort_key
    assert printed.to_dict()["kd_t_squared"] is False
    assert RunSpec.from_dict(json.loads(json.dumps(printed.to_dict()))) == printed
    assert printed.teacher_spec() == plain.teacher_spec()  # one teacher serves both
    # a recipe shared by every role: teachers and NDS have no KD term, so no new identity
    nds = RunSpec(dataset=DS["dataset"], role="nds", arch=DS["arch"], seed=DS["seed"])
    assert nds.replace(kd_t_squared=False).run_id == nds.run_id
