"""CUDA row kernels of the CUDA backend, the GPU twin of :mod:`fastsoftmax.kernels.cpu`.

For every row i of a logits block ``Z`` of shape (n_rows, n_classes), with
``z = Z[i] + b``, ``m = max(z)`` and ``d = sum_j exp(z_j - m)``:

- :func:`softmax_xent_grad_` writes ``row_loss[i] = scale[i] * ((m - z[y_i]) + log(d))``
  and ``Z[i] <- scale[i] * (softmax(z) - onehot(y_i))``;
- :func:`softmax_` writes ``Z[i] <- exp(z - m) / d``, or with ``log=True``
  ``Z[i] <- (z - m) - log(d)``.

Each row costs two reads and one write of ``Z``, as on the CPU: pass 1 reads ``z`` and
keeps an online ``(m, d)`` pair per thread (Milakov and Gimelshein's online softmax,
as in llm.c's ``fused_classifier.cuh``), a reduction merges the pairs of the threads
sharing the row, and pass 2 re-reads ``z`` and writes the result in place.  Every
thread reads and writes the same columns in both passes, so no thread ever reads a
column another thread writes.

Launch shape follows n_classes:

- ``n_classes <= SMALL_C_MAX``: a warp per row, ``WARPS_PER_BLOCK`` rows per block.
  Lane ``l`` covers columns ``l, l + 32, ...``, so each load instruction of a warp
  reads 32 consecutive elements (coalesced), and the reduction needs no barrier.
- ``n_classes > SMALL_C_MAX``: a block of ``BLOCK_THREADS`` threads per row; thread
  ``t`` covers columns ``t, t + BLOCK_THREADS, ...``; a warp reduction, then one
  across the block's warps through shared memory.

Reductions, decided once
------------------------
All reductions go through one primitive, :func:`_shfl_xor_pair` (the ``(m, d)`` pair
of the lane ``laneid ^ lane_mask``), with two implementations
picked at import time by ``numba.config.ENABLE_CUDASIM``:

- on a GPU, ``cuda.shfl_xor_sync(0xFFFFFFFF, value, lane_mask)``: a register exchange
  inside the warp, no shared memory and no barrier;
- in Numba's CUDA simulator, which has no warp shuffles, the same exchange through a
  shared array between two ``cuda.syncthreads()``.

The simulator path makes the kernels testable in CPU-only CI; it is never compiled
for a GPU.  Its one extra requirement shapes the kernels: ``syncthreads`` is a
barrier for the whole block, so **every thread of a block must call every
reduction**, the same number of times.  Rows past the end of ``Z`` are therefore
masked (they cover no column), never skipped with an early ``return``.  The
simulator runs the kernels in Python, in float64 wherever Python's ``math`` does:
it checks indexing, masking and barriers, not float32 rounding, which the GPU test
checks.
"""

import math
import warnings

import numpy as np
from numba import config, cuda, float64, int64

WARP_SIZE = 32
# 256 threads: 8 rows per block in the warp kernel, 8 warps per row in the block
# kernel.  At n_classes = SMALL_C_MAX + 1 each thread of the block kernel still has
# 4 columns per pass, and 256-thread blocks let an SM (2048 threads on sm_80/sm_90)
# hold 8 of them, enough warps in flight to hide memory latency.
BLOCK_THREADS = 256
WARPS_PER_BLOCK = BLOCK_THREADS // WARP_SIZE
# Up to 1024 classes a warp per row (32 columns per lane at most) beats a block per
# row: no barrier and no shared memory, and a block holds 8 rows instead of idling
# threads on short rows.  1024 is also where PyTorch's and OneFlow's softmax kernels
# switch from warp to block per row.
SMALL_C_MAX = 1024
# Blocks per launch at most; larger problems loop over rows (grid-stride).  2**16
# blocks of 256 threads are about 60 full waves of an H100 (132 SMs x 8 blocks), so
# the loop only starts where block scheduling is long amortised.
MAX_BLOCKS = 1 << 16

_SIMULATOR = bool(config.ENABLE_CUDASIM)

# -- the reduction primitive ----------------------------------------------------------

if _SIMULATOR:

    @cuda.jit(device=True)
    def _shfl_xor_pair(m, d, lane_mask):
        """Shared-memory stand-in for ``cuda.shfl_xor_sync`` of ``m`` and ``d``; see below.

        Every thread of the block must call it.  float64 holds a float32 exactly.
        """
        exchange_m = cuda.shared.array(BLOCK_THREADS, dtype=float64)
        exchange_d = cuda.shared.array(BLOCK_THREADS, dtype=float64)
        t = cuda.threadIdx.x
        exchange_m[t] = m
        exchange_d[t] = d
        cuda.syncthreads()  # every thread's pair is stored before any thread reads its partner's
        partner = t ^ lane_mask  # lane_mask < 32: the partner is in the same warp
        m_other, d_other = exchange_m[partner], exchange_d[partner]
        cuda.syncthreads()  # every thread has read before the next call overwrites the exchange
        return m_other, d_other

else:

    @cuda.jit(device=True)
    def _shfl_xor_pair(m, d, lane_mask):
        """``(m, d)`` of lane ``laneid ^ lane_mask``; all 32 lanes of the warp take part."""
        return cuda.shfl_xor_sync(0xFFFFFFFF, m, lane_mask), cuda.shfl_xor_sync(0xFFFFFFFF, d, lane_mask)


# -- online (m, d) pairs --------------------------------------------------------------


@cuda.jit(device=True)
def _merge(m1, d1, m2, d2):
    """The pair of the union of two column sets: ``(max, d1 e^(m1 - m) + d2 e^(m2 - m))``.

    Exactly commutative, so the butterfly below leaves the same bits in every lane.
    A thread with no column carries ``(-inf, 0)``; two such pairs (and pairs whose
    columns are all ``-inf``) have ``m1 == m2 == -inf``, where ``exp(m2 - m1)`` would be
    ``exp(nan)``: equal maxima add their sums unscaled.
    """
    if m1 < m2:
        m1, d1, m2, d2 = m2, d2, m1, d1
    if m2 == m1:
        return m1, d1 + d2
    return m1, d1 + d2 * math.exp(m2 - m1)


@cuda.jit(device=True)
def _warp_reduce(m, d, width):
    """Merge the pairs of each aligned group of ``width`` lanes (a power of two <= 32).

    An xor butterfly: afterwards every lane of a group holds the group's pair.
    """
    lane_mask = width // 2
    while lane_mask > 0:
        m_other, d_other = _shfl_xor_pair(m, d, lane_mask)
        m, d = _merge(m, d, m_other, d_other)
        lane_mask //= 2
    return m, d


@cuda.jit(device=True)
def _block_reduce(m, d, part_m, part_d):
    """Merge the pairs of the whole block; every thread gets the result.

    ``part_m`` and ``part_d`` are shared arrays of ``WARPS_PER_BLOCK`` elements.
    """
    m, d = _warp_reduce(m, d, WARP_SIZE)
    lane = cuda.threadIdx.x % WARP_SIZE
    warp = cuda.threadIdx.x // WARP_SIZE
    if lane == 0:
        part_m[warp] = m
        part_d[warp] = d
    cuda.syncthreads()  # every warp's pair is stored before any warp reads the partials
    # Every warp reduces the partials (lane l reads partial l mod WARPS_PER_BLOCK, and
    # the butterfly over WARPS_PER_BLOCK lanes stays inside aligned groups of that
    # size), so every thread gets the block's pair without another barrier to
    # broadcast it.
    m = part_m[lane % WARPS_PER_BLOCK]
    d = part_d[lane % WARPS_PER_BLOCK]
    cuda.syncthreads()  # every warp has read the partials before any warp stores the next row's
    return _warp_reduce(m, d, WARPS_PER_BLOCK)


@cuda.jit(device=True)
def _thread_stats(Z, b, row, first, stop, step):
    """Pass 1: the online pair of ``z = Z[row] + b`` over columns ``first, first + step, ... < stop``."""
    m = Z.dtype.type(-math.inf)
    d = Z.dtype.type(0)
    one = Z.dtype.type(1)
    for j in range(first, stop, step):
        x = Z[row, j] + b[j]
        if x > m:
            d = d * math.exp(m - x) + one  # a new max rescales the sum so far (exp(-inf) = 0 at first)
            m = x
        elif x == m:
            d += one  # exp(0), also for x = m = -inf, where exp(x - m) would be exp(nan)
        else:
            d += math.exp(x - m)  # NaN logits land here and propagate
    return m, d


# -- pass 2: what a row becomes -------------------------------------------------------


@cuda.jit(device=True)
def _xent_grad_row_(Z, b, y, scale, row_loss, row, m, d, first, step):
    """The row's loss and scaled gradient, in place, by the threads of the row."""
    n_classes = Z.shape[1]
    yi = y[row]
    s = scale[row]
    if yi % step == first:
        # The thread that owns column y reads z_y before its own pass 2 overwrites the
        # column, in program order; no other thread touches column y, so no barrier is
        # needed (llm.c's, between thread 0 reading z_y and the others writing, guards
        # a read this layout never makes).
        z_y = Z[row, yi] + b[yi]
        # float64: m - z_y reaches 2 * 3.4e38 in float32.  Exactly m >= z_y and d >= 1,
        # so the loss is >= 0; the clamp keeps the CPU kernel's guarantee.
        loss = (float64(m) - float64(z_y)) + math.log(d)
        row_loss[row] = s * max(loss, 0.0)
    s_over_d = s / d
    for j in range(first, n_classes, step):
        g = math.exp(Z[row, j] + b[j] - m) * s_over_d
        if j == yi:
            g -= s
        Z[row, j] = g


@cuda.jit(device=True)
def _softmax_row_(Z, b, row, m, d, first, step, log):
    """The row's softmax, or log-softmax, in place, by the threads of the row."""
    n_classes = Z.shape[1]
    if log:
        # Shift by m first: z - (m + log d) would lose log d next to |m| = 3e38.
        log_d = math.log(d)
        for j in range(first, n_classes, step):
            Z[row, j] = (Z[row, j] + b[j] - m) - log_d
    else:
        inv_d = Z.dtype.type(1) / d
        for j in range(first, n_classes, step):
            Z[row, j] = math.exp(Z[row, j] + b[j] - m) * inv_d


# -- kernels --------------------------------------------------------------------------
# Row indices are int64 before any multiplication: blockIdx.x and gridDim.x are
# int32, and blockIdx.x * WARPS_PER_BLOCK would wrap past 2**31 rows.  Element
# offsets row * n_classes + j are then computed by Numba's indexing in int64 too:
# in int32 they would wrap from 2**31 elements on (8 GiB of float32, e.g. 2**21 rows
# of 1024 classes), a block the backend may well hand over.


@cuda.jit(cache=True)
def _xent_grad_warp_per_row(Z, b, y, scale, row_loss):
    n_rows, n_classes = Z.shape
    lane = cuda.threadIdx.x % WARP_SIZE
    warp = cuda.threadIdx.x // WARP_SIZE
    start = int64(cuda.blockIdx.x) * WARPS_PER_BLOCK
    stride = int64(cuda.gridDim.x) * WARPS_PER_BLOCK
    for first_row in range(start, n_rows, stride):
        row = first_row + warp
        stop = n_classes if row < n_rows else 0  # a masked row covers no column
        m, d = _thread_stats(Z, b, row, lane, stop, WARP_SIZE)
        m, d = _warp_reduce(m, d, WARP_SIZE)
        if row < n_rows:
            _xent_grad_row_(Z, b, y, scale, row_loss, row, m, d, lane, WARP_SIZE)


@cuda.jit(cache=True)
def _xent_grad_block_per_row(Z, b, y, scale, row_loss):
    part_m = cuda.shared.array(WARPS_PER_BLOCK, dtype=Z.dtype)
    part_d = cuda.shared.array(WARPS_PER_BLOCK, dtype=Z.dtype)
    n_rows, n_classes = Z.shape
    t = cuda.threadIdx.x
    for row in range(int64(cuda.blockIdx.x), n_rows, int64(cuda.gridDim.x)):
        m, d = _thread_stats(Z, b, row, t, n_classes, BLOCK_THREADS)
        m, d = _block_reduce(m, d, part_m, part_d)
        _xent_grad_row_(Z, b, y, scale, row_loss, row, m, d, t, BLOCK_THREADS)


@cuda.jit(cache=True)
def _softmax_warp_per_row(Z, b, log):
    n_rows, n_classes = Z.shape
    lane = cuda.threadIdx.x % WARP_SIZE
    warp = cuda.threadIdx.x // WARP_SIZE
    start = int64(cuda.blockIdx.x) * WARPS_PER_BLOCK
    stride = int64(cuda.gridDim.x) * WARPS_PER_BLOCK
    for first_row in range(start, n_rows, stride):
        row = first_row + warp
        stop = n_classes if row < n_rows else 0  # a masked row covers no column
        m, d = _thread_stats(Z, b, row, lane, stop, WARP_SIZE)
        m, d = _warp_reduce(m, d, WARP_SIZE)
        if row < n_rows:
            _softmax_row_(Z, b, row, m, d, lane, WARP_SIZE, log)


@cuda.jit(cache=True)
def _softmax_block_per_row(Z, b, log):
    part_m = cuda.shared.array(WARPS_PER_BLOCK, dtype=Z.dtype)
    part_d = cuda.shared.array(WARPS_PER_BLOCK, dtype=Z.dtype)
    n_rows, n_classes = Z.shape
    t = cuda.threadIdx.x
    for row in range(int64(cuda.blockIdx.x), n_rows, int64(cuda.gridDim.x)):
        m, d = _thread_stats(Z, b, row, t, n_classes, BLOCK_THREADS)
        m, d = _block_reduce(m, d, part_m, part_d)
        _softmax_row_(Z, b, row, m, d, t, BLOCK_THREADS, log)


# -- launchers ------------------------------------------------------------------------


def _device_view(a):
    """A Numba device view of a foreign (e.g. CuPy) array, made without synchronising.

    Handed such an array, Numba would block the host until the stream the array was
    made on is idle (CUDA_ARRAY_INTERFACE_SYNC).  The caller launches on the stream
    that made the arrays (the backend uses CuPy's current stream for both), so
    stream order already makes them ready.  NumPy arrays pass through: the simulator
    copies them in and back out around the launch.
    """
    if isinstance(a, np.ndarray) or not hasattr(a, "__cuda_array_interface__"):
        return a
    return cuda.as_cuda_array(a, sync=False)


def _launch_shape(n_rows, n_classes):
    """``(warp_per_row, grid)``: the kernel family and its number of blocks."""
    warp_per_row = n_classes <= SMALL_C_MAX
    rows_per_block = WARPS_PER_BLOCK if warp_per_row else 1
    return warp_per_row, min(-(-n_rows // rows_per_block), MAX_BLOCKS)


def _check_arrays(Z, b, y=None, scale=None, row_loss=None):
    """Shapes and dtypes, checked on the host: a wrong one would read out of bounds on the device."""
    if Z.ndim != 2 or Z.dtype not in (np.float32, np.float64):
        raise ValueError(f"Z must be a 2-D float32 or float64 array, got {Z.ndim}-D {Z.dtype}")
    n_rows, n_classes = Z.shape
    if b.shape != (n_classes,) or b.dtype != Z.dtype:
        raise ValueError(f"b must have shape ({n_classes},) and dtype {Z.dtype}, got {b.shape} {b.dtype}")
    if y is None:
        return
    for name, a, dtypes in [
        ("y", y, (np.int32, np.int64)),
        ("scale", scale, (Z.dtype,)),
        ("row_loss", row_loss, (np.float32, np.float64)),
    ]:
        if a.shape != (n_rows,) or a.dtype not in dtypes:
            expected = " or ".join(str(np.dtype(t)) for t in dtypes)
            got = f"{a.shape} {a.dtype}"
            raise ValueError(f"{name} must have shape ({n_rows},) and dtype {expected}, got {got}")


def _launch(warp_kernel, block_kernel, args, stream):
    """Launch the kernel family that fits ``Z = args[0]``; nothing for an empty ``Z``."""
    warp_per_row, grid = _launch_shape(*args[0].shape)
    if grid == 0:
        return
    kernel = warp_kernel if warp_per_row else block_kernel
    # Numba warns about grids under 128 blocks, a hint aimed at beginners' launches;
    # a small batch makes a small grid legitimately, so the hint is silenced here.
    # (catch_warnings is process-wide state: two threads launching at once could at
    # worst leave the hint silenced for good.)
    with warnings.catch_warnings():
        # The message may start with terminal colour codes (when colorama is installed).
        warnings.filterwarnings(
            "ignore", message=r"(?:\x1b\[[0-9;]*m)*Grid size \d+ will likely result in GPU under-util"
        )
        kernel[grid, BLOCK_THREADS, stream](*(_device_view(a) for a in args))


def softmax_xent_grad_(Z, b, y, scale, row_loss, stream=0):
    """Fused bias, softmax, cross-entropy and gradient on the GPU, in place.

    For every row i, with ``z = Z[i] + b``: ``row_loss[i] = scale[i] * (lse(z) - z[y_i])``
    and ``Z[i] <- scale[i] * (softmax(z) - onehot(y_i))``.  Launches and returns;
    nothing is synchronised.

    Parameters
    ----------
    Z : device array of shape (n_rows, n_classes), float32 or float64, C-contiguous
        Logits without bias on entry, scaled gradient ``G`` on exit.  Any object with
        ``__cuda_array_interface__`` (a CuPy array); in the simulator a NumPy array.
    b : device array of shape (n_classes,), same dtype as Z
    y : device array of shape (n_rows,), int32 or int64
        Class indices in ``[0, n_classes)``; checked by the caller.
    scale : device array of shape (n_rows,), same dtype as Z
        Per-row weight ``s_i / sum(s)``.
    row_loss : device array of shape (n_rows,), float32 or float64
        Written with ``scale[i] * loss_i``, computed in float64.  float64 keeps the
        loss of float32 logits near 3e38 finite (up to 6.8e38 per row) and its sum
        as accurate as the CPU kernel's.
    stream : Numba stream or 0
        The stream the arrays are ready on, e.g.
        ``cuda.external_stream(cupy.cuda.get_current_stream().ptr)``.
    """
    _check_arrays(Z, b, y, scale, row_loss)
    _launch(_xent_grad_warp_per_row, _xent_grad_block_per_row, (Z, b, y, scale, row_loss), stream)


def softmax_(Z, b, log=False, stream=0):
    """Rows of ``Z + b`` replaced by their softmax, or log-softmax ``(z - m) - log(d)``, in place.

    Parameters
    ----------
    Z : device array of shape (n_rows, n_classes), float32 or float64, C-contiguous
    b : device array of shape (n_classes,), same dtype as Z
    log : bool
    stream : Numba stream or 0
        As for :func:`softmax_xent_grad_`.
    """
    _check_arrays(Z, b)
    _launch(_softmax_warp_per_row, _softmax_block_per_row, (Z, b, bool(log)), stream)
