"""Backend selection: the only place that inspects the machine for a GPU."""
import functools

from .cpu import NumpyBackend
from .protocol import Array, Backend

BACKEND_NAMES = ("auto", "cpu", "cuda")


class BackendUnavailableError(ValueError):
    """A backend was asked for by name but cannot run on this machine."""


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason():
    """Why the CUDA backend cannot run here, or None when it can.

    Returns
    -------
    reason : str or None
    """
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"CuPy is not importable ({type(exc).__name__}: {exc}); install fastsoftmax[cuda12] or [cuda13]"
    try:
        from numba import cuda
    except Exception as exc:
        return f"numba.cuda is not importable ({type(exc).__name__}: {exc}); install numba-cuda"
    try:
        if not cuda.is_available():
            return "no CUDA device or driver is visible to numba.cuda"
    except Exception as exc:
        return f"the CUDA driver could not be queried ({type(exc).__name__}: {exc})"
    return "the CUDA backend is not part of this fastsoftmax version yet"


@functools.lru_cache(maxsize=None)
def _cpu_backend():
    # One shared instance, so every estimator in a process shares one thread pool.
    return NumpyBackend()


def get_backend(backend="auto") -> Backend:
    """Return the backend for a name, or ``backend`` itself if it is a backend object.

    Parameters
    ----------
    backend : {"auto", "cpu", "cuda"} or Backend
        "auto" picks the best backend that runs here (the CPU until the CUDA
        backend lands).

    Raises
    ------
    ValueError
        For a name that is not a backend.
    BackendUnavailableError
        For "cuda" on a machine where it cannot run; the message says why.
    """
    if not isinstance(backend, str):
        if all(hasattr(backend, attr) for attr in ("name", "loss_grad_accumulate_", "softmax")):
            return backend
        raise TypeError(f"backend must be one of {BACKEND_NAMES} or a Backend object, got {backend!r}")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend={backend!r} is not known; expected one of {BACKEND_NAMES}")
    if backend == "cuda":
        raise BackendUnavailableError(f"backend='cuda' is not available: {cuda_unavailable_reason()}")
    return _cpu_backend()


def available_backends():
    """Map each backend name to None when it runs here, else the reason it does not.

    Returns
    -------
    dict of str to (str or None)
    """
    return {"cpu": None, "cuda": cuda_unavailable_reason()}


__all__ = [
    "Array",
    "Backend",
    "BackendUnavailableError",
    "NumpyBackend",
    "available_backends",
    "get_backend",
    "cuda_unavailable_reason",
]
