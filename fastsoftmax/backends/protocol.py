"""The one interface between the maths above and the hardware below.

Everything above the seam (objective, solvers, estimator) talks to arrays only through
a :class:`Backend`.  Arrays are the backend's own type (NumPy here, CuPy for CUDA) and
support ``+ - * @``, ``sum`` and slicing, which is all the objective needs beyond
these methods.  A trailing ``_`` on a method name means it writes into an argument.
"""

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

Array = Any  # numpy.ndarray or cupy.ndarray, depending on the backend


class Backend(Protocol):
    """Computes logits, probabilities and the loss gradient on one kind of device."""

    name: str

    def asarray(self, a, dtype=None) -> Array:
        """Return ``a`` as a C-contiguous backend array (no copy when already one)."""

    def to_host(self, a) -> np.ndarray:
        """Return a backend array as a NumPy array."""

    def zeros(self, shape, dtype) -> Array:
        """Return a zero-filled backend array."""

    def resident(self, a, dtype=None) -> Array:
        """Return a data set where the backend will keep it for repeated passes.

        A backend array when it fits the backend's memory, else a host array that
        the methods below accept and move chunk by chunk.
        """

    def max_chunk_rows(self, X, n_classes) -> int | None:
        """Rows of ``X`` one call of the methods below may take now, or None for no limit.

        Raises DeviceMemoryError when not even one row fits.
        """

    def stream(self, pieces) -> Iterator:
        """Yield ``(lo, hi, X)`` for each ``(lo, hi, X_piece)`` of ``pieces``, with X on this backend.

        Pieces come from host memory, a data source, or the backend itself; the
        backend may move the next piece while the caller computes on this one, so a
        piece is valid until the next one is taken.  Each piece fits one call of the
        methods below (the caller sizes them with ``max_chunk_rows``).
        """

    def logits(self, X, W, b) -> Array:
        """Return ``X @ W + b`` of shape (n_rows, n_classes)."""

    def softmax(self, X, W, b, log=False) -> Array:
        """Return ``softmax(X @ W + b)`` row-wise (its log with ``log=True``)."""

    def loss_grad_accumulate_(self, X, y, scale, W, b, dW, db) -> float:
        """Accumulate one chunk's share of the data term of the objective.

        With ``Z = X @ W + b``, ``G[i] = scale[i] * (softmax(Z[i]) - onehot(y[i]))``:
        ``dW += X.T @ G`` and ``db += G.sum(axis=0)``; return
        ``sum_i scale[i] * (logsumexp(Z[i]) - Z[i, y[i]])``.  Summing these calls
        over the chunks of a data set gives its full-batch loss and gradient.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)
        y : integer array of shape (n_rows,), class indices in [0, n_classes)
        scale : array of shape (n_rows,), sample weight divided by the total weight
        W : array of shape (n_features, n_classes)
        b : array of shape (n_classes,)
        dW : array of shape (n_features, n_classes), caller-owned, added to
        db : array of shape (n_classes,), caller-owned, added to
        """
