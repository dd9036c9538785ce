"""L-BFGS's diagonal preconditioner: its values, and fits on badly scaled features.

The preconditioner is ``1 / (weighted mean of x_j^2 + alpha)`` per feature, rounded
to a power of two, used when those curvatures span more than ``SPREAD_LIMIT``
(fastsoftmax/scaling.py).  With it, features of any common scale, or of scales
spread over twelve orders of magnitude, reach the optimum they would reach if they
had been standardised.  Numerical extremes of the kernels are in tests/test_extremes.py.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from fastsoftmax import SoftmaxClassifier, loss_and_grad
from fastsoftmax.scaling import SAMPLE_ROWS, feature_preconditioner
from fastsoftmax.sources import open_source
from fastsoftmax.streaming import SourceFeatures


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((300, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    return X, y


def test_preconditioner_is_the_inverse_weighted_mean_square(data, tmp_path):
    X, _ = data
    X = X * np.array([1e-3, 1.0, 1e3, 0.0, 5.0])
    w = np.linspace(0.5, 2.0, len(X))
    expected = np.exp2(np.round(np.log2(1 / ((w @ X**2) / w.sum() + 1e-4))))
    expected[3] = 1.0  # an all-zero feature moves only the penalty: left alone
    np.testing.assert_array_equal(feature_preconditioner(X, w, 1e-4, np.float64), expected)
    np.testing.assert_array_equal(feature_preconditioner(sp.csr_matrix(X), w, 1e-4, np.float64), expected)
    np.save(tmp_path / "X.npy", X)
    source = SourceFeatures(open_source(str(tmp_path / "X.npy")), np.float64)
    np.testing.assert_array_equal(feature_preconditioner(source, w, 1e-4, np.float64), expected)


def test_well_scaled_features_get_no_preconditioner(data):
    # Curvatures within a factor SPREAD_LIMIT of each other and of the intercept's:
    # L-BFGS runs unpreconditioned, on scikit-learn's path.
    X, _ = data
    assert feature_preconditioner(X * 16, np.ones(len(X)), 1e-4, np.float32) is None
    assert feature_preconditioner(X * np.array([0.1, 1, 10, 30, 0]), np.ones(len(X)), 0.0, np.float32) is None


def test_preconditioner_samples_large_data():
    X = np.tile(np.array([[1e3, 1e-3], [3e3, 3e-3]]), (SAMPLE_ROWS, 1))  # 2 x SAMPLE_ROWS rows
    p = feature_preconditioner(X, np.ones(len(X)), 0.0, np.float64)
    # Mean squares 5e6 and 5e-6 (over a sample, within a percent): 2**-22 and 2**18.
    np.testing.assert_array_equal(p, [2.0**-22, 2.0**18])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e6, 1e10])
def test_scaled_features_reach_the_standardised_optimum(data, dtype, scale):
    # On X * s with alpha, the optimum is W / s where W is the optimum on X with
    # alpha / s^2: the same logits.  Compare the losses (float32: to 1e-5 relative).
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scaled = SoftmaxClassifier(alpha=1e-4, dtype=dtype, backend="cpu", max_iter=200).fit(X * scale, y)
        plain = SoftmaxClassifier(
            alpha=1e-4 / scale**2, dtype="float64", backend="cpu", max_iter=200, tol=1e-8
        )
        plain.fit(X, y)
    loss_scaled = loss_and_grad(
        X * scale, y, scaled.coef_.T.astype(np.float64), scaled.intercept_, alpha=1e-4
    )[0]
    loss_plain = loss_and_grad(X, y, plain.coef_.T, plain.intercept_, alpha=1e-4 / scale**2)[0]
    assert loss_scaled == pytest.approx(loss_plain, rel=1e-5 if dtype == "float32" else 1e-8)
    np.testing.assert_array_equal(scaled.predict(X * scale), plain.predict(X))


def test_mixed_scales_reach_at_least_scikit_learns_objective(data):
    # Features at 1e-6 .. 1e6: scikit-learn's L-BFGS (unpreconditioned) needs ~190
    # iterations and stops short; ours must end at an objective no higher, faster.
    from sklearn.linear_model import LogisticRegression

    X, y = data
    X = X * np.array([1e-6, 1.0, 1e3, 1e6, 1e-3])
    reference = LogisticRegression(C=1 / (1e-4 * len(X)), max_iter=10_000, tol=1e-12).fit(X, y)
    ours = SoftmaxClassifier(alpha=1e-4, dtype="float64", backend="cpu", tol=1e-10, max_iter=500).fit(X, y)
    ref_loss = loss_and_grad(X, y, reference.coef_.T.copy(), reference.intercept_.copy(), alpha=1e-4)[0]
    assert ours.loss_curve_[-1] <= ref_loss * (1 + 1e-9)
    assert ours.n_iter_ < reference.n_iter_[0]
