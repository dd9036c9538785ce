"""Each CUDA kernel of fastsoftmax launched on tiny inputs, for NVIDIA's compute-sanitizer.

Run from the repository root on a GPU machine::

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 -m bench.gpu_sanitize
    compute-sanitizer --tool racecheck --error-exitcode 1 python3 -m bench.gpu_sanitize

Both kernel families of ``fastsoftmax.kernels.cuda`` run: warp per row at 33 classes (37
rows, so the last block of 8 rows is partly masked, and 33 columns leave lane 0 with one
more than the others) and block per row at 1,029 classes (past ``SMALL_C_MAX``, and not a
multiple of the block's 256 threads).  Each launches ``softmax_xent_grad_`` and
``softmax_`` (plain and log) once.  CuPy's memory pool is switched off first, so every
array is an allocation of its own and memcheck reports an access past its end, which
inside a pooled block it could not see.  The results are checked against a float64 NumPy
reference too, so a clean run also computed the right thing.  CuPy is imported inside the
functions: the module imports without it.
"""

import sys

import numpy as np

ROWS = 37
CASES = {"warp per row": 33, "block per row": 1029}
TOLERANCE = 1e-4  # float32 against float64 on rows of order-one logits; a wrong index is O(1)


def reference(Z, b, y, scale):
    """Float64 ``(row_loss, G, P, log_P)`` of the kernels' formulas."""
    z = Z.astype(np.float64) + b
    shifted = z - z.max(axis=1, keepdims=True)
    log_P = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    row_loss = -scale * log_P[rows, y]
    G = np.exp(log_P)
    G[rows, y] -= 1
    return row_loss, G * scale[:, None], np.exp(log_P), log_P


def launch_all(n_classes, rows=ROWS, seed=0):
    """Launch the three kernels on one problem; return the largest error of each output."""
    import cupy

    from fastsoftmax.kernels import cuda as kernels

    rng = np.random.default_rng(seed)
    Z = (3 * rng.standard_normal((rows, n_classes))).astype(np.float32)
    b = (0.1 * rng.standard_normal(n_classes)).astype(np.float32)
    y = rng.integers(0, n_classes, rows)
    scale = rng.uniform(0.5, 1.5, rows).astype(np.float32)
    b_d, y_d, scale_d = cupy.asarray(b), cupy.asarray(y), cupy.asarray(scale)
    G, P, log_P = cupy.asarray(Z), cupy.asarray(Z), cupy.asarray(Z)
    row_loss = cupy.asarray(np.full(rows, np.nan))
    # CuPy's current stream is the legacy default stream here, Numba's stream 0.
    kernels.softmax_xent_grad_(G, b_d, y_d, scale_d, row_loss)
    kernels.softmax_(P, b_d, log=False)
    kernels.softmax_(log_P, b_d, log=True)
    got = [a.get() for a in (row_loss, G, P, log_P)]
    names = ("row_loss", "G", "P", "log_P")
    return {name: float(np.abs(g - w).max()) for name, g, w in zip(names, got, reference(Z, b, y, scale))}


def main():
    """Run every case; return 1 when a result is wrong (compute-sanitizer reports hazards itself)."""
    import cupy

    cupy.cuda.set_allocator(None)
    failed = False
    for name, n_classes in CASES.items():
        errors = launch_all(n_classes)
        right = all(e <= TOLERANCE for e in errors.values())  # a NaN error is not <=
        failed |= not right
        detail = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        print(f"{name} ({ROWS} x {n_classes}): max abs error {detail}: {'ok' if right else 'WRONG'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
