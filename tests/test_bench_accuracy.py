"""The time-to-accuracy benchmark (``bench/accuracy.py``), on tiny problems.

In scope: the iteration search on fake fits (smallest cap, never reached, a fit that stops
by itself); the float64 evaluator against scikit-learn's loss and a plain argmax, across
row chunks; a whole run on a tiny problem for the CPU implementations other than PyTorch
(every one reaches the target, the row fields, the speedup, one failing implementation
leaving the others alone, the result written as JSON); PyTorch rows skipped with a reason.
PyTorch is never imported: it is blocked in ``sys.modules`` for every test here.  The CUDA
fitter is checked against the CPU one for a single iteration, on a GPU or in Numba's simulator
run (``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda``), where one iteration takes seconds.
Out of scope: timings, which ``python -m bench`` measures (its "accuracy" stage).
"""

import json
import sys

import numpy as np
import pytest

from bench import accuracy

CPU_NAMES = ["fastsoftmax", "fastsoftmax float64", "sklearn", "numpy+scipy"]


@pytest.fixture(autouse=True)
def no_torch(monkeypatch):
    """``import torch`` raises ImportError in every test of this file."""
    monkeypatch.setitem(sys.modules, "torch", None)


def fake_fit(stop_at=None):
    """A fit whose objective after k iterations is 2**-k; it stops by itself at ``stop_at``."""
    calls = []

    def fit(k):
        calls.append(k)
        n_iter = k if stop_at is None else min(k, stop_at)
        return np.array([[float(n_iter)]]), np.zeros(1), n_iter

    return fit, calls


def evaluate(coef, intercept):
    return 2.0 ** -coef[0, 0]


@pytest.mark.parametrize("max_iter", [1, 7, 100])
def test_search_finds_the_smallest_cap(max_iter):
    for smallest in range(1, max_iter + 1):
        fit, calls = fake_fit()
        found = accuracy.search_iterations(fit, evaluate, 2.0**-smallest, max_iter)
        assert found["reached"] and found["k"] == smallest == found["n_iter"]
        assert found["objective"] == 2.0**-smallest
        assert found["fits"] == len(calls) == len(set(calls))  # no cap is fitted twice
        assert max(calls) <= max_iter
        assert found["fits"] <= 2 * np.log2(max_iter) + 2
        assert [h["k"] for h in found["history"]] == calls


def test_search_never_reached_reports_the_best():
    fit, calls = fake_fit()
    found = accuracy.search_iterations(fit, evaluate, 2.0**-200, 100)
    assert not found["reached"]
    assert found["k"] == found["n_iter"] == 100
    assert found["objective"] == 2.0**-100
    assert calls == [1, 2, 4, 8, 16, 32, 64, 100]


def test_search_stops_when_the_fit_stops_by_itself():
    fit, calls = fake_fit(stop_at=20)
    found = accuracy.search_iterations(fit, evaluate, 2.0**-25, 300)
    assert not found["reached"]
    assert found["n_iter"] == 20 and found["objective"] == 2.0**-20
    assert calls == [1, 2, 4, 8, 16, 32]  # a larger cap would repeat the fit at 32
    fit, calls = fake_fit(stop_at=20)
    found = accuracy.search_iterations(fit, evaluate, 2.0**-18, 300)
    assert found["reached"] and found["k"] == 18


def test_search_rejects_max_iter_below_one():
    with pytest.raises(ValueError, match="max_iter"):
        accuracy.search_iterations(fake_fit()[0], evaluate, 0.5, 0)


@pytest.fixture
def tiny(monkeypatch):
    """A 50x4x3 problem, random parameters, and row chunks of 7 rows in the evaluator."""
    monkeypatch.setattr(accuracy, "_EVAL_CHUNK_BYTES", 8 * (4 + 3) * 7)
    X, y, _, _ = accuracy.make_fit_problem(50, 0, 4, 3, seed=1)
    rng = np.random.default_rng(2)
    return X, y, rng.standard_normal((3, 4)), rng.standard_normal(3)


def test_objective_is_sklearns_loss(tiny):
    from sklearn._loss.loss import HalfMultinomialLoss
    from sklearn.linear_model._linear_loss import LinearModelLoss

    X, y, coef, intercept = tiny
    alpha = 0.3
    loss = LinearModelLoss(base_loss=HalfMultinomialLoss(n_classes=3), fit_intercept=True)
    expected = loss.loss(
        np.hstack([coef, intercept[:, None]]),
        X.astype(np.float64),
        y.astype(np.float64),
        l2_reg_strength=alpha,
    )
    assert accuracy.objective(X, y, coef, intercept, alpha) == pytest.approx(expected, rel=1e-12)


def test_gradient_matches_finite_differences(tiny):
    X, y, coef, intercept = tiny
    _, (dW, db) = accuracy._objective_and_grad(X, y, coef, intercept, 0.3)
    h = 1e-6
    step = np.zeros_like(coef)
    step[1, 2] = h
    numeric = (
        accuracy.objective(X, y, coef + step, intercept, 0.3)
        - accuracy.objective(X, y, coef - step, intercept, 0.3)
    ) / (2 * h)
    assert dW[1, 2] == pytest.approx(numeric, rel=1e-6)
    shift = np.array([0.0, h, 0.0])
    numeric = (
        accuracy.objective(X, y, coef, intercept + shift, 0.3)
        - accuracy.objective(X, y, coef, intercept - shift, 0.3)
    ) / (2 * h)
    assert db[1] == pytest.approx(numeric, rel=1e-6)


def test_accuracy_is_the_argmax_rate(tiny):
    X, y, coef, intercept = tiny
    expected = np.mean((X.astype(np.float64) @ coef.T + intercept).argmax(axis=1) == y)
    assert accuracy.accuracy(X, y, coef, intercept) == expected


def test_make_fit_problem_shapes_and_types():
    X_train, y_train, X_test, y_test = accuracy.make_fit_problem(40, 10, 5, 3)
    assert X_train.shape == (40, 5) and X_test.shape == (10, 5)
    assert X_train.dtype == X_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert set(np.unique(y_train)) == {0, 1, 2}
    with pytest.raises(ValueError, match="at least 3"):
        accuracy.make_fit_problem(40, 10, 5, 2)


@pytest.mark.parametrize("name", ["torch", "torch cuda"])
def test_torch_unavailable_without_torch(name):
    assert accuracy.available(name).startswith("torch not installed")


def test_run_on_a_tiny_problem(monkeypatch):
    def broken(X, y, alpha):
        raise RuntimeError("this implementation is broken")

    monkeypatch.setitem(accuracy.FITTERS, "broken", broken)
    lines = []
    result = accuracy.run_time_to_accuracy(
        "600x8x3", [*CPU_NAMES, "broken", "torch", "torch cuda"], 1e-2, 100, 2, log=lines.append
    )
    assert (result["workload"], result["alpha"], result["target_rel"]) == ("600x8x3", 1e-2, 1e-6)
    assert {"coef", "intercept"}.isdisjoint(result["reference"])
    assert result["reference"]["grad_max_abs"] < 1e-7
    json.dumps(result)  # the whole result is JSON-safe
    rows = {row["implementation"]: row for row in result["rows"]}
    assert list(rows) == [*CPU_NAMES, "broken", "torch", "torch cuda"]
    for name in ("torch", "torch cuda"):
        assert rows[name]["skipped"].startswith("torch not installed")
    assert rows["broken"]["error"] == "RuntimeError: this implementation is broken"
    accuracies = set()
    for name in CPU_NAMES:
        row = rows[name]
        assert row["reached"], row
        assert "warning" not in row, row
        assert -accuracy.BELOW_REFERENCE_REL <= row["rel_gap"] <= accuracy.TARGET_REL
        assert 1 <= row["n_iter"] <= row["k"] <= 100
        assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["fits_searched"] == len(row["history"])
        assert row["fastsoftmax_speedup"] == pytest.approx(row["median_s"] / rows["fastsoftmax"]["median_s"])
        accuracies.add(round(row["test_accuracy"], 2))
    assert rows["fastsoftmax"]["fastsoftmax_speedup"] == 1.0
    assert len(accuracies) == 1
    assert "broken" in accuracy.format_table(result)
    assert len(lines) >= len(rows)


def test_run_rejects_unknown_implementations():
    with pytest.raises(ValueError, match="unknown implementations"):
        accuracy.run_time_to_accuracy("600x8x3", ["fastsoftmax", "nope"], 1e-2, 10, 1, log=None)


@pytest.mark.cuda
@pytest.mark.slow  # in Numba's simulator, each pass takes seconds: one iteration only
@pytest.mark.skipif(
    accuracy.available("fastsoftmax cuda") is not None, reason=accuracy.available("fastsoftmax cuda") or ""
)
def test_cuda_fitter_matches_the_cpu_fitter():
    X, y, _, _ = accuracy.make_fit_problem(60, 0, 3, 3)
    coef, intercept, n_iter = accuracy.FITTERS["fastsoftmax cuda"](X, y, 1e-2)(1)
    expected = accuracy.FITTERS["fastsoftmax"](X, y, 1e-2)(1)
    assert n_iter == expected[2] == 1
    assert type(coef) is type(intercept) is np.ndarray
    assert (coef.dtype, coef.shape, intercept.shape) == (np.float64, (3, 3), (3,))
    assert accuracy.objective(X, y, coef, intercept, 1e-2) == pytest.approx(
        accuracy.objective(X, y, *expected[:2], 1e-2), rel=1e-5
    )
