"""A source whose rows are those of several sources, one after another: a data set in shards."""

import os

import numpy as np

from .base import DataSource, DataSourceError


class ConcatSource(DataSource):
    """The rows of several sources one after another, each keeping its own chunks.

    Every source must have the same number of columns, and the same column names
    where they have names.  Either every source has labels or none has; sample
    weights may be in some sources only, and rows of the others then weigh 1.
    An error in a chunk names the file it is in and the chunk there (from the
    source's own check), then where that chunk sits in the whole.

    Parameters
    ----------
    sources : sequence of DataSource
        The shards, in order.

    Raises
    ------
    DataSourceError
        When the column counts or names differ, naming both files.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.sources import ArraySource
    >>> from fastsoftmax.sources.concat import ConcatSource
    >>> a = ArraySource(np.zeros((3, 2)), y=[0, 1, 0], name="a.npy")
    >>> b = ArraySource(np.ones((2, 2)), y=[1, 1], name="b.npy")
    >>> source = ConcatSource([a, b])
    >>> source.name, source.bounds
    ('2 files (a.npy, b.npy)', [(0, 3), (3, 5)])
    >>> source.targets()[0]
    array([0, 1, 0, 1, 1])
    """

    def __init__(self, sources):
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("ConcatSource needs at least one source")
        first = self.sources[0]
        for source in self.sources[1:]:
            if source.n_features != first.n_features:
                raise DataSourceError(
                    f"{first.name} has {first.n_features} columns but {source.name} has {source.n_features}: "
                    "the shards of a data set must have the same columns (a column count that changes "
                    "between chunks)",
                    source.name,
                )
            if (
                first.feature_names is not None
                and source.feature_names is not None
                and list(first.feature_names) != list(source.feature_names)
            ):
                column = next(
                    j for j, (u, v) in enumerate(zip(first.feature_names, source.feature_names)) if u != v
                )
                raise DataSourceError(
                    f"{first.name} and {source.name} name their columns differently (column {column} is "
                    f"{first.feature_names[column]!r} in one and {source.feature_names[column]!r} in the other): "
                    "the shards of a data set must have the same columns, in the same order",
                    source.name,
                )
        names = [os.path.basename(s.name) or s.name for s in self.sources]
        shown = ", ".join(names[:3] + (["..."] if len(names) > 3 else []))
        self.name = f"{len(names)} file{'s' if len(names) > 1 else ''} ({shown})"
        self.n_features = first.n_features
        self.sparse = any(s.sparse for s in self.sources)
        self.feature_names = next(
            (s.feature_names for s in self.sources if s.feature_names is not None), None
        )
        # Global chunk -> (source, its chunk); bounds shifted by the rows before.
        self._owners, self.bounds, offset = [], [], 0
        for i, source in enumerate(self.sources):
            for local, (start, stop) in enumerate(source.bounds):
                self._owners.append((i, local))
                self.bounds.append((offset + start, offset + stop))
            offset += source.n_samples
        self.n_samples = offset

    @property
    def nbytes(self):
        return sum(source.nbytes for source in self.sources)

    def read_features(self, index, dtype=None):
        """Checked features of chunk ``index``, read and checked by the source that holds it."""
        i, local = self._owners[index]
        try:
            return self.sources[i].read_features(local, dtype)
        except DataSourceError as exc:
            start, stop = self.bounds[index]
            raise DataSourceError(
                f"{exc} [chunk {index} (rows {start} to {stop - 1}) of {self.name}]", exc.source, exc.chunk
            ) from exc

    def _read_targets(self):
        targets = [source.targets() for source in self.sources]
        unlabelled = [s.name for s, (y, _) in zip(self.sources, targets) if y is None]
        if unlabelled and len(unlabelled) < len(self.sources):
            raise DataSourceError(
                f"{unlabelled[0]}: has no labels but other files of the data set do ({self.name})",
                unlabelled[0],
            )
        y = None if unlabelled else np.concatenate([y for y, _ in targets])
        if all(w is None for _, w in targets):
            return y, None
        weights = [np.ones(s.n_samples) if w is None else w for s, (_, w) in zip(self.sources, targets)]
        return y, np.concatenate(weights)
