"""The CUDA backend above its kernels: selection, memory-aware chunks, fits and predictions.

Scope: ``fastsoftmax.backends.cuda.CudaBackend`` through the estimator and the
objective, against the CPU backend.  Without a GPU these run in Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda``) on tiny problems; the
``gpu`` tests at the end need a real device and CuPy.  The kernels themselves are
tested in ``test_kernel_cuda.py``, the objective's maths in ``test_objective.py``.
"""
import time

import numpy as np
import pytest

from fastsoftmax import SoftmaxClassifier, SoftmaxObjective, get_backend
from fastsoftmax.backends import DeviceMemoryError, cuda_simulated, cuda_unavailable_reason
from tests.reference import make_problem, max_rel_err, rtol_for

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or ""),
]


@pytest.fixture
def cuda_backend():
    return get_backend("cuda")


@pytest.fixture
def tiny():
    X, y, W, b = make_problem(23, 3, 3, np.float64, seed=11)
    return X, y


def test_auto_never_picks_the_simulator():
    if cuda_simulated():
        assert get_backend("auto").name == "cpu"
    else:
        assert get_backend("auto").name == "cuda"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 8 iterations: not the point
def test_lbfgs_fit_takes_the_same_steps_as_on_the_cpu(tiny):
    X, y = tiny
    params = dict(alpha=1e-2, dtype="float64", max_iter=8)
    cpu = SoftmaxClassifier(backend="cpu", **params).fit(X, y)
    gpu = SoftmaxClassifier(backend="cuda", **params).fit(X, y)
    assert gpu.n_iter_ == cpu.n_iter_
    # Same algorithm, same data: only the summation order of the GEMMs differs.
    assert max_rel_err(gpu.coef_, cpu.coef_) <= 1e3 * np.finfo(np.float64).eps
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-12)


def test_predictions_match_the_cpu_backend(tiny):
    X, y = tiny
    model = SoftmaxClassifier(alpha=1e-2, dtype="float64", max_iter=200, backend="cpu").fit(X, y)
    expected = {m: getattr(model, m)(X) for m in ("predict", "predict_proba", "predict_log_proba", "decision_function")}
    model.set_params(backend="cuda")
    for method, want in expected.items():
        got = getattr(model, method)(X)
        if method == "predict":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=rtol_for(np.float64, X.shape[1] + 3))


def test_chunks_sized_from_free_memory_give_the_full_batch_result(cuda_backend, monkeypatch):
    X, y, W, b = make_problem(29, 4, 5, np.float64, seed=12)
    args = (cuda_backend, cuda_backend.asarray(X), cuda_backend.asarray(y), cuda_backend.asarray(np.ones(29)), 5)
    params = (cuda_backend.asarray(W), cuda_backend.asarray(b))
    loss_full, (dW_full, _) = SoftmaxObjective(*args, chunk_rows=29).loss_grad(params)
    # Room for 6 rows of logits and row losses: 5 chunks.
    monkeypatch.setattr("fastsoftmax.backends.cuda.SIMULATED_FREE_BYTES", 2 * 6 * (5 * 8 + 8))
    if not cuda_backend.simulated:
        monkeypatch.setattr(cuda_backend, "_free_bytes", lambda: 2 * 6 * (5 * 8 + 8))
    assert cuda_backend.max_chunk_rows(args[1], 5) == 6
    loss_chunked, (dW_chunked, _) = SoftmaxObjective(*args).loss_grad(params)
    assert abs(loss_chunked - loss_full) <= 2 * 29 * np.finfo(np.float64).eps * loss_full
    assert max_rel_err(cuda_backend.to_host(dW_chunked), cuda_backend.to_host(dW_full)) <= 2 * 29 * 2.3e-16


def test_not_even_one_row_fitting_is_a_clear_error_and_leaves_the_model(tiny, cuda_backend, monkeypatch):
    X, y = tiny
    model = SoftmaxClassifier(alpha=1e-2, dtype="float64", max_iter=200, backend="cpu").fit(X, y)
    before = model.coef_.copy()
    monkeypatch.setattr("fastsoftmax.backends.cuda.SIMULATED_FREE_BYTES", 16)
    if not cuda_backend.simulated:
        monkeypatch.setattr(cuda_backend, "_free_bytes", lambda: 16)
    model.set_params(backend="cuda")
    with pytest.raises(DeviceMemoryError, match=r"one row of the pass needs \d+ bytes of device memory"):
        model.fit(X, y)
    np.testing.assert_array_equal(model.coef_, before)


# -- real GPU -------------------------------------------------------------------------
def _fresh_seed():
    return time.time_ns() % 2**32


@pytest.mark.gpu
def test_gpu_lbfgs_reaches_the_cpu_optimum():
    pytest.importorskip("cupy")
    if cuda_simulated():
        pytest.skip("needs a real GPU")
    seed = _fresh_seed()
    X, y, _, _ = make_problem(20_000, 64, 50, np.float64, seed=seed)
    params = dict(alpha=1e-3, dtype="float64", max_iter=500, tol=1e-8)
    cpu = SoftmaxClassifier(backend="cpu", **params).fit(X, y)
    gpu = SoftmaxClassifier(backend="cuda", **params).fit(X, y)
    assert max_rel_err(gpu.coef_, cpu.coef_) <= 1e-5, f"seed {seed}"
    assert max_rel_err(gpu.intercept_, cpu.intercept_) <= 1e-5, f"seed {seed}"


@pytest.mark.gpu
def test_gpu_predict_on_device_matches_cpu_in_float32():
    pytest.importorskip("cupy")
    if cuda_simulated():
        pytest.skip("needs a real GPU")
    seed = _fresh_seed()
    X, y, _, _ = make_problem(50_000, 128, 300, np.float32, seed=seed)
    model = SoftmaxClassifier(alpha=1e-3, max_iter=20, backend="cpu").fit(X, y)
    want = model.predict_proba(X)
    model.set_params(backend="cuda")
    got = model.predict_proba(X)
    # float32 GEMM over 128 features, then a softmax over 300 classes.
    assert np.abs(got - want).max() <= 50 * rtol_for(np.float32, 128 + 300), f"seed {seed}"
    assert np.mean(model.predict(X) == model.classes_[want.argmax(1)]) > 0.999, f"seed {seed}"
