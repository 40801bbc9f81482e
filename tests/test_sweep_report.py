"""What the sweep's report says about each run when Ray Tune hands back odd results."""

from __future__ import annotations

from types import SimpleNamespace

from analysis_store import make_spec
from kdray.spec import RunSpec
from kdray.store import Store
from kdray.sweep.driver import _outcome
from kdray.sweep.retries import RetryPolicy


def test_a_trial_that_never_started_fails_its_runs_with_its_error(tmp_path):
    """A result without a config, with an error (Tune could not start the trial), names its
    error on the runs nobody reported, instead of crashing the report."""
    spec = RunSpec.from_dict(make_spec("digits", "nds", "lenet5", 0))
    never = SimpleNamespace(config=None, metrics=None,
                            error=RuntimeError("placement group could not be scheduled"))
    out = _outcome([never], [spec], Store(tmp_path / "store"), {}, RetryPolicy(0))
    assert out.failed == {spec.run_id: "no result from Ray Tune (a trial that never started: "
                                        "RuntimeError: placement group could not be scheduled)"}
    assert out.ran == [] and out.collapsed == {}


def test_runs_tune_never_started_without_an_error_were_interrupted(tmp_path):
    """Tune returns runs it never started, and no error, only when it was stopped (Ctrl-C)."""
    spec = RunSpec.from_dict(make_spec("digits", "nds", "lenet5", 0))
    pending = SimpleNamespace(config=None, metrics=None, error=None)
    for results in ([pending], []):
        out = _outcome(results, [spec], Store(tmp_path / "store"), {}, RetryPolicy(0))
        assert out.interrupted == [spec.run_id] and out.failed == {}
