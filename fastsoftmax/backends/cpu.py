"""The NumPy backend: BLAS GEMMs plus the Numba row kernels, cache-blocked and threaded."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from fastsoftmax.kernels import cpu as kernels

# Row blocks are sized so that a block of X (about 1 MiB) and its logits (at most
# 4 MiB) stay in this core's L2/L3 between the two GEMMs: X is read from memory
# once per pass instead of twice, which is what matters when n_classes is small and
# both GEMMs are bound by reading X.  Measured on a 2-core EPYC (2 MiB L2): blocks
# of 512 to 4096 rows are within 5% of each other at D=256, C=20.
_X_BLOCK_BYTES = 1 << 20
_Z_BLOCK_BYTES = 1 << 22
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 32, 8192
# Row ranges per worker thread in a pass, and the fewest rows worth a range of its own.
_PARTS_PER_THREAD = 4
_MIN_PART_ROWS = 256


class _SingleThreadedBlas:
    """Process-wide "BLAS uses one thread" while at least one pass is inside it.

    threadpoolctl's limit saves and restores the setting it found; two passes that
    overlap in time (two user threads) would restore each other's "1" and leave BLAS
    single-threaded for good.  A count makes the first entrant set the limit and the
    last one out restore it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter = None
        self._controller = None

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                if self._controller is None:
                    self._controller = ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._depth += 1

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


_single_threaded_blas = _SingleThreadedBlas()


def _default_n_threads() -> int:
    env = os.environ.get("FASTSOFTMAX_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _matmul_into(A, B, out):
    """``out[...] = A @ B`` without a temporary for dense A; SciPy's sparse products allocate."""
    if sp.issparse(A):
        out[...] = A @ B
    else:
        np.matmul(A, B, out=out)


class NumpyBackend:
    """CPU backend on NumPy arrays (and SciPy CSR matrices for X).

    One pass splits the rows into contiguous ranges, up to four per worker thread
    (taken from the pool's queue as threads come free).  Each range is walked in
    cache-sized blocks: ``Z = X_b @ W`` (single-threaded BLAS), the fused row kernel
    turns ``Z`` into ``G`` in place, then ``dW_t += X_b.T @ G`` while ``X_b`` is
    still in cache.  Each range keeps its own ``dW_t``, ``db_t``; their sum is taken
    in a fixed order, so a result depends only on the data and ``n_threads``, never
    on timing.

    Parameters
    ----------
    n_threads : int, optional
        Worker threads; defaults to the CPUs this process may run on, or to the
        ``FASTSOFTMAX_NUM_THREADS`` environment variable.
    """

    name = "cpu"

    def __init__(self, n_threads=None):
        self.n_threads = _default_n_threads() if n_threads is None else int(n_threads)
        if self.n_threads < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}")
        self._pool = None
        self._pool_lock = threading.Lock()

    def __getstate__(self):
        return {"n_threads": self.n_threads}

    def __setstate__(self, state):
        self.__init__(state["n_threads"])

    def __repr__(self):
        return f"NumpyBackend(n_threads={self.n_threads})"

    # -- arrays -------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        if sp.issparse(a):
            # CSR keeps row blocks cheap to slice; its products with dense W are dense.
            return sp.csr_matrix(a, dtype=dtype)
        return np.ascontiguousarray(a, dtype=dtype)

    def to_host(self, a):
        return np.asarray(a)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def resident(self, a, dtype=None):
        return self.asarray(a, dtype)

    def max_chunk_rows(self, X, n_classes):
        # Blocks are sized for the caches inside each call; a call's logits never
        # exist whole, so the caller need not chunk.
        return None

    def stream(self, pieces):
        # Host memory is where this backend computes: nothing to move.
        return iter(pieces)

    # -- maths --------------------------------------------------------------------
    def logits(self, X, W, b):
        Z = X @ W
        Z += b
        return Z

    def softmax(self, X, W, b, log=False):
        Z = X @ W
        kernel = kernels.log_softmax_ if log else kernels.softmax_
        self._map_row_ranges(len(Z), lambda lo, hi: kernel(Z[lo:hi], b))
        return Z

    def loss_grad_accumulate_(self, X, y, scale, W, b, dW, db):
        n_rows, n_features = X.shape
        n_classes = W.shape[1]
        block_rows = self._block_rows(n_features, n_classes, X.dtype.itemsize)

        def work(lo, hi, first):
            # The first worker accumulates straight into the caller's buffers.
            dW_t = dW if first else np.zeros_like(dW)
            db_t = db if first else np.zeros_like(db)
            rows = min(block_rows, hi - lo)
            Z_buf = np.empty((rows, n_classes), dtype=X.dtype)
            ones = np.ones(rows, dtype=X.dtype)
            XtG = np.empty_like(dW)
            G_sum = np.empty_like(db)
            loss = 0.0
            for start in range(lo, hi, block_rows):
                stop = min(start + block_rows, hi)
                X_b, Z = X[start:stop], Z_buf[: stop - start]
                _matmul_into(X_b, W, Z)
                loss += kernels.softmax_xent_grad_(Z, b, y[start:stop], scale[start:stop])
                _matmul_into(X_b.T, Z, XtG)
                dW_t += XtG
                # Column sums as a GEMV: 1 ns per row, against 4 in the kernel's row loop.
                np.matmul(ones[: stop - start], Z, out=G_sum)
                db_t += G_sum
            return loss, dW_t, db_t

        results = self._map_row_ranges(n_rows, work, pass_first=True)
        loss = 0.0
        for part_loss, dW_t, db_t in results:
            loss += part_loss
            if dW_t is not dW:
                dW += dW_t
                db += db_t
        return loss

    # -- threading ----------------------------------------------------------------
    @staticmethod
    def _block_rows(n_features, n_classes, itemsize):
        rows = min(_X_BLOCK_BYTES // (n_features * itemsize), _Z_BLOCK_BYTES // (n_classes * itemsize))
        return int(np.clip(rows, _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS))

    def _map_row_ranges(self, n_rows, fn, pass_first=False):
        """Run ``fn(lo, hi[, first])`` on contiguous row ranges, a few per worker thread.

        Several ranges per thread, taken from the pool's queue as threads come free,
        so that a thread slowed by other work on its core (a data source's reader)
        takes fewer of them instead of holding the whole pass back.  The ranges depend
        only on ``n_rows`` and ``n_threads``, so results never depend on timing.
        """
        # One range per thread down to small calls (a minibatch), several per
        # thread when the rows allow.
        one_each = min(self.n_threads, n_rows // _MIN_BLOCK_ROWS)
        several = (
            min(self.n_threads * _PARTS_PER_THREAD, n_rows // _MIN_PART_ROWS) if self.n_threads > 1 else 1
        )
        n_parts = max(1, one_each, several)
        bounds = np.linspace(0, n_rows, n_parts + 1).astype(np.int64)
        args = [
            (int(bounds[k]), int(bounds[k + 1])) + ((k == 0,) if pass_first else ()) for k in range(n_parts)
        ]
        if n_parts == 1:
            return [fn(*args[0])]
        # BLAS gets one thread per worker: our workers already fill the cores, and
        # OpenBLAS's own threads on top of them would only contend.
        with _single_threaded_blas:
            futures = [self._thread_pool().submit(fn, *a) for a in args]
            return [f.result() for f in futures]

    def _thread_pool(self):
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="fastsoftmax")
            return self._pool
