"""A source over a Parquet file, one chunk per row group, read with pyarrow."""

import os
from collections import Counter

import numpy as np

from .base import DataSourceError, OpenFileSource


class ParquetSource(OpenFileSource):
    """Features, labels and sample weights held as columns of a Parquet file.

    Each row group is one chunk (empty row groups are skipped), so the chunk size is
    the writer's choice: ``pyarrow.parquet.write_table(..., row_group_size=...)``.
    Labels and weights are read alone, without the feature columns.  One file handle
    is kept and reads hold a lock; a source pickles as its path and options.

    Parameters
    ----------
    path : str or Path
        The Parquet file.
    features : list of str, str or None, default=None
        The feature columns, in order.  None means every column except the label,
        the weight and a pandas index.  Each must hold numbers (integer, floating
        point or boolean) without nulls.
    label : str or None, default="y"
        The label column.  When the file has no column of that name the source has
        no labels (fine for prediction; training reports it).  Nulls in it are
        missing labels, reported by :meth:`targets`; string labels come out as str.
    weight : str, optional
        The sample-weight column; an error when the file lacks it.

    Attributes
    ----------
    feature_names : ndarray of str (object dtype)
        The feature columns' names.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataSourceError
        When the file is not Parquet (or is truncated), lacks a named column, has
        two columns of one name, or a feature column is not numeric.

    Examples
    --------
    >>> import pyarrow as pa, pyarrow.parquet as pq, tempfile, os
    >>> from fastsoftmax.sources.parquet import ParquetSource
    >>> path = os.path.join(tempfile.mkdtemp(), "data.parquet")
    >>> table = pa.table({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "y": ["cat", "dog", "cat"]})
    >>> pq.write_table(table, path, row_group_size=2)
    >>> source = ParquetSource(path)
    >>> source.bounds, source.feature_names.tolist()
    ([(0, 2), (2, 3)], ['a', 'b'])
    >>> source.read_features(1)
    array([[3., 6.]])
    >>> source.targets()[0].tolist()
    ['cat', 'dog', 'cat']
    """

    def __init__(self, path, *, features=None, label="y", weight=None):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        self.name = str(path)
        self._init_handle()
        schema = self._opened().schema_arrow
        names = list(schema.names)
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:  # pyarrow cannot select a column by a name that several share
            raise DataSourceError(f"{self.name}: has several columns named {repeated}", self.name)
        self._label = label if label is not None and label in names else None
        if weight is not None and weight not in names:
            raise DataSourceError(f"{self.name}: has no column {weight!r} (the sample weights)", self.name)
        self._weight = weight
        targets = {self._label, weight} - {None}
        if features is None:
            index = _pandas_index_columns(schema)
            features = [n for n in names if n not in targets and n not in index]
        else:
            features = [features] if isinstance(features, str) else list(features)
            for column in features:
                if column not in names:
                    raise DataSourceError(
                        f"{self.name}: has no column {column!r} (a feature); it holds {names}", self.name
                    )
                if column in targets:
                    raise DataSourceError(
                        f"{self.name}: column {column!r} is named as a feature and as the "
                        f"{'label' if column == self._label else 'sample weight'}",
                        self.name,
                    )
        if not features:
            raise DataSourceError(f"{self.name}: has no feature columns; it holds {names}", self.name)
        dtypes = []
        for column in features:
            dtypes.append(_numeric_dtype(schema.field(column).type))
            if dtypes[-1] is None:
                raise DataSourceError(
                    f"{self.name}: column {column!r} has type {schema.field(column).type}; "
                    "feature columns must hold numbers (integer, floating point or boolean)",
                    self.name,
                )
        self._features = features
        self._dtype = np.result_type(*dtypes)
        self.feature_names = np.array(features, dtype=object)
        metadata = self._opened().metadata
        self.n_samples, self.n_features = int(metadata.num_rows), len(features)
        self._row_groups, self.bounds, start = [], [], 0
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            if rows:
                self._row_groups.append(group)
                self.bounds.append((start, start + rows))
                start += rows

    @property
    def nbytes(self):
        """Bytes of the decoded feature columns (what a pass hands over, not the compressed file)."""
        return self.n_samples * self.n_features * self._dtype.itemsize

    def _open(self):
        pa, pq = _import_pyarrow()
        try:
            return pq.ParquetFile(self.name)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataSourceError(f"{self.name}: cannot be read as Parquet ({exc})", self.name) from None

    def _read_features(self, index):
        pa = _import_pyarrow()[0]
        start, stop = self.bounds[index]
        try:
            with self._lock:
                table = self._opened().read_row_group(self._row_groups[index], columns=self._features)
        except pa.ArrowException as exc:  # corrupt pages; some are not OSError or ValueError
            raise self.error(f"cannot read the features: {exc}", index) from None
        if table.num_rows != stop - start:
            raise self.error(f"the row group has {table.num_rows} rows; expected {stop - start}", index)
        columns = []
        for name, column in zip(self._features, table.columns):
            if column.null_count:
                row = start + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise self.error(f"column {name!r} has a missing value (null), first in row {row}", index)
            columns.append(column.to_numpy())
        # One C-ordered copy: measured up to 2.5x faster than filling a preallocated array in row blocks.
        return np.column_stack(columns).astype(self._dtype, copy=False)

    def _read_targets(self):
        columns = [c for c in (self._label, self._weight) if c is not None]
        if not columns:
            return None, None
        pa = _import_pyarrow()[0]
        try:
            with self._lock:
                table = self._opened().read(columns=columns)
        except pa.ArrowException as exc:
            raise self.error(f"cannot read the labels: {exc}") from None
        y = None if self._label is None else _vector(table.column(self._label))
        sample_weight = None if self._weight is None else _vector(table.column(self._weight))
        return y, sample_weight


def _numeric_dtype(arrow_type):
    """The NumPy dtype of an integer, floating-point or boolean Arrow type; None for others."""
    pa = _import_pyarrow()[0]
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
        return np.dtype(arrow_type.to_pandas_dtype())
    return None


def _vector(column):
    """A column as a NumPy vector: nulls become NaN (numbers) or None (anything else)."""
    pa = _import_pyarrow()[0]
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column.to_numpy(zero_copy_only=False)


def _pandas_index_columns(schema):
    """Columns that pandas wrote for a DataFrame's index (they are not features)."""
    metadata = schema.pandas_metadata or {}
    return {c for c in metadata.get("index_columns", []) if isinstance(c, str)}


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "reading Parquet files needs pyarrow: pip install pyarrow (or fastsoftmax[io])"
        ) from None
    return pyarrow, pyarrow.parquet
