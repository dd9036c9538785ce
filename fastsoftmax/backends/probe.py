"""What the machine offers the CUDA backend: a GPU, CuPy and numba-cuda, or the simulator."""

import functools
from importlib import metadata

import numpy as np


def cuda_simulated():
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason():
    """Why the CUDA backend cannot run here, or None when it can.

    Under Numba's CUDA simulator the backend runs (slowly, on NumPy arrays), so the
    reason is None there too; "auto" never picks the simulator.

    Returns
    -------
    reason : str or None
    """
    try:
        from numba import cuda
    except Exception as exc:
        return f"numba.cuda is not importable ({type(exc).__name__}: {exc}); install numba-cuda"
    if cuda_simulated():
        return None  # the simulator compiles nothing; a clash would fail its tests loudly
    clash = _numpy_clash()
    if clash is not None:
        return clash
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return (
            f"CuPy is not importable ({type(exc).__name__}: {exc}); install fastsoftmax[cuda12] or [cuda13]"
        )
    try:
        if not cuda.is_available():
            return "no CUDA device or driver is visible to numba.cuda"
    except Exception as exc:
        return f"the CUDA driver could not be queried ({type(exc).__name__}: {exc})"
    return None


def _numpy_clash():
    """Why this numba-cuda cannot compile kernels with this NumPy, or None.

    numba-cuda 0.30 overloads ``np.row_stack``, which NumPy 2.5 removed; with both,
    every kernel fails to compile (seen on an H100 with NumPy 2.5.2 and numba-cuda
    0.30.4).  Newer numba-cuda releases are given the benefit of the doubt.
    """
    if hasattr(np, "row_stack"):
        return None
    try:
        version = tuple(int(part) for part in metadata.version("numba-cuda").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return None
    if version > (0, 30):
        return None
    return (
        f"numba-cuda {metadata.version('numba-cuda')} cannot compile kernels with NumPy {np.__version__} "
        "(it overloads np.row_stack, which NumPy 2.5 removed); install numpy<2.5 or a newer numba-cuda"
    )
