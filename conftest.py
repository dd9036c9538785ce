"""Collection rules for the whole repository (tests/conftest.py holds the fixtures)."""

import importlib.util

# fastsoftmax.dask needs the optional dask extra: without it, its doctests are not collected.
collect_ignore_glob = [] if importlib.util.find_spec("distributed") else ["fastsoftmax/dask/*"]
