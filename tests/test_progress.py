"""The progress view of a sweep (``kdray.sweep.progress``): counts runs (cohort trials hold several),
updates in place on a terminal, prints plain lines at most every N seconds elsewhere, names
the Ray dashboard; Ray's unactionable hints are dropped, real warnings and errors kept."""

import io
import logging
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from conftest import STABLE_LR, TINY_TRIFEATURE
from kdray.sweep import progress
from kdray.sweep.progress import StageProgress, quiet_ray_hints

LINE = re.compile(r"^(stage \d): (\d+)/(\d+) runs done, (\d+) running.*, (\d+) failed, (\d+) pending")


class Clock:
    """A fake ``time.monotonic`` the test moves by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def trial(i: int, runs: int, epochs: int = 4) -> SimpleNamespace:
    spec = {"epochs": epochs}
    config = {"specs": [spec] * runs} if runs > 1 else {"spec": spec}  # cohort or lone run
    return SimpleNamespace(trial_id=f"t{i}", config=config, last_result={})


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_counts_runs_of_cohort_trials(clock):
    out = io.StringIO()
    p = StageProgress("stage 2", 7, interval=10, stream=out, tty=False)
    p.setup()
    a, b, c = trial(0, 3), trial(1, 3), trial(2, 1)
    p.on_trial_start(0, [], a)
    p.on_trial_start(0, [], b)
    assert p.counts() == {"done": 0, "running": 6, "failed": 0, "pending": 1}
    p.on_trial_result(0, [], a, {"epoch": 1})
    p.on_trial_result(0, [], b, {"epoch": 3})
    clock.now += 10
    p.on_step_end(0, [])
    assert lines(out)[-1].startswith("stage 2: 0/7 runs done, 6 running (epoch 1/4, 3/4), 0 failed, "
                                     "1 pending; 10s elapsed, ~")
    a.last_result = {"failed": {"run-x": "loss is nan"}}  # one student of the cohort stopped
    p.on_trial_complete(0, [], a)
    p.on_trial_start(0, [], c)
    p.on_trial_error(0, [], c)
    p.on_trial_complete(0, [], b)
    assert p.counts() == {"done": 5, "running": 0, "failed": 2, "pending": 0}
    p.on_experiment_end([])
    assert lines(out)[-1] == "stage 2: 5/7 runs done, 0 running, 2 failed, 0 pending; 10s elapsed"


def test_plain_lines_at_most_every_interval(clock):
    out = io.StringIO()
    p = StageProgress("stage 1", 4, interval=30, stream=out, tty=False)
    p.setup()
    t = [trial(i, 1) for i in range(4)]
    for x in t[:2]:
        p.on_trial_start(0, [], x)
    first = len(lines(out))
    assert first == 1  # the first step prints at once
    for step in range(29):  # 29 s of steps and results: nothing new
        clock.now += 1
        p.on_trial_result(0, [], t[0], {"epoch": 1 + step % 4})
        p.on_step_end(0, [])
    p.on_trial_complete(0, [], t[0])
    assert len(lines(out)) == first
    clock.now += 1  # 30 s after the last line
    p.on_step_end(0, [])
    assert len(lines(out)) == first + 1
    m = LINE.match(lines(out)[-1])
    assert m and m.group(2, 3, 4) == ("1", "4", "1")
    assert lines(out)[-1].endswith("left")  # an estimate once epochs were reported
    p.on_experiment_end([])  # the stage's last line, whatever the interval
    assert LINE.match(lines(out)[-1]).group(2) == "1"


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.25")
    assert StageProgress("stage 1", 1, stream=io.StringIO(), tty=False).interval == 0.25
    monkeypatch.setenv(progress.INTERVAL_ENV, "never")
    with pytest.raises(ValueError, match=r"\$KDRAY_PROGRESS_INTERVAL: 'never' is not a number"):
        StageProgress("stage 1", 1, stream=io.StringIO(), tty=False)


def test_terminal_updates_in_place(clock):
    out = io.StringIO()
    p = StageProgress("stage 1", 2, stream=out, tty=True)
    p.setup()
    a, b = trial(0, 1), trial(1, 1)
    p.on_trial_start(0, [], a)
    p.on_trial_start(0, [], b)
    clock.now += 1
    p.on_trial_result(0, [], a, {"epoch": 2})
    p.on_trial_complete(0, [], a)
    clock.now += 1
    p.on_step_end(0, [])
    p.on_experiment_end([])
    text = out.getvalue()
    assert "\r" in text and text.count("\n") <= 2  # redrawn on one line, not one line per update
    assert "stage 1: 1/2 runs done" in text
    assert re.search(r"stage 1: 1/2 runs done \|[^|]*\|, 1 running \(epoch 0/4\), 0 failed, "
                     r"0 pending; 2s elapsed", text), text


def test_dashboard_address_is_shown(monkeypatch):
    monkeypatch.setenv("RAY_OVERRIDE_DASHBOARD_URL", "127.0.0.1:8265")
    out = io.StringIO()
    StageProgress("stage 1", 3, stream=out, tty=False).setup()
    assert "stage 1: Ray dashboard at http://127.0.0.1:8265" in out.getvalue()


def test_ray_hints_dropped_real_warnings_kept(caplog):
    quiet_ray_hints()
    quiet_ray_hints()  # idempotent
    caplog.set_level(logging.INFO)
    data = logging.getLogger("ray.data._internal.progress")
    data.warning("Progress bars disabled. To enable, set `ray.data.DataContext.get_current()."
                 "enable_progress_bars = True`.")
    logging.getLogger("ray.tune.utils.util").warning(
        "The `callbacks.on_trial_result` operation took 6.137 s, which may be a performance bottleneck.")
    logging.getLogger("ray.tune.execution.tune_controller").warning(
        "Processing trial results took 6.1 s, which may be a performance bottleneck. Please consider ...")
    logging.getLogger("ray.tune.tune").info(
        "Wrote the latest version of all result files and experiment state to '/x' in 0.02s.")
    data.warning("Dataset is spilling to disk")  # real warnings still show
    logging.getLogger("ray.tune.execution.tune_controller").error("Trial task failed for trial x")
    logging.getLogger("ray.tune.utils.util").error("an error that mentions a performance bottleneck")
    shown = [r.getMessage() for r in caplog.records]
    assert shown == ["Dataset is spilling to disk", "Trial task failed for trial x",
                     "an error that mentions a performance bottleneck"]


# ----------------------------------------------------------------------------------------
# A real sweep, its stdout piped (not a terminal)
# ----------------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.trains
def test_sweep_prints_progress_while_trials_run(tmp_path, data_root):
    script = tmp_path / "progress_sweep.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from kdray.sweep.cli import sweep_main
        from kdray.sweep.grid import Experiment
        exp = Experiment("progress", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,),
                         seeds=(0, 1), recipe={{"epochs": 2, "batch_size": 100, "lr": {STABLE_LR!r}}},
                         data={TINY_TRIFEATURE!r})
        sys.exit(sweep_main([exp]))
    """))
    out = subprocess.run([sys.executable, str(script), "--store", str(tmp_path / "store"),
                          "--data-dir", data_root, "--no-analysis", "--wandb-mode", "offline",
                          "--progress-interval", "0.2"],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    stdout = out.stdout.splitlines()
    stage2 = next(i for i, ln in enumerate(stdout) if ln.startswith("stage 2: 2 DS runs"))
    stage1 = [(i, LINE.match(ln)) for i, ln in enumerate(stdout) if ln.startswith("stage 1: ")]
    stage1 = [(i, m) for i, m in stage1 if m]
    # while stage 1 ran: a line with runs done and still running, before stage 2 began
    during = [(i, m) for i, m in stage1
              if i < stage2 and int(m.group(2)) < int(m.group(3)) and int(m.group(4)) > 0]
    assert during, "\n".join(stdout)
    assert all(m.group(3) == "4" for _, m in stage1)
    assert stage1[-1][1].group(2, 3, 5, 6) == ("4", "4", "0", "0")  # the stage's last line
    finals = [ln for ln in stdout if ln.startswith("stage 2: ") and LINE.match(ln)]
    assert LINE.match(finals[-1]).group(2, 3) == ("2", "2")
    assert "sweep: 6 ran, 0 skipped" in out.stdout
    # Ray's unactionable messages are gone, in stdout and stderr
    for text in (out.stdout, out.stderr):
        assert "_WandbLoggingActor" not in text and "may be a performance bottleneck" not in text
        assert "Wrote the latest version of all result files" not in text
        assert "You are trying to log an invalid value" not in text
    # each run's W&B per-class table names the classes (the dataset's shapes)
    import json

    tables = list((tmp_path / "store" / "wandb").rglob("per_class_accuracy_*.table.json"))
    assert len(tables) == 6, tables
    for path in tables:
        table = json.loads(path.read_text())
        assert table["columns"] == ["class", "name", "accuracy", "n_test"]
        assert [row[1] for row in table["data"]] == ["triangle", "square", "plus", "circle", "tee",
                                                     "rhombus", "pentagon", "star", "fivesquare",
                                                     "trapezoid"]
