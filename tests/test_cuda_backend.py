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
    expected = {
        m: getattr(model, m)(X)
        for m in ("predict", "predict_proba", "predict_log_proba", "decision_function")
    }
    model.set_params(backend="cuda")
    for method, want in expected.items():
        got = getattr(model, method)(X)
        if method == "predict":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=rtol_for(np.float64, X.shape[1] + 3))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_partial_fit_continues_on_another_backend_with_fresh_moments(tiny):
    X, y = tiny
    model = SoftmaxClassifier(solver="adam", backend="cpu", random_state=0)
    model.partial_fit(X, y, classes=np.unique(y))
    model.set_params(backend="cuda").partial_fit(X, y)
    assert model.n_iter_ == 2
    assert model._minibatch_state.backend == "cuda"


def test_chunks_sized_from_free_memory_give_the_full_batch_result(monkeypatch):
    from fastsoftmax.backends.cuda import CudaBackend

    cuda_backend = CudaBackend(deterministic=False)
    X, y, W, b = make_problem(29, 4, 5, np.float64, seed=12)
    args = (
        cuda_backend,
        cuda_backend.asarray(X),
        cuda_backend.asarray(y),
        cuda_backend.asarray(np.ones(29)),
        5,
    )
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
    # The default, deterministic backend budgets from the device's capacity.
    monkeypatch.setattr("fastsoftmax.backends.cuda.SIMULATED_TOTAL_BYTES", 16)
    if not cuda_backend.simulated:
        monkeypatch.setattr(cuda_backend, "_capacity_bytes", lambda: 16)
    model.set_params(backend="cuda")
    with pytest.raises(DeviceMemoryError, match=r"one row of the pass needs \d+ bytes of device memory"):
        model.fit(X, y)
    np.testing.assert_array_equal(model.coef_, before)


# -- real GPU -------------------------------------------------------------------------
def _fresh_seed():
    return time.time_ns() % 2**32


@pytest.mark.gpu
def test_gpu_lbfgs_reaches_the_cpu_optimum(cupy):
    seed = _fresh_seed()
    X, y, _, _ = make_problem(20_000, 64, 50, np.float64, seed=seed)
    params = dict(alpha=1e-3, dtype="float64", max_iter=500, tol=1e-8)
    cpu = SoftmaxClassifier(backend="cpu", **params).fit(X, y)
    gpu = SoftmaxClassifier(backend="cuda", **params).fit(X, y)
    assert max_rel_err(gpu.coef_, cpu.coef_) <= 1e-5, f"seed {seed}"
    assert max_rel_err(gpu.intercept_, cpu.intercept_) <= 1e-5, f"seed {seed}"


@pytest.mark.gpu
def test_gpu_predict_on_device_matches_cpu_in_float32(cupy):
    seed = _fresh_seed()
    X, y, _, _ = make_problem(50_000, 128, 300, np.float32, seed=seed)
    model = SoftmaxClassifier(alpha=1e-3, max_iter=20, backend="cpu").fit(X, y)
    want = model.predict_proba(X)
    model.set_params(backend="cuda")
    got = model.predict_proba(X)
    # float32 GEMM over 128 features, then a softmax over 300 classes.
    assert np.abs(got - want).max() <= 50 * rtol_for(np.float32, 128 + 300), f"seed {seed}"
    assert np.mean(model.predict(X) == model.classes_[want.argmax(1)]) > 0.999, f"seed {seed}"


# -- 16-bit storage and TF32 ------------------------------------------------------------
def _bfloat16_round(X):
    """Round float32 to the nearest bfloat16 (ties to even), by arithmetic on the values."""
    X = np.asarray(X, np.float32)
    mantissa, exponent = np.frexp(X)  # X = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    # bfloat16 keeps 8 significant bits: round the mantissa to multiples of 2**-8.
    return np.ldexp(np.round(mantissa * 256) / 256, exponent).astype(np.float32)


@pytest.mark.parametrize("storage", ["float16", "bfloat16"])
def test_16_bit_storage_is_the_float32_fit_on_rounded_X(storage):
    from fastsoftmax.backends.cuda import CudaBackend

    X, y, W, b = make_problem(29, 6, 5, np.float32, seed=13)
    backend = CudaBackend(storage=storage)
    stored = backend.resident(X)
    assert stored.dtype.itemsize == 2
    X_rounded = X.astype(np.float16).astype(np.float32) if storage == "float16" else _bfloat16_round(X)
    np.testing.assert_array_equal(backend.to_host(backend._widen(stored, np.float32)), X_rounded)
    # Relative rounding error: half an ulp of 11 (float16) or 8 (bfloat16) significant bits.
    bits = 11 if storage == "float16" else 8
    assert np.all(np.abs(X_rounded - X) <= 2.0**-bits * np.abs(X))

    sw = np.ones(29, np.float32)
    on_device = SoftmaxObjective(backend, stored, backend.asarray(y), backend.asarray(sw), 5)
    cpu = get_backend("cpu")
    reference = SoftmaxObjective(cpu, X_rounded, y, sw, 5)
    loss, (dW, db) = on_device.loss_grad((backend.asarray(W), backend.asarray(b)))
    loss_ref, (dW_ref, db_ref) = reference.loss_grad((W, b))
    rtol = rtol_for(np.float32, 29 + 6 + 5)
    assert abs(loss - loss_ref) <= rtol * loss_ref
    assert max_rel_err(backend.to_host(dW), dW_ref) <= rtol
    assert max_rel_err(backend.to_host(db), db_ref) <= rtol


def test_float16_storage_refuses_values_beyond_its_range():
    from fastsoftmax.backends.cuda import CudaBackend

    with pytest.raises(ValueError, match=r"beyond float16's range \(\+-65504\)"):
        CudaBackend(storage="float16").resident(np.array([[1e5, 0.0]], np.float32))


def test_backend_options_are_validated_and_survive_clone_and_pickle(tiny):
    import pickle

    from sklearn.base import clone

    from fastsoftmax.backends.cuda import CudaBackend

    with pytest.raises(ValueError, match="storage='float8' is not supported"):
        CudaBackend(storage="float8")
    model = SoftmaxClassifier(backend=CudaBackend(storage="bfloat16", tf32=True, deterministic=False))
    for copy in (clone(model).backend, pickle.loads(pickle.dumps(model)).backend):
        assert (copy.storage, copy.tf32, copy.deterministic) == ("bfloat16", True, False)


@pytest.mark.gpu
def test_gpu_tf32_gradient_is_within_its_stated_accuracy(cupy):
    from fastsoftmax.backends.cuda import CudaBackend

    seed = _fresh_seed()
    X, y, W, b = make_problem(100_000, 256, 100, np.float32, seed=seed)
    results = []
    for tf32 in (False, True):
        backend = CudaBackend(tf32=tf32)
        objective = SoftmaxObjective(
            backend, cupy.asarray(X), cupy.asarray(y), cupy.ones(len(y), np.float32), 100
        )
        results.append(objective.loss_grad((cupy.asarray(W), cupy.asarray(b))))
    (loss, (dW, _)), (loss_tf32, (dW_tf32, _)) = results
    # TF32 rounds GEMM inputs to 10 mantissa bits: 2**-11 per product, summed over 256 features.
    error = max_rel_err(cupy.asnumpy(dW_tf32), cupy.asnumpy(dW))
    assert 0 < error <= 2.0**-11 * 16, f"seed {seed}: 0 would mean TF32 was not used"
    assert abs(loss_tf32 - loss) <= 2.0**-11 * 16 * loss, f"seed {seed}"


@pytest.mark.gpu
def test_gpu_fit_accepts_data_already_on_the_device(cupy):
    X, y, _, _ = make_problem(10_000, 32, 10, np.float32, seed=_fresh_seed())
    on_host = SoftmaxClassifier(backend="cuda", max_iter=50).fit(X, y)
    on_device = SoftmaxClassifier(backend="cuda", max_iter=50).fit(cupy.asarray(X), cupy.asarray(y))
    np.testing.assert_allclose(on_device.coef_, on_host.coef_, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(on_device.predict(cupy.asarray(X)), on_host.predict(X))
