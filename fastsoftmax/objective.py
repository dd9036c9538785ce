"""The objective of softmax regression, its gradient, and the functional entry point.

With sample weights s_i, s = sum_i s_i, logits ``z_i = x_i W + b`` and L2 strength
alpha, the objective is

    L(W, b) = (1/s) sum_i s_i (logsumexp(z_i) - z_i[y_i]) + (alpha/2) ||W||_F^2

    dL/dW = X^T G + alpha W,    dL/db = G^T 1,    G_i = (s_i / s) (softmax(z_i) - e_{y_i})

The bias is not penalised.  Without an intercept, b stays zero and its gradient is
reported as zero.

Conventions
-----------
X : (n_samples, n_features); W : (n_features, n_classes); b : (n_classes,);
y : integer class indices in [0, n_classes).  ``scale`` is the per-row factor
``s_i / s``; ``G`` (written in place of the logits by the backend) is ``scale * (P - Y)``.
Parameters travel as a pair ``(W, b)`` of backend arrays.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .backends import Backend, get_backend
from .backends.cuda import halving_rows_on_out_of_memory
from .progress import PassProgress
from .streaming import SourceFeatures, row_chunks
from .validation import (
    check_class_indices,
    check_dtype,
    check_finite,
    check_sample_weight,
    is_device_array,
    is_device_sparse,
    to_host,
)


class Minibatch(NamedTuple):
    """Rows of a minibatch already on the backend: features, class indices, sample weights."""

    X: object
    y: object
    sample_weight: object


@dataclass
class SoftmaxObjective:
    """The penalised objective over a data set held on a backend, in host memory or in a source.

    Parameters
    ----------
    backend : Backend
    X : backend array, host array or SourceFeatures, of shape (n_samples, n_features)
        Features: on the backend (``backend.resident``), on the host when too large
        for the device, or streamed from a data source chunk by chunk.
    y : backend integer array of shape (n_samples,)
    sample_weight : backend array of shape (n_samples,)
    n_classes : int
    alpha : float
        L2 strength on W.
    fit_intercept : bool
    chunk_rows : int or None
        Rows handed to the backend per call; None asks the backend (the CPU backend
        takes everything at once and blocks it for its caches; the CUDA backend sizes
        chunks from device memory).  A pass that runs out of device memory starts
        over with half the rows per chunk, and later passes start from what worked
        (``rows_that_fit``).
    verbose : int
        1 or more shows a bar with rows/s and bytes/s over each pass that streams
        from a data source.
    """

    backend: Backend
    X: object
    y: object
    sample_weight: object
    n_classes: int
    alpha: float = 0.0
    fit_intercept: bool = True
    chunk_rows: int | None = None
    verbose: int = 0

    def __post_init__(self):
        self.scale = self.sample_weight / self.sample_weight.sum()
        # Rows per chunk a pass fell back to after running out of device memory: later
        # passes start there instead of failing again.
        self.rows_that_fit = None

    @property
    def n_samples(self):
        return self.X.shape[0]

    @property
    def streamed(self):
        """True when the features come from a data source, chunk by chunk."""
        return isinstance(self.X, SourceFeatures)

    @property
    def dtype(self):
        # The weights' dtype is the computation's; X may be stored narrower (float16).
        return self.sample_weight.dtype

    def init_params(self):
        """Zero parameters ``(W, b)``: the objective is convex, so zero is as good a start as any."""
        return (
            self.backend.zeros((self.X.shape[1], self.n_classes), self.dtype),
            self.backend.zeros(self.n_classes, self.dtype),
        )

    def _step(self):
        rows = (
            self.chunk_rows or self.backend.max_chunk_rows(self.X, self.n_classes) or max(1, self.n_samples)
        )
        return rows if self.rows_that_fit is None else min(rows, self.rows_that_fit)

    def loss_grad(self, params, rows=None):
        """Return ``loss, (dW, db)`` at ``params``, over all rows or a minibatch.

        Parameters
        ----------
        params : tuple (W, b) of backend arrays
        rows : integer array or Minibatch, optional
            The rows of a minibatch (in-memory data), or a minibatch from
            :meth:`minibatches`; its weights are renormalised to sum to one.

        Returns
        -------
        loss : float
        grads : tuple (dW, db) of backend arrays, freshly allocated

        Raises
        ------
        DeviceMemoryError
            When even one row per chunk runs out of device memory.
        """
        W, b = params
        if rows is None:
            X, y, scale = self.X, self.y, self.scale
            # A bar for passes over a source (in-memory passes are too quick to watch).
            show_bar = self.verbose > 0 and self.streamed
        else:
            X, y, sw = rows if isinstance(rows, Minibatch) else self._take(rows)
            total = sw.sum()
            # A minibatch whose rows all weigh zero carries no information.
            scale = sw / total if total > 0 else sw
            show_bar = False

        def data_term(step):
            return self._data_term(X, y, scale, W, b, step, show_bar)

        first = self._step()
        (loss, dW, db), step = halving_rows_on_out_of_memory(
            data_term, first, self.backend, X, self.n_classes
        )
        if step < first:
            self.rows_that_fit = step
        return add_penalty(loss, dW, db, W, self.alpha, self.fit_intercept)

    def _data_term(self, X, y, scale, W, b, step, show_bar):
        """``loss, dW, db`` of the data term over ``X``, from zero sums, in chunks of at most ``step`` rows."""
        dW = self.backend.zeros(W.shape, self.dtype)
        db = self.backend.zeros(b.shape, self.dtype)
        loss = 0.0
        bytes_per_row = X.bytes_per_row if isinstance(X, SourceFeatures) else 0
        with PassProgress(X.shape[0], bytes_per_row, show_bar) as bar:
            for lo, hi, X_piece in self.backend.stream(row_chunks(X, step)):
                loss += self.backend.loss_grad_accumulate_(X_piece, y[lo:hi], scale[lo:hi], W, b, dW, db)
                bar.update(hi - lo)
        return loss, dW, db

    def loss(self, params, rows=None):
        """The objective's value (computed with its gradient; the pass costs the same)."""
        return self.loss_grad(params, rows)[0]

    def minibatches(self, rng, batch_size, shuffle=True, skip=0):
        """Yield one epoch of minibatches, each for :meth:`loss_grad`'s ``rows``.

        In-memory data: batches of a permutation of all rows.  Streamed data: the
        source's chunks in a permuted order, and batches of a permutation of each
        chunk's rows (a batch never spans two chunks), so an epoch reads every chunk
        once, sequentially.  Rows within a batch are sorted: a sum over a batch does
        not depend on order, and sorted rows read memory in order.

        Parameters
        ----------
        rng : numpy.random.RandomState
            Draws the permutations; a fixed seed reproduces the epoch.
        batch_size : int
        shuffle : bool, default=True
        skip : int, default=0
            Batches at the start of the epoch to pass over (resuming an epoch from a
            checkpoint): ``rng`` draws what it would have drawn for them, but their
            rows are neither gathered nor read from the source.
        """
        if not self.streamed:
            order = rng.permutation(self.n_samples) if shuffle else np.arange(self.n_samples)
            for start in range(skip * batch_size, self.n_samples, batch_size):
                yield Minibatch(*self._take(np.sort(order[start : start + batch_size])))
            return
        chunk_order = list(rng.permutation(self.X.n_chunks) if shuffle else range(self.X.n_chunks))
        while chunk_order and skip:
            lo, hi = self.X.source.bounds[chunk_order[0]]
            n_batches = -(-(hi - lo) // batch_size)
            if n_batches > skip:
                break
            if shuffle:
                rng.permutation(hi - lo)  # the draw this chunk's batches would have taken
            skip -= n_batches
            chunk_order.pop(0)
        with PassProgress(self.n_samples, self.X.bytes_per_row, self.verbose > 1) as bar:
            # Batches are drawn per source chunk, on the host, so that they depend on
            # the source and the seed alone (not on device memory, which sizes pieces).
            for lo, hi, X in self.X.chunks(chunk_order):
                local = rng.permutation(hi - lo) if shuffle else np.arange(hi - lo)
                for start in range(skip * batch_size, hi - lo, batch_size):
                    picked = np.sort(local[start : start + batch_size])
                    positions = self.backend.asarray(picked + lo)
                    X_batch = self.backend.asarray(X[picked])
                    yield Minibatch(X_batch, self.y[positions], self.sample_weight[positions])
                skip = 0
                bar.update(hi - lo)

    def _take(self, rows):
        """Features, labels and weights of ``rows`` (host indices) of in-memory data."""
        on_backend = self.backend.asarray(rows)
        X = self.X[on_backend if is_device_array(self.X) else rows]
        return X, self.y[on_backend], self.sample_weight[on_backend]


def add_penalty(loss, dW, db, W, alpha, fit_intercept):
    """``loss, (dW, db)`` of the data term completed: the L2 term added, the intercept's gradient
    zeroed without an intercept (``dW`` and ``db`` are updated in place).
    """
    if alpha:
        # In float64: squares of float32 weights beyond 1.8e19 would overflow.
        W64 = W.astype(np.float64, copy=False)
        loss += 0.5 * alpha * float((W64 * W64).sum())
        dW += alpha * W
    if not fit_intercept:
        db[...] = 0
    return float(loss), (dW, db)


def loss_and_grad(X, y, W, b=None, sample_weight=None, alpha=0.0, backend="auto"):
    """Loss and gradient of L2-penalised softmax regression, for your own optimiser.

    Computes ``L = (1/s) sum_i s_i (logsumexp(z_i) - z_i[y_i]) + alpha/2 ||W||^2``
    with ``z_i = x_i W + b`` and ``s = sum_i s_i``, and its gradient.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
        float32 or float64; the computation runs in X's dtype (other inputs are cast
        to it); integer X is converted to float64.  Sparse X (SciPy, or CuPy's
        ``cupyx.scipy.sparse``) stays sparse on either backend; CuPy X on the CUDA
        backend stays on the device.
    y : array-like of int, shape (n_samples,)
        Class indices in ``[0, n_classes)``.
    W : array-like of shape (n_features, n_classes)
    b : array-like of shape (n_classes,), optional
        Bias; None means no intercept (and ``db`` is then zeros).
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights; None means all ones.
    alpha : float, default=0.0
        L2 strength on W (the bias is not penalised).
    backend : {"auto", "cpu", "cuda"} or Backend, default="auto"

    Returns
    -------
    loss : float
    dW : array of shape (n_features, n_classes)
    db : array of shape (n_classes,)
        Backend arrays (NumPy for "cpu").

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import loss_and_grad
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> loss, dW, db = loss_and_grad(X, [0, 1], np.zeros((2, 3)), np.zeros(3))
    >>> print(f"{loss:.6f} = log(3)")
    1.098612 = log(3)
    """
    be = get_backend(backend)
    X = X if is_device_array(X) or sp.issparse(X) or is_device_sparse(X) else np.asarray(X)
    W, b, y, sample_weight = (to_host(a) for a in (W, b, y, sample_weight))
    # 16-bit floats (NumPy's float16, ml_dtypes' bfloat16) widen to float32 exactly,
    # as fit and predict widen them.
    narrow = X.dtype.name in ("float16", "bfloat16")
    if X.dtype.kind not in "fiub" and not narrow:
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X has no samples")
    if narrow:
        X = X.astype(np.float32)
    dtype = check_dtype(X.dtype) if X.dtype.kind == "f" else np.float64
    W_host = np.asarray(W, dtype=dtype)
    if W_host.ndim != 2 or W_host.shape[0] != X.shape[1]:
        raise ValueError(f"W must have shape (n_features={X.shape[1]}, n_classes), got {W_host.shape}")
    n_classes = W_host.shape[1]
    fit_intercept = b is not None
    b_host = np.zeros(n_classes, dtype) if b is None else np.asarray(b, dtype=dtype)
    if b_host.shape != (n_classes,):
        raise ValueError(f"b must have shape (n_classes={n_classes},), got {b_host.shape}")
    for name, arr in (("X", X), ("W", W_host), ("b", b_host)):
        check_finite(arr, name)
    y_idx = check_class_indices(y, n_classes, X.shape[0])
    sw = check_sample_weight(sample_weight, X.shape[0], dtype)
    alpha = float(alpha)
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite non-negative number, got {alpha}")
    objective = SoftmaxObjective(
        be, be.asarray(X, dtype), be.asarray(y_idx), be.asarray(sw), n_classes, alpha, fit_intercept
    )
    loss, (dW, db) = objective.loss_grad((be.asarray(W_host), be.asarray(b_host)))
    return loss, dW, db
