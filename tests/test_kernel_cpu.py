"""The Numba row kernels of the CPU backend and their exp helper, called directly.

Scope: ``fastsoftmax.kernels.cpu.softmax_xent_grad_``, ``softmax_`` and
``log_softmax_`` on logit blocks, against the float64 reference in
``tests/reference.py``, including peaked rows, extreme logits and zero-weight rows;
and the accuracy of ``fastsoftmax.kernels.vecmath.exp_nonpositive``.  The GEMMs,
blocking and threading around the kernels are tested in ``test_objective.py``.
"""

import numpy as np
import pytest
from numba import njit

from fastsoftmax.kernels.cpu import _FASTMATH, log_softmax_, softmax_, softmax_xent_grad_
from fastsoftmax.kernels.vecmath import exp_nonpositive, log_positive
from tests.reference import make_problem, reference_log_softmax, reference_loss_grad, rtol_for

N_ROWS = 37  # a multiple of no SIMD width, block size or thread count
N_CLASSES = [2, 33, 1031]  # the smallest case, not a multiple of 32, larger than 1024
HUGE = [1e4, 3e38]  # 3e38 is close to float32's largest finite value, 3.4e38


def quantised_logits(n_rows, n_classes, dtype, seed, peaked=False):
    """Logits ``Z``, labels and bias on a grid of 2**-8, with ``|z| < 2**11``.

    Such values have at most 19 significant bits, so they, ``z + b`` and ``z - max(z)``
    are exact in float32 as in float64: the only rounding left is the kernel's own
    (the exponentials, the sum ``d`` and the scaling), which is what ``rtol_for``
    over ``n_classes`` terms bounds.
    """
    X, y, W, b = make_problem(n_rows, 8, n_classes, np.float64, seed, peaked)
    Z, b = (np.round(a * 256) / 256 for a in (X @ W, b))
    return Z.astype(dtype), y, b.astype(dtype)


def huge_logits(h, dtype, seed):
    """A block mixing ``+-h``, ``+-h/2`` and small logits, with labels on every kind of entry."""
    rng = np.random.default_rng(seed)
    Z = rng.choice([-h, -h / 2, -1.0, 0.0, 1.0, h / 2, h], size=(N_ROWS, 5)).astype(dtype)
    Z[0] = [h, -h, 0, 1, -1]  # spread 2h: lse - z_y = 2h for y = 1
    Z[1] = -h  # a row at -h everywhere: the max is -h, every probability 1/5
    y = rng.integers(0, 5, N_ROWS)
    y[:2] = 1
    return Z, y


def run_fused(Z, b, y, scale, db0=None):
    """The fused kernel on a copy of ``Z``: ``loss, G, db``.

    The kernel leaves ``db`` to the backend, which adds the column sums of ``G``
    (in ``Z``'s dtype) onto its accumulator; this does the same onto ``db0``.
    """
    G = Z.copy()
    loss = softmax_xent_grad_(G, b, y, scale)
    db = (np.zeros_like(b) if db0 is None else db0.copy()) + G.sum(axis=0, dtype=G.dtype)
    return loss, G, db


def reference_fused(Z, b, y, scale):
    """The reference of the fused step: with ``X = I`` the objective's ``dW`` is ``G`` itself.

    The reference normalises the weights by their sum; the kernel takes ``scale``
    as given, hence the factor ``total``.
    """
    total = scale.astype(np.float64).sum()
    loss, G, db = reference_loss_grad(np.eye(len(Z)), y, Z, b, scale)
    return loss * total, G * total, db * total


def random_scale(n_rows, dtype, seed):
    sw = np.random.default_rng(seed).uniform(0.5, 2.0, n_rows)
    return (sw / sw.sum()).astype(dtype)


@pytest.mark.parametrize("peaked", [False, True], ids=["spread", "peaked"])
@pytest.mark.parametrize("n_classes", N_CLASSES)
def test_fused_kernel_matches_reference(dtype, n_classes, peaked):
    Z, y, b = quantised_logits(N_ROWS, n_classes, dtype, seed=n_classes, peaked=peaked)
    scale = random_scale(N_ROWS, dtype, seed=1)
    db0 = np.linspace(-1, 1, n_classes).astype(dtype)
    loss, G, db = run_fused(Z, b, y, scale, db0)
    loss_ref, G_ref, db_ref = reference_fused(Z, b, y, scale)

    rtol = rtol_for(dtype, n_classes)
    # lse - z_y = (m - z_y) + log(d) with d >= 1: the first term is exact for grid
    # logits, the second carries d's relative error as an absolute one; the weights
    # sum to 1.
    assert isinstance(loss, float)
    assert abs(loss - loss_ref) <= rtol
    # Row i of G is scale_i times a vector in [-1, 1] computed with relative error rtol.
    assert np.all(np.abs(G - G_ref) <= rtol * scale[:, None])
    # db adds N_ROWS rows of G, each as above, onto db0.
    assert np.all(np.abs((db - db0) - db_ref) <= rtol + rtol_for(dtype, N_ROWS))


@pytest.mark.parametrize("peaked", [False, True], ids=["spread", "peaked"])
@pytest.mark.parametrize("n_classes", N_CLASSES)
def test_softmax_matches_reference(dtype, n_classes, peaked):
    Z, _, b = quantised_logits(N_ROWS, n_classes, dtype, seed=n_classes, peaked=peaked)
    P = Z.copy()
    softmax_(P, b)
    P_ref = np.exp(reference_log_softmax(Z.astype(np.float64) + b))
    assert P.dtype == dtype
    assert np.all(np.abs(P - P_ref) <= rtol_for(dtype, n_classes))


@pytest.mark.parametrize("peaked", [False, True], ids=["spread", "peaked"])
@pytest.mark.parametrize("n_classes", N_CLASSES)
def test_log_softmax_matches_reference(dtype, n_classes, peaked):
    Z, _, b = quantised_logits(N_ROWS, n_classes, dtype, seed=n_classes, peaked=peaked)
    log_P = Z.copy()
    log_softmax_(log_P, b)
    log_P_ref = reference_log_softmax(Z.astype(np.float64) + b)
    # The kernel's z - lse rounds relative to |z - lse|, and lse = m + log(d) relative
    # to |m|: an absolute error of rtol * |m| (see the huge-logit test below).
    rtol = rtol_for(dtype, n_classes)
    atol = rtol * max(1.0, float(np.abs(Z).max()))
    np.testing.assert_allclose(log_P, log_P_ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("h", HUGE)
def test_fused_kernel_huge_logits_give_finite_exact_gradients(dtype, h):
    # b = 0: a bias added to +-3e38 could itself overflow float32, which is the
    # caller's input and not the kernel's arithmetic.
    Z, y = huge_logits(h, dtype, seed=0)
    b = np.zeros(Z.shape[1], dtype)
    scale = np.ones(N_ROWS, dtype)
    _, G, db = run_fused(Z, b, y, scale)
    _, G_ref, db_ref = reference_fused(Z, b, y, scale)
    assert np.all(np.isfinite(G)) and np.all(np.isfinite(db))
    assert np.all(np.abs(G - G_ref) <= rtol_for(dtype, Z.shape[1]))
    assert np.all(np.abs(db - db_ref) <= rtol_for(dtype, Z.shape[1]) + rtol_for(dtype, N_ROWS))


@pytest.mark.parametrize(
    "dtype, h",
    [
        (np.float32, 1e4),
        (np.float32, 3e38),
        (np.float64, 1e4),
        (np.float64, 3e38),
    ],
    ids=["float32-1e4", "float32-3e38", "float64-1e4", "float64-3e38"],
)
def test_fused_kernel_huge_logits_give_exact_finite_loss(dtype, h):
    Z, y = huge_logits(h, dtype, seed=0)
    b = np.zeros(Z.shape[1], dtype)
    one = np.ones(1, dtype)
    for i in range(N_ROWS):
        loss, _, _ = run_fused(Z[i : i + 1], b, y[i : i + 1], one)
        loss_ref, _, _ = reference_fused(Z[i : i + 1], b, y[i : i + 1], one)
        # lse - z_y, up to 2 * 3e38, is finite in the float64 the loss is returned in.
        assert np.isfinite(loss), f"row {i}: {Z[i]}, y = {y[i]}"
        np.testing.assert_allclose(loss, loss_ref, rtol=rtol_for(dtype, Z.shape[1]), err_msg=f"row {i}")


@pytest.mark.parametrize("h", HUGE)
def test_softmax_huge_logits_stay_finite(dtype, h):
    Z, _ = huge_logits(h, dtype, seed=1)
    P = Z.copy()
    softmax_(P, np.zeros(Z.shape[1], dtype))
    P_ref = np.exp(reference_log_softmax(Z))
    assert np.all(np.isfinite(P))
    assert np.all(np.abs(P - P_ref) <= rtol_for(dtype, Z.shape[1]))


@pytest.mark.parametrize("h", HUGE)
def test_log_softmax_huge_logits_overflow_only_where_the_true_value_does(dtype, h):
    Z, _ = huge_logits(h, dtype, seed=2)
    log_P = Z.copy()
    log_softmax_(log_P, np.zeros(Z.shape[1], dtype))
    # A log-probability of -6e38 (row spread 2 * 3e38) has no float32 value: it must
    # round to -inf there, and be finite wherever the true value is representable.
    representable = np.abs(reference_log_softmax(Z)) <= np.finfo(dtype).max
    assert not np.any(np.isnan(log_P))
    assert np.all(np.isfinite(log_P) == representable)
    assert np.all(log_P[~representable] == -np.inf)


@pytest.mark.parametrize("h", HUGE)
def test_log_softmax_huge_logits_match_reference(dtype, h):
    Z, _ = huge_logits(h, dtype, seed=2)
    log_P = Z.copy()
    log_softmax_(log_P, np.zeros(Z.shape[1], dtype))
    log_P_ref = reference_log_softmax(Z)
    representable = np.abs(log_P_ref) <= np.finfo(dtype).max
    rtol = rtol_for(dtype, Z.shape[1])
    np.testing.assert_allclose(log_P[representable], log_P_ref[representable], rtol=rtol, atol=rtol)


def test_zero_weight_rows_give_exactly_zero_gradient_rows(dtype):
    Z, y, b = quantised_logits(N_ROWS, 33, dtype, seed=3, peaked=True)
    Z[5] = np.finfo(dtype).max / 2 * np.where(np.arange(33) % 2, 1, -1)  # extreme too
    scale = random_scale(N_ROWS, dtype, seed=4)
    zero = np.zeros(N_ROWS, bool)
    zero[[0, 5, 17, N_ROWS - 1]] = True
    scale[zero] = 0
    loss, G, db = run_fused(Z, b, y, scale)
    assert np.all(G[zero] == 0)
    # The other rows are untouched by the zero rows: the same as without them.
    loss_rest, G_rest, db_rest = run_fused(Z[~zero], b, y[~zero], scale[~zero])
    assert loss == loss_rest
    np.testing.assert_array_equal(G[~zero], G_rest)
    np.testing.assert_allclose(db, db_rest, rtol=0, atol=rtol_for(dtype, N_ROWS))


# -- exp_nonpositive ------------------------------------------------------------------


def compile_exp_loop(fastmath):
    @njit(fastmath=fastmath)
    def exp_all(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = exp_nonpositive(x[i])
        return out

    return exp_all


# The helper is inlined into the kernels, which compile it with reassociation and
# FMA contraction (_FASTMATH): it must be accurate under that compilation too.


@pytest.mark.parametrize(
    "fastmath, max_ulp",
    [
        pytest.param(False, 1.0, id="strict"),
        pytest.param(_FASTMATH, 1.5, id="kernel-fastmath"),
    ],
)
def test_exp_nonpositive_float32_ulp_error(fastmath, max_ulp):
    exp_all = compile_exp_loop(fastmath)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-87, 0, 1_000_001), rng.uniform(-87, 0, 100_000), [-81.39176, -71.02959]])
    x = x.astype(np.float32)
    got = exp_all(x)
    true = np.exp(x.astype(np.float64))
    # Bound, in ulps of the correctly rounded result: rounding the result costs 0.5
    # ulp, the Cephes polynomial and the exact Cody-Waite reduction the rest.  An
    # exhaustive scan of every float32 in [-87, 0] peaks at 0.992 ulp (x = -81.39176)
    # compiled strictly; with the kernels' flags, FMA contraction reorders the
    # polynomial's roundings and the peak is 1.259 ulp (x = -71.02959) once the
    # reduction is kept exact, hence 1.5 there.
    ulp = np.spacing(true.astype(np.float32)).astype(np.float64)
    err = np.abs(got - true) / ulp
    assert err.max() <= max_ulp, f"{err.max():.3f} ulp at x = {x[err.argmax()]}"


@pytest.mark.parametrize(
    "fastmath",
    [
        pytest.param(False, id="strict"),
        pytest.param(_FASTMATH, id="kernel-fastmath"),
    ],
)
def test_exp_nonpositive_float64_relative_error(fastmath):
    exp_all = compile_exp_loop(fastmath)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-708, 0, 1_000_001), rng.uniform(-1, 0, 100_000)])
    got = exp_all(x)
    true = np.exp(x)
    # Bound: 4 eps (9e-16).  Truncating the Taylor series after r**12 costs below
    # 2e-16 (1 eps) for |r| <= ln(2)/2, Horner's rounding about 1 eps, the exact
    # reduction nothing, and np.exp itself up to 0.5 ulp; the measured maximum is 2.1 eps.
    rel = np.abs(got - true) / true
    eps = np.finfo(np.float64).eps
    assert rel.max() <= 4 * eps, f"{rel.max() / eps:.1f} eps at x = {x[rel.argmax()]}"


def test_exp_nonpositive_clamps_below_the_normal_range(dtype):
    exp_all = compile_exp_loop(False)
    tiny = exp_all(np.array([-87.0 if dtype is np.float32 else -708.0], dtype))[0]
    got = exp_all(np.array([-np.inf, -1e30, -1000.0, -0.0, 0.0], dtype))
    # Below the clamp: the clamp's value, a normal number (never 0, a denormal or NaN).
    assert np.finfo(dtype).tiny <= tiny < 2 * np.finfo(dtype).tiny
    np.testing.assert_array_equal(got, [tiny, tiny, tiny, 1.0, 1.0])


@njit(fastmath=_FASTMATH)
def _log_positive_loop(x, out):
    for i in range(x.size):
        out[i] = log_positive(x[i])


def test_log_positive_matches_float64_log_across_exponents():
    # The kernels take log(d) with d in [1, n_classes]; the helper must also hold far
    # from there.  Bound: the atanh series is truncated below 1e-17 relative, so a few
    # rounding steps (4 eps) of the Horner evaluation and the e*ln2 sum dominate.
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [np.exp(rng.uniform(-700, 700, 20_000)), rng.uniform(1, 10_000, 20_000), [1.0, 2.0, 0.5]]
    )
    got = np.empty_like(x)
    _log_positive_loop(x, got)
    want = np.log(x)
    assert np.all(np.abs(got - want) <= 4 * np.finfo(np.float64).eps * np.maximum(np.abs(want), 1.0))
