"""The CUDA backend: cuBLAS GEMMs through CuPy plus the Numba-CUDA row kernels.

One pass over a chunk of rows: ``Z = X @ W`` (cuBLAS), the fused kernel rewrites
``Z`` into ``G = scale * (softmax(Z + b) - Y)`` and writes each row's loss, then
``dW += X.T @ G`` (cuBLAS, accumulating with beta = 1) and ``db += G.sum(0)``.
Nothing returns to the host: the loss comes back as a 0-d device array.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU) the same class runs
with NumPy standing in for CuPy: the GEMMs are NumPy's and the kernels run in the
simulator.  That is how CI tests this backend; speed means nothing there.

Memory: data sets that fit in the memory budget are copied to the device once and
stay there; larger ones stay on the host and stream through the device in pieces,
each copied while the previous one is computed on (:class:`_HostToDevicePipeline`).
Such a host-resident X has its pages locked (``cudaHostRegister``) for as long as the
objective holds it, so the copy engine reads it in place at the full PCIe rate;
pieces from elsewhere (a data source) are first copied into pinned staging buffers
by host threads.  Where X lives and how many rows a chunk takes are decided from the
device's memory (next section), within a limit set on CuPy's memory pool.

Determinism: no reduction of a pass uses atomics.  The row kernels reduce each row
by a fixed butterfly; the loss and ``db`` are CuPy reductions (its own kernels, or
CUB's DeviceReduce, which promises run-to-run reproducible sums on one device); ``dW``
accumulates through cuBLAS GEMMs on one stream, which cuBLAS documents as bitwise
reproducible on GPUs of the same architecture and SM count unless its atomics mode
allows atomics: nothing here allows them, and with ``deterministic=True`` our GEMMs
run with atomics forbidden even if other code on CuPy's cuBLAS handle allowed them.
What remains is where the chunks are cut, since a sum in other pieces rounds
differently.  With ``deterministic=True`` (the default) that depends only on the
problem's shape and the device's capacity (its total memory, or CuPy's pool limit
when lower): X is kept on the device when it fits ``RESIDENT_FRACTION`` of the
capacity, and chunks take the rows that fit ``MEMORY_FRACTION`` of the rest, rounded
down to a power of two (so that drivers reserving slightly different amounts of the
same GPU model cut the same chunks).  Two runs on the same device, data and software
then sum in the same order.  ``deterministic=False`` sizes both from the memory free
at the time: the largest chunks that fit now, cut differently when another process
holds memory.  Not covered: sparse X, whose ``X.T @ G`` is cuSPARSE's transposed
SpMM, which cuSPARSE does not promise to reproduce bitwise.

Out of device memory: the sizes above are estimates, and another process may take
memory between sizing and allocating.  An allocation that fails mid-pass (CuPy's
``OutOfMemoryError``, a cuBLAS or cuSPARSE allocation failure, Numba's driver error;
:func:`is_out_of_memory`) makes the pass release CuPy's cached blocks and start over
with half the rows per chunk (:func:`halving_rows_on_out_of_memory`), down to one
row, and then raise :class:`~fastsoftmax.backends.DeviceMemoryError`.  A data set
that does not fit when it is copied to the device stays on the host and streams.
Such a fallback is reproducible given the same memory state, but a run that needed
it cuts its chunks differently from one that did not.

Sparse X (SciPy CSR, or CuPy's ``cupyx.scipy.sparse`` CSR) stays sparse: on the
device as cuSPARSE CSR when it fits, else on the host with each piece converted when
it is used.  ``X @ W`` is then a cuSPARSE SpMM and ``dW += X.T @ G`` a transposed
one; the row kernels are the dense path's.

Reduced precision, both off by default, each a stated accuracy trade:

- ``storage="float16"`` or ``"bfloat16"`` keeps the training data X in 16 bits (half
  the memory and host-to-device traffic); each chunk is widened to the model's dtype
  just before its GEMMs, so every sum still accumulates in float32.  The fit is then
  exactly the float32 fit on X rounded to 16 bits: a relative error per element of
  at most 2**-11 (float16, 4.9e-4; values beyond +-65504 are refused) or 2**-8
  (bfloat16, 3.9e-3, float32's range).  bfloat16 travels as its uint16 bit pattern,
  since CuPy has no bfloat16 dtype; conversion rounds to nearest even.
- ``tf32=True`` lets cuBLAS run float32 GEMMs on TF32 tensor cores (cuBLAS math mode
  ``CUBLAS_TF32_TENSOR_OP_MATH``, Ampere and newer): inputs rounded to 10 mantissa
  bits, products accumulated in float32, so logits and gradients carry a relative
  error of about 2**-11 times the square root of the reduction length at worst
  typical; the softmax kernel itself stays in full float32.
"""

import contextlib
import gc
import math
import os
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from .errors import BackendUnavailableError, DeviceMemoryError
from .probe import cuda_simulated, cuda_unavailable_reason

# Fraction of the free device memory a pass may fill with its per-chunk buffers
# (logits, row losses, and the two buffers of X pieces when X streams from the
# host); the rest is headroom for cuBLAS workspaces and the caller's arrays.
MEMORY_FRACTION = 0.5
# Fraction of the free device memory a data set may occupy to be kept resident.
RESIDENT_FRACTION = 0.6
# What the simulator pretends is free: small enough that tests exercise chunking.
SIMULATED_FREE_BYTES = 64 << 20
# What the simulator pretends the device holds: its deterministic chunk budget,
# MEMORY_FRACTION of the (1 - RESIDENT_FRACTION) of it, is 32 MiB, as for the free bytes.
SIMULATED_TOTAL_BYTES = 160 << 20
# Largest piece of X streamed from the host, in bytes.  The copy of the first piece
# and the compute on the last overlap with nothing, so a pass over B bytes loses
# about 2 * STREAM_PIECE_BYTES / B of the overlap (3% for 8 GiB); smaller pieces pay
# more often for what each costs the host (a Python round trip, a thread-pool
# dispatch, a few launches: estimated at 0.1 ms) against the 2.4 ms that copying
# 128 MiB takes at the 55 GB/s of an H100's PCIe 5 link.  With 8 GiB in 64 pieces of
# page-locked X, a copy-bound pass reached 98% of that rate (bench/gpu_stream.py).
# Two pinned staging buffers of this size are kept on the host between passes.
STREAM_PIECE_BYTES = 128 << 20
# Host threads that fill a pinned staging buffer.  A one-off diagnostic on the H100
# machine of bench/results/gpu_h100_2026-11-26 (a 16-core Xeon VM; its output was not
# kept) against 55 GB/s of pinned host-to-device copies: one thread filled at 5.7 GB/s,
# 8 at 33 GB/s, 16 at 45 GB/s (32 GB/s while the copy engine read the other buffer),
# so every core helps.
STAGING_THREADS = min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
# Largest share of physical memory a host-resident X may lock (page-lock) for the
# copy engine; beyond it X streams through the staging buffers, and the rest of the
# system keeps its pageable memory.
LOCK_FRACTION = 0.5
# Below this a piece is copied into its pinned buffer by one thread: splitting it
# would cost more in dispatch than it saves.
_PARALLEL_FILL_BYTES = 8 << 20
# cublasMath_t value from cublas_api.h; CuPy's bindings name only 0 and 1.
_CUBLAS_TF32_TENSOR_OP_MATH = 3
# cublasAtomicsMode_t value from cublas_api.h: CUBLAS_ATOMICS_NOT_ALLOWED, cuBLAS's default.
_CUBLAS_ATOMICS_NOT_ALLOWED = 0
# What CuPy and Numba raise when the device has no memory left, recognised by name so
# that neither needs importing (either may be absent).  CuPy's memory pool raises
# this class (and its subclasses):
_OUT_OF_MEMORY_CLASSES = {("cupy.cuda.memory", "OutOfMemoryError")}
# The CUDA libraries raise their own error classes, with a status name in the message:
# cupy_backends' CUDARuntimeError, CUBLASError and CuSparseError, and Numba's
# CudaAPIError from the driver.
_OUT_OF_MEMORY_STATUSES = (
    "cudaErrorMemoryAllocation",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUSPARSE_STATUS_ALLOC_FAILED",
    "CUDA_ERROR_OUT_OF_MEMORY",
)
_DEVICE_LIBRARIES = ("cupy", "cupy_backends", "numba")


class CudaBackend:
    """Backend on CuPy arrays (or NumPy arrays under the CUDA simulator).

    Parameters
    ----------
    storage : {None, "float16", "bfloat16"}, default=None
        Keep dense training data in 16 bits on the device (see the module docstring).
    tf32 : bool, default=False
        Allow TF32 tensor-core GEMMs for float32 (see the module docstring).
    deterministic : bool, default=True
        Size chunks, and decide whether X stays on the device, from the device's
        capacity rather than from the memory free at the time, so that runs on the
        same device and data give the same bits (see the module docstring).  False
        takes the largest chunks that fit at each pass.

    Raises
    ------
    BackendUnavailableError
        When neither a GPU with CuPy nor the CUDA simulator is available.

    Examples
    --------
    ``SoftmaxClassifier(backend=CudaBackend(storage="bfloat16"))`` trains on a data set
    twice the size that fits in float32.
    """

    name = "cuda"
    STORAGE_DTYPES = {None: None, "float16": np.float16, "bfloat16": np.uint16}

    def __init__(self, storage=None, tf32=False, deterministic=True):
        if storage not in self.STORAGE_DTYPES:
            raise ValueError(
                f"storage={storage!r} is not supported; expected one of {list(self.STORAGE_DTYPES)}"
            )
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"the CUDA backend is not available: {reason}")
        from fastsoftmax.kernels import cuda as kernels

        self.storage = storage
        self.tf32 = bool(tf32)
        self.deterministic = bool(deterministic)
        self.simulated = cuda_simulated()
        self._kernels = kernels
        if self.simulated:
            self.xp = np
            self._sparse = sp  # SciPy's CSR plays the device's
        else:
            import cupy
            import cupyx.scipy.sparse

            self.xp = cupy
            self._sparse = cupyx.scipy.sparse
        # Idle host-to-device pipelines: a pass takes one (or makes one, when passes
        # overlap) and gives it back, so its pinned buffers serve the next pass.
        self._pipelines = []
        self._pipelines_lock = threading.Lock()

    def __repr__(self):
        return f"CudaBackend(storage={self.storage!r}, tf32={self.tf32}, deterministic={self.deterministic})"

    def __reduce__(self):
        return (CudaBackend, (self.storage, self.tf32, self.deterministic))

    # -- arrays -------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        if self._is_sparse(a):
            return self._device_csr(a, dtype)
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a):
        if isinstance(a, np.ndarray) or np.isscalar(a):
            return np.asarray(a)
        return self.xp.asnumpy(a)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def _is_sparse(self, a):
        return sp.issparse(a) or self._sparse.issparse(a)

    def _on_device(self, a):
        """True for a backend array or device CSR; False for host data the pass must stream."""
        if self.simulated:
            # NumPy arrays and SciPy matrices play device arrays; anything else (a data
            # source's features) streams, so its memory is budgeted as on a GPU.
            return isinstance(a, np.ndarray) or sp.issparse(a)
        return hasattr(a, "__cuda_array_interface__") or self._sparse.issparse(a)

    def _device_csr(self, a, dtype=None):
        """``a`` as a CSR matrix on the device (SciPy's under the simulator)."""
        if self._sparse.issparse(a):
            a = a.tocsr()
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        host = sp.csr_matrix(a, dtype=dtype)
        device = self._sparse.csr_matrix(host)
        if host.has_canonical_format:
            # cuSPARSE's products need sorted rows without duplicates; CuPy would find
            # out with a kernel and a synchronisation per matrix.
            device.has_canonical_format = True
        return device

    def resident(self, a, dtype=None):
        """Training data on the device if it fits the memory budget, else on the host.

        The budget is ``RESIDENT_FRACTION`` of the device's capacity, or with
        ``deterministic=False`` of its free memory; data whose copy to the device runs
        out of memory stays on the host too.  Dense data is in the ``storage`` format
        when one is set; sparse data stays CSR in ``dtype``.  Host-resident data
        streams to the device piece by piece through :meth:`stream`; the objective's
        chunking keeps each piece within the budget.  Host-resident dense data comes
        back as a view whose pages stay locked for the copy engine while it lives
        (:meth:`_page_locked`).

        Raises
        ------
        ValueError
            For sparse data with ``storage`` set (cuSPARSE has no 16-bit CSR), or
            float16 storage of values beyond its range.
        """
        if self._is_sparse(a):
            if self.storage is not None:
                raise ValueError(
                    f"storage={self.storage!r} applies to dense X; cuSPARSE takes float32 or float64 CSR, "
                    "so pass dense X or use CudaBackend(storage=None)"
                )
            if self._on_device(a):
                return self.asarray(a, dtype)
            host = sp.csr_matrix(a, dtype=dtype)
            device = self._copied_if_room(host, host.data.nbytes + host.indices.nbytes + host.indptr.nbytes)
            return host if device is None else device
        if hasattr(a, "__cuda_array_interface__") and self.storage is None:
            return self.asarray(a, dtype)
        host = self._to_storage(
            self.to_host(a) if hasattr(a, "__cuda_array_interface__") else np.asarray(a, dtype)
        )
        device = self.asarray(host) if self.simulated else self._copied_if_room(host, host.nbytes)
        return self._page_locked(np.ascontiguousarray(host)) if device is None else device

    def _copied_if_room(self, host, nbytes):
        """``host`` copied to the device if its ``nbytes`` fit the resident budget and the copy succeeds, else None."""
        room = self._capacity_bytes() if self.deterministic else self._free_bytes()
        if nbytes > RESIDENT_FRACTION * room:
            return None
        try:
            return self.asarray(host)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        release_device_memory()  # whatever the failed copy left in CuPy's pool
        return None

    def _page_locked(self, X):
        """A view of host array X whose pages stay locked for the copy engine while it lives; else X.

        Locked (pinned) pages go to the device by DMA, read in place, where pageable
        ones must first be copied into a pinned staging buffer by host threads.  On
        the machine measured for ``STAGING_THREADS`` that host copy, not PCIe, bounds
        a staged pass: copy-bound passes over 8 GiB ran at 98% of the pinned copy
        rate from page-locked X and at 52% through staging.  Locking costs the driver
        a walk over X's pages, once per objective: 0.2 to 0.3 s for 8 GiB there.  X
        is left as it is when it is already pinned, larger than ``LOCK_FRACTION`` of
        physical memory, or when the driver refuses (a range that overlaps one locked
        before, say); it then streams through staging.
        """
        runtime = self.xp.cuda.runtime
        ptr = X.ctypes.data
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if (
            not X.nbytes
            or X.nbytes > LOCK_FRACTION * physical
            or self.xp.cuda.pinned_memory.is_memory_pinned(ptr)
        ):
            return X
        try:
            runtime.hostRegister(ptr, X.nbytes, 0)  # cudaHostRegisterDefault
        except runtime.CUDARuntimeError:
            return X
        view = X.view()
        # The view keeps X's memory alive, so the pages are unlocked before it is freed.
        weakref.finalize(view, _unlock_pages, runtime, ptr)
        return view

    def _to_storage(self, X):
        if self.storage == "float16":
            if X.size and np.abs(X).max() > np.finfo(np.float16).max:
                raise ValueError(
                    "X has values beyond float16's range (+-65504); use storage='bfloat16' or None"
                )
            return X.astype(np.float16)
        if self.storage == "bfloat16":
            # From halfway between bfloat16's largest value, (2 - 2**-7) * 2**127, and
            # 2**128 on, rounding to nearest even gives +-inf: refuse, as for float16.
            overflow = (2 - 2.0**-8) * 2.0**127
            if X.size and np.abs(X).max() >= overflow:
                raise ValueError(
                    f"X has values beyond bfloat16's range (+-{overflow:.5g} rounds to inf); use storage=None"
                )
            bits = np.ascontiguousarray(X, dtype=np.float32).view(np.uint32)
            # Round to nearest even on the 16 bits that are dropped.
            rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
            return (rounded >> np.uint32(16)).astype(np.uint16)
        return X

    def _widen(self, X, dtype):
        """A chunk of X on the device in the model's dtype, from whatever it is stored as."""
        X = self.asarray(X)
        if X.dtype == np.uint16:  # bfloat16 bits: they are the top half of a float32
            wide = X.astype(np.uint32)
            wide <<= np.uint32(16)  # in place: one widened copy, as max_chunk_rows budgets
            X = wide.view(np.float32)
        return X if X.dtype == dtype else X.astype(dtype)

    def _matmul(self, X, W):
        """``X @ W`` as a C-ordered array; under TF32 through cublasSgemm.

        CuPy's ``@`` calls cublasGemmEx with an explicit CUBLAS_COMPUTE_32F, which the
        math mode may not override; cublasSgemm is what PyTorch's TF32 switch relies on.
        """
        if self._is_sparse(X):
            # cuSPARSE's SpMM writes column-major logits; the row kernels read rows.
            return self.xp.ascontiguousarray(X @ W)
        if self.tf32 and not self.simulated and W.dtype == np.float32:
            from cupy import cublas

            return cublas.gemm("N", "N", X, W, out=self.xp.empty((X.shape[0], W.shape[1]), W.dtype))
        return X @ W

    # -- memory -------------------------------------------------------------------
    def _free_bytes(self):
        """Device memory a pass may allocate: free memory plus CuPy's cached blocks, within its pool limit."""
        if self.simulated:
            return SIMULATED_FREE_BYTES
        pool = self.xp.get_default_memory_pool()
        free, _ = self.xp.cuda.runtime.memGetInfo()
        # Blocks cached by CuPy's pool are free for our purposes too.
        available = free + pool.free_bytes()
        limit = pool.get_limit()  # 0: no limit
        if limit:
            # The pool refuses to hold more than its limit, cached blocks included,
            # but frees its cached blocks before it refuses.
            available = min(available, max(0, limit - pool.used_bytes()))
        return available

    def _capacity_bytes(self):
        """Device memory this process may ever use: the total, or CuPy's pool limit when lower.

        Unlike :meth:`_free_bytes`, it does not change with what others allocate.
        """
        if self.simulated:
            return SIMULATED_TOTAL_BYTES
        _, total = self.xp.cuda.runtime.memGetInfo()
        limit = self.xp.get_default_memory_pool().get_limit()  # 0: no limit
        return min(total, limit) if limit else total

    def max_chunk_rows(self, X, n_classes):
        """Rows of ``X`` per chunk that fit the memory budget.

        The budget is ``MEMORY_FRACTION`` of what resident data leaves of the
        device's capacity, ``(1 - RESIDENT_FRACTION)`` of it, with the rows rounded
        down to a power of two; with ``deterministic=False``, ``MEMORY_FRACTION`` of
        the memory free now.  Pieces streamed from the host are also capped at
        ``STREAM_PIECE_BYTES``.

        Raises
        ------
        DeviceMemoryError
            When not even one row fits.
        """
        per_row, x_row = self._row_bytes(X, n_classes)
        if self.deterministic:
            budget = int(MEMORY_FRACTION * (1 - RESIDENT_FRACTION) * self._capacity_bytes())
        else:
            budget = int(MEMORY_FRACTION * self._free_bytes())
        rows = budget // per_row
        if rows < 1:
            raise DeviceMemoryError(
                f"one row of the pass needs {per_row} bytes of device memory "
                f"(n_classes={n_classes}, n_features={X.shape[1]}) but only {budget} are available; "
                "free device memory or use backend='cpu'"
            )
        if self.deterministic:
            rows = 1 << (rows.bit_length() - 1)
        if not self._on_device(X):
            rows = min(rows, max(1, int(STREAM_PIECE_BYTES // max(x_row, 1))))
        return rows

    def _row_bytes(self, X, n_classes):
        """``(per_row, x_row)``: the bytes a chunk needs per row, and those of a row of X as stored.

        Per row a pass needs its logits (``n_classes`` values, twice for sparse X,
        whose SpMM writes them column-major before they are reordered), its row
        loss, a widened copy of a 16-bit row, and, when X streams from the host, the
        row in each of the two pieces alive at once on the device (the one computed
        on and the next one, copied or, for sparse X, converted ahead of it; a GPU
        run with a capped pool ran out of memory counting one).
        """
        n_features = X.shape[1]
        itemsize = 4 if X.dtype.itemsize < 4 else X.dtype.itemsize  # 16-bit X computes in float32
        sparse = self._is_sparse(X) or getattr(X, "sparse", False)  # a CSR matrix, or a sparse source
        if self._is_sparse(X):
            # Stored values and their column indices of an average row, and its row pointer.
            x_row = (X.data.itemsize + X.indices.itemsize) * X.nnz / max(1, X.shape[0]) + X.indptr.itemsize
        elif sparse:
            # A source's bytes per row, as stored (values and indices), and a row pointer.
            x_row = X.bytes_per_row + 8
        else:
            x_row = X.dtype.itemsize * n_features
        streamed = not self._on_device(X)
        # Logits and the float64 row loss.
        per_row = (2 if sparse else 1) * itemsize * n_classes + 8
        per_row += itemsize * n_features if X.dtype.itemsize < 4 else 0
        per_row += 2 * x_row if streamed else 0
        return math.ceil(per_row), x_row

    def stream(self, pieces):
        """Yield ``(lo, hi, X)`` for each ``(lo, hi, X_piece)`` of ``pieces``, with X on the device.

        Device pieces pass through; dense host pieces are copied by a
        :class:`_HostToDevicePipeline`, the next while the caller computes on this
        one; sparse host pieces become device CSR one at a time.  A piece stays valid
        until the next one is taken.  The caller computes on CuPy's current stream.
        """
        if self.simulated:
            # No streams to overlap: NumPy arrays are the device's.
            for lo, hi, X in pieces:
                yield lo, hi, self.asarray(X)
            return
        with self._pipelines_lock:
            pipeline = self._pipelines.pop() if self._pipelines else self._new_pipeline()
        try:
            yield from pipeline.stream(pieces, self.asarray)
        finally:
            with self._pipelines_lock:
                self._pipelines.append(pipeline)

    def _new_pipeline(self):
        import cupy
        import cupyx

        return _HostToDevicePipeline(
            cupy.cuda,
            empty_device=lambda nbytes: cupy.empty(nbytes, dtype=cupy.uint8),
            empty_pinned=lambda nbytes: cupyx.empty_pinned(nbytes, dtype=np.uint8),
            copy_async=lambda dst, src, stream: dst.set(src, stream=stream),
            is_pinned=lambda a: cupy.cuda.pinned_memory.is_memory_pinned(a.ctypes.data),
        )

    # -- maths --------------------------------------------------------------------
    def _stream(self):
        if self.simulated:
            return 0
        from numba import cuda

        ptr = self.xp.cuda.get_current_stream().ptr
        # CuPy's null stream has pointer 0: that is Numba's default stream (0) too.
        return cuda.external_stream(ptr) if ptr else 0

    @contextlib.contextmanager
    def _gemm_mode(self):
        """cuBLAS modes for our GEMMs, restored after: TF32 tensor cores when asked; atomics forbidden when deterministic.

        cuBLAS forbids atomics by default and nothing here allows them; the handle is
        CuPy's, shared with the rest of the process, so a deterministic backend checks.
        """
        if self.simulated or not (self.tf32 or self.deterministic):
            yield
            return
        from cupy_backends.cuda.libs import cublas

        handle = self.xp.cuda.device.get_cublas_handle()
        restore = []
        if self.tf32:
            restore.append((cublas.setMathMode, cublas.getMathMode(handle)))
            cublas.setMathMode(handle, _CUBLAS_TF32_TENSOR_OP_MATH)
        if self.deterministic:
            atomics = cublas.getAtomicsMode(handle)
            if atomics != _CUBLAS_ATOMICS_NOT_ALLOWED:
                restore.append((cublas.setAtomicsMode, atomics))
                cublas.setAtomicsMode(handle, _CUBLAS_ATOMICS_NOT_ALLOWED)
        try:
            yield
        finally:
            for set_mode, previous in restore:
                set_mode(handle, previous)

    def logits(self, X, W, b):
        with self._gemm_mode():
            Z = self._matmul(self._widen(X, W.dtype), W)
        Z += b
        return Z

    def softmax(self, X, W, b, log=False):
        with self._gemm_mode():
            Z = self._matmul(self._widen(X, W.dtype), W)
        self._kernels.softmax_(Z, b, log=log, stream=self._stream())
        return Z

    def loss_grad_accumulate_(self, X, y, scale, W, b, dW, db):
        X, y, scale = self._widen(X, W.dtype), self.asarray(y), self.asarray(scale)
        with self._gemm_mode():
            Z = self._matmul(X, W)
        # float64: a float32 row's loss reaches 6.8e38 for logits near 3e38.
        row_loss = self.xp.empty(X.shape[0], dtype=np.float64)
        self._kernels.softmax_xent_grad_(Z, b, y, scale, row_loss, stream=self._stream())
        with self._gemm_mode():
            self._accumulate_xt_g_(X, Z, dW)
        db += Z.sum(axis=0)
        return row_loss.sum(dtype=np.float64)

    def _accumulate_xt_g_(self, X, G, dW):
        """``dW += X.T @ G``: one GEMM with beta = 1 (no temporary) for dense X on the GPU."""
        if self.simulated or self._is_sparse(X):
            # cuSPARSE's transposed SpMM returns a column-major product; adding it is
            # one pass over dW, small beside the product.
            dW += X.T @ G
            return
        from cupy import cublas

        cublas.gemm("T", "N", X, G, out=dW, alpha=1.0, beta=1.0)


def is_out_of_memory(exc):
    """True when ``exc`` says the device ran out of memory (CuPy, cuBLAS, cuSPARSE, the CUDA runtime or Numba).

    Recognised by class and status names only, so CuPy and Numba need not be
    installed.  A host ``MemoryError`` is not a device's: halving chunks would not help.

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    bool
    """
    if any((cls.__module__, cls.__qualname__) in _OUT_OF_MEMORY_CLASSES for cls in type(exc).__mro__):
        return True
    library = type(exc).__module__.partition(".")[0]
    return library in _DEVICE_LIBRARIES and any(status in str(exc) for status in _OUT_OF_MEMORY_STATUSES)


def release_device_memory():
    """Hand the blocks CuPy's memory pool caches back to the driver, after the arrays holding them are gone.

    The garbage collection first frees arrays kept alive by reference cycles (a failed
    pass's frames, say).  Nothing happens where CuPy is not loaded: it holds nothing.
    """
    gc.collect()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()


def halving_rows_on_out_of_memory(attempt, rows, backend, X, n_classes):
    """Return ``(attempt(rows), rows)``, halving ``rows`` after each device out-of-memory error.

    ``attempt(rows)`` must do its whole job afresh, in chunks of at most ``rows`` rows
    of ``X``: a pass that failed part-way is started over from zero sums, so no chunk
    is ever counted twice.  Between tries the memory of the failed one goes back to
    the driver (:func:`release_device_memory`).  Other errors propagate unchanged.
    Without an error, this is one call of ``attempt(rows)``.

    Parameters
    ----------
    attempt : callable
        ``rows -> result``.
    rows : int
        Rows per chunk of the first try.
    backend : Backend
    X : array, sparse matrix or SourceFeatures
        What the chunks are cut from, and ``n_classes`` the logits' width: for the
        error's account of the memory a row needs.
    n_classes : int

    Returns
    -------
    result : object
        What ``attempt`` returned.
    rows : int
        The rows per chunk that worked.

    Raises
    ------
    DeviceMemoryError
        When even one row per chunk runs out of device memory; its cause is the
        device's error.
    """
    while True:
        try:
            return attempt(rows), rows
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            tried = min(rows, X.shape[0])  # a chunk holds at most X's rows, however many were allowed
            if tried <= 1:
                raise DeviceMemoryError(_one_row_failed(exc, backend, X, n_classes)) from exc
        # Outside the except block: the failed try's frames, and the arrays they hold, are gone.
        release_device_memory()
        rows = tried // 2


def _one_row_failed(exc, backend, X, n_classes):
    """The message of the error raised when one row per chunk ran out of device memory."""
    need = ""
    if isinstance(backend, CudaBackend):
        per_row = backend._row_bytes(X, n_classes)[0]
        need = f"; a chunk needs {per_row} bytes per row, on top of X when it is on the device, W and the gradients"
    return (
        f"the device ran out of memory even with one row per chunk ({exc}{need}); free device memory, or use "
        "a smaller batch_size, CudaBackend(storage='bfloat16') (X in half the memory) or backend='cpu'"
    )


def _unlock_pages(runtime, ptr):
    try:
        runtime.hostUnregister(ptr)
    except runtime.CUDARuntimeError:
        pass  # at interpreter exit the CUDA context may be gone, and the pages with it


class _HostToDevicePipeline:
    """Copies host pieces of X to the device while the caller computes on the previous piece.

    Three stages run at once, each on its own resource: host threads fill a pinned
    (page-locked) staging buffer from the pageable host piece; the copy engine moves
    a filled staging buffer to a device buffer (``cudaMemcpyAsync`` on a non-blocking
    stream of its own: only from pinned memory is such a copy asynchronous and at
    full PCIe rate); the caller computes on CuPy's current stream.  Two staging
    buffers and two device buffers take turns.  A piece that is pinned already (a
    page-locked X) skips the staging buffer: the copy engine reads it in place.  With piece ``k`` handed out, piece
    ``k + 1`` is already filled and its copy queued, so the copy of ``k + 1`` runs
    during the compute on ``k``, and filling ``k + 2`` runs during the copy of
    ``k + 1``.  Events order what must not overlap:

    (a) the compute stream waits for piece k's copy before using it;
    (b) the copy into a device buffer waits for the compute stream to reach the point
        at which the staging call was made, after all compute on the buffer's
        previous piece (k - 2) and on any memory CuPy's pool just recycled into a
        new buffer;
    (c) the host waits for a staging buffer's previous copy before refilling it.

    The staging buffers, the copy stream and the fill threads are kept between
    passes (pinning pages costs far more than copying them); device buffers are
    allocated per pass, so between passes their memory is the pool's, and the chunk
    sizing of the next pass counts it as free.

    Parameters
    ----------
    cuda : module
        ``cupy.cuda``, or an object with the same ``Stream`` and
        ``get_current_stream`` (tests pass a fake device).
    empty_device : callable
        ``nbytes -> `` a flat uint8 device array.
    empty_pinned : callable
        ``nbytes ->`` a flat uint8 NumPy array in pinned memory.
    copy_async : callable
        ``(dst, src, stream)``: queue the copy of flat uint8 host array ``src`` into
        device array ``dst`` (same size) on ``stream``, returning at once.
    is_pinned : callable
        ``host array -> bool``: whether its memory is page-locked.
    n_threads : int, default=STAGING_THREADS
    """

    def __init__(self, cuda, empty_device, empty_pinned, copy_async, is_pinned, n_threads=STAGING_THREADS):
        self._cuda = cuda
        self._empty_device = empty_device
        self._empty_pinned = empty_pinned
        self._copy_async = copy_async
        self._is_pinned = is_pinned
        self._n_threads = max(1, int(n_threads))
        self._copy_stream = cuda.Stream(non_blocking=True)
        self._pinned = [None, None]
        self._copied = [None, None]  # the event after each staging buffer's last copy
        self._threads = None

    def stream(self, pieces, to_device):
        """Yield ``(lo, hi, X)`` with dense host pieces copied here and others by ``to_device``.

        Parameters
        ----------
        pieces : iterable of (lo, hi, X_piece)
        to_device : callable
            For pieces that are not NumPy arrays: device arrays (returned unchanged)
            and sparse matrices (converted on the current stream, synchronously: a
            CSR piece is three arrays whose sizes the host must know anyway).
        """
        device = [None, None]  # this pass's device buffers
        n_staged = 0
        staged = None  # (lo, hi, X on the device, its copy's event), not yet handed out
        try:
            for lo, hi, X in pieces:
                if isinstance(X, np.ndarray) and X.size:
                    X_device, copied = self._stage(X, n_staged % 2, device)
                    n_staged += 1
                else:
                    X_device, copied = to_device(X), None
                handed, staged = staged, (lo, hi, X_device, copied)
                if handed is not None:
                    yield self._hand_out(*handed)
            if staged is not None:
                last, staged = staged, None
                yield self._hand_out(*last)
        finally:
            if staged is not None and staged[3] is not None:
                # Closed early with a copy in flight: the device buffer goes back to
                # CuPy's pool, whose next user on this stream must come after the copy.
                self._cuda.get_current_stream().wait_event(staged[3])

    def _hand_out(self, lo, hi, X, copied):
        if copied is not None:
            self._cuda.get_current_stream().wait_event(copied)  # (a)
        return lo, hi, X

    def _stage(self, X, slot, device):
        """Queue the copy of ``X`` into device buffer ``slot``; return the device view and the copy's event.

        The copy goes through staging buffer ``slot``, unless X is pinned already.
        """
        nbytes = X.nbytes
        staged = not (X.flags.c_contiguous and self._is_pinned(X))
        if staged:
            if self._copied[slot] is not None:
                self._copied[slot].synchronize()  # (c)
            if self._pinned[slot] is None or self._pinned[slot].nbytes < nbytes:
                self._pinned[slot] = self._empty_pinned(nbytes)
            src = self._pinned[slot][:nbytes]
            self._fill(src.view(X.dtype).reshape(X.shape), X)
        else:
            src = X.reshape(-1).view(np.uint8)
        if device[slot] is None or device[slot].nbytes < nbytes:
            device[slot] = self._empty_device(nbytes)
        # (b): everything queued on the compute stream so far includes the compute on
        # this buffer's previous piece, and any use of memory the pool recycled into it.
        self._copy_stream.wait_event(self._cuda.get_current_stream().record())
        dst = device[slot][:nbytes]
        self._copy_async(dst, src, self._copy_stream)
        copied = self._copy_stream.record()
        if staged:
            self._copied[slot] = copied
        return dst.view(X.dtype).reshape(X.shape), copied

    def _fill(self, dst, src):
        """``dst[...] = src`` by several threads for large pieces (NumPy copies without the GIL)."""
        n_parts = min(self._n_threads, len(src)) if src.nbytes >= _PARALLEL_FILL_BYTES else 1
        if n_parts <= 1:
            np.copyto(dst, src)
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self._n_threads, thread_name_prefix="fastsoftmax-staging")
        bounds = np.linspace(0, len(src), n_parts + 1).astype(np.int64)
        parts = [
            self._threads.submit(np.copyto, dst[lo:hi], src[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
        for part in parts:
            part.result()
