"""The CUDA backend: cuBLAS GEMMs through CuPy plus the Numba-CUDA row kernels.

One pass over a chunk of rows: ``Z = X @ W`` (cuBLAS), the fused kernel rewrites
``Z`` into ``G = scale * (softmax(Z + b) - Y)`` and writes each row's loss, then
``dW += X.T @ G`` (cuBLAS, accumulating with beta = 1) and ``db += G.sum(0)``.
Nothing returns to the host: the loss comes back as a 0-d device array, summed on
the device in a fixed order (no atomics), so a pass is reproducible run to run.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, no GPU) the same class runs
with NumPy standing in for CuPy: the GEMMs are NumPy's and the kernels run in the
simulator.  That is how CI tests this backend; speed means nothing there.

Memory: data sets that fit in the memory budget are copied to the device once and
stay there; larger ones stay on the host and each chunk is copied when it is used.
Chunks are sized from the free device memory at the time of the pass.

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

import numpy as np

from .errors import BackendUnavailableError, DeviceMemoryError
from .probe import cuda_simulated, cuda_unavailable_reason

# Fraction of the free device memory a pass may fill with its per-chunk buffers
# (logits, row losses, and an X chunk when X streams from the host); the rest is
# headroom for cuBLAS workspaces and the caller's arrays.
MEMORY_FRACTION = 0.5
# Fraction of the free device memory a data set may occupy to be kept resident.
RESIDENT_FRACTION = 0.6
# What the simulator pretends is free: small enough that tests exercise chunking.
SIMULATED_FREE_BYTES = 64 << 20
# cublasMath_t value from cublas_api.h; CuPy's bindings name only 0 and 1.
_CUBLAS_TF32_TENSOR_OP_MATH = 3


class CudaBackend:
    """Backend on CuPy arrays (or NumPy arrays under the CUDA simulator).

    Parameters
    ----------
    storage : {None, "float16", "bfloat16"}, default=None
        Keep training data in 16 bits on the device (see the module docstring).
    tf32 : bool, default=False
        Allow TF32 tensor-core GEMMs for float32 (see the module docstring).

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

    def __init__(self, storage=None, tf32=False):
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
        self.simulated = cuda_simulated()
        self._kernels = kernels
        if self.simulated:
            self.xp = np
        else:
            import cupy

            self.xp = cupy

    def __repr__(self):
        return f"CudaBackend(storage={self.storage!r}, tf32={self.tf32})"

    def __reduce__(self):
        return (CudaBackend, (self.storage, self.tf32))

    # -- arrays -------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        if hasattr(a, "tocsr") and not hasattr(a, "__cuda_array_interface__"):
            raise ValueError("sparse X runs on backend='cpu'; the CUDA backend takes dense X for now")
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a):
        if isinstance(a, np.ndarray) or np.isscalar(a):
            return np.asarray(a)
        return self.xp.asnumpy(a)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def resident(self, a, dtype=None):
        """Training data on the device if it fits the memory budget, else on the host.

        In the ``storage`` format when one is set.  A host-resident array is copied to
        the device one chunk at a time by the methods below; the objective's chunking
        keeps each copy within the budget.
        """
        if hasattr(a, "__cuda_array_interface__") and self.storage is None:
            return self.asarray(a, dtype)
        if hasattr(a, "tocsr"):
            return self.asarray(a)  # raises: sparse X is not supported here yet
        host = self._to_storage(
            self.to_host(a) if hasattr(a, "__cuda_array_interface__") else np.asarray(a, dtype)
        )
        if self.simulated or host.nbytes <= RESIDENT_FRACTION * self._free_bytes():
            return self.asarray(host)
        return np.ascontiguousarray(host)

    def _to_storage(self, X):
        if self.storage == "float16":
            if X.size and np.abs(X).max() > np.finfo(np.float16).max:
                raise ValueError(
                    "X has values beyond float16's range (+-65504); use storage='bfloat16' or None"
                )
            return X.astype(np.float16)
        if self.storage == "bfloat16":
            bits = np.ascontiguousarray(X, dtype=np.float32).view(np.uint32)
            # Round to nearest even on the 16 bits that are dropped.
            rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
            return (rounded >> np.uint32(16)).astype(np.uint16)
        return X

    def _widen(self, X, dtype):
        """A chunk of X in the model's dtype, from whatever it is stored as."""
        X = self.asarray(X)
        if X.dtype == np.uint16:  # bfloat16 bits: they are the top half of a float32
            wide = X.astype(np.uint32)
            wide <<= np.uint32(16)  # in place: one widened copy, as max_chunk_rows budgets
            X = wide.view(np.float32)
        return X if X.dtype == dtype else X.astype(dtype)

    def _matmul(self, X, W):
        """``X @ W``; under TF32 through cublasSgemm, which honours the handle's math mode.

        CuPy's ``@`` calls cublasGemmEx with an explicit CUBLAS_COMPUTE_32F, which the
        math mode may not override; cublasSgemm is what PyTorch's TF32 switch relies on.
        """
        if self.tf32 and not self.simulated and W.dtype == np.float32:
            from cupy import cublas

            return cublas.gemm("N", "N", X, W, out=self.xp.empty((X.shape[0], W.shape[1]), W.dtype))
        return X @ W

    # -- memory -------------------------------------------------------------------
    def _free_bytes(self):
        if self.simulated:
            return SIMULATED_FREE_BYTES
        free, _ = self.xp.cuda.runtime.memGetInfo()
        # Blocks cached by CuPy's pool are free for our purposes too.
        return free + self.xp.get_default_memory_pool().free_bytes()

    def max_chunk_rows(self, X, n_classes):
        """Rows of ``X`` per chunk that fit the memory budget now.

        Per row a pass needs its logits (``n_classes`` values), its row loss, and,
        when X is on the host, the row of X copied to the device.

        Raises
        ------
        DeviceMemoryError
            When not even one row fits.
        """
        n_features = X.shape[1]
        itemsize = 4 if X.dtype.itemsize < 4 else X.dtype.itemsize  # 16-bit X computes in float32
        streamed = not (self.simulated or hasattr(X, "__cuda_array_interface__"))
        # Logits, the float64 row loss, the chunk of X when it comes from the host, and
        # its widened copy when X is stored in 16 bits.
        per_row = itemsize * n_classes + 8
        per_row += X.dtype.itemsize * n_features if streamed else 0
        per_row += itemsize * n_features if X.dtype.itemsize < 4 else 0
        budget = int(MEMORY_FRACTION * self._free_bytes())
        rows = budget // per_row
        if rows < 1:
            raise DeviceMemoryError(
                f"one row of the pass needs {per_row} bytes of device memory "
                f"(n_classes={n_classes}, n_features={n_features}) but only {budget} are available; "
                "free device memory or use backend='cpu'"
            )
        return rows

    def stream(self, pieces):
        for lo, hi, X in pieces:
            yield lo, hi, self.asarray(X)

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
        """cuBLAS math mode for our GEMMs: TF32 tensor cores when asked, restored after."""
        if not self.tf32 or self.simulated:
            yield
            return
        from cupy_backends.cuda.libs import cublas

        handle = self.xp.cuda.device.get_cublas_handle()
        previous = cublas.getMathMode(handle)
        cublas.setMathMode(handle, _CUBLAS_TF32_TENSOR_OP_MATH)
        try:
            yield
        finally:
            cublas.setMathMode(handle, previous)

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
        """``dW += X.T @ G`` in one GEMM with beta = 1 (no temporary) on the GPU."""
        if self.simulated:
            dW += X.T @ G
            return
        from cupy import cublas

        cublas.gemm("T", "N", X, G, out=dW, alpha=1.0, beta=1.0)
