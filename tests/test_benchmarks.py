"""The CPU benchmarks run in their ``--tiny`` mode (their real code paths, a few steps) and
print every line they promise. What they measure is read on a quiet machine, not here: no
figure is asserted."""

import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run_benchmark(name: str, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
                         capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout.splitlines()


def test_cohort_benchmark_prints_both_cases_their_shared_share_and_the_speedup():
    lines = run_benchmark("cohort.py", "--tiny")
    ratios = [ln for ln in lines if re.search(r"lone [\d,]+ img/s +cohort [\d,]+ img/s +ratio \d+\.\d\dx", ln)]
    assert [r.split(":")[0].split("  ", 2)[-1] for r in ratios] == [
        "resnet20 -> lenet5, trifeature-shape 16 px, N = 3",
        "resnet56 -> resnet20, CIFAR-100-shaped 32 px, N = 13"]
    ceilings = [ln for ln in lines if "shared work (data draw, teacher forward), timed alone" in ln]
    assert len(ceilings) == 2
    assert re.search(r"a cohort of 3 saving exactly that: \d+\.\d\dx", ceilings[0])
    assert re.search(r"a cohort of 13 saving exactly that: \d+\.\d\dx", ceilings[1])
    assert re.fullmatch(r"cohort speedup: \d+\.\d\dx \(resnet20 -> lenet5, trifeature-shape 16 px, "
                        r"N = 3\)", lines[-1])


def test_optimizer_benchmark_times_fused_and_default_steps():
    lines = run_benchmark("optimizer_step.py", "--tiny")
    rows = [ln for ln in lines if "default" in ln and "fused" in ln]
    assert [ln.split()[1:3] for ln in rows] == [["lenet5", "adamw"], ["resnet20", "adamw"],
                                               ["resnet20", "sgd"], ["resnet56", "sgd"]]
    assert all(re.search(r"ratio \d+\.\d\dx$", ln) for ln in rows)
