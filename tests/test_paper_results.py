"""kdray/analysis/paper_results.csv: the paper's Tables 1, 2, 3, 5, 6, 7, 8, 9, complete and exact."""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import pandas as pd
import pytest

from kdray.analysis.paper_results import KEY, check, paper_cells, paper_results

ROOT = Path(__file__).resolve().parents[1]
ACC, SC, TC = ("test_accuracy", ""), ("n_sc", ""), ("n_tc", "")
T_2_10 = tuple(range(2, 11))
T_1_10 = tuple(range(1, 11))
HIGH = (20, 30, 40)


def fair(attribute):
    return [("eod", attribute), ("dpd", attribute)]


# Each table as printed: its column blocks (dataset, teacher, student, alpha, the block's
# metric columns) and its DS rows' temperatures (every table also has a Teacher and an NDS row).
TABLES = {
    "1": ([("cifar100", "resnet56", "resnet20", 0.8, [ACC, SC, TC]),
           ("cifar100", "densenet169", "densenet121", 0.8, [ACC, SC, TC]),
           ("imagenet", "resnet50", "resnet18", 0.8, [ACC, SC, TC]),
           ("imagenet", "vit_base", "tiny_vit", 0.8, [ACC, SC, TC])], T_2_10),
    "2": ([("trifeature-shape", "resnet20", "lenet5", 0.8, [ACC] + fair("color")),
           ("celeba-smiling", "resnet50", "resnet18", 0.8, [ACC] + fair("young"))], T_1_10),
    "3": ([("hatexplain", "bert_base", "distilbert", 0.8,
            [ACC] + fair("gender") + fair("race"))], T_1_10),
    "5": ([("cifar10", "resnet56", "resnet20", 0.8, [ACC, SC, TC]),
           ("svhn", "resnet56", "resnet20", 0.8, [ACC, SC, TC]),
           ("tinyimagenet", "resnet50", "resnet18", 0.8, [ACC, SC, TC])], T_2_10),
    "6": ([("cifar100", "resnet56", "resnet20", 0.8, [ACC, SC, TC]),
           ("cifar100", "densenet169", "densenet121", 0.8, [ACC, SC, TC]),
           ("imagenet", "resnet50", "resnet18", 0.8, [ACC, SC, TC]),
           ("imagenet", "vit_base", "tiny_vit", 0.8, [ACC, SC, TC])], T_2_10 + HIGH),
    "7": ([("cifar100", "resnet56", "resnet20", 0.6, [ACC, SC, TC]),
           ("cifar100", "resnet56", "resnet20", 0.8, [ACC, SC, TC])], T_2_10),
    "8": ([("celeba-smiling", "resnet50", "resnet18", 0.8, [ACC] + fair("young")),
           ("celeba-eyeglasses", "resnet50", "resnet18", 0.8, [ACC] + fair("young"))],
          T_1_10 + HIGH),
    "9": ([("trifeature-shape", "resnet20", "lenet5", 0.8, [ACC] + fair("color")),
           ("trifeature-texture", "resnet20", "lenet5", 0.8, [ACC] + fair("color"))],
          T_1_10 + HIGH),
}


def expected_keys(table: str) -> set[tuple]:
    """Every printed number of a table (teacher and NDS rows have no #SC/#TC: "-")."""
    blocks, temps = TABLES[table]
    models = [("teacher", None), ("nds", None)] + [("ds", float(t)) for t in temps]
    out = set()
    for (dataset, teacher, student, alpha, metrics), (role, temp) in product(blocks, models):
        for metric, attribute in metrics:
            if role != "ds" and metric in ("n_sc", "n_tc"):
                continue
            out.add((table, dataset, teacher, student, role, temp, alpha, metric, attribute))
    return out


def actual_keys(df: pd.DataFrame, table: str) -> list[tuple]:
    sub = df[df["table"] == table]
    return [(t, d, ta, sa, r, None if math.isnan(temp) else temp, a, m, attr)
            for t, d, ta, sa, r, temp, a, m, attr in sub[KEY].itertuples(index=False)]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_number_of_the_table_is_there_once(table):
    keys = actual_keys(paper_results(), table)
    assert len(keys) == len(set(keys)), "a number transcribed twice"
    assert set(keys) == expected_keys(table)


def test_no_other_tables_and_the_total():
    df = paper_results()
    assert sorted(df["table"].unique(), key=int) == sorted(TABLES, key=int)
    assert len(df) == sum(len(expected_keys(t)) for t in TABLES) == 725


@pytest.mark.parametrize("cell, mean, std", [
    (("1", "imagenet", ("vit_base", "tiny_vit"), "ds", 6, 0.8, "n_sc", ""), 268, None),
    (("1", "cifar100", ("densenet169", "densenet121"), "teacher", None, 0.8, "test_accuracy", ""),
      72.43, 0.15),
    (("2", "trifeature-shape", ("resnet20", "lenet5"), "nds", None, 0.8, "eod", "color"),
      2.81, 0.05),
    (("2", "celeba-smiling", ("resnet50", "resnet18"), "ds", 9, 0.8, "test_accuracy", ""),
      93.18, 0.15),
    (("3", "hatexplain", ("bert_base", "distilbert"), "ds", 7, 0.8, "dpd", "race"), 1.54, 0.08),
    (("3", "hatexplain", ("bert_base", "distilbert"), "teacher", None, 0.8, "eod", "gender"),
      1.63, 0.05),
    (("5", "svhn", ("resnet56", "resnet20"), "ds", 4, 0.8, "test_accuracy", ""), 95.80, 0.02),
    (("5", "tinyimagenet", ("resnet50", "resnet18"), "ds", 10, 0.8, "n_tc", ""), 10, None),
    (("6", "imagenet", ("resnet50", "resnet18"), "ds", 30, 0.8, "n_tc", ""), 152, None),
    (("7", "cifar100", ("resnet56", "resnet20"), "ds", 4, 0.6, "test_accuracy", ""), 69.77, 0.20),
    (("8", "celeba-eyeglasses", ("resnet50", "resnet18"), "ds", 40, 0.8, "dpd", "young"),
      2.95, 0.13),
    (("9", "trifeature-texture", ("resnet20", "lenet5"), "ds", 20, 0.8, "eod", "color"),
      1.86, 0.08),
    (("9", "trifeature-shape", ("resnet20", "lenet5"), "teacher", None, 0.8, "test_accuracy", ""),
      100, 0.00),
])
def test_spot_checks_against_the_paper_text(cell, mean, std):
    """``cell``: (table, dataset, (teacher, student), role, T, alpha, metric, attribute)."""
    table, dataset, pair, role, temp, alpha, metric, attribute = cell
    df = paper_results()
    row = df[(df["table"] == table) & (df["dataset"] == dataset)
             & (df["teacher_arch"] == pair[0]) & (df["student_arch"] == pair[1])
             & (df["role"] == role) & (df["alpha"] == alpha) & (df["metric"] == metric)
             & (df["attribute"] == attribute)
             & (df["temperature"].isna() if temp is None else df["temperature"] == temp)]
    assert len(row) == 1
    assert row["mean"].iloc[0] == mean
    assert (math.isnan(row["std"].iloc[0]) if std is None else row["std"].iloc[0] == std)


def test_quirks_are_named_in_the_notes_column():
    df = paper_results()
    svhn = df[df["dataset"] == "svhn"]
    assert svhn["notes"].str.contains("ResNet-50 / ResNet-18").all()
    texture = df[(df["dataset"] == "trifeature-texture") & (df["attribute"] != "")]
    assert texture["notes"].str.contains("assumed color").all()
    t1 = df[df["table"] == "1"]
    assert t1["notes"].str.contains("= Table 6").all()


def test_repeated_tables_print_the_same_numbers():
    cells = paper_cells()  # raises if two tables disagree on a cell
    assert len(cells) == 506
    t1 = cells[(cells["dataset"] == "cifar100") & (cells["teacher_arch"] == "resnet56")
               & (cells["role"] == "ds") & (cells["temperature"] == 5) & (cells["alpha"] == 0.8)]
    assert set(t1["tables"]) == {"1, 6, 7"}
    teacher = cells[(cells["dataset"] == "cifar100") & (cells["teacher_arch"] == "resnet56")
                    & (cells["role"] == "teacher")]
    assert len(teacher) == 1 and math.isnan(teacher["alpha"].iloc[0])  # Table 7's 0.6 too


def test_check_names_a_repeated_row():
    df = paper_results()
    with pytest.raises(ValueError, match="repeat a"):
        check(pd.concat([df, df.iloc[:1]], ignore_index=True))
    bad = df.copy()
    bad.loc[0, "metric"] = "accuracy"
    with pytest.raises(ValueError, match="malformed row"):
        check(bad)


def test_the_data_file_ships_with_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "paper_results.csv" in pyproject["tool"]["setuptools"]["package-data"]["kdray.analysis"]
