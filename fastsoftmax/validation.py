"""Input checks shared by the estimator and the functional API.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument, what arrived and what was expected, before any state is touched.
"""

import numbers

import numpy as np
import scipy.sparse as sp

FLOAT_DTYPES = (np.float32, np.float64)


def is_device_array(a):
    """True for GPU arrays (CuPy, or anything exposing ``__cuda_array_interface__``)."""
    return hasattr(a, "__cuda_array_interface__")


def is_device_sparse(a):
    """True for CuPy's sparse matrices (``cupyx.scipy.sparse``), which SciPy does not recognise."""
    return type(a).__module__.startswith("cupyx.scipy.sparse")


def to_host(a):
    """A GPU array copied to the host; anything else unchanged (CuPy refuses np.asarray)."""
    return a.get() if is_device_array(a) else a


def check_dtype(dtype):
    """Return ``dtype`` as np.float32 or np.float64, or raise ValueError."""
    try:
        resolved = np.dtype(dtype).type
    except TypeError:
        resolved = None
    if resolved not in FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; expected 'float32' or 'float64'")
    return resolved


def check_finite(a, name):
    """Raise ValueError when ``a`` (dense, sparse or on a GPU) holds NaN or inf."""
    if sp.issparse(a) or is_device_sparse(a):  # the stored values; the implicit zeros are finite
        a = a.data
    if is_device_array(a):
        import cupy

        if not bool(cupy.isfinite(a).all()):
            raise ValueError(f"{name} contains NaN or infinity; every value must be finite")
        return
    if not np.all(np.isfinite(a)):
        bad = "NaN" if np.isnan(a).any() else "infinity"
        raise ValueError(f"{name} contains {bad}; every value must be finite")


def check_sample_weight(sample_weight, n_samples, dtype):
    """Return sample weights as a 1-D array of ``dtype`` (ones for None).

    Parameters
    ----------
    sample_weight : None, scalar or array-like of shape (n_samples,)
    n_samples : int
    dtype : np.float32 or np.float64

    Raises
    ------
    ValueError
        For a wrong shape, NaN or inf, a negative weight, or weights that sum to zero.
    TypeError
        For weights that are not real numbers.
    """
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    if isinstance(sample_weight, numbers.Complex) and not isinstance(sample_weight, numbers.Real):
        raise TypeError("sample_weight must hold real numbers, got a complex one")
    if not isinstance(sample_weight, numbers.Number):
        # Array-likes through np.asarray first: np.iscomplexobj would call their
        # __array_function__, which array wrappers may refuse.
        sample_weight = np.asarray(sample_weight)
        if sample_weight.dtype.kind == "c":  # NumPy would drop the imaginary parts with only a warning
            raise TypeError("sample_weight must hold real numbers, got complex ones")
    if isinstance(sample_weight, numbers.Number):
        sample_weight = np.full(n_samples, sample_weight, dtype=np.float64)
    try:
        sw = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"sample_weight must be numeric, got {type(sample_weight).__name__}: {exc}") from None
    if sw.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D, got an array of shape {sw.shape}")
    if sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight has {sw.shape[0]} values but X has {n_samples} samples")
    check_finite(sw, "sample_weight")
    if (sw < 0).any():
        first = int(np.flatnonzero(sw < 0)[0])
        raise ValueError(f"sample_weight must be non-negative; sample_weight[{first}] = {sw[first]}")
    if not sw.any():
        raise ValueError("sample_weight sums to zero; at least one sample needs a positive weight")
    return sw.astype(dtype, copy=False)


def check_class_indices(y, n_classes, n_samples):
    """Return integer labels in [0, n_classes) as an intp array, or raise ValueError."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got an array of shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} labels but X has {n_samples} samples")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.intp)
        else:
            raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = int(y[(y < 0) | (y >= n_classes)][0])
        raise ValueError(
            f"y holds the class index {bad}, outside [0, {n_classes}) for W with {n_classes} columns"
        )
    return y.astype(np.intp, copy=False)


def integral_labels(y):
    """Float labels that are all whole numbers as int64 (so classes print as 3, not 3.0); others unchanged."""
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y
