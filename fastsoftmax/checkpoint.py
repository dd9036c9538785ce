"""Checkpoints of a running fit: written atomically, read without pickle, resumed exactly.

A checkpoint is a ``.npz`` archive (uncompressed, whatever its file name) with one
JSON document ``metadata`` and the solver's arrays.  The metadata names the format,
the *context* of the fit -- hyper-parameters, data shape and layout (in memory, or a
source's chunk boundaries), classes, dtype and a SHA-256 digest of the labels and
weights -- and the solver's scalars (counters,
loss curves, random generator positions).  A resume checks the context against the
fit it is asked to continue and refuses a checkpoint of another problem.

Writes go to a temporary file in the same directory, are flushed to disk
(``fsync``), then renamed over the checkpoint (``os.replace``, atomic on POSIX and
Windows): a process killed at any moment leaves the previous checkpoint or the new
one, never a torn file.

What a solver saves is a flat dict ``name -> value``: values with a ``shape``
(NumPy or backend arrays, NumPy scalars) become arrays of the archive, everything
else must be JSON.  Loading validates every array (dtype, shape, finiteness) against
the context before any solver sees it.
"""

import contextlib
import hashlib
import json
import math
import numbers
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from .npyformat import load_npz

FORMAT = "fastsoftmax-checkpoint"
FORMAT_VERSION = 1
# Hyper-parameters that may change between the interrupted fit and its resume:
# they change how long the fit runs or what it prints, not the path it takes.
RESUMABLE_CHANGES = frozenset({"max_iter", "tol", "verbose", "warm_start", "backend"})
# Names of the arrays that hold a random generator's Mersenne Twister keys.
RNG_KEYS_SUFFIX = "rng_keys"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, invalid, or belongs to another fit."""


class Checkpoint:
    """Where a fit saves its state, and how often.

    A checkpoint is written when ``every_n_steps`` steps have passed since the last
    one, or ``every_n_seconds`` seconds, whichever comes first, and once more when the
    fit ends.  A step is an L-BFGS iteration, or one minibatch update of SGD and
    Adam, so a fit whose epochs take an hour still saves mid-epoch.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file, replaced atomically at each write.
    every_n_steps : int or None, default=None
    every_n_seconds : float or None, default=60.0
        At least one of the two must be set.

    Examples
    --------
    >>> from fastsoftmax import Checkpoint
    >>> Checkpoint("fit.ckpt", every_n_steps=500, every_n_seconds=None)
    Checkpoint('fit.ckpt', every_n_steps=500, every_n_seconds=None)
    """

    def __init__(self, path, *, every_n_steps=None, every_n_seconds=60.0):
        if every_n_steps is None and every_n_seconds is None:
            raise ValueError("a Checkpoint needs every_n_steps or every_n_seconds (or both)")
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, numbers.Integral)
            or every_n_steps < 1
        ):
            raise ValueError(f"every_n_steps must be a positive integer or None, got {every_n_steps!r}")
        if every_n_seconds is not None and not (
            isinstance(every_n_seconds, numbers.Real)
            and not isinstance(every_n_seconds, bool)
            and every_n_seconds > 0
            and math.isfinite(every_n_seconds)
        ):
            raise ValueError(f"every_n_seconds must be a positive number or None, got {every_n_seconds!r}")
        self.path = os.fspath(path)
        self.every_n_steps = None if every_n_steps is None else int(every_n_steps)
        self.every_n_seconds = None if every_n_seconds is None else float(every_n_seconds)

    def __repr__(self):
        return (
            f"Checkpoint({self.path!r}, every_n_steps={self.every_n_steps!r}, "
            f"every_n_seconds={self.every_n_seconds!r})"
        )


def as_checkpoint(checkpoint):
    """A :class:`Checkpoint` from a Checkpoint, a path (every 60 s) or None."""
    if checkpoint is None or isinstance(checkpoint, Checkpoint):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return Checkpoint(checkpoint)
    raise TypeError(f"checkpoint must be a path or a fastsoftmax.Checkpoint, got {type(checkpoint).__name__}")


def fit_context(params, n_features, classes, dtype, y_idx, sample_weight, layout):
    """What a checkpoint must match to be resumed: the problem and the hyper-parameters.

    Parameters
    ----------
    params : dict
        The estimator's hyper-parameters, as JSON (see ``persistence.params_as_json``).
    n_features : int
    classes : ndarray
    dtype : np.float32 or np.float64
    y_idx : ndarray of int
        Class index per row.
    sample_weight : ndarray
        Combined sample and class weights per row.
    layout : str
        How the rows are read: "in memory", or a digest of a source's chunk
        boundaries (a minibatch epoch's order depends on them).

    Returns
    -------
    dict
    """
    digest = hashlib.sha256()
    for array in (np.asarray(y_idx, np.int64), np.asarray(sample_weight, np.float64)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return {
        "params": params,
        "n_samples": int(len(y_idx)),
        "n_features": int(n_features),
        "classes": [str(c) for c in classes.tolist()],
        "dtype": np.dtype(dtype).name,
        "targets_sha256": digest.hexdigest(),
        "layout": layout,
    }


def data_layout(X):
    """The ``layout`` of :func:`fit_context` for training features ``X``."""
    source = getattr(X, "source", None)  # SourceFeatures
    if source is None:
        return "in memory"
    bounds = np.ascontiguousarray(np.asarray(source.bounds, np.int64))
    return "chunks " + hashlib.sha256(bounds.tobytes()).hexdigest()


def check_context(path, saved, current):
    """Raise CheckpointError when the checkpoint at ``path`` is of another fit."""
    for key in ("n_samples", "n_features", "dtype", "classes", "targets_sha256", "layout"):
        if saved.get(key) != current[key]:
            what = {
                "targets_sha256": "labels or sample weights",
                "layout": "data layout (in memory, or a source's chunks)",
            }.get(key, key)
            raise CheckpointError(
                f"{path}: the checkpoint is of another fit: its {what} differ from this fit's "
                f"({_short(saved.get(key))} != {_short(current[key])})"
            )
    saved_params = saved.get("params")
    if not isinstance(saved_params, dict):
        raise CheckpointError(f"{path}: the checkpoint's hyper-parameters are missing")
    schedule_bound = current["params"].get("learning_rate") == "cosine"  # max_iter sets its length
    differing = sorted(
        name
        for name in set(saved_params) | set(current["params"])
        if saved_params.get(name) != current["params"].get(name)
        and (name not in RESUMABLE_CHANGES or (name == "max_iter" and schedule_bound))
    )
    if differing:
        changes = ", ".join(f"{n}={saved_params.get(n)!r} -> {current['params'].get(n)!r}" for n in differing)
        raise CheckpointError(
            f"{path}: the checkpoint was written with other hyper-parameters ({changes}); "
            f"only {sorted(RESUMABLE_CHANGES)} may change on resume"
        )


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class CheckpointWriter:
    """Writes a fit's checkpoints when they are due (see :class:`Checkpoint`).

    Parameters
    ----------
    checkpoint : Checkpoint
    context : dict
        From :func:`fit_context`; written into every checkpoint.
    to_host : callable
        Copies a backend array to a NumPy array.
    fixed_entries : dict, optional
        Entries written into every checkpoint besides the solver's (the random
        generator's position before the fit drew anything, say).
    """

    def __init__(self, checkpoint, context, to_host, fixed_entries=None):
        self.checkpoint = checkpoint
        self.context = context
        self._to_host = to_host
        self._fixed = dict(fixed_entries or {})
        self._steps = 0
        self._last = time.monotonic()
        self.writes = 0

    def step(self, snapshot):
        """Count one step; write ``snapshot()`` if a checkpoint is due."""
        self._steps += 1
        every_steps, every_seconds = self.checkpoint.every_n_steps, self.checkpoint.every_n_seconds
        due = (every_steps is not None and self._steps >= every_steps) or (
            every_seconds is not None and time.monotonic() - self._last >= every_seconds
        )
        if due:
            self.write(snapshot())

    def write(self, state):
        """Write ``state`` (name -> array or JSON value) now, atomically."""
        arrays, scalars = {}, {}
        for name, value in {**self._fixed, **state}.items():
            if hasattr(value, "shape"):
                arrays[name] = np.asarray(self._to_host(value))
            else:
                scalars[name] = value
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "context": self.context,
            "state": scalars,
        }
        _write_atomically(self.checkpoint.path, arrays, json.dumps(metadata))
        self._steps = 0
        self._last = time.monotonic()
        self.writes += 1


def _write_atomically(path, arrays, metadata):
    directory = os.path.dirname(os.path.abspath(path))
    # A fresh name per write: two writers of one path never share a temporary file.
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, metadata=np.array(metadata), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):
        # The rename is durable only once the directory entry is on disk too.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class SavedFit:
    """A checkpoint read back: the fit's context and the solver's state."""

    path: str
    context: dict
    state: dict

    @property
    def steps(self):
        """Steps (L-BFGS iterations or minibatch updates) the fit had taken."""
        return int(self.state.get("steps", 0))


def load_checkpoint(path):
    """Read and validate a checkpoint written by a fit with ``checkpoint=``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    SavedFit

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CheckpointError
        When the file is not a complete, valid checkpoint.
    """
    path = os.fspath(path)
    try:
        # npyformat reads no pickles and checks each header against the bytes present
        # before it allocates: a hostile archive cannot ask for terabytes.
        arrays, members = load_npz(path, ["metadata"])
        if "metadata" not in arrays:
            raise CheckpointError(f"{path}: is not a fastsoftmax checkpoint (no metadata)")
        arrays.update(load_npz(path, [name for name in members if name != "metadata"])[0])
    except (FileNotFoundError, CheckpointError):
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({exc})") from None
    try:
        metadata = json.loads(str(arrays.pop("metadata")))
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: its metadata is not JSON ({type(exc).__name__})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: is not a fastsoftmax checkpoint")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {metadata.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    context, state = metadata.get("context"), metadata.get("state")
    if not isinstance(context, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint's context or state is missing")
    _check_arrays(path, arrays, context)
    state.update(arrays)
    return SavedFit(path, context, state)


def _check_arrays(path, arrays, context):
    """Every array is a generator's keys, or a finite parameter-shaped array of the fit's dtype."""
    try:
        n_features, n_classes = int(context["n_features"]), len(context["classes"])
        dtype = np.dtype(context["dtype"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's context is invalid ({exc})") from None
    shapes = {(n_features, n_classes), (n_classes,), ()}
    for name, array in arrays.items():
        if name.endswith(RNG_KEYS_SUFFIX):
            if array.dtype != np.uint32 or array.shape != (624,):
                raise CheckpointError(
                    f"{path}: {name} must be 624 uint32 generator keys, got {array.dtype} {array.shape}"
                )
            continue
        if array.dtype != dtype or array.shape not in shapes:
            raise CheckpointError(
                f"{path}: {name} must be {dtype} of shape {(n_features, n_classes)}, ({n_classes},) or (), "
                f"got {array.dtype} {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{path}: {name} holds NaN or infinity")


@contextlib.contextmanager
def reading(saved):
    """Turn a malformed entry of ``saved.state``, met while restoring it, into a CheckpointError."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError) as exc:
        raise CheckpointError(
            f"{saved.path}: the checkpoint's state is invalid ({type(exc).__name__}: {exc})"
        ) from None


def rng_state(rng, prefix):
    """A ``numpy.random.RandomState``'s position as checkpoint entries named ``prefix...``."""
    _, keys, pos, has_gauss, cached = rng.get_state()
    return {
        f"{prefix}{RNG_KEYS_SUFFIX}": keys,
        f"{prefix}rng_pos": int(pos),
        f"{prefix}rng_has_gauss": int(has_gauss),
        f"{prefix}rng_cached_gaussian": float(cached),
    }


def restore_rng(rng, state, prefix):
    """Set ``rng`` to the position :func:`rng_state` saved under ``prefix``.

    Raises ValueError for a position outside the generator's 624 keys (NumPy would
    read past them), or a cached Gaussian that is not a finite number.
    """
    pos, has_gauss = int(state[f"{prefix}rng_pos"]), int(state[f"{prefix}rng_has_gauss"])
    cached = float(state[f"{prefix}rng_cached_gaussian"])
    if not (0 <= pos <= 624 and has_gauss in (0, 1) and math.isfinite(cached)):
        raise ValueError(f"{prefix}rng_pos={pos}, rng_has_gauss={has_gauss}: not a generator position")
    rng.set_state(
        ("MT19937", np.asarray(state[f"{prefix}{RNG_KEYS_SUFFIX}"], np.uint32), pos, has_gauss, cached)
    )


def expect_array(state, name, shape):
    """``state[name]``, checked to be an array of ``shape`` (ValueError otherwise)."""
    array = state[name]
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        got = array.shape if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {got}")
    return array
