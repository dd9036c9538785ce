"""A fit that blows up says where, and never returns a model full of NaN.

The minibatch solvers raise FloatingPointError naming the epoch, the minibatch and
the learning rate at the first non-finite loss; L-BFGS treats an overflowing trial
step as infinitely bad (its line search shortens it) and refuses a starting point
whose objective is not finite.  That a failed fit leaves the previous model intact
is tested in tests/test_bad_input.py.
"""

import math
import warnings

import numpy as np
import pytest

from fastsoftmax import SoftmaxClassifier
from fastsoftmax.solvers.lbfgs import _strong_wolfe, lbfgs


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((200, 5))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow being reported
def test_a_diverging_minibatch_fit_names_epoch_minibatch_and_rate(data, solver):
    X, y = data
    model = SoftmaxClassifier(
        solver=solver, learning_rate_init=1e30, batch_size=20, random_state=0, backend="cpu"
    )
    with pytest.raises(FloatingPointError, match=r"in epoch \d+, minibatch \d+ \(learning rate 1e\+30\)"):
        model.fit(X * 1e10, y)
    assert not hasattr(model, "coef_")


def test_the_line_search_shortens_a_step_that_overflows():
    # f(t) = (t - 1)^2, but every trial beyond t = 2 overflows: from t = 8 the search
    # must come back inside and find a decrease, not stop or return infinity.
    def phi(t):
        if t > 2:
            return math.inf, math.nan, None, None
        return (t - 1) ** 2, 2 * (t - 1), t, 2 * (t - 1)

    found = _strong_wolfe(phi, 1.0, -2.0, 8.0)
    assert found is not None
    t, f = found[:2]
    assert 0 < t <= 2 and f < 1.0


class _OverflowingObjective:
    """An objective already infinite at the start (features beyond the dtype's range)."""

    def loss_grad(self, params):
        return math.inf, tuple(np.zeros_like(p) for p in params)


def test_lbfgs_refuses_a_non_finite_start():
    params = (np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(FloatingPointError, match="at the starting point"):
        lbfgs(_OverflowingObjective(), params, max_iter=5, tol=1e-4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_lbfgs_on_huge_features_reaches_the_rescaled_optimum(data):
    # Features of 1e30 in float64: unpreconditioned, the first trial steps overflow
    # the logits and the line search cannot shrink them enough.  Preconditioned, the
    # fit is the fit on X with alpha / 1e60 (about 0): the same predictions.
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is fair on either
        huge = SoftmaxClassifier(dtype="float64", max_iter=50, backend="cpu").fit(X * 1e30, y)
        plain = SoftmaxClassifier(dtype="float64", alpha=0.0, max_iter=50, backend="cpu").fit(X, y)
    assert np.all(np.isfinite(huge.coef_)) and np.all(np.isfinite(huge.intercept_))
    assert np.mean(huge.predict(X * 1e30) == plain.predict(X)) >= 0.98


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_a_finite_but_exploding_loss_is_divergence_not_convergence(data, solver):
    # Unscaled features of 1e6 with the default learning rate: the loss stays finite
    # but grows by orders of magnitude; the stall must not pass for convergence.
    X, y = data
    model = SoftmaxClassifier(
        solver=solver, learning_rate_init=0.01 if solver == "sgd" else 1e3, random_state=0
    )
    with pytest.raises(FloatingPointError, match=r"the loss rose from .* by epoch \d+ .*the steps diverge"):
        model.set_params(backend="cpu").fit(X * 1e6, y)
