"""fastsoftmax on Dask: fit and predict where the partitions live (``pip install "fastsoftmax[dask]"``).

``from fastsoftmax.dask import SoftmaxClassifier`` is the in-memory estimator's
drop-in for Dask arrays and DataFrames; see :class:`DaskSoftmaxClassifier`.
"""

from .estimator import DaskSoftmaxClassifier
from .objective import DaskObjective

SoftmaxClassifier = DaskSoftmaxClassifier

__all__ = ["DaskObjective", "DaskSoftmaxClassifier", "SoftmaxClassifier"]
