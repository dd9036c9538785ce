"""Turning what a user passes (a path, a list of paths, a spec, arrays) into a source."""

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .arrays import ArraySource, NpySource
from .base import DataSource, DataSourceError

# Suffix -> format name; a spec's "format" overrides the suffix.
FORMATS = {
    ".npy": "npy",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".zarr": "zarr",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".svm": "svmlight",
    ".svmlight": "svmlight",
    ".libsvm": "svmlight",
}


def is_source_like(X):
    """True for what :func:`open_source` takes and an array library would not: sources, paths, specs."""
    if sp.issparse(X):  # a DOK matrix is a dict
        return False
    if isinstance(X, (DataSource, str, os.PathLike, dict)):
        return True
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(p, (str, os.PathLike)) for p in X)


def open_source(spec, y=None, sample_weight=None, **options):
    """Open a data source from a path, a list of paths, a spec dict, or arrays.

    Parameters
    ----------
    spec : DataSource, str, Path, list of paths, dict, or array
        - a :class:`DataSource`: returned as it is;
        - a path: the format is chosen by its suffix (``.npy``, ``.h5``/``.hdf5``,
          ``.zarr``, ``.parquet``/``.pq``, ``.svm``/``.svmlight``/``.libsvm``);
        - a list of paths: their rows one after another (a data set in shards);
          every file must have the same columns;
        - a dict: ``{"path": ..., "format": ..., **options}``, the options below;
        - an array, ``np.memmap`` or sparse matrix: an :class:`ArraySource`.
    y, sample_weight : array-like or path of a 1-D ``.npy``, optional
        Labels and weights kept outside the feature file (``.npy`` features and
        arrays); the other formats hold them as datasets or columns.
    **options
        ``features`` (dataset name, or list of columns), ``label`` and ``weight``
        (dataset or column names), ``chunk_rows``, and the svmlight options
        ``n_features`` and ``zero_based``.

    Returns
    -------
    DataSource

    Raises
    ------
    FileNotFoundError
        For a path that does not exist.
    DataSourceError
        For a file that is not what its format says, and for data without a row
        or a column (one of several shards may be empty; the whole data set may not).
    ValueError
        For an unknown format or option.
    """
    source = _open(spec, y, sample_weight, options)
    if source.n_samples == 0 or source.n_features == 0:
        raise DataSourceError(
            f"{source.name}: holds {source.n_samples} rows of {source.n_features} features; "
            "a data set needs at least one row and one feature",
            source.name,
        )
    return source


def _open(spec, y, sample_weight, options):
    """:func:`open_source` without its check for data, which a shard need not pass."""
    if isinstance(spec, DataSource):
        if y is not None or sample_weight is not None or options:
            raise ValueError("pass labels, weights and options when opening the source, not beside it")
        return spec
    if isinstance(spec, dict) and not sp.issparse(spec):
        spec = dict(spec)
        if "path" not in spec:
            raise ValueError(f"a data source spec needs a 'path'; got keys {sorted(spec)}")
        path = spec.pop("path")
        return _open(path, y, sample_weight, {**spec, **options})
    if isinstance(spec, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in spec):
        from .concat import ConcatSource

        if y is not None or sample_weight is not None:
            raise ValueError(
                "labels for several files must be inside the files (label=...), not passed beside them"
            )
        return ConcatSource([_open(p, None, None, options) for p in spec])
    if isinstance(spec, (str, os.PathLike)):
        return _open_path(Path(spec), y, sample_weight, options)
    if sp.issparse(spec) or isinstance(spec, np.ndarray):
        return ArraySource(spec, y, sample_weight, **_only(options, "chunk_rows", fmt="array"))
    raise TypeError(f"cannot make a data source of {type(spec).__name__}")


def _open_path(path, y, sample_weight, options):
    options = dict(options)
    fmt = options.pop("format", None) or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"use one of {sorted(FORMATS)} or a spec with 'format' in {sorted(set(FORMATS.values()))}"
        )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if fmt == "npy":
        return NpySource(path, y, sample_weight, **_only(options, "chunk_rows", fmt=fmt))
    if y is not None or sample_weight is not None:
        raise ValueError(
            f"{path}: a {fmt} file holds its own labels and weights; name them with label=... and weight=..."
        )
    if fmt == "hdf5":
        from .hdf5 import HDF5Source

        return HDF5Source(path, **_only(options, "features", "label", "weight", "chunk_rows", fmt=fmt))
    if fmt == "zarr":
        from .zarr import ZarrSource

        return ZarrSource(path, **_only(options, "features", "label", "weight", "chunk_rows", fmt=fmt))
    if fmt == "parquet":
        from .parquet import ParquetSource

        return ParquetSource(path, **_only(options, "features", "label", "weight", fmt=fmt))
    if fmt == "svmlight":
        from .svmlight import SvmlightSource

        return SvmlightSource(path, **_only(options, "n_features", "zero_based", "chunk_bytes", fmt=fmt))
    raise ValueError(f"format={fmt!r} is not known; expected one of {sorted(set(FORMATS.values()))}")


def _only(options, *allowed, fmt):
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(
            f"options {sorted(unknown)} do not apply to {fmt} sources; they take {list(allowed)}"
        )
    return options
