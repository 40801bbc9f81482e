"""The benchmarks that train (``gpu_throughput.py``, ``gpu_study.py``, ``cohort.py``,
``teacher_logits.py``, ``optimizer_step.py``) run on the CPU in their ``--tiny`` mode (their real code paths, a few
steps), in a process where Ray, W&B, fairlearn, matplotlib, timm and transformers cannot be
imported: a GPU box without them runs each. (What they measure is read on a quiet machine or
a GPU, not here: no figure is asserted; these check that they run and print every line they
promise.) ``teacher_verify.py`` (the store's teacher check on a moto S3 server) and
``trifeature_resolution.py`` (no training) run the same way."""

import os
import re
import subprocess
import sys

import pytest

from kdray.store import Store

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BLOCKED = "ray wandb fairlearn matplotlib timm transformers"
RUNNER = """
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split())
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked: a GPU script must run without it")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_script(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", RUNNER, BLOCKED,
                          os.path.join(ROOT, "benchmarks", name), *args],
                         capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.trains
def test_gpu_study_tiny_trains_a_study_and_prints_its_statistics(tmp_path, data_root):
    store = tmp_path / "store"
    text = run_script("gpu_study.py", "--tiny", "--store", str(store), "--data-dir", data_root)
    assert "CPU; torch" in text and "2 seeds, T = 2, 4, 1 epochs: 8 runs" in text
    for line in ("teacher resnet20             2", "NDS lenet5                   2",
                 "DS lenet5 T=2                2", "DS lenet5 T=4                2"):
        assert line in text, line
    assert "#SC vs NDS" in text and "#TC vs teacher" in text
    sig = [ln for ln in text.splitlines() if ln.startswith("DS lenet5 T=") and "±" not in ln]
    assert len(sig) == 2 and all(0 <= int(v) <= 10 for ln in sig for v in ln.split()[3:])
    fair = [ln for ln in text.splitlines() if " color " in ln or " texture " in ln]
    assert len(fair) == 8  # 4 models x 2 attributes
    assert "wall time:" in text.splitlines()[-1]
    runs = Store(str(store)).list_run_ids()
    assert len(runs) == 8 and all(Store(str(store)).is_complete(r) for r in runs)


def test_gpu_throughput_tiny_measures_every_row(tmp_path):
    text = run_script("gpu_throughput.py", "--tiny")
    table = text[text.index("student images/s (CPU"):].splitlines()
    names = ["lone DS trial, eager", "lone DS trial, CUDA graph",
             "lone DS trial, CUDA graph, deterministic", "cohort of 2 DS, eager",
             "cohort of 2 DS, CUDA graph", "cohort of 2 DS, CUDA graph, teacher bf16 once",
             "cohort of 2 DS, CUDA graph, teacher logits replayed",
             "2 processes: lone DS trial, CUDA graph", "2 processes: cohort of 2 DS, CUDA graph"]
    rows = [ln for ln in table if any(ln.startswith(n + " ") for n in names)]
    assert [next(n for n in sorted(names, key=len, reverse=True) if r.startswith(n + " "))
            for r in rows] == names
    figures = [re.search(r"\s([\d,]+)\s+([\d.]+)x\s", row) for row in rows]
    assert all(f is not None for f in figures), rows
    assert all(float(f.group(1).replace(",", "")) > 0 for f in figures)
    assert figures[0].group(2) == "1.0"  # the eager lone trial is the reference
    for name, row in zip(names, rows):  # no graph on the CPU; the eager rows turn it off
        assert row.endswith("eager (turned off)" if name.endswith(", eager")
                            else "eager (not on CUDA)"), row
    assert table[-1].startswith("goal (>= 90,000 student img/s aggregate")


def test_cohort_benchmark_prints_both_cases_their_shared_share_and_the_speedup():
    lines = run_script("cohort.py", "--tiny").splitlines()
    ratios = [ln for ln in lines if re.search(r"lone [\d,]+ img/s +cohort [\d,]+ img/s +ratio \d+\.\d\dx", ln)]
    assert [r.split(":")[0].split("  ", 2)[-1] for r in ratios] == [
        "resnet20 -> lenet5, trifeature-shape 16 px, N = 3",
        "resnet56 -> resnet20, CIFAR-100-shaped 32 px, N = 13"]
    shared = [ln for ln in lines if "shared work (data draw, teacher forward), timed alone" in ln]
    assert len(shared) == 2
    assert re.search(r"a cohort of 3 saving exactly that: \d+\.\d\dx", shared[0])
    assert re.search(r"a cohort of 13 saving exactly that: \d+\.\d\dx", shared[1])
    assert re.fullmatch(r"cohort speedup: \d+\.\d\dx \(resnet20 -> lenet5, trifeature-shape 16 px, "
                        r"N = 3\)", lines[-1])


def test_teacher_logits_benchmark_replays_bit_for_bit_and_prints_the_speedup():
    lines = run_script("teacher_logits.py", "--tiny").splitlines()
    assert "resnet20 -> lenet5, trifeature-shape 24 px, N = 3" in lines[0]
    rates = [ln.split()[1] for ln in lines if re.search(r"^  teacher \w+ +[\d,]+ student img/s$", ln)]
    assert rates == ["running", "recording", "replaying"]
    assert "  replaying cohort: the same weights as the running cohort, bit for bit" in lines
    assert re.fullmatch(r"recording's time / running's: \d+\.\d\dx", lines[-2])
    assert re.fullmatch(r"replay speedup: \d+\.\d\dx", lines[-1])


def test_optimizer_benchmark_times_fused_and_default_steps():
    lines = run_script("optimizer_step.py", "--tiny").splitlines()
    rows = [ln for ln in lines if "default" in ln and "fused" in ln]
    assert [ln.split()[1:3] for ln in rows] == [["lenet5", "adamw"], ["resnet20", "adamw"],
                                               ["resnet20", "sgd"], ["resnet56", "sgd"]]
    assert all(re.search(r"ratio \d+\.\d\dx$", ln) for ln in rows)


@pytest.mark.trains
def test_trifeature_convergence_prints_every_epoch_the_change_and_the_units_alive(tmp_path):
    import json

    lines = run_script("trifeature_convergence.py", "--roles", "nds", "--image-size", "16",
                       "--per-combination", "2", "--test-per-combination", "1", "--epochs", "5",
                       "--data-dir", str(tmp_path)).splitlines()
    rows = [json.loads(ln) for ln in lines]
    assert [r["epoch"] for r in rows[:-1]] == [1, 2, 3, 4, 5]
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows[:-1])
    summary = rows[-1]
    assert summary["final_test_accuracy"] == rows[4]["test_accuracy"]
    assert summary["change_over_last_20pct_points"] == round(
        100 * abs(rows[4]["test_accuracy"] - rows[3]["test_accuracy"]), 2)  # epochs 4 -> 5
    # whether the network still computes anything: LeNet-5's ReLU layers, and its logits
    assert all(set(r["units_alive"]) == {"conv1", "conv2", "fc1", "fc2"} for r in rows[:-1])
    assert all(0 <= v <= 1 for r in rows[:-1] for v in r["units_alive"].values())
    assert all(r["logit_spread"] >= 0 for r in rows[:-1])
    # --stop-after: the first epochs of the same schedule, bit for bit
    head = [json.loads(ln) for ln in run_script(
        "trifeature_convergence.py", "--roles", "nds", "--image-size", "16", "--per-combination",
        "2", "--test-per-combination", "1", "--epochs", "5", "--stop-after", "2",
        "--data-dir", str(tmp_path)).splitlines()]
    assert [r["epoch"] for r in head[:-1]] == [1, 2]
    assert [(r["loss"], r["logit_spread"]) for r in head[:-1]] == [
        (r["loss"], r["logit_spread"]) for r in rows[:2]]
    assert head[-1]["stop_after"] == 2 and head[-1]["final_test_accuracy"] == rows[1]["test_accuracy"]


def test_teacher_verify_benchmark_times_both_checks():
    lines = run_script("teacher_verify.py", "--tiny").splitlines()
    (row,) = [ln for ln in lines if "ETag (HEAD)" in ln]
    assert row.split()[0] == "tiny" and re.search(r"ratio +\d+x$", row)
    assert any(re.search(r"1\.0 MB +download +[\d.]+ ms$", ln) for ln in lines), lines


def test_trifeature_resolution_prints_fill_and_contrast_per_texture():
    lines = run_script("trifeature_resolution.py", "--sizes", "24", "224", "--images",
                       "1").splitlines()
    rows = {ln.split()[0]: [float(v) for v in ln.split()[1:]] for ln in lines[1:11]}
    assert lines[0].split() == ["texture", "fill", "24px", "224px"]
    assert len(rows) == 10 and rows["solid"][0] == 1.0  # solid colours every pixel
    assert all(r[2] == 1.0 for name, r in rows.items() if name != "solid")  # 224 px: intact
    assert rows["stripes"][1] < 0.2  # one 10 px period per 24 px pixel: almost a flat tone
