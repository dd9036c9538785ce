"""Data sources: labelled data sets read as row chunks, for data larger than memory.

:func:`open_source` opens any of them from a path, a list of paths or a spec dict;
:class:`~fastsoftmax.SoftmaxClassifier` takes a source, a path or a spec wherever it
takes ``X``.  See :mod:`fastsoftmax.sources.base` for the interface.
"""

from .arrays import ArraySource, NpySource
from .base import Chunk, DataSource, DataSourceError, RowSubset
from .open import FORMATS, is_source_like, open_source

__all__ = [
    "ArraySource",
    "Chunk",
    "DataSource",
    "DataSourceError",
    "FORMATS",
    "NpySource",
    "RowSubset",
    "is_source_like",
    "open_source",
]
