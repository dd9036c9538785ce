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
"""
import numpy as np

from .errors import DeviceMemoryError

# Fraction of the free device memory a pass may fill with its per-chunk buffers
# (logits, row losses, and an X chunk when X streams from the host); the rest is
# headroom for cuBLAS workspaces and the caller's arrays.
MEMORY_FRACTION = 0.5
# Fraction of the free device memory a data set may occupy to be kept resident.
RESIDENT_FRACTION = 0.6
# What the simulator pretends is free: small enough that tests exercise chunking.
SIMULATED_FREE_BYTES = 64 << 20


class CudaBackend:
    """Backend on CuPy arrays (or NumPy arrays under the CUDA simulator).

    Parameters
    ----------
    simulated : bool
        True under ``NUMBA_ENABLE_CUDASIM=1``: NumPy arrays, simulated kernels.
    """

    name = "cuda"

    def __init__(self, simulated=False):
        from fastsoftmax.kernels import cuda as kernels

        self.simulated = simulated
        self._kernels = kernels
        if simulated:
            self.xp = np
        else:
            import cupy

            self.xp = cupy

    def __repr__(self):
        return f"CudaBackend(simulated={self.simulated})"

    def __reduce__(self):
        return (CudaBackend, (self.simulated,))

    # -- arrays -------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a):
        if isinstance(a, np.ndarray) or np.isscalar(a):
            return np.asarray(a)
        return self.xp.asnumpy(a)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def resident(self, a, dtype=None):
        """``a`` on the device if it fits the memory budget, else ``a`` on the host.

        A host-resident array is copied to the device one chunk at a time by the
        methods below; the objective's chunking keeps each copy within the budget.
        """
        nbytes = np.dtype(dtype or a.dtype).itemsize * int(np.prod(a.shape))
        if self.simulated or nbytes <= RESIDENT_FRACTION * self._free_bytes():
            return self.asarray(a, dtype)
        return np.ascontiguousarray(a, dtype=dtype)

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
        n_features, itemsize = X.shape[1], X.dtype.itemsize
        streamed = not (self.simulated or hasattr(X, "__cuda_array_interface__"))
        per_row = itemsize * (n_classes + (n_features if streamed else 0)) + 8  # + float64 row loss
        budget = int(MEMORY_FRACTION * self._free_bytes())
        rows = budget // per_row
        if rows < 1:
            raise DeviceMemoryError(
                f"one row of the pass needs {per_row} bytes of device memory "
                f"(n_classes={n_classes}, n_features={n_features}) but only {budget} are available; "
                "free device memory or use backend='cpu'"
            )
        return rows

    # -- maths --------------------------------------------------------------------
    def _stream(self):
        if self.simulated:
            return 0
        from numba import cuda

        ptr = self.xp.cuda.get_current_stream().ptr
        # CuPy's null stream has pointer 0: that is Numba's default stream (0) too.
        return cuda.external_stream(ptr) if ptr else 0

    def logits(self, X, W, b):
        Z = self.asarray(X) @ W
        Z += b
        return Z

    def softmax(self, X, W, b, log=False):
        Z = self.asarray(X) @ W
        self._kernels.softmax_(Z, b, log=log, stream=self._stream())
        return Z

    def loss_grad_accumulate_(self, X, y, scale, W, b, dW, db):
        X, y, scale = self.asarray(X), self.asarray(y), self.asarray(scale)
        Z = X @ W
        # float64: a float32 row's loss reaches 6.8e38 for logits near 3e38.
        row_loss = self.xp.empty(X.shape[0], dtype=np.float64)
        self._kernels.softmax_xent_grad_(Z, b, y, scale, row_loss, stream=self._stream())
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
