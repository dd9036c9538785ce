"""pytest-benchmark: a full L-BFGS fit to within 1e-6 of scikit-learn's optimum, per implementation.

Run from the repository root with::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_fit.py --benchmark-only

(not part of the default test run).  Each implementation of ``bench.fitters.FITTERS`` is
benchmarked at the smallest iteration cap whose fit reaches the target, found once per
implementation outside the benchmark by ``bench.accuracy.search_iterations``; an
implementation that never reaches it is skipped with its best gap, since its time would not
be a time to accuracy.  ``python -m bench`` prints the same comparison as a table.
"""

import pytest

from fastsoftmax.bench import accuracy, fitters

SPEC = "20000x64x10"
ALPHA = 1e-3
MAX_ITER = 300


@pytest.fixture(scope="module")
def problem():
    """Training and test data, and the target objective from scikit-learn's float64 optimum."""
    n, d, c = accuracy.parse_spec(SPEC)
    data = accuracy.make_fit_problem(n, n // 4, d, c)
    f_star = accuracy.reference_optimum(data[0], data[1], ALPHA)["objective"]
    return data, f_star


@pytest.fixture(scope="module", params=list(fitters.FITTERS))
def fitter(request, problem):
    """``(fit, found, test_accuracy)`` for one implementation: setup and search are not timed."""
    name = request.param
    why_not = fitters.available(name)
    if why_not:
        pytest.skip(why_not)
    (X_train, y_train, X_test, y_test), f_star = problem
    fit = fitters.FITTERS[name](X_train, y_train, ALPHA)
    found = accuracy.search_iterations(
        fit,
        lambda coef, b: accuracy.objective(X_train, y_train, coef, b, ALPHA),
        f_star + accuracy.TARGET_REL * abs(f_star),
        MAX_ITER,
    )
    found["rel_gap"] = (found["objective"] - f_star) / abs(f_star)
    if not found["reached"]:
        pytest.skip(
            f"{name} does not reach rel gap {accuracy.TARGET_REL:g} within {MAX_ITER} iterations "
            f"(best {found['rel_gap']:.2e} after {found['n_iter']})"
        )
    return fit, found, accuracy.accuracy(X_test, y_test, found["coef"], found["intercept"])


def test_fit_to_accuracy(benchmark, fitter):
    fit, found, test_accuracy = fitter
    benchmark.extra_info.update(
        workload=SPEC,
        alpha=ALPHA,
        k=found["k"],
        n_iter=found["n_iter"],
        rel_gap=found["rel_gap"],
        test_accuracy=test_accuracy,
    )
    benchmark.pedantic(fit, args=(found["k"],), rounds=3, iterations=1)
