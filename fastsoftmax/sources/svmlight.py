"""A source over an svmlight/libsvm text file, parsed by byte ranges with scikit-learn."""

import os

import numpy as np

from ..validation import integral_labels
from .base import DEFAULT_CHUNK_BYTES, DataSource, DataSourceError

# Columns claimed while scanning, before the file's width is known: scikit-learn
# needs n_features to parse a byte range, and it parses indices as C ints.
_SCAN_WIDTH = 2**31

# What scikit-learn raises for a malformed line (UnicodeDecodeError is a ValueError;
# an index beyond a C int overflows).
_PARSE_ERRORS = (ValueError, OverflowError)


class SvmlightSource(DataSource):
    """Sparse features and labels in an svmlight/libsvm text file, parsed a byte range at a time.

    The file is cut into pieces of about ``chunk_bytes``, each ending with a data
    line, and each chunk is parsed alone (scikit-learn's ``offset`` and ``length``),
    so every line is read once and no chunk ever holds the whole file.  Opening
    scans the file once: it counts each piece's rows, keeps the labels and learns
    the width and the index base.  Pieces without data lines are dropped.  Features
    come out as CSR matrices of float64; whole-number labels as integers, as
    :func:`fastsoftmax.datafiles.read_data` reads CSV labels.

    Parameters
    ----------
    path : str or Path
        The text file: one row per line, ``label index:value ...``; ``#`` starts
        a comment.
    n_features : int, optional
        Columns.  By default one past the largest index in the file; pass the model's
        ``n_features_in_`` when predicting, since a file whose last columns happen to
        be zero reads narrower.
    zero_based : bool or "auto", default="auto"
        Whether indices start at 0.  "auto" decides for the whole file as
        scikit-learn's ``load_svmlight_file`` does: one-based unless some index 0
        appears (or the file holds no index at all).  A zero-based file whose first
        feature is always zero then reads shifted by one column; declare
        ``zero_based=True`` for it (``dump_svmlight_file`` writes zero-based by default).
    chunk_bytes : int, default=64 MiB
        Bytes of text per chunk.

    Attributes
    ----------
    nbytes : int
        The file's size: what one pass reads.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataSourceError
        When ``path`` is a directory, a line cannot be parsed (naming the chunk),
        an index exceeds ``n_features``, ``zero_based=False`` meets an index 0, or
        the file holds no rows.

    Examples
    --------
    >>> import tempfile, os
    >>> from fastsoftmax.sources.svmlight import SvmlightSource
    >>> path = os.path.join(tempfile.mkdtemp(), "data.svm")
    >>> with open(path, "w") as f:
    ...     _ = f.write("1 1:0.5 3:2\\n0 2:1\\n1 1:-1\\n")
    >>> source = SvmlightSource(path, chunk_bytes=10)
    >>> source.n_features, source.bounds
    (3, [(0, 2), (2, 3)])
    >>> source.read_features(1).toarray()
    array([[-1.,  0.,  0.]])
    >>> source.targets()[0]
    array([1, 0, 1])
    """

    sparse = True

    def __init__(self, path, *, n_features=None, zero_based="auto", chunk_bytes=DEFAULT_CHUNK_BYTES):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        if os.path.isdir(path):
            raise DataSourceError(f"{path}: is a directory, not a svmlight/libsvm file", str(path))
        if zero_based not in (True, False, "auto"):
            raise ValueError(f"zero_based={zero_based!r}; expected True, False or 'auto'")
        chunk_bytes = int(chunk_bytes)
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes={chunk_bytes}; expected a positive number of bytes")
        self.name = str(path)
        self._size = os.path.getsize(path)
        with open(self.name, "rb") as f:
            cuts = sorted(
                {_data_line_end(f, p) for p in range(chunk_bytes, self._size, chunk_bytes)} - {None}
            )
        ranges = list(zip([0] + cuts, cuts + [self._size]))

        # The scan: parse each range with indices as written (zero-based) and an
        # ample width, keeping only row counts, labels and the extreme indices.
        self._ranges, self.bounds, labels, lowest, highest = [], [], [], [], []
        for a, b in ranges:
            try:
                X, y = self._parse(a, b, zero_based=True, n_features=_SCAN_WIDTH)
            except _PARSE_ERRORS as exc:
                chunk = len(self.bounds)  # the chunk's bytes: the lines after the newline at a, through b
                raise DataSourceError(
                    f"{self.name}, chunk {chunk} (bytes {a + 1 if a else 0} to {min(b, self._size - 1)}): "
                    f"cannot be parsed as svmlight/libsvm "
                    f"({type(exc).__name__}: {exc})",
                    self.name,
                    chunk,
                ) from None
            if X.shape[0] == 0:  # only comments or blank lines
                continue
            start = self.bounds[-1][1] if self.bounds else 0
            self._ranges.append((a, b))
            self.bounds.append((start, start + X.shape[0]))
            labels.append(y)
            lowest.append(X.indices.min() if X.nnz else -1)
            highest.append(X.indices.max() if X.nnz else -1)
        if not self.bounds:
            raise DataSourceError(f"{self.name}: holds no data rows", self.name)
        self.n_samples = self.bounds[-1][1]
        self._y = integral_labels(np.concatenate(labels))

        # scikit-learn's rule on a whole file: one-based when indices appear and none is 0.
        indexed = [i for i, low in enumerate(lowest) if low >= 0]
        if zero_based == "auto":
            zero_based = not (indexed and min(lowest[i] for i in indexed) > 0)
        elif not zero_based:
            for i in indexed:
                if lowest[i] == 0:
                    raise self.error("feature index 0 in a file declared one-based (zero_based=False)", i)
        self._zero_based = bool(zero_based)
        shift = 0 if zero_based else 1
        width = max(highest) - shift + 1 if indexed else 1  # scikit-learn's width for a file without indices
        if n_features is None:
            n_features = width
        elif n_features < width:
            chunk = int(np.argmax(highest))
            raise self.error(
                f"n_features={n_features} is too small: feature index {highest[chunk]} "
                f"({'zero' if zero_based else 'one'}-based) needs {width} columns",
                chunk,
            )
        self.n_features = int(n_features)

    @property
    def nbytes(self):
        return self._size

    def _parse(self, a, b, *, zero_based, n_features):
        from sklearn.datasets import load_svmlight_file

        return load_svmlight_file(
            self.name, n_features=n_features, zero_based=zero_based, offset=a, length=b - a, dtype=np.float64
        )

    def _read_features(self, index):
        try:
            X, _ = self._parse(*self._ranges[index], zero_based=self._zero_based, n_features=self.n_features)
        except _PARSE_ERRORS as exc:
            raise self.error(
                f"cannot be parsed as svmlight/libsvm ({type(exc).__name__}: {exc})", index
            ) from None
        start, stop = self.bounds[index]
        if X.shape[0] != stop - start:
            raise self.error(
                f"holds {X.shape[0]} rows now but held {stop - start} when opened; the file changed", index
            )
        return X

    def _read_targets(self):
        return self._y, None


def _data_line_end(f, position):
    """Offset of the newline that ends the first data line starting after ``position``; None if none does.

    A chunk ends there because scikit-learn, reading from ``offset`` for ``length``
    bytes, skips the rest of the line at ``offset``, then stops only after a *data*
    line that reaches ``offset + length``: with comments or blank lines there, or a
    line longer than a chunk, a cut anywhere else would hand a line to two chunks.
    """
    f.seek(position)
    f.readline()
    for line in f:
        if not line.endswith(b"\n"):
            return None  # the last line: it belongs to the last chunk
        if _is_data_line(line):
            return f.tell() - 1
    return None


def _is_data_line(line):
    """Whether scikit-learn's parser takes ``line`` for a row: something before its ``#``.

    The parser finds the ``#`` with C's ``strchr``, which stops at a NUL byte.
    """
    head = line.split(b"\0", 1)[0]
    hash_at = head.find(b"#")
    return bool((line if hash_at < 0 else line[:hash_at]).split())
