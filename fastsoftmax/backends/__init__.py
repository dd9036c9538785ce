"""Backend selection: the only place that inspects the machine for a GPU."""

import functools

from .cpu import NumpyBackend
from .errors import BackendUnavailableError, DeviceMemoryError
from .probe import cuda_simulated, cuda_unavailable_reason
from .protocol import Array, Backend

BACKEND_NAMES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=None)
def _cpu_backend():
    # One shared instance, so every estimator in a process shares one thread pool.
    return NumpyBackend()


@functools.lru_cache(maxsize=None)
def _cuda_backend():
    from .cuda import CudaBackend

    return CudaBackend()


def get_backend(backend="auto") -> Backend:
    """Return the backend for a name, or ``backend`` itself if it is a backend object.

    Parameters
    ----------
    backend : {"auto", "cpu", "cuda"} or Backend
        "auto" picks CUDA when a real GPU, CuPy and numba-cuda are present, and the
        CPU otherwise (never the CUDA simulator, which is for tests).

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
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"backend='cuda' is not available: {reason}")
        return _cuda_backend()
    if backend == "auto" and not cuda_simulated() and cuda_unavailable_reason() is None:
        return _cuda_backend()
    return _cpu_backend()


def auto_cpu_reason():
    """Why "auto" picks the CPU here, or None when it picks CUDA.

    Returns
    -------
    str or None
    """
    if cuda_simulated():
        return "the CUDA backend runs only in Numba's simulator here (NUMBA_ENABLE_CUDASIM=1), which 'auto' never picks"
    return cuda_unavailable_reason()


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
    "DeviceMemoryError",
    "cuda_simulated",
    "NumpyBackend",
    "auto_cpu_reason",
    "available_backends",
    "get_backend",
    "cuda_unavailable_reason",
]
