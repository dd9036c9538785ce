"""A source over the arrays of a zarr group (a directory), read with zarr-python 3."""

from .base import DataSourceError
from .hdf5 import _ArrayStoreSource


class ZarrSource(_ArrayStoreSource):
    """Features, labels and sample weights held as arrays of a zarr group.

    The group is a directory store in zarr format 3 or 2 (zarr-python 3 opens both).
    Chunks are whole multiples of the features array's row chunking (of its shards,
    when sharded and a shard fits), as many as fit in about 64 MiB, so every stored
    chunk is decompressed once per pass.  A stored chunk that is absent reads as the
    array's fill value, as zarr defines; zarr cannot tell that from a lost file.

    Parameters
    ----------
    path : str or Path
        The group's directory.
    features : str, default="X"
        The 2-D array of features (``"data/X"`` reaches into subgroups).
    label : str or None, default="y"
        The 1-D array of labels.  When the group has no array of that name the source
        has no labels (fine for prediction; training reports it).
    weight : str, optional
        The 1-D array of sample weights; an error when the group lacks it.
    chunk_rows : int, optional
        Rows per chunk, instead of the aligned default.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataSourceError
        When ``path`` is not a zarr group, lacks the features or the named weights,
        or its features are not a 2-D array of real numbers.

    Examples
    --------
    >>> import numpy as np, zarr, tempfile, os
    >>> from fastsoftmax.sources.zarr import ZarrSource
    >>> path = os.path.join(tempfile.mkdtemp(), "data.zarr")
    >>> group = zarr.open_group(path, mode="w")
    >>> group.create_array("X", shape=(6, 2), chunks=(2, 2), dtype="f8")[:] = np.arange(12.0).reshape(6, 2)
    >>> group.create_array("y", shape=(6,), dtype="i8")[:] = [0, 1, 0, 1, 0, 1]
    >>> source = ZarrSource(path, chunk_rows=4)
    >>> source.bounds
    [(0, 4), (4, 6)]
    >>> source.read_features(1)
    array([[ 8.,  9.],
           [10., 11.]])
    """

    kind = "zarr group"
    # What codecs raise for a damaged chunk ("Zstd decompression error"), and zarr's
    # metadata parser for a damaged zarr.json (a codec given an unknown option).
    read_errors = (RuntimeError, TypeError)

    def __init__(self, path, *, features="X", label="y", weight=None, chunk_rows=None):
        super().__init__(path, features=features, label=label, weight=weight, chunk_rows=chunk_rows)

    def _open(self):
        zarr = _import_zarr()
        try:
            return zarr.open_group(self.name, mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:  # zarr's errors for what is not a group
            raise DataSourceError(
                f"{self.name}: cannot be opened as a zarr group ({type(exc).__name__}: {exc})", self.name
            ) from None

    def _is_array(self, node):
        return isinstance(node, _import_zarr().Array)

    def _row_chunks(self, array):
        # Shards first: reading whole shards means one request per shard.
        return [int(chunks[0]) for chunks in (getattr(array, "shards", None), array.chunks) if chunks]


def _import_zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError("reading zarr groups needs zarr: pip install zarr (or fastsoftmax[io])") from None
    return zarr
