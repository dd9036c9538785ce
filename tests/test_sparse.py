"""Sparse (CSR) X gives what its dense copy gives, on the CPU and on the CUDA backend.

Scope: ``loss_and_grad``, ``SoftmaxObjective`` minibatches, ``SoftmaxClassifier``
fit, partial_fit and predictions with ``scipy.sparse`` input on the CPU backend; on
the CUDA backend, the objective's pass (whole and in chunks) and predictions on CSR
X, under Numba's CUDA simulator on tiny problems (SciPy's CSR stands in for CuPy's
there), and against the CPU on a real GPU.  The maths is tested on dense input in
``test_objective.py``; CSR streamed from the host to a GPU in ``test_cuda_streaming.py``.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from fastsoftmax import SoftmaxClassifier, SoftmaxObjective, get_backend, loss_and_grad
from fastsoftmax.backends import cuda_unavailable_reason
from tests.reference import make_problem, max_rel_err, rtol_for


def sparse_problem(dtype, seed=0):
    """A problem whose X is 90% zeros, with a few empty rows."""
    X, y, W, b = make_problem(211, 37, 9, dtype, seed=seed)
    mask = np.random.default_rng(seed).random(X.shape) < 0.9
    X[mask] = 0
    X[5] = 0
    return X, y, W, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_loss_and_grad_equals_the_dense_result(dtype, fmt):
    X, y, W, b = sparse_problem(dtype)
    dense = loss_and_grad(X, y, W, b, alpha=0.1, backend="cpu")
    sparse = loss_and_grad(sp.csr_matrix(X).asformat(fmt), y, W, b, alpha=0.1, backend="cpu")
    rtol = rtol_for(dtype, X.shape[0] + X.shape[1])
    assert abs(sparse[0] - dense[0]) <= rtol * dense[0]
    assert max_rel_err(sparse[1], dense[1]) <= rtol
    assert max_rel_err(sparse[2], dense[2]) <= rtol


def test_minibatch_rows_of_a_csr_objective():
    X, y, W, b = sparse_problem(np.float64, seed=1)
    backend = get_backend("cpu")
    rows = np.sort(np.random.default_rng(1).choice(len(y), 50, replace=False))
    args = (backend.asarray(y), backend.asarray(np.ones(len(y))), 9, 0.1)
    dense = SoftmaxObjective(backend, X, *args).loss_grad((W, b), rows=rows)
    sparse = SoftmaxObjective(backend, backend.asarray(sp.csr_matrix(X)), *args).loss_grad((W, b), rows=rows)
    assert abs(sparse[0] - dense[0]) <= 1e-13 * dense[0]
    assert max_rel_err(sparse[1][0], dense[1][0]) <= 1e-13


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_fit_and_predict_on_csr_equal_the_dense_fit(solver):
    X, y, _, _ = sparse_problem(np.float64, seed=2)
    params = dict(solver=solver, alpha=1e-2, dtype="float64", max_iter=300, random_state=0, backend="cpu")
    dense = SoftmaxClassifier(**params).fit(X, y)
    sparse = SoftmaxClassifier(**params).fit(sp.csr_matrix(X), y)
    assert sparse.n_iter_ == dense.n_iter_
    assert max_rel_err(sparse.coef_, dense.coef_) <= 1e-10
    np.testing.assert_allclose(sparse.predict_proba(sp.csr_matrix(X)), dense.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(sparse.predict(sp.csr_matrix(X)), dense.predict(X))


def test_partial_fit_takes_csr():
    X, y, _, _ = sparse_problem(np.float32, seed=3)
    model = SoftmaxClassifier(solver="sgd", backend="cpu", random_state=0)
    model.partial_fit(sp.csr_matrix(X), y, classes=np.arange(9)).partial_fit(sp.csr_matrix(X), y)
    assert model.n_iter_ == 2 and np.all(np.isfinite(model.coef_))


# -- the CUDA backend ----------------------------------------------------------------
# The simulator runs a kernel block (8 rows) in about 0.7 s: these problems stay tiny.
needs_cuda = pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or "")


def tiny_sparse_problem(seed):
    """8 rows (one warp-per-row block), 60% zeros and an empty row."""
    X, y, W, b = make_problem(8, 7, 3, np.float64, seed=seed)
    X[np.random.default_rng(seed).random(X.shape) < 0.6] = 0
    X[3] = 0
    return X, y, W, b


@pytest.mark.cuda
@needs_cuda
def test_cuda_csr_pass_equals_the_dense_pass():
    X, y, W, b = tiny_sparse_problem(seed=4)
    backend = get_backend("cuda")
    dense = loss_and_grad(X, y, W, b, alpha=0.1, backend=backend)
    sparse = loss_and_grad(sp.csr_matrix(X), y, W, b, alpha=0.1, backend=backend)
    rtol = rtol_for(np.float64, X.shape[0] + X.shape[1])
    assert abs(sparse[0] - dense[0]) <= rtol * dense[0]
    assert max_rel_err(backend.to_host(sparse[1]), backend.to_host(dense[1])) <= rtol
    assert max_rel_err(backend.to_host(sparse[2]), backend.to_host(dense[2])) <= rtol


@pytest.mark.cuda
@needs_cuda
def test_cuda_csr_pass_in_chunks_equals_the_whole_pass():
    X, y, W, b = tiny_sparse_problem(seed=5)
    backend = get_backend("cuda")
    X_csr = backend.resident(sp.csr_matrix(X))
    args = (backend, X_csr, backend.asarray(y), backend.asarray(np.ones(len(y))), 3, 0.1)
    params = (backend.asarray(W), backend.asarray(b))
    whole = SoftmaxObjective(*args, chunk_rows=len(y)).loss_grad(params)
    chunked = SoftmaxObjective(*args, chunk_rows=3).loss_grad(params)  # 3, 3 and 2 rows
    rtol = rtol_for(np.float64, X.shape[0] + X.shape[1])
    assert abs(chunked[0] - whole[0]) <= rtol * whole[0]
    for got, want in zip(chunked[1], whole[1]):
        assert max_rel_err(backend.to_host(got), backend.to_host(want)) <= rtol


@pytest.mark.cuda
@needs_cuda
def test_cuda_predictions_on_csr_match_the_cpu():
    X, y, _, _ = tiny_sparse_problem(seed=6)
    model = SoftmaxClassifier(alpha=1e-2, dtype="float64", backend="cpu").fit(X, y)
    want_proba, want_labels = model.predict_proba(X), model.predict(X)
    model.set_params(backend="cuda")
    np.testing.assert_allclose(
        model.predict_proba(sp.csr_matrix(X)), want_proba, rtol=0, atol=rtol_for(np.float64, 7 + 3)
    )
    np.testing.assert_array_equal(model.predict(sp.csr_matrix(X)), want_labels)


@pytest.mark.cuda
@needs_cuda
def test_cuda_16_bit_storage_refuses_csr_clearly():
    from fastsoftmax.backends.cuda import CudaBackend

    X, _, _, _ = tiny_sparse_problem(seed=7)
    with pytest.raises(ValueError, match="storage='bfloat16' applies to dense X"):
        CudaBackend(storage="bfloat16").resident(sp.csr_matrix(X))


@pytest.mark.gpu
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_gpu_csr_on_the_device_equals_the_cpu(cupy, dtype):
    import cupyx.scipy.sparse

    X, y, W, b = make_problem(20_000, 300, 20, dtype, seed=8)
    X[np.random.default_rng(8).random(X.shape) < 0.95] = 0
    X_csr = sp.csr_matrix(X)
    want = loss_and_grad(X_csr, y, W, b, alpha=0.1, backend="cpu")
    backend = get_backend("cuda")
    from_host = loss_and_grad(X_csr, y, W, b, alpha=0.1, backend=backend)
    # CSR already on the device, as CuPy's own type.
    X_device = backend.resident(cupyx.scipy.sparse.csr_matrix(X_csr))
    assert isinstance(X_device, cupyx.scipy.sparse.csr_matrix)
    objective = SoftmaxObjective(backend, X_device, cupy.asarray(y), cupy.ones(len(y), dtype), 20, 0.1)
    loss, (dW, db) = objective.loss_grad((cupy.asarray(W), cupy.asarray(b)))
    rtol = rtol_for(dtype, X.shape[0] + X.shape[1])
    for got in (from_host, (loss, dW, db)):
        assert abs(got[0] - want[0]) <= rtol * want[0]
        assert max_rel_err(cupy.asnumpy(got[1]), want[1]) <= rtol
        assert max_rel_err(cupy.asnumpy(got[2]), want[2]) <= rtol
    model = SoftmaxClassifier(alpha=1e-2, dtype=np.dtype(dtype).name, backend="cpu").fit(X_csr, y)
    want_proba = model.predict_proba(X_csr)
    got_proba = model.set_params(backend="cuda").predict_proba(X_csr)
    np.testing.assert_allclose(got_proba, want_proba, rtol=0, atol=50 * rtol_for(dtype, 300 + 20))
