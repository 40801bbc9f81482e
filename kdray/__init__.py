"""kdray: what knowledge distillation does to a model's class bias and fairness.

The layers, each a folder or a module (README's "How it is built"):

- the contract: :class:`RunSpec` (``kdray.spec``, run identity; ``kdray.checks``, what a
  valid value of each field is) and the results store (``kdray.store``);
- the registries: ``kdray.data`` (datasets) and ``kdray.models`` (models);
- ``kdray.training``: the training loop, without Ray;
- ``kdray.trial``: one run or cohort, from its specs to the store (``python -m kdray.trial``);
- ``kdray.sweep``: a study on Ray Tune (the sweep scripts' command line and driver);
- what the drivers share: ``kdray.connect`` (joining Ray, W&B's mode; the analysis's too)
  and ``kdray.tracking`` (one W&B run per run, for ``python -m kdray.trial`` and the sweep).
"""

from kdray.spec import RunSpec

__version__ = "0.1.0"
__all__ = ["RunSpec", "__version__"]
