"""Sparse (CSR) X on the CPU backend gives exactly what its dense copy gives.

Scope: ``loss_and_grad``, ``SoftmaxObjective`` minibatches, ``SoftmaxClassifier``
fit, partial_fit and predictions with ``scipy.sparse`` input; the CUDA backend's
refusal of it.  The maths is tested on dense input in ``test_objective.py``.
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


@pytest.mark.cuda
@pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or "")
def test_cuda_backend_refuses_sparse_X_clearly():
    X, y, _, _ = sparse_problem(np.float32, seed=4)
    with pytest.raises(ValueError, match="sparse X runs on backend='cpu'"):
        SoftmaxClassifier(backend="cuda").fit(sp.csr_matrix(X), y)
