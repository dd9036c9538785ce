"""GPU faults and determinism: the out-of-memory fallback and chunks that do not follow free memory.

Scope: ``fastsoftmax.backends.cuda``'s ``is_out_of_memory``,
``halving_rows_on_out_of_memory`` and ``CudaBackend(deterministic=...)`` chunk sizing,
through the objective, the estimator and ``fastsoftmax.streaming.map_row_chunks``.
Running out of device memory is injected: a backend method raises an error of the
class CuPy raises (same module and name, which is all ``is_out_of_memory`` looks at)
when handed more than a given number of rows.  The recognition and halving tests run
anywhere; the ``cuda`` tests in Numba's simulator (on 8 to 16 rows: a simulated block
of the row kernels takes about half a second) or on a GPU; the ``gpu`` test fits twice
on a real device.  Where X stays when its copy runs out of memory is tested in
``test_cuda_streaming.py``, with the other memory arithmetic.
"""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from fastsoftmax import SoftmaxClassifier, SoftmaxObjective, get_backend
from fastsoftmax.backends import DeviceMemoryError, cuda_unavailable_reason
from fastsoftmax.backends.cuda import halving_rows_on_out_of_memory, is_out_of_memory
from fastsoftmax.objective import Minibatch
from fastsoftmax.streaming import map_row_chunks
from tests.reference import make_problem

needs_cuda = pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or "")


class OutOfMemoryError(MemoryError):
    """CuPy's ``cupy.cuda.memory.OutOfMemoryError``, as far as ``is_out_of_memory`` can tell."""


OutOfMemoryError.__module__ = "cupy.cuda.memory"


def device_error(module, name, message):
    """An exception of a class named ``name`` in ``module``, as a CUDA library would raise it."""
    return type(name, (RuntimeError,), {"__module__": module})(message)


def out_of_memory_beyond(monkeypatch, backend, max_rows, method="loss_grad_accumulate_"):
    """Make ``backend.<method>`` run out of memory on chunks of more than ``max_rows`` rows.

    Returns the chunk sizes it was handed (``seen``) and those that failed (``failed``).
    """
    original = getattr(backend, method)
    calls = SimpleNamespace(seen=[], failed=[])

    def running_out(X, *args, **kwargs):
        calls.seen.append(X.shape[0])
        if X.shape[0] > max_rows:
            calls.failed.append(X.shape[0])
            raise OutOfMemoryError(f"Out of memory allocating {X.shape[0] * 512:,} bytes")
        return original(X, *args, **kwargs)

    monkeypatch.setattr(backend, method, running_out)
    return calls


@pytest.fixture
def cupy_pool(monkeypatch):
    """A stand-in for CuPy in ``sys.modules`` that counts ``free_all_blocks`` calls."""
    pool = SimpleNamespace(freed=0)
    pool.free_all_blocks = lambda: setattr(pool, "freed", pool.freed + 1)
    monkeypatch.setitem(sys.modules, "cupy", SimpleNamespace(get_default_memory_pool=lambda: pool))
    return pool


# -- recognising and surviving an out-of-memory error -------------------------------------------
def test_out_of_memory_errors_are_recognised_by_class_and_status_name():
    class Subclass(OutOfMemoryError):
        pass

    recognised = [
        OutOfMemoryError("Out of memory allocating 1,024 bytes"),
        Subclass(),
        device_error("cupy_backends.cuda.libs.cublas", "CUBLASError", "CUBLAS_STATUS_ALLOC_FAILED"),
        device_error("cupy_backends.cuda.libs.cusparse", "CuSparseError", "CUSPARSE_STATUS_ALLOC_FAILED"),
        device_error(
            "cupy_backends.cuda.api.runtime", "CUDARuntimeError", "cudaErrorMemoryAllocation: out of memory"
        ),
        device_error(
            "numba.cuda.cudadrv.driver",
            "CudaAPIError",
            "[CUresult.CUDA_ERROR_OUT_OF_MEMORY] Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY",
        ),
    ]
    not_recognised = [
        MemoryError("the host is out of memory"),  # halving device chunks would not help
        device_error("cupy_backends.cuda.libs.cublas", "CUBLASError", "CUBLAS_STATUS_EXECUTION_FAILED"),
        RuntimeError("CUBLAS_STATUS_ALLOC_FAILED"),  # a status name, but not from a device library
        DeviceMemoryError("not even one row fits"),  # ours: the final word
    ]
    assert [is_out_of_memory(e) for e in recognised] == [True] * len(recognised)
    assert [is_out_of_memory(e) for e in not_recognised] == [False] * len(not_recognised)


def test_halving_starts_over_with_half_the_rows_until_they_fit(cupy_pool):
    tried = []

    def attempt(rows):
        tried.append(rows)
        if rows > 5:
            raise OutOfMemoryError()
        return "done"

    X = np.zeros((40, 3))
    # 1000 rows allowed, but a chunk of X holds 40 at most: halving starts from there.
    assert halving_rows_on_out_of_memory(attempt, 1000, get_backend("cpu"), X, 3) == ("done", 5)
    assert tried == [1000, 20, 10, 5]
    assert cupy_pool.freed == 3  # the cached blocks go back to the driver before each retry
    tried.clear()
    assert halving_rows_on_out_of_memory(attempt, 4, get_backend("cpu"), X, 3) == ("done", 4)
    assert tried == [4] and cupy_pool.freed == 3


def test_other_errors_are_not_retried(cupy_pool):
    tried = []

    def attempt(rows):
        tried.append(rows)
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        halving_rows_on_out_of_memory(attempt, 40, get_backend("cpu"), np.zeros((40, 3)), 3)
    assert tried == [40] and cupy_pool.freed == 0


def test_one_row_running_out_of_memory_is_a_clear_error(cupy_pool):
    def attempt(rows):
        raise OutOfMemoryError(f"Out of memory allocating {rows * 512:,} bytes")

    with pytest.raises(DeviceMemoryError) as raised:
        halving_rows_on_out_of_memory(attempt, 4, get_backend("cpu"), np.zeros((40, 3)), 3)
    message = str(raised.value)
    assert message.startswith(
        "the device ran out of memory even with one row per chunk (Out of memory allocating 512 bytes)"
    )
    for advice in ("free device memory", "a smaller batch_size", "storage='bfloat16'", "backend='cpu'"):
        assert advice in message
    assert isinstance(raised.value.__cause__, OutOfMemoryError)


def test_prediction_map_starts_over_with_smaller_chunks(cupy_pool):
    backend = get_backend("cpu")  # takes every row at once, which is what runs out here
    X = np.arange(26.0).reshape(13, 2)
    handed = []

    def compute(X_piece):
        handed.append(len(X_piece))
        if len(X_piece) > 4:
            raise OutOfMemoryError()
        return X_piece.sum(axis=1)

    np.testing.assert_array_equal(map_row_chunks(backend, X, 3, compute), X.sum(axis=1))
    assert handed == [13, 6, 3, 3, 3, 3, 1]


# -- the fallback in passes and fits (simulator or GPU) ------------------------------------------
def _objective(backend, X, y, sw, n_classes, **kwargs):
    return SoftmaxObjective(
        backend, backend.asarray(X), backend.asarray(y), backend.asarray(sw), n_classes, **kwargs
    )


@pytest.mark.cuda
@needs_cuda
def test_data_whose_copy_runs_out_of_memory_stays_on_the_host(monkeypatch):
    from fastsoftmax.backends.cuda import CudaBackend

    X = np.ones((1000, 8), np.float32)
    backend = CudaBackend()
    monkeypatch.setattr(backend, "simulated", False)  # the simulator keeps every X on its "device"
    monkeypatch.setattr(backend, "_capacity_bytes", lambda: 1 << 30)  # X fits, as far as sizing knows
    monkeypatch.setattr(backend, "_page_locked", lambda X: ("page-locked", X))

    def copy_fails(error):
        def asarray(a, dtype=None):
            raise error

        monkeypatch.setattr(backend, "asarray", asarray)

    copy_fails(OutOfMemoryError("Out of memory allocating 32,256 bytes"))
    kept, X_host = backend.resident(X)
    assert kept == "page-locked"
    np.testing.assert_array_equal(X_host, X)
    copy_fails(ValueError("not a memory problem"))
    with pytest.raises(ValueError, match="not a memory problem"):
        backend.resident(X)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 3 iterations: not the point
def test_fit_that_runs_out_of_memory_settles_on_smaller_chunks_and_equals_a_fit_with_them(monkeypatch):
    backend = get_backend("cuda")
    X, y, _, _ = make_problem(16, 3, 3, np.float64, seed=21)
    params = dict(alpha=1e-2, dtype="float64", max_iter=3, backend="cuda")
    calls = out_of_memory_beyond(monkeypatch, backend, 8)
    fallen_back = SoftmaxClassifier(**params).fit(X, y)
    # The first pass fails on all 16 rows and starts over with 8; later passes start from 8.
    assert calls.failed == [16]
    assert set(calls.seen) == {16, 8} and calls.seen.count(16) == 1

    calls.seen.clear()
    monkeypatch.setattr(backend, "max_chunk_rows", lambda X, n_classes: 8)
    fixed = SoftmaxClassifier(**params).fit(X, y)
    assert set(calls.seen) == {8} and calls.failed == [16]
    np.testing.assert_array_equal(fallen_back.coef_, fixed.coef_)
    np.testing.assert_array_equal(fallen_back.intercept_, fixed.intercept_)
    assert fallen_back.loss_curve_ == fixed.loss_curve_


@pytest.mark.cuda
@needs_cuda
def test_minibatch_pass_that_runs_out_starts_over_without_counting_a_chunk_twice(monkeypatch):
    backend = get_backend("cuda")
    X, y, W, b = make_problem(8, 3, 3, np.float64, seed=22)
    sw = np.linspace(0.5, 2.0, 8)
    batch = Minibatch(backend.asarray(X), backend.asarray(y), backend.asarray(sw))
    params = (backend.asarray(W), backend.asarray(b))
    objective = _objective(backend, X, y, sw, 3, alpha=1e-2)
    calls = out_of_memory_beyond(monkeypatch, backend, 4)
    loss, (dW, db) = objective.loss_grad(params, batch)
    assert calls.failed == [8] and objective.rows_that_fit == 4
    loss_ref, (dW_ref, db_ref) = _objective(backend, X, y, sw, 3, alpha=1e-2, chunk_rows=4).loss_grad(
        params, batch
    )
    assert loss == loss_ref
    np.testing.assert_array_equal(backend.to_host(dW), backend.to_host(dW_ref))
    np.testing.assert_array_equal(backend.to_host(db), backend.to_host(db_ref))


@pytest.mark.cuda
@needs_cuda
def test_fit_out_of_memory_for_good_is_a_clear_error_and_leaves_the_previous_model(monkeypatch):
    X, y, _, _ = make_problem(12, 3, 3, np.float64, seed=23)
    model = SoftmaxClassifier(alpha=1e-2, dtype="float64", backend="cpu").fit(X, y)
    before = {name: getattr(model, name).copy() for name in ("coef_", "intercept_", "classes_")}
    predicted = model.predict(X)
    model.set_params(backend="cuda")
    out_of_memory_beyond(monkeypatch, get_backend("cuda"), 0)  # not even one row
    with pytest.raises(DeviceMemoryError, match=r"even with one row per chunk .*\d+ bytes per row"):
        model.fit(X, y)
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(model, name), value)
    assert model.n_iter_ > 0 and len(model.loss_curve_) == model.n_iter_
    # Predictions take no pass of the objective: they still run on the device.
    np.testing.assert_array_equal(model.predict(X), predicted)


# -- deterministic chunking (simulator or GPU) ---------------------------------------------------
@pytest.mark.cuda
@needs_cuda
def test_deterministic_chunks_follow_the_capacity_not_free_memory(monkeypatch):
    from fastsoftmax.backends import cuda

    X = get_backend("cuda").asarray(np.zeros((40, 3)))
    per_row = 3 * 8 + 8  # float64 logits and the row loss
    deterministic, by_free_memory = cuda.CudaBackend(), cuda.CudaBackend(deterministic=False)
    capacity = 1000 * per_row
    for backend in (deterministic, by_free_memory):
        monkeypatch.setattr(backend, "_capacity_bytes", lambda: capacity)
    rows = []
    for free in (2 * 6 * per_row, 2 * 100 * per_row, capacity):
        for backend in (deterministic, by_free_memory):
            monkeypatch.setattr(backend, "_free_bytes", lambda free=free: free)
        rows.append((deterministic.max_chunk_rows(X, 3), by_free_memory.max_chunk_rows(X, 3)))
    # 0.5 * (1 - 0.6) of the capacity is 200 rows, rounded down to 128.
    assert rows == [(128, 6), (128, 100), (128, 500)]
    assert repr(deterministic) == "CudaBackend(storage=None, tf32=False, deterministic=True)"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_deterministic_fits_are_bit_identical_while_free_memory_changes(monkeypatch):
    from fastsoftmax.backends import cuda

    X, y, _, _ = make_problem(8, 3, 3, np.float64, seed=24)
    per_row = 3 * 8 + 8
    # Room for 4 rows a chunk under the deterministic budget, 0.5 * 0.4 of the capacity.
    monkeypatch.setattr(cuda, "SIMULATED_TOTAL_BYTES", 4 * per_row * 5)
    frees = iter(per_row * np.tile([2 * 3, 2 * 5, 2 * 8], 10))  # 3, 5 or 8 rows fit, pass after pass
    fits, chunks = [], []
    for deterministic in (True, True, False):
        backend = cuda.CudaBackend(deterministic=deterministic)
        if not backend.simulated:
            monkeypatch.setattr(backend, "_capacity_bytes", lambda: 4 * per_row * 5)
        monkeypatch.setattr(backend, "_free_bytes", lambda: int(next(frees)))
        calls = out_of_memory_beyond(monkeypatch, backend, 8)  # nothing fails: it records the chunks
        fits.append(SoftmaxClassifier(alpha=1e-2, dtype="float64", max_iter=2, backend=backend).fit(X, y))
        chunks.append(set(calls.seen))
    assert chunks[0] == chunks[1] == {4}
    assert len(chunks[2]) > 1  # sized from free memory, the chunks change from pass to pass
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
    np.testing.assert_array_equal(fits[0].intercept_, fits[1].intercept_)
    assert fits[0].loss_curve_ == fits[1].loss_curve_


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_gemms_run_with_cublas_atomics_forbidden(monkeypatch, deterministic):
    """cuBLAS's handle is CuPy's, shared by the process: a deterministic backend forbids atomics while it multiplies."""
    from fastsoftmax.backends.cuda import CudaBackend

    handle = object()
    modes = {"atomics": 1, "math": 0}  # someone else allowed atomics on the shared handle
    cublas = SimpleNamespace(
        getAtomicsMode=lambda h: modes["atomics"],
        setAtomicsMode=lambda h, mode: modes.update(atomics=mode),
        getMathMode=lambda h: modes["math"],
        setMathMode=lambda h, mode: modes.update(math=mode),
    )
    libs = SimpleNamespace(cublas=cublas)
    for name, module in [
        ("cupy_backends", SimpleNamespace(cuda=SimpleNamespace(libs=libs))),
        ("cupy_backends.cuda", SimpleNamespace(libs=libs)),
        ("cupy_backends.cuda.libs", libs),
        ("cupy_backends.cuda.libs.cublas", cublas),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    backend = CudaBackend(deterministic=deterministic)
    monkeypatch.setattr(backend, "simulated", False)
    monkeypatch.setattr(
        backend,
        "xp",
        SimpleNamespace(cuda=SimpleNamespace(device=SimpleNamespace(get_cublas_handle=lambda: handle))),
    )
    with backend._gemm_mode():
        assert modes == {"atomics": 0 if deterministic else 1, "math": 0}
    assert modes == {"atomics": 1, "math": 0}  # the handle is left as it was found


# -- real GPU -------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gpu_fits_are_bit_identical_run_to_run(cupy):
    """Two fits on the device, the second while another allocation holds memory: the same bits.

    CuPy's pool is capped so that X (51 MB) streams from the host in several pieces, whose
    size the free memory would change without ``deterministic=True``.
    """
    from cupy_backends.cuda.libs import cublas

    from fastsoftmax.backends.cuda import CudaBackend

    X, y, _, _ = make_problem(200_003, 64, 10, np.float32, seed=25)
    pool = cupy.get_default_memory_pool()
    previous_limit = pool.get_limit()
    pool.free_all_blocks()
    pool.set_limit(size=pool.used_bytes() + (48 << 20))
    try:
        backend = CudaBackend()
        by_free_memory = CudaBackend(deterministic=False)
        X_host = backend.resident(X)
        assert isinstance(X_host, np.ndarray)
        rows = backend.max_chunk_rows(X_host, 10)
        free_rows = by_free_memory.max_chunk_rows(X_host, 10)
        assert len(X) // rows >= 3
        fits = [SoftmaxClassifier(max_iter=20, backend=backend).fit(X, y)]
        held = cupy.empty(16 << 20, dtype=cupy.uint8)  # another allocation takes memory
        assert backend.max_chunk_rows(X_host, 10) == rows
        assert by_free_memory.max_chunk_rows(X_host, 10) < free_rows
        fits.append(SoftmaxClassifier(max_iter=20, backend=backend).fit(X, y))
        del held
    finally:
        pool.set_limit(size=previous_limit)
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
    np.testing.assert_array_equal(fits[0].intercept_, fits[1].intercept_)
    assert fits[0].loss_curve_ == fits[1].loss_curve_
    handle = cupy.cuda.device.get_cublas_handle()
    assert cublas.getAtomicsMode(handle) == 0  # CUBLAS_ATOMICS_NOT_ALLOWED: nothing here allowed them
