"""The objective over a Dask array whose partitions live on the workers.

One evaluation at parameters ``(W, b)``:

1. ``(W, b)`` enter the graph once, as one task (``dask.delayed``), so each worker
   fetches them once per evaluation, not once per partition.
2. Each partition computes its *weighted sums* -- ``sum_i s_i loss_i``,
   ``X_p^T G_p``, ``G_p^T 1`` and ``sum_i s_i`` with ``G_i = s_i (p_i - onehot_i)`` --
   on the worker, with the worker's own backend ("auto": CUDA where the worker
   has a GPU and CuPy, the CPU otherwise) through :class:`SoftmaxObjective`, so
   chunking, the fused kernels and the out-of-memory fallback are the
   single-machine ones.
3. The sums are added pairwise in a tree of Dask tasks (``split_every`` partials per
   task), so no worker or client ever holds more than a few gradients at once.
4. The client divides by the total weight and adds the penalty.

The data never leaves the workers; per evaluation, one parameter set goes out to
each worker and one ``(D + 1) x C`` gradient per tree node comes back up.
"""

import dask
import numpy as np

from ..backends import get_backend
from ..objective import SoftmaxObjective, add_penalty
from ..scaling import column_squares

# Partials added per task of the reduction tree (Dask's own default for reductions).
SPLIT_EVERY = 8


def bundle(X, y, sample_weight):
    """One partition's rows as one object: persisted on one worker, its three arrays never part."""
    return X, y, sample_weight


def persisted_partitions(X, y, sample_weight):
    """The row partitions of ``X``, ``y`` and ``sample_weight``, bundled and persisted.

    Persisted X, y and weights chunks are placed independently, so a partition's
    three chunks could live on three workers and move for every pass; a bundle lives
    on one.  A worker lost later loses its bundles, and Dask recomputes them from
    their graph.
    """
    if not (X.chunks[0] == y.chunks[0] == sample_weight.chunks[0]):
        raise ValueError("X, y and sample_weight must be cut into the same row partitions")
    parts = zip(
        X.to_delayed().ravel(), y.to_delayed().ravel(), sample_weight.to_delayed().ravel(), strict=True
    )
    return list(dask.persist(*[dask.delayed(bundle, pure=True)(*part) for part in parts]))


def partition_objective(part, dtype, n_classes, alpha, fit_intercept, backend):
    """The single-machine objective over one partition, on the worker's ``backend``."""
    X, y, sample_weight = part
    be = get_backend(backend)
    return SoftmaxObjective(
        be, be.resident(X), be.asarray(y), be.asarray(sample_weight, dtype), n_classes, alpha, fit_intercept
    )


def partition_sums(part, params, n_classes, fit_intercept, backend="auto"):
    """``(loss, dW, db, weight)`` summed over one partition, with weights not normalised.

    Parameters
    ----------
    part : tuple (X, y, sample_weight)
        The partition's features (NumPy or CuPy), class indices and weights.
    params : tuple (W, b) of NumPy arrays
    n_classes : int
    fit_intercept : bool
    backend : str, default="auto"
        Where the worker computes.

    Returns
    -------
    tuple (float, ndarray, ndarray, float), on the host, in float64
        float64 whatever the fit's dtype: the tree adds many partials.
    """
    W, b = params
    total = float(np.sum(part[2]))
    if part[0].shape[0] == 0 or total == 0:
        return 0.0, np.zeros(W.shape), np.zeros(b.shape), total
    objective = partition_objective(part, W.dtype, n_classes, 0.0, fit_intercept, backend)
    be = objective.backend
    loss, (dW, db) = objective.loss_grad((be.asarray(W), be.asarray(b)))
    # The objective normalises by this partition's weight; the tree adds raw sums.
    dW, db = (be.to_host(g).astype(np.float64) * total for g in (dW, db))
    return loss * total, dW, db, total


def partition_squares(part):
    """``(sum_i w_i x_ij^2, sum_i w_i)`` of one partition: the preconditioner's moments."""
    X, _, sample_weight = part
    w = np.asarray(sample_weight, np.float64)
    return 0.0, column_squares(X, w), np.zeros(0), float(w.sum())


def _add(*partials):
    """The sum of ``(loss, dW, db, weight)`` tuples, in a new tuple."""
    loss, dW, db, weight = partials[0]
    dW, db = dW.copy(), db.copy()
    for part in partials[1:]:
        loss += part[0]
        dW += part[1]
        db += part[2]
        weight += part[3]
    return loss, dW, db, weight


def tree_sum(tasks, split_every=SPLIT_EVERY):
    """One delayed value: ``tasks`` (delayed tuples of sums) added in a tree of Dask tasks."""
    while len(tasks) > 1:
        tasks = [
            dask.delayed(_add, pure=True)(*tasks[i : i + split_every])
            for i in range(0, len(tasks), split_every)
        ]
    return tasks[0]


class DaskObjective:
    """The penalised objective of :class:`~fastsoftmax.SoftmaxObjective` over Dask partitions.

    It offers what the L-BFGS solver uses: ``loss_grad(params)``, ``backend`` (the
    client's NumPy backend, where the parameters and the solver's history live) and
    ``dtype``.  It persists its partitions (see :func:`persisted_partitions`) and
    holds them for as long as it lives.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        One chunk of columns; rows in partitions.
    y : dask.array.Array of int
        Class indices, chunked as X's rows.
    sample_weight : dask.array.Array
        Chunked as X's rows.
    n_classes : int
    alpha : float
    fit_intercept : bool
    dtype : np.float32 or np.float64
    worker_backend : str, default="auto"
    """

    def __init__(self, X, y, sample_weight, n_classes, alpha, fit_intercept, dtype, worker_backend="auto"):
        self.partitions = persisted_partitions(X, y, sample_weight)
        self.n_features = X.shape[1]
        self.n_classes = n_classes
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.dtype = dtype
        self.worker_backend = worker_backend
        self.backend = get_backend("cpu")

    def init_params(self):
        return np.zeros((self.n_features, self.n_classes), self.dtype), np.zeros(self.n_classes, self.dtype)

    def mean_squares(self):
        """Each feature's weighted mean square over every row (one pass), or None without weight."""
        _, squares, _, total = tree_sum(
            [dask.delayed(partition_squares, pure=True)(p) for p in self.partitions]
        ).compute()
        return squares / total if total > 0 else None

    def graph(self, params):
        """The delayed ``(loss, dW, db, weight)`` sums at ``params``, before computing them."""
        shared = dask.delayed(tuple(np.asarray(p) for p in params), pure=True)
        tasks = [
            dask.delayed(partition_sums, pure=True)(
                part, shared, self.n_classes, self.fit_intercept, self.worker_backend
            )
            for part in self.partitions
        ]
        return tree_sum(tasks)

    def loss_grad(self, params):
        """Return ``loss, (dW, db)`` over every partition, computed on the workers."""
        loss, dW, db, weight = self.graph(params).compute()
        dW, db = (dW / weight).astype(self.dtype), (db / weight).astype(self.dtype)
        return add_penalty(loss / weight, dW, db, params[0], self.alpha, self.fit_intercept)
