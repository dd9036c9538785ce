"""Row chunks of training data, wherever it lives: on the backend, in host memory, or in a source.

The objective walks its rows through :func:`row_chunks`, which yields the same
``(lo, hi, X)`` pieces for every kind of storage, sized so that one backend call can
take each; the backend's ``stream`` then moves them to where it computes (for the
CUDA backend: copies overlapped with compute).  Positions ``lo:hi`` index the
objective's own rows, so labels and weights (held whole) are sliced alongside.
Predictions map over the same pieces with :func:`map_row_chunks`.
"""

import numpy as np

from .backends.cuda import halving_rows_on_out_of_memory
from .sources import DataSource

# Largest logits block a prediction on a backend without a memory limit computes at once.
_HOST_LOGITS_BYTES = 64 << 20


class SourceFeatures:
    """The features of a :class:`~fastsoftmax.sources.DataSource`, as an objective reads them.

    Stands in for ``X`` in an objective whose data does not fit in memory: it has
    ``shape`` and ``dtype`` and is read chunk by chunk, never whole.

    Parameters
    ----------
    source : DataSource
    dtype : np.float32 or np.float64
        Features are converted to it as they are read.
    """

    def __init__(self, source: DataSource, dtype):
        self.source = source
        self.dtype = np.dtype(dtype)
        self.shape = (source.n_samples, source.n_features)
        self.ndim = 2

    @property
    def n_chunks(self):
        return self.source.n_chunks

    @property
    def sparse(self):
        """True when the source's chunks are CSR matrices."""
        return self.source.sparse

    @property
    def bytes_per_row(self):
        return self.source.nbytes / max(1, self.source.n_samples)

    def chunks(self, order=None):
        """Yield ``(lo, hi, X)`` per source chunk, in ``order``: positions and host features."""
        order = range(self.source.n_chunks) if order is None else order
        # Buffers are reused: every consumer (the backends' passes) is done with a
        # chunk before it takes the next.
        for index, X in self.source.iter_features(order, self.dtype, reuse_buffers=True):
            start, stop = self.source.bounds[index]
            yield start, stop, X

    def __repr__(self):
        return f"SourceFeatures({self.source!r})"


def row_chunks(X, step, order=None):
    """Yield ``(lo, hi, X[lo:hi])`` pieces of at most ``step`` rows covering ``X``.

    Parameters
    ----------
    X : array, sparse matrix or SourceFeatures
    step : int
        Largest piece, in rows.
    order : sequence of int, optional
        For SourceFeatures: the order of the source's chunks (a shuffled epoch);
        each chunk is then cut into pieces in its own order.
    """
    if isinstance(X, SourceFeatures):
        for lo, hi, chunk in X.chunks(order):
            for start in range(0, hi - lo, step):
                stop = min(start + step, hi - lo)
                yield lo + start, lo + stop, chunk[start:stop]
        return
    for start in range(0, X.shape[0], step):
        stop = min(start + step, X.shape[0])
        yield start, stop, X[start:stop]


def map_row_chunks(backend, X, n_classes, compute):
    """``compute(X_piece)`` for each row chunk of ``X``, brought to the host and joined in row order.

    Chunks take as many rows as ``backend.max_chunk_rows`` allows, or, on a backend
    without a limit (the CPU), as many as 64 MiB of logits hold, so a prediction never
    needs the logits of every row at once.
    After a device out-of-memory error the whole map starts over with half the rows
    per chunk (:func:`~fastsoftmax.backends.cuda.halving_rows_on_out_of_memory`).

    Parameters
    ----------
    backend : Backend
    X : array, sparse matrix or SourceFeatures
    n_classes : int
        Width of the logits a chunk needs memory for.
    compute : callable
        ``X_piece -> `` a backend array with one row (or one value) per row of the piece.

    Returns
    -------
    ndarray
    """

    def run(step):
        parts = [backend.to_host(compute(X_piece)) for _, _, X_piece in backend.stream(row_chunks(X, step))]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # A backend without a limit (the CPU) still gets chunks: the logits of every row
    # at once would be N x C (800 MB for 20,000 rows of 10,000 classes).
    first = backend.max_chunk_rows(X, n_classes) or max(
        1, min(X.shape[0], _HOST_LOGITS_BYTES // (8 * n_classes))
    )
    return halving_rows_on_out_of_memory(run, first, backend, X, n_classes)[0]
