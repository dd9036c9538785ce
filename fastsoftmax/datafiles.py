"""Reading the small in-memory formats, ``.csv`` and ``.npz``, as data sources.

Every other format the command line takes (``.npy``, HDF5, Zarr, Parquet,
svmlight) is streamed by :mod:`fastsoftmax.sources`.  These two cannot be read by
rows (a zip archive's members, a text table whose row offsets are unknown), so
:func:`read_data` reads the whole file and wraps the arrays in an
:class:`~fastsoftmax.sources.ArraySource`; whoever uses the result handles every
format through the one :class:`~fastsoftmax.sources.DataSource` interface.

========  =====================================================================
suffix    features, labels and weights
========  =====================================================================
``.npz``  arrays named ``X`` and ``y`` (names configurable), optionally an
          array of sample weights
``.csv``  numeric columns; labels in one column (default the last), a header
          row detected or declared
========  =====================================================================

``.npz`` files are never unpickled and their headers are checked before anything
is read (:mod:`fastsoftmax.npyformat`), so a data file can never run code.  Every
error names the file and raises ``FileNotFoundError`` (no such file) or
``ValueError`` (anything else wrong with it).  This module knows nothing of
estimators or backends.
"""

import csv
import warnings
from pathlib import Path

import numpy as np

from .npyformat import load_npz
from .sources import ArraySource
from .validation import integral_labels

SUFFIXES = (".csv", ".npz")


def read_data(path, *, labelled, features="X", label=None, weight=None, header=None) -> ArraySource:
    """Read a ``.csv`` or ``.npz`` file whole, as a data source.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv`` or ``.npz`` file.
    labelled : bool
        Whether to read labels.  When False, a CSV's every column is a feature and
        an ``.npz`` file's labels are not read.
    features : str, default="X"
        The ``.npz`` array of features, of shape (n_samples, n_features).
    label : int, str or None, default=None
        Where the labels are.  In a CSV: a column index (negative counts from the
        end; a string of digits counts as an index) or a header name, by default
        the last column.  In an ``.npz``: the array's name, by default ``"y"``.
    weight : str, optional
        The ``.npz`` array of sample weights.
    header : bool or None, default=None
        Whether the CSV's first row holds column names.  None detects it: the first
        row is a header when some column is non-numeric there but numeric in the
        second row, or when every cell of a one-row file is non-numeric.  A header
        of numbers (such as pandas' ``0,1,2,...``) is not detected; declare it.

    Returns
    -------
    ArraySource
        Named after ``path``, so that its errors name the file.  CSV labels that
        are all whole numbers come out as int64, other numbers as float64, and
        anything else as str.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        For a suffix other than ``.csv`` and ``.npz``, a corrupt or unreadable
        file, a missing array or column, a non-numeric CSV cell, or no rows.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> np.savez(path, X=np.eye(3), y=np.array([0, 1, 1]))
    >>> source = read_data(path, labelled=True)
    >>> source.n_samples, source.n_features, source.targets()[0].tolist()
    (3, 3, [0, 1, 1])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y, sample_weight = _read_npz(path, features, (label or "y") if labelled else None, weight)
    elif suffix == ".csv":
        X, y = _read_csv(path, labelled, label, header)
        sample_weight = None
    else:
        raise ValueError(f"{path}: {suffix or '(no suffix)'!r} is not a .csv or .npz file")
    if X.ndim == 2 and 0 in X.shape:
        raise ValueError(f"{path}: features have shape {X.shape}; need at least one row and one column")
    return ArraySource(X, y, sample_weight, name=str(path))


# -- .npz ------------------------------------------------------------------------------
def _read_npz(path, features, label, weight):
    keys = [features, label, weight]
    try:
        arrays, files = load_npz(path, [k for k in keys if k is not None])
    except ValueError as exc:
        raise ValueError(f"{path}: cannot be read as .npz ({exc})") from None
    missing = [k for k in keys if k is not None and k not in arrays]
    if missing:
        raise ValueError(f"{path} has no array named {missing[0]!r}; it holds {files}")
    return tuple(arrays.get(k) for k in keys)


# -- CSV -------------------------------------------------------------------------------
def _read_csv(path, labelled, label_column, header):
    rows = _csv_head(path, 2)
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    has_header = _detect_header(rows) if header is None else header
    names = [c.strip() for c in rows[0]] if has_header else None
    n_columns = len(rows[0])
    label_index = _label_index(label_column, names, n_columns, path) if labelled else None
    table = _csv_as_floats(path, int(has_header))
    if table is None:
        # Some cell is not a number: re-read cell by cell, which either finds the
        # cell to report or finds that only the label column is text (class names).
        return _csv_slow(path, int(has_header), n_columns, label_index, names)
    if table.shape[0] == 0:
        raise ValueError(f"{path} has a header but no data rows")
    if table.shape[1] != n_columns:
        raise ValueError(f"{path}: the header has {n_columns} columns but the rows have {table.shape[1]}")
    if label_index is None:
        return table, None
    X = np.delete(table, label_index, axis=1)
    return X, integral_labels(table[:, label_index])


def _csv_rows(path):
    """Yield ``(line number, cells)`` per line; text that is not UTF-8 or CSV raises ValueError naming the file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            yield from enumerate(csv.reader(f), start=1)
    except (UnicodeDecodeError, csv.Error) as exc:  # csv.Error: a field over the size limit, say
        raise ValueError(f"{path}: cannot be read as CSV text ({exc})") from None


def _csv_head(path, n_rows):
    rows = []
    for _, row in _csv_rows(path):
        if row:
            rows.append(row)
        if len(rows) == n_rows:
            break
    return rows


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _detect_header(rows):
    first = [_is_number(c) for c in rows[0]]
    if len(rows) == 1:
        return not any(first)
    second = [_is_number(c) for c in rows[1]]
    return any(not a and b for a, b in zip(first, second))


def _label_index(label_column, names, n_columns, path):
    if n_columns < 2:
        raise ValueError(f"{path} has a single column; a labelled CSV needs features besides the labels")
    if label_column is None:
        label_column = -1
    if isinstance(label_column, str) and label_column.lstrip("-").isdigit():
        label_column = int(label_column)
    if isinstance(label_column, str):
        if names is None:
            raise ValueError(
                f"{path} has no header row, so the label column {label_column!r} cannot be found by name; "
                "give its index, or declare the header"
            )
        if label_column not in names:
            raise ValueError(f"{path} has no column named {label_column!r}; its columns are {names}")
        return names.index(label_column)
    if not -n_columns <= label_column < n_columns:
        raise ValueError(f"{path}: label column {label_column} is out of range for {n_columns} columns")
    return label_column % n_columns


def _csv_as_floats(path, skip_rows):
    """The whole table as float64 by NumPy's fast C parser, or None if some cell is not a number."""
    try:
        with warnings.catch_warnings():
            # A header-only file is reported by the caller; NumPy's warning would repeat it.
            warnings.simplefilter("ignore", UserWarning)
            return np.loadtxt(
                path, delimiter=",", skiprows=skip_rows, comments=None, ndmin=2, dtype=np.float64
            )
    except ValueError:
        return None


def _csv_slow(path, skip_rows, n_columns, label_index, names):
    """Parse cell by cell: text labels are kept; any other bad cell is reported by line and column."""
    features, labels = [], []
    for line_no, row in _csv_rows(path):
        if line_no <= skip_rows or not row:
            continue
        if len(row) != n_columns:
            raise ValueError(f"{path}, line {line_no}: {len(row)} columns, but the first row has {n_columns}")
        values = []
        for j, cell in enumerate(row):
            if j == label_index:
                labels.append(cell.strip())
                continue
            try:
                values.append(float(cell))
            except ValueError:
                column = f"column {j + 1}" + (f" ({names[j]!r})" if names else "")
                raise ValueError(f"{path}, line {line_no}, {column}: {cell!r} is not a number") from None
        features.append(values)
    if not features:
        raise ValueError(f"{path} has a header but no data rows")
    X = np.array(features, dtype=np.float64)
    return X, (_labels_from_text(labels) if label_index is not None else None)


def _labels_from_text(labels):
    """Labels as int64 when every one is a whole number, float64 when numeric, else strings."""
    try:
        return integral_labels(np.array(labels, dtype=np.float64))
    except ValueError:
        return np.array(labels, dtype=str)
