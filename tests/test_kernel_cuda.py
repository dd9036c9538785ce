"""The CUDA row kernels, in Numba's CUDA simulator or on a GPU.

Scope: ``fastsoftmax.kernels.cuda.softmax_xent_grad_`` and ``softmax_`` in both
launch shapes (a warp per row up to ``SMALL_C_MAX`` classes, a block per row above),
against the float64 reference in ``tests/reference.py``: peaked rows, extreme and
``-inf`` logits, zero-weight rows, row counts that fill no block, the grid-stride
loop, and outputs poisoned with NaN before the launch.

Runs under ``NUMBA_ENABLE_CUDASIM=1`` (CPU-only CI) or on a GPU, and skips otherwise.
The simulator runs every thread in Python, so shapes are tiny; its arithmetic is
mostly float64 (Python's ``math``), so it checks indexing, masking and barriers, not
float32 rounding.  The last test, GPU-only, checks realistic sizes on the shuffle
path with fresh random data.
"""

import time
import warnings

import numpy as np
import pytest

numba = pytest.importorskip("numba")
cuda = pytest.importorskip("numba.cuda")
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
if not (SIMULATOR or cuda.is_available()):
    pytest.skip("needs a CUDA GPU, or NUMBA_ENABLE_CUDASIM=1 for the simulator", allow_module_level=True)

# After the skip: the kernels module needs numba.cuda.
from fastsoftmax.kernels import cuda as kernels  # noqa: E402
from fastsoftmax.kernels.cuda import SMALL_C_MAX, softmax_, softmax_xent_grad_  # noqa: E402
from tests.reference import reference_log_softmax, rtol_for  # noqa: E402
from tests.test_kernel_cpu import huge_logits, quantised_logits, random_scale, reference_fused  # noqa: E402

pytestmark = pytest.mark.cuda

# 13 rows: a warp-per-row launch of 2 blocks of 8 rows, 3 warps of the second masked.
# A block-per-row launch has one row per block whatever the count; 2 rows keep the
# simulator (256 Python threads per block, about 0.5 s per row) fast.
N_ROWS = 13
BLOCK_ROWS = 2
HUGE_ROWS = 8  # of huge_logits' rows: one full block, its first two rows the extreme ones
# The smallest case, not a multiple of 32, and just past the switch to a block per
# row (a tail of 7 columns after four strides of 256).
N_CLASSES = [2, 33, SMALL_C_MAX + 7]
HUGE = [1e4, 3e38]
# The simulator computes float32 with NumPy scalars, which warn where the GPU rounds
# to -inf silently (3e38 - -3e38, or a log-probability of -6e38 stored as float32).
ignore_simulated_overflow = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def rows_for(n_classes, warp_rows=N_ROWS):
    return warp_rows if n_classes <= SMALL_C_MAX else BLOCK_ROWS


def on_device(*arrays):
    """The arrays where the kernels take them: as they are in the simulator, CuPy copies on a GPU."""
    if SIMULATOR:
        return arrays
    import cupy

    return tuple(cupy.asarray(a) for a in arrays)


def on_host(*arrays):
    return tuple(a if isinstance(a, np.ndarray) else a.get() for a in arrays)


def run_fused(Z, b, y, scale, loss_dtype=None):
    """The fused kernel on a copy of ``Z``: ``row_loss, G``.

    ``row_loss`` starts as NaN, so a row the kernel skips cannot pass.  The kernel
    returns nothing and writes ``G`` into the array it is given; in the simulator a
    NumPy argument is copied to the fake device and back around the launch, and the
    checks of ``G`` are what shows that the copy back happens.
    """
    row_loss = np.full(len(Z), np.nan, dtype=loss_dtype or Z.dtype)
    G, b, y, scale, row_loss = on_device(Z.copy(), b, y, scale, row_loss)
    assert softmax_xent_grad_(G, b, y, scale, row_loss) is None
    return on_host(row_loss, G)


def reference_row_loss(Z, b, y, scale):
    """``scale_i * (lse(z_i) - z_i[y_i])`` per row, in float64."""
    log_p = reference_log_softmax(Z.astype(np.float64) + b)
    return -scale * log_p[np.arange(len(y)), y]


def run_softmax(Z, b, log):
    out, b = on_device(Z.copy(), b)
    assert softmax_(out, b, log=log) is None
    return on_host(out)[0]


@pytest.mark.parametrize("n_classes", N_CLASSES)
def test_fused_kernel_matches_reference(dtype, n_classes):
    # peaked=True makes every third row nearly one-hot and leaves the others spread.
    n_rows = rows_for(n_classes)
    Z, y, b = quantised_logits(n_rows, n_classes, dtype, seed=n_classes, peaked=True)
    scale = random_scale(n_rows, dtype, seed=1)
    row_loss, G = run_fused(Z, b, y, scale)
    loss_ref, G_ref, _ = reference_fused(Z, b, y, scale)

    # Same bounds as the CPU kernel's test: the logits are exact on their grid, so
    # the error is the kernel's exponentials and sums, rtol relative to each row.
    rtol = rtol_for(dtype, n_classes)
    assert row_loss.dtype == dtype and np.all(np.isfinite(row_loss)), row_loss
    assert np.all(np.abs(row_loss - reference_row_loss(Z, b, y, scale)) <= rtol * scale)
    assert abs(row_loss.sum(dtype=np.float64) - loss_ref) <= rtol
    assert np.all(np.abs(G - G_ref) <= rtol * scale[:, None])


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("n_classes", N_CLASSES)
def test_softmax_matches_reference(dtype, n_classes, log):
    Z, _, b = quantised_logits(rows_for(n_classes), n_classes, dtype, seed=n_classes, peaked=True)
    out = run_softmax(Z, b, log)
    log_p_ref = reference_log_softmax(Z.astype(np.float64) + b)
    rtol = rtol_for(dtype, n_classes)
    assert out.dtype == dtype
    if log:
        # (z - m) - log(d) rounds relative to |z - m|, which reaches max |z| (as on the CPU).
        atol = rtol * max(1.0, float(np.abs(Z).max()))
        np.testing.assert_allclose(out, log_p_ref, rtol=rtol, atol=atol)
    else:
        assert np.all(np.abs(out - np.exp(log_p_ref)) <= rtol)
        assert np.all(np.abs(out.sum(axis=1, dtype=np.float64) - 1.0) <= rtol)


@pytest.mark.parametrize(
    "dtype, h, n_classes",
    [
        (np.float32, 1e4, 5),
        (np.float32, 3e38, 5),
        (np.float64, 1e4, 5),
        (np.float64, 3e38, 5),
        (np.float32, 3e38, SMALL_C_MAX + 7),
    ],
    ids=["float32-1e4", "float32-3e38", "float64-1e4", "float64-3e38", "float32-3e38-block"],
)
@ignore_simulated_overflow
def test_fused_kernel_huge_logits_give_finite_loss_and_gradient(dtype, h, n_classes):
    # b = 0: a bias added to +-3e38 could itself overflow float32, which is the
    # caller's input and not the kernel's arithmetic.
    Z, y = huge_logits(h, dtype, seed=0)
    n_rows = rows_for(n_classes, HUGE_ROWS)
    Z, y = np.tile(Z[:n_rows], (1, -(-n_classes // 5)))[:, :n_classes].copy(), y[:n_rows]
    b = np.zeros(n_classes, dtype)
    scale = np.ones(n_rows, dtype)
    # A row's loss reaches 2h = 6e38, beyond float32: row_loss is float64, as the
    # backend should allocate it.
    row_loss, G = run_fused(Z, b, y, scale, loss_dtype=np.float64)
    _, G_ref, _ = reference_fused(Z, b, y, scale)
    rtol = rtol_for(dtype, n_classes)
    assert np.all(np.isfinite(row_loss)) and np.all(np.isfinite(G))
    np.testing.assert_allclose(row_loss, reference_row_loss(Z, b, y, scale), rtol=rtol)
    assert np.all(np.abs(G - G_ref) <= rtol)


@pytest.mark.parametrize("h", HUGE)
@ignore_simulated_overflow
def test_softmax_huge_logits_match_reference(dtype, h):
    # Row 1 is -h everywhere: at h = 3e38 the log-softmax must still come out as
    # log(1/5), not lose log(d) next to m = -3e38.
    Z, _ = huge_logits(h, dtype, seed=2)
    Z = Z[:HUGE_ROWS]
    b = np.zeros(Z.shape[1], dtype)
    log_p_ref = reference_log_softmax(Z)
    rtol = rtol_for(dtype, Z.shape[1])

    P = run_softmax(Z, b, log=False)
    assert np.all(np.isfinite(P))
    assert np.all(np.abs(P - np.exp(log_p_ref)) <= rtol)

    log_P = run_softmax(Z, b, log=True)
    # A log-probability of -6e38 has no float32 value: -inf there, finite elsewhere.
    representable = np.abs(log_p_ref) <= np.finfo(dtype).max
    assert np.all(np.isfinite(log_P) == representable)
    assert np.all(log_P[~representable] == -np.inf)
    np.testing.assert_allclose(log_P[representable], log_p_ref[representable], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(log_P[1], np.log(1 / 5), rtol=rtol)


def test_minus_inf_logits_get_zero_probability(dtype):
    # A lane's columns all -inf makes it carry the pair (-inf, 0); two such pairs
    # merge without exp(-inf - -inf) = NaN.  Lane 0 owns columns 0 and 32 of 33.
    Z, y, b = quantised_logits(N_ROWS, 33, dtype, seed=5)
    Z[0, [0, 32]] = -np.inf
    Z[1, :32] = -np.inf  # one finite column, which must get probability 1
    Z[2, 1::2] = -np.inf
    y[:3] = [5, 32, 4]
    scale = random_scale(N_ROWS, dtype, seed=6)
    row_loss, G = run_fused(Z, b, y, scale)
    # Not reference_fused: its product eye @ Z turns 0 * -inf into NaN.
    G_ref = np.exp(reference_log_softmax(Z.astype(np.float64) + b))
    G_ref[np.arange(N_ROWS), y] -= 1
    G_ref *= scale[:, None]
    rtol = rtol_for(dtype, 33)
    assert np.all(np.isfinite(row_loss)) and np.all(np.isfinite(G))
    assert np.all(G[Z == -np.inf] == 0)
    assert np.all(np.abs(row_loss - reference_row_loss(Z, b, y, scale)) <= rtol * scale)
    assert np.all(np.abs(G - G_ref) <= rtol * scale[:, None])


def test_zero_weight_rows_give_exactly_zero_gradient_rows(dtype):
    Z, y, b = quantised_logits(N_ROWS, 33, dtype, seed=3, peaked=True)
    Z[5] = np.finfo(dtype).max / 2 * np.where(np.arange(33) % 2, 1, -1)  # extreme too
    scale = random_scale(N_ROWS, dtype, seed=4)
    zero = np.zeros(N_ROWS, bool)
    zero[[0, 5, 8, N_ROWS - 1]] = True  # 8: the first row of the second block
    scale[zero] = 0
    row_loss, G = run_fused(Z, b, y, scale)
    assert np.all(G[zero] == 0) and np.all(row_loss[zero] == 0)
    # The other rows are untouched by the zero rows, bit for bit, although they now
    # sit in other warps and blocks.
    row_loss_rest, G_rest = run_fused(Z[~zero], b, y[~zero], scale[~zero])
    np.testing.assert_array_equal(row_loss[~zero], row_loss_rest)
    np.testing.assert_array_equal(G[~zero], G_rest)


@pytest.mark.parametrize("n_classes", [33, SMALL_C_MAX + 7])
def test_grid_stride_loop_covers_every_row(monkeypatch, n_classes):
    # One block for all rows: the warp kernel takes 13 rows in two rounds of 8 (the
    # second with 3 masked warps), the block kernel 2 rows in turn, reusing its shared
    # partials.  (The barrier that keeps one row's partials from the next is checked
    # only on a GPU: in the simulator the shuffle stand-in's own barriers order them.)
    monkeypatch.setattr(kernels, "MAX_BLOCKS", 1)
    n_rows = rows_for(n_classes)
    Z, y, b = quantised_logits(n_rows, n_classes, np.float64, seed=7, peaked=True)
    scale = random_scale(n_rows, np.float64, seed=8)
    row_loss, G = run_fused(Z, b, y, scale)
    _, G_ref, _ = reference_fused(Z, b, y, scale)
    rtol = rtol_for(np.float64, n_classes)
    assert np.all(np.abs(row_loss - reference_row_loss(Z, b, y, scale)) <= rtol * scale)
    assert np.all(np.abs(G - G_ref) <= rtol * scale[:, None])


def test_launch_shape_follows_n_classes(monkeypatch):
    assert kernels._launch_shape(0, 2) == (True, 0)
    assert kernels._launch_shape(N_ROWS, 2) == (True, 2)
    assert kernels._launch_shape(16, SMALL_C_MAX) == (True, 2)
    assert kernels._launch_shape(17, SMALL_C_MAX) == (True, 3)
    assert kernels._launch_shape(N_ROWS, SMALL_C_MAX + 1) == (False, N_ROWS)
    monkeypatch.setattr(kernels, "MAX_BLOCKS", 4)
    assert kernels._launch_shape(1000, 2) == (True, 4)
    assert kernels._launch_shape(1000, SMALL_C_MAX + 1) == (False, 4)


def test_launchers_reject_mismatched_arrays():
    Z = np.zeros((4, 3))
    b, y, scale, row_loss = np.zeros(3), np.zeros(4, np.int64), np.ones(4), np.zeros(4)
    with pytest.raises(ValueError, match=r"Z must be a 2-D float32 or float64 array, got 2-D int64"):
        softmax_(Z.astype(np.int64), b)
    with pytest.raises(ValueError, match=r"b must have shape \(3,\) and dtype float64, got \(2,\) float64"):
        softmax_(Z, np.zeros(2))
    with pytest.raises(ValueError, match=r"b must have shape \(3,\) and dtype float64, got \(3,\) float32"):
        softmax_(Z, b.astype(np.float32))
    cases = [
        ("y", (Z, b, y.astype(np.float64), scale, row_loss), r"int32 or int64, got \(4,\) float64"),
        ("scale", (Z, b, y, scale.astype(np.float32), row_loss), r"float64, got \(4,\) float32"),
        ("row_loss", (Z, b, y, scale, np.zeros(3)), r"float32 or float64, got \(3,\) float64"),
    ]
    for name, args, expected in cases:
        with pytest.raises(ValueError, match=rf"{name} must have shape \(4,\) and dtype {expected}"):
            softmax_xent_grad_(*args)


def test_empty_block_launches_nothing():
    Z = np.zeros((0, 3))
    softmax_xent_grad_(Z, np.zeros(3), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    softmax_(Z, np.zeros(3))


# -- on a GPU -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("n_rows, n_classes", [(4096, 1000), (512, 20_000)], ids=["warp", "block"])
def test_kernels_on_gpu_match_reference_on_fresh_data(dtype, n_rows, n_classes):
    if SIMULATOR:
        pytest.skip("realistic sizes need a GPU; the simulator runs every thread in Python")
    cp = pytest.importorskip("cupy")
    seed = time.time_ns() % 2**32  # fresh data every run; the seed is in every message
    Z, y, b = quantised_logits(n_rows, n_classes, dtype, seed=seed, peaked=True)
    scale = random_scale(n_rows, dtype, seed=seed + 1)
    loss_ref, G_ref, _ = reference_fused(Z, b, y, scale)
    log_p_ref = reference_log_softmax(Z.astype(np.float64) + b)
    rtol = rtol_for(dtype, n_classes)

    # A non-default stream, as the backend launches on CuPy's current stream: the
    # arrays are made on it and the kernels must run after them without a host sync.
    with cp.cuda.Stream(non_blocking=True) as s:
        stream = cuda.external_stream(s.ptr)
        G, b_d, y_d, scale_d = (cp.asarray(a) for a in (Z, b, y.astype(np.int32), scale))
        row_loss = cp.full(n_rows, cp.nan, dtype=dtype)
        softmax_xent_grad_(G, b_d, y_d, scale_d, row_loss, stream)
        loss = float(row_loss.sum(dtype=cp.float64))
        P, log_P = cp.asarray(Z), cp.asarray(Z)
        softmax_(P, b_d, False, stream)
        softmax_(log_P, b_d, True, stream)
        s.synchronize()
    row_loss, G, P, log_P = (cp.asnumpy(a) for a in (row_loss, G, P, log_P))

    msg = f"seed {seed}"
    assert np.all(np.isfinite(row_loss)), msg
    assert np.all(np.abs(row_loss - reference_row_loss(Z, b, y, scale)) <= rtol * scale), msg
    assert abs(loss - loss_ref) <= rtol, msg
    err = np.abs(G - G_ref) / scale[:, None]
    worst = np.unravel_index(err.argmax(), err.shape)
    assert err.max() <= rtol, f"{msg}: worst |G - G_ref| / scale {err.max():.3g} at {worst}"
    assert np.all(np.abs(P - np.exp(log_p_ref)) <= rtol), msg
    atol = rtol * max(1.0, float(np.abs(Z).max()))
    np.testing.assert_allclose(log_P, log_p_ref, rtol=rtol, atol=atol, err_msg=msg)


@pytest.mark.gpu
def test_small_launch_on_gpu_warns_nothing():
    # 13 rows make a grid of 2 blocks, under Numba's 128-block occupancy hint, which
    # the launcher silences; device arrays mean no host-copy warning either.
    if SIMULATOR:
        pytest.skip("the simulator issues no launch warnings")
    cp = pytest.importorskip("cupy")
    Z, y, b = quantised_logits(N_ROWS, 33, np.float32, seed=9)
    G, b_d, y_d = cp.asarray(Z), cp.asarray(b), cp.asarray(y)
    scale, row_loss = cp.full(N_ROWS, 1 / N_ROWS, np.float32), cp.full(N_ROWS, cp.nan, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softmax_xent_grad_(G, b_d, y_d, scale, row_loss)
        softmax_(cp.asarray(Z), b_d)
    assert bool(cp.isfinite(row_loss).all())
