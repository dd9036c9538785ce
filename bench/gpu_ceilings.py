"""GPU ceilings measured in the same run as the benchmarks: GEMM rates and memory bandwidths.

The floor of a loss-and-gradient pass on the GPU (``bench.gpu_pass``) is
``max(flops / gemm_fp32_best, x_bytes / hbm_bandwidth)``: no implementation runs its two
float32 GEMMs faster than the best measured float32 GEMM, nor reads X faster than the device
memory moves bytes.

What is measured, and which library measured it:

``gemm_fp32_cupy``
    cuBLAS through ``cupy.matmul`` on an n x n x n float32 product, in full float32: CuPy
    reads ``CUPY_TF32`` once, at its first float32 GEMM, and ``bench.gpu_pass`` refuses to
    run with it set, so this is the rate fastsoftmax's own GEMMs can reach.
``gemm_fp32_torch``
    the same product through ``torch.matmul`` with
    ``torch.set_float32_matmul_precision("highest")`` (no TF32).
``gemm_tf32_torch``
    the same with ``"high"`` (TF32 tensor cores).  Context only: no implementation in the
    comparison runs TF32, and the floor does not use it.
``copy_bandwidth``
    device-to-device copy of a 1 GiB buffer, counted as bytes read plus bytes written per
    second: the best of ``cudaMemcpyAsync`` and ``cupy.copyto``.
``read_bandwidth``
    ``cupy.sum`` over the same 1 GiB: a read-only stream.
``hbm_bandwidth``
    ``max(copy_bandwidth, read_bandwidth)``, the rate the floor charges for reading X.
``h2d_pinned_bandwidth``
    ``cudaMemcpyAsync`` of 1 GiB from pinned host memory to the device (context: the copy of
    the data onto the device is outside every timed pass).

Every rate is the best of several runs, each timed with CUDA events after a warm-up.  CuPy
and PyTorch are imported inside the functions, so this module imports on a machine without
them.
"""

import gc
import sys
import time

import numpy as np

# cudaMemcpyKind values from the CUDA runtime API (stable across CUDA versions).
_HOST_TO_DEVICE = 1
_DEVICE_TO_DEVICE = 3

BUFFER_BYTES = 1 << 30  # far larger than the 50 MB L2 of an H100, so every byte goes to memory
GEMM_N = 8192


def event_times(fn, repeats, warmup=1, setup=None, wall_times=None):
    """Seconds of each of ``repeats`` calls of ``fn()``, from CUDA events, after ``warmup`` calls.

    Events are recorded on CuPy's current stream before and after each call, and the end event
    is waited for here: ``fn`` must not synchronise by itself, and each time covers every
    kernel it enqueued on that stream.  PyTorch's default stream is the same legacy default
    stream (``bench.gpu_peers`` checks it), so its work is covered too.

    Parameters
    ----------
    fn : callable
        Zero-argument; its return value is kept until its end event has completed, so buffers
        it returns outlive the kernels that write them.
    repeats : int
    warmup : int
        Untimed calls first (JIT compilation, cuBLAS heuristics, allocator growth).
    setup : callable, optional
        Run before every call, warm-up included, outside the timed region (for example to
        restore a buffer that ``fn`` overwrites).
    wall_times : list, optional
        If given, also receives each call's host wall time up to a device-wide synchronise: a
        cross-check that catches work the events would miss (kernels left running on another
        stream).

    Returns
    -------
    list of float
    """
    import cupy

    stream = cupy.cuda.get_current_stream()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        wall_start = time.perf_counter()
        start.record(stream)
        out = fn()
        end.record(stream)
        end.synchronize()
        if wall_times is not None:
            cupy.cuda.Device().synchronize()
            wall_times.append(time.perf_counter() - wall_start)
        del out
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return times


def best_time(fn, repeats=5, warmup=1, setup=None):
    """Smallest event time of ``fn()`` over ``repeats`` runs (see :func:`event_times`)."""
    return min(event_times(fn, repeats, warmup, setup))


def initialized_torch_cuda():
    """``torch.cuda`` when PyTorch is already imported and has touched the device, else None.

    Never imports PyTorch itself.
    """
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_initialized() else None


def free_device_memory():
    """Hand every cached block back to the driver, so the next measurement (CuPy's or PyTorch's) can have it.

    Call it after the arrays of a measurement are gone; the garbage collection first breaks
    the reference cycles of autograd graphs.  Neither library is imported here: one that
    is not loaded holds no memory (so CPU-only runs can call it too).
    """
    gc.collect()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    if initialized_torch_cuda() is not None:
        initialized_torch_cuda().empty_cache()


def _measured(fn, *args):
    """``fn(*args)``, then free the buffers it allocated (they died with its frame)."""
    try:
        return fn(*args)
    finally:
        free_device_memory()


def gemm_fp32_cupy(n=GEMM_N):
    """FLOP/s of cuBLAS float32 GEMM through ``cupy.matmul`` on an n x n x n product."""
    import cupy

    a = cupy.random.RandomState(0).standard_normal((n, n), dtype=cupy.float32)
    out = cupy.empty_like(a)
    return 2 * n**3 / best_time(lambda: cupy.matmul(a, a, out=out))


def torch_unavailable_reason():
    """Why the PyTorch ceilings cannot be measured here, or None when they can."""
    try:
        import torch
    except ImportError as exc:
        return f"PyTorch is not importable ({exc})"
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device (a CPU-only build?)"
    return None


def gemm_torch(precision, n=GEMM_N):
    """FLOP/s of ``torch.matmul`` on an n x n x n float32 product at a float32 matmul precision.

    Parameters
    ----------
    precision : {"highest", "high"}
        ``torch.set_float32_matmul_precision``: "highest" is full float32, "high" allows TF32.
        The previous setting is restored afterwards.
    """
    import torch

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    a = torch.randn(n, n, device="cuda")
    out = torch.empty_like(a)
    try:
        return 2 * n**3 / best_time(lambda: torch.matmul(a, a, out=out))
    finally:
        torch.set_float32_matmul_precision(previous)


def copy_bandwidths(nbytes=BUFFER_BYTES):
    """Device-to-device copy rates in bytes/s, counting bytes read plus bytes written.

    Returns
    -------
    dict
        ``memcpy`` (``cudaMemcpyAsync``) and ``copyto`` (``cupy.copyto``).
    """
    import cupy

    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    stream = cupy.cuda.get_current_stream()

    def memcpy():
        cupy.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, _DEVICE_TO_DEVICE, stream.ptr)

    return {
        "memcpy": 2 * nbytes / best_time(memcpy),
        "copyto": 2 * nbytes / best_time(lambda: cupy.copyto(dst, src)),
    }


def read_bandwidth(nbytes=BUFFER_BYTES):
    """Bytes/s of ``cupy.sum`` over a float32 buffer of ``nbytes`` (a read-only stream)."""
    import cupy

    flat = cupy.ones(nbytes // 4, dtype=cupy.float32)
    out = cupy.empty((), dtype=cupy.float32)
    return nbytes / best_time(lambda: cupy.sum(flat, out=out))


def h2d_pinned_bandwidth(nbytes=BUFFER_BYTES):
    """Bytes/s of ``cudaMemcpyAsync`` from pinned host memory to the device."""
    import cupy

    pinned = cupy.cuda.alloc_pinned_memory(nbytes)
    host = np.frombuffer(pinned, dtype=np.uint8, count=nbytes)
    host[:] = 1  # touch every page before timing
    dev = cupy.empty(nbytes, dtype=cupy.uint8)
    stream = cupy.cuda.get_current_stream()

    def copy():
        cupy.cuda.runtime.memcpyAsync(dev.data.ptr, host.ctypes.data, nbytes, _HOST_TO_DEVICE, stream.ptr)

    return nbytes / best_time(copy)


def measure(use_torch=True):
    """All ceilings as a dict (FLOP/s and bytes/s), with the library behind each number.

    Parameters
    ----------
    use_torch : bool
        Also measure the PyTorch GEMMs; when PyTorch cannot run, its entries are None and
        ``torch_unavailable`` says why.
    """
    why_no_torch = torch_unavailable_reason() if use_torch else "not requested"
    gemm = {"gemm_fp32_cupy": _measured(gemm_fp32_cupy), "gemm_fp32_torch": None, "gemm_tf32_torch": None}
    if why_no_torch is None:
        try:
            gemm["gemm_fp32_torch"] = _measured(gemm_torch, "highest")
            gemm["gemm_tf32_torch"] = _measured(gemm_torch, "high")
        except Exception as exc:  # noqa: BLE001 (a PyTorch build that cannot run here is a finding, not a crash)
            gemm["gemm_fp32_torch"] = gemm["gemm_tf32_torch"] = None
            why_no_torch = f"PyTorch's GEMM failed: {type(exc).__name__}: {exc}"
    copies = _measured(copy_bandwidths)
    copy_bw = max(copies.values())
    read_bw = _measured(read_bandwidth)
    return {
        **gemm,
        "gemm_fp32_best": max(gemm["gemm_fp32_cupy"], gemm["gemm_fp32_torch"] or 0.0),
        "copy_bandwidth_memcpy": copies["memcpy"],
        "copy_bandwidth_copyto": copies["copyto"],
        "copy_bandwidth": copy_bw,
        "read_bandwidth": read_bw,
        "hbm_bandwidth": max(copy_bw, read_bw),
        "h2d_pinned_bandwidth": _measured(h2d_pinned_bandwidth),
        "gemm_n": GEMM_N,
        "buffer_bytes": BUFFER_BYTES,
        "torch_unavailable": why_no_torch,
        "measured_by": {
            "gemm_fp32_cupy": "cupy.matmul (cuBLAS), float32, CUPY_TF32 unset",
            "gemm_fp32_torch": 'torch.matmul, set_float32_matmul_precision("highest")',
            "gemm_tf32_torch": 'torch.matmul, set_float32_matmul_precision("high") (TF32; context only)',
            "copy_bandwidth": "best of cudaMemcpyAsync and cupy.copyto, (read + written) bytes/s",
            "read_bandwidth": "cupy.sum over float32, bytes read/s",
            "h2d_pinned_bandwidth": "cudaMemcpyAsync from cupy.cuda.alloc_pinned_memory, bytes/s",
        },
    }
