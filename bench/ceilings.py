"""CPU ceilings measured in the same run as the benchmarks: GEMM rate and read bandwidth.

The floor of a loss-and-gradient pass (``bench.workloads``) is
``max(flops / gemm_best, x_bytes / read_bandwidth)``: no implementation can do the two
GEMMs faster than the best measured SGEMM, nor read X faster than the best measured
streaming read.
"""

import time

import numpy as np
from numba import njit, prange

GEMM_N = 4096
READ_BYTES = 1 << 30  # far larger than any CPU cache


def best_time(fn, repeats=5, warmup=1):
    """Smallest wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sgemm_rate_numpy(n=GEMM_N):
    """FLOP/s of NumPy's BLAS on an n x n x n float32 GEMM."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    return 2 * n**3 / best_time(lambda: np.matmul(a, a, out=out), repeats=3)


def sgemm_rate_torch(n=GEMM_N):
    """FLOP/s of PyTorch's CPU GEMM (oneDNN/MKL) on the same shape, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    a = torch.randn(n, n)
    out = torch.empty(n, n)
    return 2 * n**3 / best_time(lambda: torch.matmul(a, a, out=out), repeats=3)


@njit(parallel=True, fastmath=True, cache=True)
def _parallel_sum(flat, n_parts):
    part = (flat.size + n_parts - 1) // n_parts
    partial = np.zeros(n_parts)
    for k in prange(n_parts):
        acc = np.float32(0.0)
        for i in range(k * part, min((k + 1) * part, flat.size)):
            acc += flat[i]
        partial[k] = acc
    return partial.sum()


def read_bandwidth(nbytes=READ_BYTES):
    """Bytes/s of a streaming read of a float32 array of ``nbytes`` (larger than the caches).

    The best of a multi-threaded Numba sum and NumPy's single-threaded sum.
    """
    flat = np.ones(nbytes // 4, dtype=np.float32)
    numba_time = best_time(lambda: _parallel_sum(flat, 64))
    numpy_time = best_time(lambda: flat.sum(), repeats=3)
    return nbytes / min(numba_time, numpy_time)


def measure(gemm_n=GEMM_N, read_bytes=READ_BYTES):
    """All ceilings as a dict (FLOP/s and bytes/s).

    ``gemm_best`` and ``read_bandwidth`` are the two the floor uses.
    """
    rates = {"sgemm_numpy": sgemm_rate_numpy(gemm_n), "sgemm_torch": sgemm_rate_torch(gemm_n)}
    return {
        **rates,
        "gemm_best": max(r for r in rates.values() if r is not None),
        "read_bandwidth": read_bandwidth(read_bytes),
        "gemm_n": gemm_n,
        "read_bytes": read_bytes,
        "measured_by": {
            "sgemm_numpy": "numpy.matmul (the BLAS NumPy loaded), float32, n x n x n",
            "sgemm_torch": "torch.matmul on the CPU, float32, n x n x n (None without PyTorch)",
            "read_bandwidth": "best of a parallel Numba sum and numpy.sum over float32, bytes read/s",
        },
    }
