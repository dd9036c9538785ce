"""Sources over named arrays in one container: HDF5 files here, zarr groups in :mod:`.zarr`.

Both formats hold the features as a 2-D array and the labels and weights as 1-D
arrays beside it, each stored in chunks of rows.  Reading chunks that coincide with
(multiples of) the stored ones decompresses every stored chunk once per pass, so
the chunks here are aligned to them.
"""

import os

from .base import (
    DEFAULT_CHUNK_BYTES,
    DataSourceError,
    OpenFileSource,
    chunk_bounds,
    rows_for_bytes,
)


class _ArrayStoreSource(OpenFileSource):
    """Features, labels and sample weights stored as named arrays of one container.

    A subclass opens the container (:meth:`_open`) and says what counts as an array
    in it and how its rows are chunked; this class finds and checks the arrays, lays
    out the chunks and reads them.  One handle is kept, opened again after
    unpickling, and every read holds a lock: the reader thread of
    :meth:`~fastsoftmax.sources.base.DataSource.chunks` and the caller may both read.
    """

    kind = "container"  # what errors call the format
    # Errors a read raises for damaged data beyond those the base class wraps
    # (OSError, ValueError, KeyError, EOFError).
    read_errors = ()

    def __init__(self, path, *, features, label, weight, chunk_rows):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        self.name = str(path)
        self._init_handle()
        with self._lock:
            try:
                X, row_chunks = self._inspect(features, label, weight)
                shape, dtype = X.shape, X.dtype
            except DataSourceError:
                raise
            except (OSError, ValueError, KeyError, EOFError, *self.read_errors) as exc:
                # Damaged metadata: the library raises as it parses a node.
                raise DataSourceError(
                    f"{self.name}: the {self.kind} cannot be read ({type(exc).__name__}: {exc})", self.name
                ) from None
        if shape is None or len(shape) != 2:  # None: an HDF5 dataset without a dataspace
            raise DataSourceError(
                f"{self.name}: the features {features!r} have shape {shape}; expected 2-D (n_samples, n_features)",
                self.name,
            )
        if dtype.kind not in "fiub":
            raise DataSourceError(
                f"{self.name}: the features {features!r} have dtype {dtype}; expected real numbers",
                self.name,
            )
        self._features, self._label, self._weight = features, label, weight
        self.n_samples, self.n_features = (int(n) for n in shape)
        self._itemsize = dtype.itemsize
        if chunk_rows is None:
            target = rows_for_bytes(self.n_features, self._itemsize, DEFAULT_CHUNK_BYTES)
            chunk_rows = _aligned_rows(row_chunks, target)
        self.bounds = chunk_bounds(self.n_samples, chunk_rows)

    # -- what a format implements --------------------------------------------------
    def _is_array(self, node):
        return True

    def _row_chunks(self, array):
        """Rows per stored chunk of ``array``, preferred first; empty when it is not chunked."""
        return []

    def _read_vector(self, array):
        return array[...]

    # -- shared machinery ----------------------------------------------------------
    @property
    def nbytes(self):
        return self.n_samples * self.n_features * self._itemsize

    def _inspect(self, features, label, weight):
        """The features array and its row chunking; notes whether labels exist.  Hold the lock."""
        X = self._find(features, "features")
        if X is None:
            raise DataSourceError(
                f"{self.name}: the {self.kind} has no array {features!r} (the features); "
                f"it holds {self._members()}",
                self.name,
            )
        self._has_label = label is not None and self._find(label, "labels") is not None
        if weight is not None and self._find(weight, "sample weights") is None:
            raise DataSourceError(
                f"{self.name}: the {self.kind} has no array {weight!r} (the sample weights); "
                f"it holds {self._members()}",
                self.name,
            )
        return X, self._row_chunks(X)

    def _find(self, name, what):
        """The array called ``name``, or None when the container has nothing of that name."""
        try:
            node = self._opened()[name]
        except KeyError:
            return None
        if not self._is_array(node):
            raise DataSourceError(f"{self.name}: {name!r} (the {what}) is a group, not an array", self.name)
        return node

    def _members(self):
        # h5py gives a name that is not UTF-8 (a damaged file's) as bytes, which str cannot be sorted with.
        names = sorted(map(str, self._opened().keys()))
        return names if len(names) <= 10 else names[:10] + ["..."]

    def _read_features(self, index):
        start, stop = self.bounds[index]
        try:
            with self._lock:
                return self._opened()[self._features][start:stop]
        except self.read_errors as exc:
            raise self.error(f"cannot read the features: {type(exc).__name__}: {exc}", index) from None

    def _read_targets(self):
        try:
            with self._lock:
                store = self._opened()
                y = self._one_per_row(store[self._label], "labels") if self._has_label else None
                sample_weight = (
                    None if self._weight is None else self._one_per_row(store[self._weight], "sample weights")
                )
        except self.read_errors as exc:
            raise self.error(f"cannot read the labels: {type(exc).__name__}: {exc}") from None
        return y, sample_weight

    def _one_per_row(self, array, what):
        """The vector ``array``, its shape checked first: a damaged one may promise terabytes."""
        if array.shape != (self.n_samples,):
            raise self.error(f"{what} have shape {array.shape}; expected ({self.n_samples},), one per row")
        return self._read_vector(array)


def _aligned_rows(row_chunks, target):
    """Rows per chunk near ``target`` that keep stored chunks whole.

    The largest multiple of a stored chunk's rows up to ``target`` (``row_chunks``
    lists the candidates, the coarsest first, such as a zarr shard before its inner
    chunks).  When even the finest stored chunk is larger than ``target``, each is
    read in equal parts instead, so that a chunk never holds far more than
    ``target`` rows.
    """
    for unit in row_chunks:
        if unit <= target:
            return target // unit * unit
    if not row_chunks:
        return target
    unit = row_chunks[-1]
    parts = -(-unit // target)
    return -(-unit // parts)


class HDF5Source(_ArrayStoreSource):
    """Features, labels and sample weights held as datasets of an HDF5 file (read with h5py).

    Chunks are whole multiples of the features dataset's own row chunking, as many
    as fit in about 64 MiB (a contiguous dataset is read in chunks of about 64 MiB),
    so every stored chunk is decompressed once per pass.  One file handle is kept;
    reads hold a lock, so the reader thread of :meth:`chunks` and the caller may both
    read.  A source pickles as its path and options, and reopens the file when read.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.
    features : str, default="X"
        The 2-D dataset of features (a path such as ``"data/X"`` reaches into groups).
    label : str or None, default="y"
        The 1-D dataset of labels.  When the file has no dataset of that name the
        source has no labels (fine for prediction; training reports it).  String
        labels come out as str.
    weight : str, optional
        The 1-D dataset of sample weights; an error when the file lacks it.
    chunk_rows : int, optional
        Rows per chunk, instead of the aligned default.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataSourceError
        When the file is not HDF5 (or is truncated or damaged), lacks the features
        or the named weights, or its features are not a 2-D array of real numbers.

    Examples
    --------
    >>> import numpy as np, h5py, tempfile, os
    >>> from fastsoftmax.sources.hdf5 import HDF5Source
    >>> path = os.path.join(tempfile.mkdtemp(), "data.h5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("X", data=np.arange(12.0).reshape(6, 2), chunks=(2, 2))
    ...     _ = f.create_dataset("y", data=[0, 1, 0, 1, 0, 1])
    >>> source = HDF5Source(path, chunk_rows=4)
    >>> source.bounds
    [(0, 4), (4, 6)]
    >>> source.read_features(1)
    array([[ 8.,  9.],
           [10., 11.]])
    """

    kind = "HDF5 file"
    read_errors = (RuntimeError,)  # h5py's error for a damaged group ("Link iteration failed")

    def __init__(self, path, *, features="X", label="y", weight=None, chunk_rows=None):
        super().__init__(path, features=features, label=label, weight=weight, chunk_rows=chunk_rows)

    def _open(self):
        h5py = _import_h5py()
        if os.path.isdir(self.name):
            raise DataSourceError(f"{self.name}: is a directory, not an HDF5 file", self.name)
        try:
            return h5py.File(self.name, "r")
        except OSError as exc:  # h5py's error for a file that is not HDF5, or is truncated
            # HDF5's messages may run over several lines; an error message is one.
            raise DataSourceError(
                f"{self.name}: cannot be opened as an HDF5 file ({' '.join(str(exc).split())})", self.name
            ) from None

    def _is_array(self, node):
        return isinstance(node, _import_h5py().Dataset)

    def _row_chunks(self, dataset):
        return [] if dataset.chunks is None or not dataset.chunks else [int(dataset.chunks[0])]

    def _read_vector(self, dataset):
        if _import_h5py().check_string_dtype(dataset.dtype) is not None:
            return dataset.asstr()[()]  # h5py reads strings as bytes otherwise
        return dataset[()]


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading HDF5 files needs h5py: pip install h5py (or fastsoftmax[io])") from None
    return h5py
