"""Reading labelled or unlabelled data files into dense arrays, for the command line.

One function, :func:`read_data`, picks a reader by file suffix:

========================  =====================================================
suffix                    features and labels
========================  =====================================================
``.npy``                  a 2-D array of features; labels from a separate
                          ``labels`` file (a 1-D ``.npy``)
``.npz``                  arrays named ``X`` and ``y`` (names configurable)
``.csv``                  numeric columns; labels in one column (default the
                          last), a header row detected or declared
``.svm``, ``.svmlight``,  the svmlight/libsvm text format, read with
``.libsvm``               :func:`sklearn.datasets.load_svmlight_file`
========================  =====================================================

Every reader loads with ``allow_pickle=False``, so a data file can never run code.
Every error names the file and raises ``FileNotFoundError`` (no such file) or
``ValueError`` (anything else wrong with it).  This module knows nothing of
estimators or backends: it only turns files into ``(X, y)``.
"""

import csv
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SVMLIGHT_SUFFIXES = (".svm", ".svmlight", ".libsvm")
SUFFIXES = (".npy", ".npz", ".csv") + SVMLIGHT_SUFFIXES


@dataclass(frozen=True)
class ReadOptions:
    """Format-specific choices for :func:`read_data`; each applies to one format only.

    Parameters
    ----------
    x_key, y_key : str, default="X", "y"
        Names of the feature and label arrays inside a ``.npz`` file.
    label_column : int, str or None, default=None
        The CSV column holding the labels: an index (negative counts from the end;
        a string of digits counts as an index) or a header name.  None means the
        last column.
    header : bool or None, default=None
        Whether the CSV's first row holds column names.  None detects it: the first
        row is a header when some column is non-numeric there but numeric in the
        second row, or when every cell of a one-row file is non-numeric.  A header
        of numbers (such as pandas' ``0,1,2,...``) is not detected; declare it.
    n_features : int or None, default=None
        Columns of an svmlight file.  The format stores only non-zero entries, so a
        file whose last features happen to be zero reads narrower than the model
        it was meant for; pass the model's ``n_features_in_`` when predicting.
    zero_based : bool or "auto", default="auto"
        Whether svmlight feature indices start at 0.  "auto" assumes one-based
        indices (the libsvm convention) unless some index 0 appears, so a
        zero-based file whose first feature is always zero is read shifted by
        one column; declare ``zero_based=True`` for files written that way
        (scikit-learn's ``dump_svmlight_file`` writes zero-based by default).
    """

    x_key: str = "X"
    y_key: str = "y"
    label_column: int | str | None = None
    header: bool | None = None
    n_features: int | None = None
    zero_based: bool | str = "auto"


@dataclass(frozen=True)
class LoadedData:
    """Arrays read from a data file.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
        Numeric features (bool, integer or floating dtype).
    y : ndarray of shape (n_samples,) or None
        Labels, or None when the data were read unlabelled.
    path : pathlib.Path
        The file the features came from.
    """

    X: np.ndarray
    y: np.ndarray | None
    path: Path


def read_data(path, *, labelled, labels=None, options=None) -> LoadedData:
    """Read features, and labels when asked, from a data file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy``, ``.npz``, ``.csv``, ``.svm``, ``.svmlight`` or ``.libsvm`` file.
    labelled : bool
        Whether to return labels.  When False, a CSV's every column is a feature
        and the labels stored in ``.npz`` and svmlight files are not read.
    labels : str or os.PathLike, optional
        A 1-D ``.npy`` file of labels, one per row of ``path``.  It supplies the
        labels for any format (required for ``.npy`` features) and replaces
        the labels the data file holds; it implies ``labelled``.
    options : ReadOptions, optional
        Format-specific choices (array names, label column, header, svmlight
        width and index base).

    Returns
    -------
    LoadedData

    Raises
    ------
    FileNotFoundError
        When ``path`` or ``labels`` does not exist.
    ValueError
        For an unknown suffix, a corrupt or unreadable file, a missing array, an
        array of the wrong dimension or dtype, a non-numeric CSV cell, or labels
        whose count differs from the number of rows.

    Notes
    -----
    svmlight files are read as a SciPy CSR matrix, which the CPU backend trains on
    directly (no dense copy); the CUDA backend needs dense X for now.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "d.npz"), X=np.eye(3), y=np.array([0, 1, 1]))
    >>> data = read_data(os.path.join(folder, "d.npz"), labelled=True)
    >>> data.X.shape, data.y.tolist()
    ((3, 3), [0, 1, 1])
    """
    path = _existing_file(path)
    options = ReadOptions() if options is None else options
    reader = _reader_for(path)
    X, y = reader(path, labelled and labels is None, options)
    X = _check_features(X, path)
    if labels is not None:
        y = _read_label_file(_existing_file(labels))
    elif labelled and y is None:
        raise ValueError(f"{path} holds features only; pass a labels file (--labels FILE.npy)")
    if y is not None:
        y = _check_labels(y, X.shape[0], path if labels is None else Path(labels))
    return LoadedData(X=X, y=y, path=path)


# -- dispatch and shared checks -------------------------------------------------------
def _existing_file(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    return path


def _reader_for(path):
    suffix = path.suffix.lower()
    if suffix in SVMLIGHT_SUFFIXES:
        return _read_svmlight
    readers = {".npy": _read_npy, ".npz": _read_npz, ".csv": _read_csv}
    if suffix not in readers:
        raise ValueError(
            f"{path}: unknown data file type {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(SUFFIXES)}"
        )
    return readers[suffix]


def _check_features(X, path):
    if X.ndim != 2:
        raise ValueError(f"{path}: features must be a 2-D array (n_samples, n_features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{path}: features must be numeric, got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{path}: features have shape {X.shape}; need at least one row and one column")
    return X


def _check_labels(y, n_samples, path):
    # A column vector (n, 1) is a common way to save labels; accept it as 1-D.
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{path}: labels must be a 1-D array, got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{path}: {y.shape[0]} labels for {n_samples} rows of features")
    return y


def _integral_labels(y):
    """Turn float labels that are all whole numbers into int64, so classes print as 3, not 3.0."""
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


# -- NumPy formats ---------------------------------------------------------------------
def _load_npy(path):
    try:
        # Memory-mapped: the estimator copies X once into its own dtype and layout,
        # so reading the whole file first would only double the peak memory.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot be read as .npy ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: holds an .npz archive, not a single .npy array; rename it to .npz")
    return array


def _read_npy(path, labelled, options):
    return _load_npy(path), None


def _read_label_file(path):
    if path.suffix.lower() != ".npy":
        raise ValueError(f"{path}: a labels file must be .npy, got {path.suffix or '(no suffix)'!r}")
    return np.asarray(_load_npy(path))


def _read_npz(path, labelled, options):
    # np.load falls back to unpickling for anything that is neither .npy nor a zip,
    # and its refusal then talks about pickles; say what is really wrong instead.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: cannot be read as .npz (not a zip archive)")
    keys = [options.x_key] + ([options.y_key] if labelled else [])
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            arrays = [archive[k] for k in keys if k not in missing]
            files = sorted(archive.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot be read as .npz ({type(exc).__name__}: {exc})") from None
    if missing:
        raise ValueError(f"{path} has no array named {missing[0]!r}; it holds {files}")
    return arrays[0], (arrays[1] if labelled else None)


# -- svmlight / libsvm -----------------------------------------------------------------
def _read_svmlight(path, labelled, options):
    from sklearn.datasets import load_svmlight_file

    try:
        X, y = load_svmlight_file(
            str(path), n_features=options.n_features, zero_based=options.zero_based, dtype=np.float64
        )
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as svmlight/libsvm ({exc})") from None
    return X, (_integral_labels(y) if labelled else None)


# -- CSV -------------------------------------------------------------------------------
def _read_csv(path, labelled, options):
    rows = _csv_head(path, 2)
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    has_header = _detect_header(rows) if options.header is None else options.header
    names = [c.strip() for c in rows[0]] if has_header else None
    n_columns = len(rows[0])
    label_index = _label_index(options.label_column, names, n_columns, path) if labelled else None
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
    return X, _integral_labels(table[:, label_index])


def _csv_head(path, n_rows):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = []
            for row in csv.reader(f):
                if row:
                    rows.append(row)
                if len(rows) == n_rows:
                    break
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot be read as CSV text ({exc})") from None


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
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no <= skip_rows or not row:
                continue
            if len(row) != n_columns:
                raise ValueError(
                    f"{path}, line {line_no}: {len(row)} columns, but the first row has {n_columns}"
                )
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
        return _integral_labels(np.array(labels, dtype=np.float64))
    except ValueError:
        return np.array(labels, dtype=str)
