"""What the sweep's report says about each run when Ray Tune hands back odd results."""

from __future__ import annotations

from types import SimpleNamespace

from analysis_store import make_spec
from kdray.spec import RunSpec
from kdray.store import Store
from kdray.sweep.driver import _outcome
from kdray.sweep.retries import RetryPolicy


def test_a_trial_that_never_started_fails_its_runs_with_its_error(tmp_path):
    """A result without a config (Tune could not start the trial) names its error on the
    runs nobody reported, instead of crashing the report."""
    spec = RunSpec.from_dict(make_spec("digits", "nds", "lenet5", 0))
    never = SimpleNamespace(config=None, metrics=None,
                            error=RuntimeError("placement group could not be scheduled"))
    out = _outcome([never], [spec], Store(tmp_path / "store"), {}, RetryPolicy(0))
    assert out.failed == {spec.run_id: "no result from Ray Tune (a trial that never started: "
                                        "RuntimeError: placement group could not be scheduled)"}
    assert out.ran == [] and out.collapsed == {}
