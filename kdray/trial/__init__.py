"""One run, or one cohort of runs, from its RunSpec to its folder in the store, in three steps
(``kdray/trial/steps.py``):

1. **train**: the data, the models (a DS run's teacher with its committed weights) and the
   training loop (:class:`~kdray.training.loop.Trainer`), resumed from a checkpoint if given;
2. **predict**: every test sample, by every student;
3. **commit**: each student's ``predictions.parquet``, ``model.safetensors`` and, last,
   ``run.json`` (:meth:`kdray.store.Store.commit_run`, with the provenance of
   ``kdray/trial/provenance.py``).

``run_cohort(specs, store)`` does it for a cohort: DS runs of one teacher seed that differ
only in temperature and alpha, trained in lockstep with one teacher forward per batch, each
committing its own run folder; ``run(spec, store)`` for one run. The same functions run in a
test, a benchmark, a GPU check with no cluster, or inside a Ray Tune trial
(``kdray/sweep/trainable.py``), which passes the state to resume from and an ``on_epoch``
callback that reports to Tune and writes resume checkpoints. W&B sees a trial only through
that callback.

Command line (``kdray/trial/cli.py``)::

    python -m kdray.trial --store ./results --dataset digits --role teacher --arch resnet20 --epochs 2
    python -m kdray.trial --store s3://bucket/study --specs spec.json
    python -m kdray.trial --store ./results --dataset digits --role ds --arch lenet5 \\
        --teacher-arch resnet20 --temperatures 2 4 8 --alphas 0.8  # a cohort: one teacher pass
"""

from kdray.trial.steps import (CohortResult, TeacherMissingError, TrialOptions, check_teacher,
                               run, run_cohort)
from kdray.trial.cli import main  # noqa: E402  (it calls this package's run_cohort)

__all__ = ["CohortResult", "TeacherMissingError", "TrialOptions", "check_teacher", "main", "run",
           "run_cohort"]
