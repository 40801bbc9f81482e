"""kdray: what knowledge distillation does to a model's class bias and fairness.

The public surface: :class:`RunSpec` (run identity), ``kdray.data`` and ``kdray.models``
(registries), ``kdray.training.loop`` (the loop), ``kdray.store`` (the results store),
``kdray.trial`` (one run), ``kdray.sweep.grid`` and ``kdray.sweep.driver`` (a study on Ray Tune).
"""

from kdray.spec import RunSpec

__version__ = "0.1.0"
__all__ = ["RunSpec", "__version__"]
