"""The data-source interface: a labelled data set read as row chunks, on demand.

A source knows its shape and the row ranges of its chunks, and reads one chunk's
features at a time; labels and sample weights (one number per row, small beside
the features) are read whole.  Training streams the features chunk by chunk, so a
data set need never fit in memory; everything that needs all labels at once (the
classes, balanced class weights, the total weight) reads them first.

Every check runs as the data arrives, and every error names the file and the chunk
(with its row range), so a problem in row 90 million of a 40 GB file reads as such.
"""

import numbers
import reprlib
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from queue import Queue

import numpy as np
import scipy.sparse as sp

# Features per chunk, in bytes, when a format has no chunking of its own: large
# enough that per-chunk overheads (a read call, a kernel launch, a host-to-device
# copy) vanish, small enough that the three chunks in flight stay a small fraction of RAM.
DEFAULT_CHUNK_BYTES = 64 << 20
# Label dtypes a classifier can take: booleans, numbers, strings and dates; the
# entries of an object array (a Parquet column of strings) are checked one by one.
_LABEL_KINDS = "biufUMmO"


class DataSourceError(ValueError):
    """A data source holds something that cannot be trained on; the message says where.

    Attributes
    ----------
    source : str
        The file (or "array") the problem is in.
    chunk : int or None
        The chunk's index, when the problem is in one chunk.
    """

    def __init__(self, message, source, chunk=None):
        super().__init__(message)
        self.source = source
        self.chunk = chunk


@dataclass(frozen=True)
class Chunk:
    """Rows ``start`` to ``start + len(X)`` of a source.

    Attributes
    ----------
    index : int
        Position of the chunk in the source.
    start : int
        Index of its first row in the whole data set.
    X : ndarray or scipy.sparse.csr_matrix of shape (n_rows, n_features)
    y : ndarray of shape (n_rows,) or None
        Labels, when the source has them.
    sample_weight : ndarray of shape (n_rows,) or None
    """

    index: int
    start: int
    X: object
    y: object = None
    sample_weight: object = None

    @property
    def stop(self):
        return self.start + self.X.shape[0]


def chunk_bounds(n_samples, rows_per_chunk):
    """Row ranges ``[(start, stop), ...]`` of ``rows_per_chunk`` rows (the last may be shorter)."""
    rows_per_chunk = max(1, int(rows_per_chunk))
    return [(start, min(start + rows_per_chunk, n_samples)) for start in range(0, n_samples, rows_per_chunk)]


def rows_for_bytes(n_features, itemsize, chunk_bytes=DEFAULT_CHUNK_BYTES):
    """Rows of ``n_features`` values of ``itemsize`` bytes that fill ``chunk_bytes``."""
    return max(1, int(chunk_bytes) // max(1, n_features * itemsize))


class DataSource(ABC):
    """A data set of ``n_samples`` rows and ``n_features`` columns, read in chunks.

    Subclasses set ``name``, ``n_samples``, ``n_features`` and ``bounds`` (the row
    range of each chunk, in order, covering every row once) and implement
    :meth:`_read_features` and :meth:`_read_targets`.  The public methods add the
    checks, so that every source reports bad data the same way.

    Attributes
    ----------
    name : str
        What errors name: the file's path, or a description.
    n_samples, n_features : int
    bounds : list of (start, stop)
    feature_names : ndarray of str or None
        Column names, for formats that have them.
    sparse : bool
        Whether chunks come as CSR matrices.
    """

    name = "data source"
    feature_names = None
    sparse = False  # True for sources whose chunks are CSR matrices

    # -- what a format implements ------------------------------------------------
    def _read_features(self, index):
        """Features of chunk ``index`` as read: a 2-D array or a sparse matrix.

        Every file format implements this; sources made of other sources (subsets,
        shards) override :meth:`read_features` instead, so that the source holding
        the chunk reads and checks it and its errors name that source.
        """
        raise NotImplementedError

    @abstractmethod
    def _read_targets(self):
        """``(y, sample_weight)`` for every row: arrays, or None where the source has none."""

    # -- what everyone calls -------------------------------------------------------
    @property
    def n_chunks(self):
        return len(self.bounds)

    @property
    def nbytes(self):
        """Bytes of features one pass reads (stored values, for sparse formats)."""
        return self.n_samples * self.n_features * 4  # overridden where the storage is known

    # Whether _read_features takes ``out=``, a buffer to read the chunk into.
    reads_into_buffers = False

    def read_features(self, index, dtype=None, out=None):
        """Checked features of chunk ``index``, converted to ``dtype`` when one is given.

        Parameters
        ----------
        index : int
        dtype : dtype, optional
        out : ndarray, optional
            A buffer of the stored dtype and at least the chunk's rows, for sources
            with ``reads_into_buffers``; the result is then a view of it.

        Raises
        ------
        DataSourceError
            When the chunk's shape disagrees with the source, its values are not
            real numbers, or it holds NaN or infinity.
        """
        start, stop = self.bounds[index]
        try:
            X = self._read_features(index) if out is None else self._read_features(index, out=out)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            if isinstance(exc, DataSourceError):
                raise
            raise self.error(f"cannot read the features: {exc}", index) from exc
        if X.ndim != 2:
            raise self.error(f"features are {X.ndim}-D; expected a 2-D table", index)
        if X.shape != (stop - start, self.n_features):
            raise self.error(
                f"features have shape {X.shape}; expected ({stop - start}, {self.n_features}) "
                "(the column count must not change between chunks)",
                index,
            )
        values = X.data if sp.issparse(X) else X
        if values.dtype.kind not in "fiub":
            raise self.error(f"features have dtype {values.dtype}; expected real numbers", index)
        if dtype is not None and values.dtype != dtype:
            X = X.astype(dtype)
            values = X.data if sp.issparse(X) else X
        # Each chunk is checked for NaN and infinity on its first read only: the check
        # cost a third of the read time, and an L-BFGS fit reads every chunk per pass.
        checked = self.__dict__.setdefault("_finite_chunks", set())
        if values.dtype.kind == "f" and (index, values.dtype) not in checked:
            if not np.isfinite(values).all():
                raise self.error(_first_non_finite(X, values, start), index)
            checked.add((index, values.dtype))
        return X

    def targets(self):
        """Labels and sample weights of every row, checked.

        Returns
        -------
        y : ndarray of shape (n_samples,) or None
        sample_weight : ndarray of float64, shape (n_samples,), or None

        Raises
        ------
        DataSourceError
            When labels are missing for some rows or are not finite numbers,
            strings or dates, or weights are not finite and non-negative.
        """
        try:
            y, sample_weight = self._read_targets()
        except (OSError, ValueError, KeyError, EOFError) as exc:
            if isinstance(exc, DataSourceError):
                raise
            raise self.error(f"cannot read the labels: {exc}") from exc
        if y is not None:
            y = np.asarray(y)
            if y.shape != (self.n_samples,):
                raise self.error(f"labels have shape {y.shape}; expected ({self.n_samples},), one per row")
            missing = _missing(y)
            if missing.any():
                row = int(np.flatnonzero(missing)[0])
                raise self.error(f"labels are missing (first in row {row})", self.chunk_of_row(row))
            if y.dtype.kind not in _LABEL_KINDS:
                raise self.error(f"labels have dtype {y.dtype}; expected numbers, strings or dates")
            row = _first_unusable_label(y)
            if row is not None:
                label = y[row : row + 1].tolist()[0]  # shown as inf, not np.float64(inf)
                raise self.error(
                    f"label {reprlib.repr(label)} in row {row} is not a finite number or a string",
                    self.chunk_of_row(row),
                )
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)
            if sample_weight.shape != (self.n_samples,) or sample_weight.dtype.kind not in "fiub":
                raise self.error(
                    f"sample weights have shape {sample_weight.shape} and dtype {sample_weight.dtype}; "
                    f"expected ({self.n_samples},) real numbers"
                )
            sample_weight = sample_weight.astype(np.float64)
            bad = ~np.isfinite(sample_weight) | (sample_weight < 0)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise self.error(
                    f"sample weight {sample_weight[row]} in row {row}; weights must be finite and non-negative",
                    self.chunk_of_row(row),
                )
        return y, sample_weight

    def chunks(self, dtype=None, *, order=None, prefetch=True):
        """Yield every chunk as a :class:`Chunk`, reading the next one while this one is used.

        Parameters
        ----------
        dtype : dtype, optional
            Convert features to it.
        order : sequence of int, optional
            Chunk indices in the order wanted (default: 0, 1, ...).
        prefetch : bool, default=True
            Read one chunk ahead on a background thread, so that reading overlaps
            the caller's computation.  At most three chunks are held at a time: the
            caller's, one read ahead, and one being read.
        """
        y, sample_weight = self.targets()
        order = range(self.n_chunks) if order is None else order
        for index, X in self.iter_features(order, dtype, prefetch=prefetch):
            start, stop = self.bounds[index]
            yield Chunk(
                index,
                start,
                X,
                None if y is None else y[start:stop],
                None if sample_weight is None else sample_weight[start:stop],
            )

    def iter_features(self, order, dtype=None, *, prefetch=True, reuse_buffers=False):
        """Yield ``(index, features)`` for the chunks in ``order``, checked and converted.

        With ``reuse_buffers`` (for sources that read into buffers), chunks are read
        into a ring of three buffers allocated once, instead of fresh memory whose
        first touch costs a page fault per 4 KiB (measured here: a pass over a 1 GiB
        ``.npy`` in 64 MiB chunks read in 239 ms into fresh arrays, 85 ms into one
        reused buffer).  Each chunk is then valid only until the next one is taken.
        """
        order = list(order)
        ring = _BufferRing() if reuse_buffers and self.reads_into_buffers else None

        def read(index):
            if ring is None:
                return self.read_features(index, dtype)
            start, stop = self.bounds[index]
            return self.read_features(
                index, dtype, out=ring.next(stop - start, self.n_features, self.stored_dtype)
            )

        if not prefetch or len(order) < 2:
            for index in order:
                yield index, read(index)
            return
        yield from _prefetched(order, read)

    def subset(self, rows):
        """A :class:`RowSubset` of this source: ``rows`` (sorted indices) in their order here."""
        return RowSubset(self, rows)

    def chunk_of_row(self, row):
        """Index of the chunk that holds ``row``."""
        starts = [start for start, _ in self.bounds]
        return int(np.searchsorted(starts, row, side="right") - 1)

    def error(self, message, chunk=None):
        """A :class:`DataSourceError` that names this source and, if given, the chunk."""
        where = self.name
        if chunk is not None:
            start, stop = self.bounds[chunk]
            where += f", chunk {chunk} (rows {start} to {stop - 1})"
        return DataSourceError(f"{where}: {message}", self.name, chunk)

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.name!r}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}, n_chunks={self.n_chunks})"
        )


def _first_non_finite(X, values, start):
    """What and where the first NaN or infinity of a chunk is, for an error message."""
    flat = int(np.flatnonzero(~np.isfinite(values.reshape(-1)))[0])
    what = "NaN" if np.isnan(values.reshape(-1)[flat]) else "infinity"
    # Sparse: the stored value's row is found from the row pointers.
    local = int(np.searchsorted(X.indptr, flat, side="right") - 1) if sp.issparse(X) else flat // X.shape[1]
    return f"features contain {what} (first in row {start + local})"


def _missing(y):
    """Rows whose label is missing: NaN, None, or a masked or empty entry."""
    if y.dtype.kind == "f":
        return np.isnan(y)
    if y.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in y], dtype=bool)
    return np.zeros(y.shape, dtype=bool)


def _first_unusable_label(y):
    """Row of the first label that cannot name a class (infinity, a list, bytes, ...), or None."""
    if y.dtype.kind == "f":
        rows = np.flatnonzero(np.isinf(y))
        return int(rows[0]) if rows.size else None
    if y.dtype.kind == "O":
        return next(
            (row for row, v in enumerate(y) if not isinstance(v, (str, numbers.Real, np.bool_))), None
        )
    return None


class _BufferRing:
    """Three buffers handed out in turn: one the consumer holds, one queued, one being read.

    :func:`_prefetched` reads chunk k+2 only after the consumer took chunk k+1, by
    which time it has let go of chunk k-1, the buffer that k+2 reuses.
    """

    def __init__(self, size=3):
        self._buffers = [None] * size
        self._turn = 0

    def next(self, n_rows, n_columns, dtype):
        slot = self._turn % len(self._buffers)
        self._turn += 1
        buffer = self._buffers[slot]
        if (
            buffer is None
            or buffer.shape[0] < n_rows
            or buffer.shape[1:] != (n_columns,)
            or buffer.dtype != dtype
        ):
            buffer = self._buffers[slot] = np.empty((n_rows, n_columns), dtype=dtype)
        return buffer[:n_rows]


_DONE = object()


def _prefetched(order, read):
    """Yield ``(index, read(index))`` with the next read running on a background thread.

    The queue holds one finished chunk, so at most three are alive: the one the
    consumer holds, the one queued, and the one being read.  An error in the reader is raised in the
    consumer at the chunk where it happened.  Abandoning the generator stops the
    reader after its current chunk.
    """
    slots = Queue(maxsize=1)
    stop = threading.Event()

    def reader():
        for index in order:
            if stop.is_set():
                return
            try:
                item = (index, read(index), None)
            except BaseException as exc:  # handed to the consumer, raised there
                item = (index, None, exc)
            slots.put(item)
            if item[2] is not None:
                return
        slots.put(_DONE)

    thread = threading.Thread(target=reader, name="fastsoftmax-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            index, value, exc = item
            if exc is not None:
                raise exc
            yield index, value
            del value
    finally:
        stop.set()
        # Unblock a reader waiting to hand over a chunk nobody will take.
        while thread.is_alive():
            try:
                slots.get(timeout=0.05)
            except Exception:
                pass


class OpenFileSource(DataSource):
    """A source that keeps its file open between reads, guarded by a lock.

    The reader thread and the caller may both read; one lock serialises them (the
    file libraries are not safe for concurrent reads on one handle).  A pickled
    source holds its path and reopens the file on its first read.
    """

    def _init_handle(self):
        self._lock = threading.Lock()
        self._handle = None

    def _open(self):
        """The file, opened for reading; a DataSourceError naming the path if it cannot be."""
        raise NotImplementedError

    def _opened(self):
        """The open file (opened on first use); call with the lock held."""
        if self._handle is None:
            self._handle = self._open()
        return self._handle

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class RowSubset(DataSource):
    """Some rows of a source, in their order there: a training or held-out split, never copied.

    Chunks are the parent's chunks that hold selected rows, each cut down to them;
    errors name the parent's file and chunk.

    Parameters
    ----------
    parent : DataSource
    rows : array-like of int
        Sorted, distinct row indices of ``parent``.
    """

    def __init__(self, parent, rows):
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows[0] < 0 or rows[-1] >= parent.n_samples)):
            raise ValueError(f"rows must be 1-D indices in [0, {parent.n_samples})")
        if np.any(np.diff(rows) <= 0):
            raise ValueError("rows must be sorted and distinct")
        self.parent, self.rows = parent, rows
        self.name, self.feature_names, self.sparse = parent.name, parent.feature_names, parent.sparse
        self.n_samples, self.n_features = len(rows), parent.n_features
        self._parts, self.bounds = [], []
        for index, (start, stop) in enumerate(parent.bounds):
            lo, hi = (int(i) for i in np.searchsorted(rows, (start, stop)))
            if hi > lo:
                self._parts.append((index, rows[lo:hi] - start))
                self.bounds.append((lo, hi))

    @property
    def nbytes(self):
        return int(self.parent.nbytes * self.n_samples / max(1, self.parent.n_samples))

    def read_features(self, index, dtype=None):
        # The parent checks its chunk (naming its own file and rows); selecting rows
        # cannot make the result wrong, so no second check.
        parent_index, local = self._parts[index]
        return self.parent.read_features(parent_index, dtype)[local]

    def _read_targets(self):
        y, sample_weight = self.parent.targets()
        return (None if y is None else y[self.rows]), (
            None if sample_weight is None else sample_weight[self.rows]
        )
