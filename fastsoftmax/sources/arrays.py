"""Sources over arrays: in memory, memory-mapped, and ``.npy`` files read by row ranges."""

import mmap
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..npyformat import load_npy, read_npy_header
from ..validation import to_host
from .base import DataSource, DataSourceError, chunk_bounds, rows_for_bytes


class ArraySource(DataSource):
    """A source over arrays already in the process: NumPy, ``np.memmap`` or SciPy CSR.

    A memory-mapped array (``np.load(path, mmap_mode="r")``) is read chunk by chunk
    from its file with ordinary reads instead of through the mapping: mapped pages
    count towards the process's resident memory until the kernel reclaims them,
    reads do not, so a pass over a memory-mapped data set larger than RAM keeps the
    process small.

    Parameters
    ----------
    X : ndarray, np.memmap or scipy.sparse matrix of shape (n_samples, n_features)
    y : array-like of shape (n_samples,), optional
    sample_weight : array-like of shape (n_samples,), optional
    chunk_rows : int, optional
        Rows per chunk; by default about 64 MiB of features.
    name : str, optional
        What error messages call this data; by default the file of a memory map,
        else "array".

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.sources import ArraySource
    >>> source = ArraySource(np.ones((10, 3)), y=np.arange(10) % 2, chunk_rows=4)
    >>> [chunk.X.shape[0] for chunk in source.chunks()]
    [4, 4, 2]
    """

    def __init__(self, X, y=None, sample_weight=None, *, chunk_rows=None, name=None):
        self._file = _NpyFile.from_memmap(X) if isinstance(X, np.memmap) else None
        self.name = name or (self._file.path if self._file is not None else "array")
        if self._file is None:
            X = X.tocsr() if sp.issparse(X) else np.asarray(X)
        if X.ndim != 2:
            raise DataSourceError(
                f"{self.name}: X must be 2-D (n_samples, n_features), got shape {X.shape}", self.name
            )
        self._X = X
        self.sparse = sp.issparse(X)
        self.n_samples, self.n_features = X.shape
        itemsize = X.dtype.itemsize
        if sp.issparse(X):  # stored values and their column indices, per average row
            itemsize = (X.data.itemsize + X.indices.itemsize) * X.nnz / max(1, X.shape[0] * X.shape[1])
        self._itemsize = itemsize
        rows = chunk_rows or rows_for_bytes(self.n_features, max(itemsize, 1e-3))
        self.bounds = chunk_bounds(self.n_samples, rows)
        self._y = y
        self._sample_weight = sample_weight

    @property
    def nbytes(self):
        return int(self.n_samples * self.n_features * self._itemsize)

    @property
    def reads_into_buffers(self):
        return self._file is not None

    def subset(self, rows):
        """Rows of in-memory arrays as a new ArraySource (a copy, read like any array);
        of a memory map, a :class:`~fastsoftmax.sources.base.RowSubset` (never copied)."""
        if self._file is not None:
            return super().subset(rows)
        y, sample_weight = self._read_targets()
        rows = np.asarray(rows, dtype=np.int64)
        return ArraySource(
            self._X[rows],
            None if y is None else y[rows],
            None if sample_weight is None else sample_weight[rows],
            chunk_rows=self.bounds[0][1] - self.bounds[0][0] if self.bounds else None,
            name=self.name,
        )

    @property
    def stored_dtype(self):
        return self._X.dtype

    def _read_features(self, index, out=None):
        start, stop = self.bounds[index]
        if self._file is not None:
            return self._file.read_rows(start, stop, out)
        return self._X[start:stop]

    def _read_targets(self):
        return _as_vector(self._y), _as_vector(self._sample_weight)


class NpySource(DataSource):
    """Features in a ``.npy`` file, read by row ranges (never loaded whole, never pickled).

    Parameters
    ----------
    path : str or Path
        A 2-D C-ordered ``.npy`` file of real numbers.
    y : array-like or path of a 1-D ``.npy`` file, optional
        Labels, one per row.
    sample_weight : array-like or path of a 1-D ``.npy`` file, optional
    chunk_rows : int, optional
        Rows per chunk; by default about 64 MiB of features.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from fastsoftmax.sources import NpySource
    >>> path = os.path.join(tempfile.mkdtemp(), "X.npy")
    >>> np.save(path, np.arange(12.0).reshape(4, 3))
    >>> source = NpySource(path, y=[0, 1, 0, 1], chunk_rows=3)
    >>> source.read_features(1)
    array([[ 9., 10., 11.]])
    """

    def __init__(self, path, y=None, sample_weight=None, *, chunk_rows=None):
        self._file = _NpyFile(path)
        self.name = str(path)
        self.n_samples, self.n_features = self._file.shape
        rows = chunk_rows or rows_for_bytes(self.n_features, self._file.dtype.itemsize)
        self.bounds = chunk_bounds(self.n_samples, rows)
        self._y = y
        self._sample_weight = sample_weight

    @property
    def nbytes(self):
        return self.n_samples * self.n_features * self._file.dtype.itemsize

    reads_into_buffers = True

    @property
    def stored_dtype(self):
        return self._file.dtype

    def _read_features(self, index, out=None):
        return self._file.read_rows(*self.bounds[index], out)

    def _read_targets(self):
        return _load_vector(self._y, "labels"), _load_vector(self._sample_weight, "sample weights")


class _NpyFile:
    """A 2-D C-ordered ``.npy`` file whose rows are read with ``preadv`` into fresh arrays."""

    def __init__(self, path, *, offset=None, shape=None, dtype=None):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        if offset is None:
            offset, shape, dtype = _read_npy_header(self.path)
        self.offset, self.shape, self.dtype = offset, shape, dtype
        needed = offset + shape[0] * shape[1] * dtype.itemsize
        size = os.path.getsize(self.path)
        if size < needed:
            raise DataSourceError(
                f"{self.path}: the file is truncated: its header promises {shape} values of {dtype} "
                f"({needed} bytes) but it holds {size} bytes",
                self.path,
            )

    @classmethod
    def from_memmap(cls, X):
        """The file behind a whole, C-ordered ``np.memmap``, or None for views and others."""
        if not (isinstance(X.base, mmap.mmap) and X.flags.c_contiguous and X.ndim == 2 and X.filename):
            return None
        return cls(X.filename, offset=X.offset, shape=X.shape, dtype=X.dtype)

    def read_rows(self, start, stop, out=None):
        """Rows ``start:stop``, into ``out`` (of this file's dtype, C-ordered) when given."""
        if out is None:
            out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        view = memoryview(out).cast("B")
        position = self.offset + start * self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            done = 0
            while done < len(view):
                n = os.preadv(f.fileno(), [view[done:]], position + done)
                if n == 0:
                    raise EOFError(f"the file ended {len(view) - done} bytes early")
                done += n
        return out


def _read_npy_header(path):
    """``(data offset, shape, dtype)`` of a ``.npy`` file, refusing anything but 2-D C-ordered numbers."""
    if os.path.isdir(path):
        raise DataSourceError(f"{path}: is a directory, not a .npy file", str(path))
    with open(path, "rb") as f:
        try:
            shape, fortran_order, dtype = read_npy_header(f)
        except ValueError as exc:
            raise DataSourceError(f"{path}: {exc}", str(path)) from None
        offset = f.tell()
    if dtype.kind not in "fiub":
        raise DataSourceError(f"{path}: holds dtype {dtype}; expected real numbers", str(path))
    if len(shape) != 2:
        raise DataSourceError(
            f"{path}: holds an array of shape {shape}; expected 2-D (n_samples, n_features)", str(path)
        )
    if fortran_order:
        raise DataSourceError(
            f"{path}: is stored in Fortran (column) order, which cannot be read by rows; "
            "save it with np.save(path, np.ascontiguousarray(X))",
            str(path),
        )
    return offset, shape, dtype


def _as_vector(a):
    return None if a is None else np.asarray(to_host(a))


def _load_vector(a, what):
    """An in-memory vector, or one read from a ``.npy`` path (without pickle)."""
    if isinstance(a, (str, os.PathLike)):
        path = Path(a)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file (the {what})")
        try:
            return load_npy(path)
        except ValueError as exc:
            raise DataSourceError(f"{path}: cannot read the {what}: {exc}", str(path)) from None
    return _as_vector(a)
