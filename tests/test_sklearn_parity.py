"""``SoftmaxClassifier`` reaches scikit-learn's ``LogisticRegression`` optimum.

Scope: with ``solver="lbfgs"``, ``dtype="float64"`` and a tight ``tol`` both models
minimise the same strongly convex objective, so their parameters must agree, on
scikit-learn's bundled data sets (standardised, so that both converge quickly):
multinomial on digits, wine and iris at ``C = 1 / (alpha * s)``, the binomial
equivalence on breast_cancer at ``C = 2 / (alpha * s)``, and sample and class
weights.  Estimator behaviour other than the optimum is tested in
``test_estimator.py``.

Agreement is measured on the parameter matrix ``[coef_ | intercept_]`` as
``max |ours - sklearn| / max |sklearn|`` (:func:`tests.reference.max_rel_err`).
"""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from fastsoftmax import SoftmaxClassifier
from tests.reference import max_rel_err, rtol_for

TOL = 1e-10
MAX_ITER = 10_000
# Not a rounding tolerance: both solvers stop on their own gradient and loss
# criteria (gtol = TOL, ftol = 64 eps), which leaves each within about
# |grad| / alpha of the optimum (the objective is alpha-strongly convex).
PARITY_RTOL = 1e-4


def standardised(load):
    X, y = load(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def fit_both(X, y, alpha, C, sample_weight=None, class_weight=None):
    """Our fit at ``alpha`` and scikit-learn's at ``C``; either failing to converge fails the test."""
    ours = SoftmaxClassifier(
        alpha=alpha, solver="lbfgs", dtype="float64", tol=TOL, max_iter=MAX_ITER, class_weight=class_weight
    )
    theirs = LogisticRegression(C=C, tol=TOL, max_iter=MAX_ITER, class_weight=class_weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ours.fit(X, y, sample_weight=sample_weight)
        theirs.fit(X, y, sample_weight=sample_weight)
    return ours, theirs


def params(model):
    return np.column_stack([model.coef_, model.intercept_])


@pytest.mark.parametrize(
    "load, C", [(load_digits, 0.1), (load_wine, 1.0), (load_iris, 1.0)], ids=["digits", "wine", "iris"]
)
def test_multinomial_optimum_matches_logistic_regression(load, C):
    X, y = standardised(load)
    alpha = 1 / (C * len(y))  # s = n_samples without weights
    ours, theirs = fit_both(X, y, alpha, C)
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    assert max_rel_err(params(ours), params(theirs)) <= PARITY_RTOL


def test_binary_optimum_matches_the_binomial_logistic_regression():
    X, y = standardised(load_breast_cancer)
    C = 1.0
    # Two softmax columns w0 = -w1 penalised by alpha/2 (|w0|^2 + |w1|^2) = alpha/4 |w1 - w0|^2:
    # the binomial model w = w1 - w0 with penalty 1 / (2 C s) at C = 2 / (alpha s).
    alpha = 2 / (C * len(y))
    ours, theirs = fit_both(X, y, alpha, C)
    assert ours.coef_.shape == (2, X.shape[1]) and theirs.coef_.shape == (1, X.shape[1])
    binomial = np.append(ours.coef_[1] - ours.coef_[0], ours.intercept_[1] - ours.intercept_[0])
    assert max_rel_err(binomial, params(theirs)[0]) <= PARITY_RTOL
    # Every gradient's columns sum to alpha * (w0 + w1) plus the rounding of X^T G 1,
    # zero from the zero start on: the two columns stay opposite to rounding level.
    assert max_rel_err(-ours.coef_[0], ours.coef_[1]) <= rtol_for(np.float64, X.size)


def sample_weights(n_samples):
    return np.random.default_rng(0).uniform(0.2, 3.0, n_samples)


def test_sample_and_class_weights_match_logistic_regression():
    X, y = standardised(load_wine)
    sw = sample_weights(len(y))
    class_weight = {0: 0.5, 1: 2.0, 2: 1.0}
    C = 1.0
    effective = sw * np.array([class_weight[label] for label in y])
    ours, theirs = fit_both(X, y, 1 / (C * effective.sum()), C, sample_weight=sw, class_weight=class_weight)
    assert max_rel_err(params(ours), params(theirs)) <= PARITY_RTOL


@pytest.mark.parametrize(
    "sample_weight",
    [None, sample_weights],
    ids=["unweighted", "sample_weight"],
)
def test_balanced_class_weight_matches_logistic_regression(sample_weight):
    X, y = standardised(load_wine)
    sw = None if sample_weight is None else sample_weight(len(y))
    # The weights scikit-learn uses; s is their sum.
    classes = np.unique(y)
    per_class = compute_class_weight("balanced", classes=classes, y=y, sample_weight=sw)
    effective = (np.ones(len(y)) if sw is None else sw) * per_class[np.searchsorted(classes, y)]
    C = 1.0
    ours, theirs = fit_both(X, y, 1 / (C * effective.sum()), C, sample_weight=sw, class_weight="balanced")
    assert max_rel_err(params(ours), params(theirs)) <= PARITY_RTOL
