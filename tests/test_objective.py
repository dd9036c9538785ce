"""The objective: ``fastsoftmax.loss_and_grad`` and ``SoftmaxObjective`` on each backend.

Scope: loss and gradient against the float64 reference and a finite difference,
and the scikit-learn oracles that tie the pieces together (chunks and minibatches
sum to the full batch, an integer weight is a repeated row, an intercept is a
column of ones, the L2 term, no intercept), plus the CPU backend's threading and
the functional entry point's input checks.  The row kernels themselves are tested
in ``test_kernel_cpu.py``.
"""

import numpy as np
import pytest

from fastsoftmax import SoftmaxObjective, loss_and_grad
from fastsoftmax.backends import NumpyBackend, cuda_simulated
from tests.reference import (
    make_problem,
    max_rel_err,
    reference_loss_grad,
    rtol_for,
    skip_float64_in_simulator,
)

# Rows: a multiple of no chunk, block or thread count.  Under the CUDA simulator every
# GPU thread is a Python thread, so that run uses fewer rows, and its block-per-row
# case (C > 1024) is left to tests/test_kernel_cuda.py.
N_SAMPLES, N_FEATURES = (29, 7) if cuda_simulated() else (203, 17)
N_CLASSES = [2, 33] if cuda_simulated() else [2, 33, 1031]


def rtol_objective(dtype, n_samples, n_features, n_classes):
    """Tolerance of one pass: rounding errors of the three successive reductions
    (XW over features, the softmax over classes, X^T G over samples) add in variance."""
    return rtol_for(dtype, n_samples + n_features + n_classes)


def weights(n_samples, dtype, seed):
    return np.random.default_rng(seed).uniform(0.1, 3.0, n_samples).astype(dtype)


def host(backend, grads):
    return tuple(backend.to_host(g) for g in grads)


def assert_matches_reference(got, ref, rtol):
    loss, dW, db = got
    loss_ref, dW_ref, db_ref = ref
    assert abs(loss - loss_ref) <= rtol * abs(loss_ref)
    assert max_rel_err(dW, dW_ref) <= rtol
    assert max_rel_err(db, db_ref) <= rtol


@pytest.mark.parametrize("peaked", [False, True], ids=["spread", "peaked"])
@pytest.mark.parametrize("n_classes", N_CLASSES)
def test_loss_and_grad_matches_reference(backend, dtype, n_classes, peaked):
    X, y, W, b = make_problem(N_SAMPLES, N_FEATURES, n_classes, dtype, seed=n_classes, peaked=peaked)
    sw = weights(N_SAMPLES, dtype, seed=0)
    loss, dW, db = loss_and_grad(X, y, W, b, sample_weight=sw, alpha=0.3, backend=backend)
    dW, db = host(backend, (dW, db))
    assert isinstance(loss, float)
    assert dW.dtype == dtype and dW.shape == W.shape
    assert db.dtype == dtype and db.shape == b.shape
    assert_matches_reference(
        (loss, dW, db),
        reference_loss_grad(X, y, W, b, sw, alpha=0.3),
        rtol_objective(dtype, N_SAMPLES, N_FEATURES, n_classes),
    )


@pytest.mark.parametrize("n_classes", N_CLASSES)
def test_objective_matches_reference_on_all_rows_and_on_a_minibatch(backend, dtype, n_classes):
    X, y, W, b = make_problem(N_SAMPLES, N_FEATURES, n_classes, dtype, seed=1)
    sw = weights(N_SAMPLES, dtype, seed=1)
    objective = SoftmaxObjective(
        backend, backend.asarray(X), backend.asarray(y), backend.asarray(sw), n_classes, alpha=0.3
    )
    params = (backend.asarray(W), backend.asarray(b))
    rtol = rtol_objective(dtype, N_SAMPLES, N_FEATURES, n_classes)

    loss, grads = objective.loss_grad(params)
    assert_matches_reference((loss, *host(backend, grads)), reference_loss_grad(X, y, W, b, sw, 0.3), rtol)
    assert objective.loss(params) == loss

    # A minibatch renormalises its own weights: it is the objective of those rows alone.
    rows = np.random.default_rng(2).choice(N_SAMPLES, N_SAMPLES // 4, replace=False)
    loss, grads = objective.loss_grad(params, rows=backend.asarray(rows))
    ref = reference_loss_grad(X[rows], y[rows], W, b, sw[rows], 0.3)
    assert_matches_reference((loss, *host(backend, grads)), ref, rtol)


def test_gradient_matches_five_point_finite_difference(backend):
    if getattr(backend, "simulated", False):
        pytest.skip("~100 passes take minutes in the CUDA simulator; the CPU case checks the maths")
    X, y, W, b = make_problem(40, 5, 4, np.float64, seed=3)
    sw = weights(40, np.float64, seed=3)
    _, dW, db = loss_and_grad(X, y, W, b, sample_weight=sw, alpha=0.3, backend=backend)
    grad = np.concatenate([backend.to_host(dW).ravel(), backend.to_host(db)])
    theta0 = np.concatenate([W.ravel(), b])

    def f(theta):
        return loss_and_grad(X, y, theta[: W.size].reshape(W.shape), theta[W.size :], sw, 0.3, backend)[0]

    # The five-point stencil errs by h**4 f^(5) / 30 plus ~eps f / h: h = eps**(1/5)
    # balances the two at about eps**(4/5) (3e-13); the bound allows 30 times that.
    eps = np.finfo(np.float64).eps
    h = eps**0.2
    fd = np.empty_like(theta0)
    for k in range(theta0.size):
        e = np.zeros_like(theta0)
        e[k] = h
        fd[k] = (f(theta0 - 2 * e) - 8 * f(theta0 - e) + 8 * f(theta0 + e) - f(theta0 + 2 * e)) / (12 * h)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=30 * eps**0.8)


@pytest.mark.parametrize("chunk_rows", [7, N_SAMPLES - 1] if cuda_simulated() else [1, 16, N_SAMPLES - 1])
def test_chunked_objective_equals_one_full_batch(backend, dtype, chunk_rows):
    skip_float64_in_simulator(backend, dtype)  # the objective's assembly, not its dtype
    X, y, W, b = make_problem(N_SAMPLES, N_FEATURES, 33, dtype, seed=4, peaked=True)
    sw = weights(N_SAMPLES, dtype, seed=4)
    args = (backend, backend.asarray(X), backend.asarray(y), backend.asarray(sw), 33, 0.3)
    params = (backend.asarray(W), backend.asarray(b))
    loss_full, grads_full = SoftmaxObjective(*args, chunk_rows=None).loss_grad(params)
    loss_chunked, grads_chunked = SoftmaxObjective(*args, chunk_rows=chunk_rows).loss_grad(params)
    # Only the order of the sum over rows differs.  Chunk partial sums are added one
    # after another, so the sqrt(n) model of rtol_for does not hold; the worst case of
    # a sequential sum, n eps, does (doubled: both sides round).
    rtol = 2 * N_SAMPLES * np.finfo(dtype).eps
    assert abs(loss_chunked - loss_full) <= rtol * loss_full
    for chunked, full in zip(host(backend, grads_chunked), host(backend, grads_full)):
        assert max_rel_err(chunked, full) <= rtol


def test_integer_weight_equals_repeated_rows(backend, dtype):
    skip_float64_in_simulator(backend, dtype)  # the objective's assembly, not its dtype
    X, y, W, b = make_problem(N_SAMPLES, N_FEATURES, 33, dtype, seed=5)
    k = np.random.default_rng(5).integers(0, 4, N_SAMPLES)  # zero drops the row
    weighted = loss_and_grad(X, y, W, b, sample_weight=k, alpha=0.3, backend=backend)
    repeated = loss_and_grad(np.repeat(X, k, axis=0), np.repeat(y, k), W, b, alpha=0.3, backend=backend)
    rtol = rtol_for(dtype, int(k.sum()))
    assert abs(weighted[0] - repeated[0]) <= rtol * repeated[0]
    for got, want in zip(host(backend, weighted[1:]), host(backend, repeated[1:])):
        assert max_rel_err(got, want) <= rtol


def test_intercept_equals_a_column_of_ones(backend, dtype):
    skip_float64_in_simulator(backend, dtype)  # the objective's assembly, not its dtype
    X, y, W, b = make_problem(N_SAMPLES, N_FEATURES, 33, dtype, seed=6)
    sw = weights(N_SAMPLES, dtype, seed=6)
    X1 = np.hstack([X, np.ones((N_SAMPLES, 1), dtype)])
    W1 = np.vstack([W, b])
    loss, dW, db = loss_and_grad(X, y, W, b, sample_weight=sw, backend=backend)
    loss1, dW1, db1 = loss_and_grad(X1, y, W1, None, sample_weight=sw, backend=backend)
    dW, db, dW1, db1 = host(backend, (dW, db, dW1, db1))
    rtol = rtol_objective(dtype, N_SAMPLES, N_FEATURES + 1, 33)
    assert abs(loss - loss1) <= rtol * loss
    assert max_rel_err(dW1[:-1], dW) <= rtol
    assert max_rel_err(dW1[-1], db) <= rtol
    assert np.all(db1 == 0)


def test_alpha_adds_the_l2_term_to_loss_and_weight_gradient_only(backend, dtype):
    skip_float64_in_simulator(backend, dtype)  # the objective's assembly, not its dtype
    X, y, W, b = make_problem(N_SAMPLES, N_FEATURES, 33, dtype, seed=7)
    loss0, dW0, db0 = loss_and_grad(X, y, W, b, alpha=0.0, backend=backend)
    loss, dW, db = loss_and_grad(X, y, W, b, alpha=2.5, backend=backend)
    dW0, db0, dW, db = host(backend, (dW0, db0, dW, db))
    W64 = W.astype(np.float64)
    rtol = rtol_for(dtype, W.size)
    np.testing.assert_allclose(loss - loss0, 0.5 * 2.5 * (W64 * W64).sum(), rtol=rtol)
    assert max_rel_err(dW - dW0, 2.5 * W64) <= rtol
    np.testing.assert_array_equal(db, db0)


def test_no_intercept_gives_zero_bias_gradient(backend, dtype):
    skip_float64_in_simulator(backend, dtype)  # the objective's assembly, not its dtype
    X, y, W, b = make_problem(N_SAMPLES, N_FEATURES, 33, dtype, seed=8)
    loss, dW, db = loss_and_grad(X, y, W, None, backend=backend)
    loss_zero_b, dW_zero_b, _ = loss_and_grad(X, y, W, np.zeros_like(b), backend=backend)
    dW, db, dW_zero_b = host(backend, (dW, db, dW_zero_b))
    assert db.shape == (33,) and np.all(db == 0)
    # b=None is the model with a zero bias, whose gradient is not reported.
    assert loss == loss_zero_b
    np.testing.assert_array_equal(dW, dW_zero_b)
    loss_ref, dW_ref, _ = reference_loss_grad(X, y, W, None)
    rtol = rtol_objective(dtype, N_SAMPLES, N_FEATURES, 33)
    assert abs(loss - loss_ref) <= rtol * loss_ref
    assert max_rel_err(dW, dW_ref) <= rtol


@pytest.fixture(scope="module")
def numpy_backends():
    return {n: NumpyBackend(n_threads=n) for n in (1, 3)}


def test_numpy_backend_thread_counts_agree(numpy_backends, dtype):
    # 1500 rows of 200 features: several cache blocks per worker (655 float64 rows a
    # block) and three workers of 500 rows.
    n_samples, n_features, n_classes = 1500, 200, 7
    X, y, W, b = make_problem(n_samples, n_features, n_classes, dtype, seed=9)
    sw = weights(n_samples, dtype, seed=9)
    one, three = (
        loss_and_grad(X, y, W, b, sample_weight=sw, alpha=0.3, backend=numpy_backends[n]) for n in (1, 3)
    )
    rtol = rtol_for(dtype, n_samples)  # only the order of the sum over rows differs
    assert abs(one[0] - three[0]) <= rtol * one[0]
    for a, c in zip(one[1:], three[1:]):
        assert max_rel_err(c, a) <= rtol
    assert_matches_reference(
        three,
        reference_loss_grad(X, y, W, b, sw, alpha=0.3),
        rtol_objective(dtype, n_samples, n_features, n_classes),
    )
    # The workers' partial sums are added in a fixed order: repeating is bit-exact.
    again = loss_and_grad(X, y, W, b, sample_weight=sw, alpha=0.3, backend=numpy_backends[3])
    assert again[0] == three[0]
    for a, c in zip(again[1:], three[1:]):
        np.testing.assert_array_equal(a, c)


def test_numpy_backend_rejects_zero_threads():
    with pytest.raises(ValueError, match=r"n_threads must be at least 1, got 0"):
        NumpyBackend(n_threads=0)


def bad_input(message, **bad):
    return pytest.param(bad, message, id="-".join(bad))


BAD_INPUTS = [
    bad_input(r"X must be 2-D \(n_samples, n_features\), got shape \(3,\)", X=np.zeros(3)),
    bad_input(r"X has no samples", X=np.zeros((0, 2))),
    bad_input(r"X contains NaN; every value must be finite", X=np.array([[np.nan, 0.0]] * 4)),
    bad_input(r"W must have shape \(n_features=2, n_classes\), got \(3, 3\)", W=np.zeros((3, 3))),
    bad_input(r"b must have shape \(n_classes=3,\), got \(2,\)", b=np.zeros(2)),
    bad_input(r"y holds the class index 3, outside \[0, 3\) for W with 3 columns", y=[0, 1, 3, 0]),
    bad_input(r"y has 3 labels but X has 4 samples", y=[0, 1, 2]),
    bad_input(r"sample_weight must be non-negative; sample_weight\[1\] = -1\.0", sample_weight=[1, -1, 1, 1]),
    bad_input(r"sample_weight sums to zero", sample_weight=np.zeros(4)),
    bad_input(r"alpha must be a finite non-negative number, got -1\.0", alpha=-1.0),
]


@pytest.mark.parametrize("bad, message", BAD_INPUTS)
def test_loss_and_grad_rejects_bad_input(bad, message):
    args = {"X": np.ones((4, 2)), "y": [0, 1, 2, 0], "W": np.zeros((2, 3)), "b": np.zeros(3), **bad}
    with pytest.raises(ValueError, match=message):
        loss_and_grad(**args)
