"""What the machine offers the CUDA backend: a GPU, CuPy and numba-cuda, or the simulator."""

import functools


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
        return None
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
