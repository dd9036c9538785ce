"""Concurrency: estimators fitted from several threads at once, and one model shared by many.

In scope: four estimators fitted at the same moment from four threads (a barrier lines
them up) end with exactly the model each gets when fitted alone, for every solver; 32
concurrent ``predict_proba``/``predict`` calls on one fitted model return exactly the
single-threaded answer.  On the CPU backend in the default run; on the CUDA backend on a
real GPU only: Numba's simulator runs every kernel thread as a Python thread and cannot
take launches from two host threads (``'Thread' object has no attribute 'threadIdx'``).
Out of scope: several processes sharing one GPU.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastsoftmax import SoftmaxClassifier
from fastsoftmax.backends import cuda_simulated
from tests.conftest import BACKENDS

# A fixed, small max_iter is the point.  (A filter set here, not warnings.catch_warnings
# inside the threads: that context manager swaps process-wide state and is not thread-safe.)
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_THREADS = 4


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend name; the CUDA case needs a real GPU (see the module docstring)."""
    if request.param == "cuda" and cuda_simulated():
        pytest.skip("Numba's CUDA simulator is not thread-safe: it cannot take launches from two threads")
    return request.param


def labelled(seed, n_samples=3000, n_features=20, n_classes=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)).astype(np.float32)
    W = rng.standard_normal((n_features, n_classes))
    y = (X @ W + rng.gumbel(size=(n_samples, n_classes))).argmax(axis=1)
    return X, y


def fit(params, X, y):
    return SoftmaxClassifier(**params).fit(X, y)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
def test_fits_in_parallel_threads_match_fits_alone(backend, solver):
    params = dict(solver=solver, max_iter=30, random_state=0, backend=backend)
    data = [labelled(seed) for seed in range(N_THREADS)]
    alone = [fit(params, X, y) for X, y in data]
    start = threading.Barrier(N_THREADS)

    def fit_in_thread(i):
        start.wait()  # every thread inside fit() at once
        return fit(params, *data[i])

    with ThreadPoolExecutor(N_THREADS) as pool:
        together = list(pool.map(fit_in_thread, range(N_THREADS)))
    for one, other in zip(alone, together):
        np.testing.assert_array_equal(other.coef_, one.coef_)
        np.testing.assert_array_equal(other.intercept_, one.intercept_)


def test_one_model_predicts_from_many_threads(backend):
    X, y = labelled(9, n_samples=20_000)
    model = fit(dict(max_iter=20, backend=backend), X, y)
    expected_proba, expected_labels = model.predict_proba(X), model.predict(X)

    def predict(_):
        return model.predict_proba(X), model.predict(X)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(predict, range(32)))
    for proba, labels in results:
        np.testing.assert_array_equal(proba, expected_proba)
        np.testing.assert_array_equal(labels, expected_labels)
