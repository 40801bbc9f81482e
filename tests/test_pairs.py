"""One distilled student per teacher/student pair of the paper, end to end on tiny data in the
pair's dataset's real on-disk format: the teacher trains, the DS distils from it, both commit
complete runs (no Ray: the same ``kdray.trial.run`` a Tune trial calls)."""

import pytest

from conftest import STABLE_LR
from kdray import RunSpec
from kdray.data import write_tiny
from kdray.models import MODELS
from kdray.sweep.paper import EXPERIMENTS
from kdray.store import Store
from kdray.trial import run

PAIRS = {}
for _e in EXPERIMENTS:
    for _pair in _e.pairs:
        PAIRS.setdefault(_pair, _e.datasets[0])


@pytest.mark.trains
@pytest.mark.parametrize("pair, dataset", sorted(PAIRS.items()), ids=lambda x: "-".join(x) if
                         isinstance(x, tuple) else x)
def test_one_ds_per_pair(pair, dataset, tmp_path, monkeypatch):
    teacher_arch, student_arch = pair
    monkeypatch.setenv("KDRAY_IMAGENET_DIR", str(tmp_path / "data" / "imagenet"))
    options = write_tiny(dataset, tmp_path / "data")
    stable = {"lr": STABLE_LR} if MODELS[student_arch].family == "cnn" else {}  # ViT, BERT: theirs
    ds = RunSpec(dataset=dataset, role="ds", arch=student_arch, teacher_arch=teacher_arch,
                 temperature=4.0, alpha=0.8, epochs=1, batch_size=8, data=options, **stable)
    store = Store(tmp_path / "store")
    run(ds.teacher_spec(), store, device="cpu", data_root=tmp_path / "data", num_workers=0)
    record = run(ds, store, device="cpu", data_root=tmp_path / "data", num_workers=0)
    assert store.is_complete(ds.teacher_spec().run_id) and store.is_complete(ds.run_id)
    assert record["teacher_run_id"] == ds.teacher_spec().run_id
    table = store.read_predictions(ds.run_id).to_pandas()
    assert len(table) == record["n_test"] > 0 and table.pred.between(0, record["num_classes"] - 1).all()
    assert (table.teacher_arch == teacher_arch).all() and (table.temperature == 4.0).all()


def test_every_pair_of_the_paper_is_covered():
    assert set(PAIRS) == {("resnet56", "resnet20"), ("resnet50", "resnet18"),
                          ("densenet169", "densenet121"), ("vit_base", "tiny_vit"),
                          ("resnet20", "lenet5"), ("bert_base", "distilbert")}
