"""Rejected input: every mistake a user can make gets an exception that names it.

Covers the estimator's ``fit``, ``partial_fit`` and prediction methods, its
hyper-parameters (one bad value per entry of ``PARAMETER_CHECKS``), backend
selection, and the functional ``loss_and_grad``; and the rule that a failed call
never leaves a model half-updated.

Out of scope: what valid input computes (``test_estimator.py`` and the numeric
tests) and model files (``test_persistence.py``).
"""

import numpy as np
import pytest
import scipy.sparse
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

import fastsoftmax
from fastsoftmax import BackendUnavailableError, SoftmaxClassifier, loss_and_grad
from fastsoftmax.backends import get_backend
from fastsoftmax.params import PARAMETER_CHECKS

N_SAMPLES, N_FEATURES = 40, 4
PREDICT_METHODS = ["predict", "predict_proba", "predict_log_proba", "decision_function"]

# Fits meant to blow up (a learning rate of 1e30, an infinite class weight) overflow on the way.
overflow_expected = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def data():
    """A small three-class problem: X of shape (40, 4), labels 0, 1, 2 in turn."""
    X = np.random.RandomState(0).standard_normal((N_SAMPLES, N_FEATURES))
    y = np.arange(N_SAMPLES) % 3
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return SoftmaxClassifier(dtype="float64").fit(X, y)


def _with_value(X, value, row=3, col=1):
    X = X.copy()
    X[row, col] = value
    return X


# -- X and y ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, "Input X contains NaN"),
        (np.inf, "Input X contains infinity"),
        (-np.inf, "Input X contains infinity"),
    ],
    ids=["nan", "inf", "-inf"],
)
def test_non_finite_X_in_fit(data, value, message):
    X, y = data
    with pytest.raises(ValueError, match=message):
        SoftmaxClassifier().fit(_with_value(X, value), y)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_X_in_partial_fit(data, value):
    X, y = data
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        SoftmaxClassifier(solver="sgd").partial_fit(_with_value(X, value), y, classes=[0, 1, 2])


@pytest.mark.parametrize("method", PREDICT_METHODS + ["score"])
@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "Input X contains NaN"), (np.inf, "Input X contains infinity")],
    ids=["nan", "inf"],
)
def test_non_finite_X_in_prediction(data, fitted, method, value, message):
    X, y = data
    args = (_with_value(X, value), y) if method == "score" else (_with_value(X, value),)
    with pytest.raises(ValueError, match=message):
        getattr(fitted, method)(*args)


def test_sparse_X_with_nan_is_refused(data):
    X, y = data
    X = scipy.sparse.csr_matrix(X)
    X.data[3] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        SoftmaxClassifier().fit(X, y)


def test_mismatched_X_and_y_lengths(data):
    X, y = data
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[40, 39\]"):
        SoftmaxClassifier().fit(X, y[:-1])


def test_one_dimensional_X(data):
    X, y = data
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        SoftmaxClassifier().fit(X[:, 0], y)


def test_one_dimensional_X_in_predict(data, fitted):
    X, _ = data
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        fitted.predict(X[0])


def test_three_dimensional_X(data):
    X, y = data
    with pytest.raises(
        ValueError, match="Found array with dim 3, while dim <= 2 is required by SoftmaxClassifier"
    ):
        SoftmaxClassifier().fit(X[:, :, None], y)


def test_empty_X(data):
    with pytest.raises(
        ValueError, match=r"Found array with 0 sample\(s\) \(shape=\(0, 4\)\) while a minimum of 1"
    ):
        SoftmaxClassifier().fit(np.empty((0, N_FEATURES)), np.empty(0))


def test_X_without_features(data):
    _, y = data
    with pytest.raises(ValueError, match=r"Found array with 0 feature\(s\) \(shape=\(40, 0\)\)"):
        SoftmaxClassifier().fit(np.empty((N_SAMPLES, 0)), y)


def test_empty_X_in_predict(fitted):
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
        fitted.predict(np.empty((0, N_FEATURES)))


def test_non_numeric_X(data):
    _, y = data
    with pytest.raises(ValueError, match="could not convert string to float"):
        SoftmaxClassifier().fit(np.full((N_SAMPLES, N_FEATURES), "a"), y)


@pytest.mark.parametrize(
    ("labels", "shown"),
    [(np.zeros(N_SAMPLES, dtype=int), "0"), (np.full(N_SAMPLES, "cat"), "'cat'")],
    ids=["int", "str"],
)
def test_single_class_message_reads_like_sklearn(data, labels, shown):
    X, _ = data
    with pytest.raises(ValueError, match="one class") as info:
        SoftmaxClassifier().fit(X, labels)
    assert shown in str(info.value)
    assert "np." not in str(info.value)


@pytest.mark.parametrize(
    ("y_bad", "error", "message"),
    [
        (np.linspace(0, 1, N_SAMPLES), ValueError, "Unknown label type: continuous"),
        (np.c_[np.arange(N_SAMPLES) % 3, np.arange(N_SAMPLES) % 2], ValueError, "y should be a 1d array"),
        (np.r_[np.nan, np.arange(N_SAMPLES - 1) % 3], ValueError, "Input y contains NaN"),
    ],
    ids=["continuous", "two-dimensional", "nan"],
)
def test_bad_y(data, y_bad, error, message):
    X, _ = data
    with pytest.raises(error, match=message):
        SoftmaxClassifier().fit(X, y_bad)


# -- sample weights -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sample_weight", "error", "message"),
    [
        (
            np.r_[np.nan, np.ones(N_SAMPLES - 1)],
            ValueError,
            "sample_weight contains NaN; every value must be finite",
        ),
        (np.r_[np.inf, np.ones(N_SAMPLES - 1)], ValueError, "sample_weight contains infinity"),
        (np.ones(N_SAMPLES - 1), ValueError, "sample_weight has 39 values but X has 40 samples"),
        (np.ones((N_SAMPLES, 1)), ValueError, r"sample_weight must be 1-D, got an array of shape \(40, 1\)"),
        (
            np.r_[np.ones(5), -0.5, np.ones(N_SAMPLES - 6)],
            ValueError,
            r"sample_weight must be non-negative; sample_weight\[5\] = -0.5",
        ),
        (
            np.zeros(N_SAMPLES),
            ValueError,
            "sample_weight sums to zero; at least one sample needs a positive weight",
        ),
        (0.0, ValueError, "sample_weight sums to zero"),
        (["heavy"] * N_SAMPLES, TypeError, "sample_weight must be numeric"),
    ],
    ids=["nan", "inf", "short", "2-d", "negative", "all-zero", "zero-scalar", "strings"],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_bad_sample_weight(data, method, sample_weight, error, message):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd")
    kwargs = {"classes": [0, 1, 2]} if method == "partial_fit" else {}
    with pytest.raises(error, match=message):
        getattr(clf, method)(X, y, sample_weight=sample_weight, **kwargs)


# -- class weights -------------------------------------------------------------------------
def test_class_weight_naming_unknown_labels(data):
    X, y = data
    with pytest.raises(ValueError, match=r"class_weight names labels \['5'\] that are not in y"):
        SoftmaxClassifier(class_weight={0: 1.0, 5: 2.0}).fit(X, y)


def test_class_weight_zeroing_every_sample(data):
    X, y = data
    with pytest.raises(ValueError, match="sample_weight times class_weight sums to zero"):
        SoftmaxClassifier(class_weight={0: 0.0, 1: 0.0, 2: 0.0}).fit(X, y)


def test_balanced_class_weight_with_partial_fit(data):
    X, y = data
    with pytest.raises(ValueError, match="class_weight='balanced' needs the whole data set; pass a dict"):
        SoftmaxClassifier(solver="sgd", class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.parametrize("weight", [-1.0, np.nan, np.inf], ids=["negative", "nan", "inf"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@overflow_expected
def test_class_weight_values_must_be_finite_and_non_negative(data, weight):
    X, y = data
    with pytest.raises(ValueError, match="class_weight"):
        SoftmaxClassifier(class_weight={0: weight}).fit(X, y)


# -- partial_fit ------------------------------------------------------------------------------
def test_partial_fit_needs_classes_on_first_call(data):
    X, y = data
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        SoftmaxClassifier(solver="sgd").partial_fit(X, y)


def test_partial_fit_labels_outside_classes(data):
    X, y = data
    with pytest.raises(ValueError, match=r"y holds labels \[2\] that are not in classes \[0, 1\]"):
        SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1])


def test_partial_fit_labels_outside_classes_on_later_call(data):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    # The strings "1" and "2" are not the integers 1 and 2.
    with pytest.raises(
        ValueError, match=r"y holds labels \['1', '2', 'a'\] that are not in classes \[0, 1, 2\]"
    ):
        clf.partial_fit(X, np.where(y == 0, "a", y.astype(str)))


def test_partial_fit_new_label_on_later_call(data):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"y holds labels \[3\] that are not in classes \[0, 1, 2\]"):
        clf.partial_fit(X, y + 1)


def test_partial_fit_changed_classes(data):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"classes=\[0, 1, 2, 3\] differs from the first call's \[0, 1, 2\]"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])


def test_partial_fit_single_class(data):
    X, _ = data
    with pytest.raises(ValueError, match=r"classes must hold at least 2 labels, got \[0\]"):
        SoftmaxClassifier(solver="sgd").partial_fit(X, np.zeros(N_SAMPLES, dtype=int), classes=[0])


def test_partial_fit_wrong_number_of_features(data):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd").partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="X has 3 features, but SoftmaxClassifier is expecting 4 features"):
        clf.partial_fit(X[:, :3], y)


def test_partial_fit_with_lbfgs(data):
    X, y = data
    # partial_fit is hidden by available_if (as in MLPClassifier); the chained cause says why.
    with pytest.raises(AttributeError, match="partial_fit") as info:
        SoftmaxClassifier(solver="lbfgs").partial_fit(X, y, classes=[0, 1, 2])
    assert "solver='lbfgs'" in str(info.value.__cause__)


def test_partial_fit_hidden_for_lbfgs():
    assert not hasattr(SoftmaxClassifier(solver="lbfgs"), "partial_fit")
    assert hasattr(SoftmaxClassifier(solver="sgd"), "partial_fit")


# -- prediction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", PREDICT_METHODS)
def test_prediction_with_wrong_number_of_features(data, fitted, method):
    X, _ = data
    with pytest.raises(
        ValueError, match="X has 3 features, but SoftmaxClassifier is expecting 4 features as input"
    ):
        getattr(fitted, method)(X[:, :3])


@pytest.mark.parametrize("method", PREDICT_METHODS + ["score", "save"])
def test_unfitted_use(data, tmp_path, method):
    X, y = data
    args = {"score": (X, y), "save": (tmp_path / "model.npz",)}.get(method, (X,))
    with pytest.raises(NotFittedError, match="This SoftmaxClassifier instance is not fitted yet"):
        getattr(SoftmaxClassifier(), method)(*args)
    assert not (tmp_path / "model.npz").exists()


# -- backends ----------------------------------------------------------------------------------
def test_unknown_backend_in_fit(data):
    X, y = data
    with pytest.raises(
        ValueError, match=r"parameter backend='tpu' is not valid; expected one of \('auto', 'cpu', 'cuda'\)"
    ):
        SoftmaxClassifier(backend="tpu").fit(X, y)


def test_unknown_backend_name_in_get_backend():
    with pytest.raises(ValueError, match=r"backend='tpu' is not known; expected one of"):
        get_backend("tpu")


def test_object_that_is_not_a_backend():
    with pytest.raises(TypeError, match="backend must be one of .* or a Backend object"):
        get_backend(object())


def test_cuda_backend_where_unavailable(data):
    reason = fastsoftmax.available_backends()["cuda"]
    if reason is None:
        pytest.skip("a CUDA backend runs here")
    X, y = data
    clf = SoftmaxClassifier(backend="cuda")
    with pytest.raises(BackendUnavailableError, match="backend='cuda' is not available: ") as info:
        clf.fit(X, y)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not hasattr(clf, "coef_")


# -- hyper-parameters ---------------------------------------------------------------------------
BAD_PARAMETER_VALUES = {
    "alpha": -1e-3,
    "fit_intercept": "yes",
    "solver": "newton-cg",
    "max_iter": 0,
    "tol": -1.0,
    "batch_size": 0,
    "learning_rate": "optimal",
    "learning_rate_init": 0.0,
    "power_t": -0.5,
    "momentum": 1.0,
    "nesterov": 1,
    "beta_1": 1.0,
    "beta_2": -0.1,
    "epsilon": 0.0,
    "class_weight": "auto",
    "backend": "tpu",
    "dtype": "float16",
    "random_state": "seed",
    "verbose": -1,
    "early_stopping": None,
    "validation_fraction": 1.0,
    "n_iter_no_change": 0,
    "shuffle": "always",
    "warm_start": 0,
}

MORE_BAD_VALUES = [
    ("alpha", np.nan),
    ("alpha", np.inf),
    ("alpha", True),
    ("alpha", "0.1"),
    ("max_iter", 10.0),
    ("max_iter", True),
    ("tol", np.nan),
    ("batch_size", 2.5),
    ("momentum", -0.1),
    ("validation_fraction", 0.0),
    ("random_state", 1.5),
    ("random_state", True),
    ("dtype", "int32"),
    ("solver", None),
]


def test_bad_value_table_covers_every_parameter():
    assert set(BAD_PARAMETER_VALUES) == set(PARAMETER_CHECKS) == set(SoftmaxClassifier().get_params())


@pytest.mark.parametrize(
    ("name", "value"),
    list(BAD_PARAMETER_VALUES.items()) + MORE_BAD_VALUES,
    ids=[f"{k}={v!r}" for k, v in list(BAD_PARAMETER_VALUES.items()) + MORE_BAD_VALUES],
)
def test_invalid_hyper_parameter_in_fit(data, name, value):
    X, y = data
    clf = SoftmaxClassifier(**{name: value})
    with pytest.raises(ValueError, match=rf"SoftmaxClassifier parameter {name}=.* is not valid; expected "):
        clf.fit(X, y)
    assert not hasattr(clf, "coef_")


@pytest.mark.parametrize("name", ["learning_rate_init", "batch_size"])
def test_invalid_hyper_parameter_in_partial_fit(data, name):
    X, y = data
    with pytest.raises(ValueError, match=rf"parameter {name}=.* is not valid"):
        SoftmaxClassifier(solver="sgd", **{name: BAD_PARAMETER_VALUES[name]}).partial_fit(
            X, y, classes=[0, 1, 2]
        )


def test_early_stopping_with_lbfgs(data):
    X, y = data
    with pytest.raises(
        ValueError, match=r"early_stopping=True needs a minibatch solver .*not solver='lbfgs'"
    ):
        SoftmaxClassifier(solver="lbfgs", early_stopping=True).fit(X, y)


def test_validation_fraction_too_small_for_the_classes(data):
    X, y = data
    with pytest.raises(ValueError, match="should be greater or equal to the number of classes = 3"):
        SoftmaxClassifier(solver="sgd", early_stopping=True, validation_fraction=0.01).fit(X, y)


@overflow_expected
def test_exploding_learning_rate(data):
    X, y = data
    with pytest.raises(FloatingPointError, match="lower learning_rate_init"):
        SoftmaxClassifier(solver="sgd", learning_rate_init=1e30, random_state=0).fit(X * 1e10, y)


# -- warm start -----------------------------------------------------------------------------------
def test_warm_start_with_different_number_of_features(data):
    X, y = data
    clf = SoftmaxClassifier(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="warm_start=True but X has 3 features while the model has 4"):
        clf.fit(X[:, :3], y)


@pytest.mark.parametrize(
    ("relabel", "message"),
    [
        (lambda y: y % 2, r"y has classes \[0, 1\] while the model has \[0, 1, 2\]"),
        (
            lambda y: np.array(["a", "b", "c"])[y],
            r"y has classes \['a', 'b', 'c'\] while the model has \[0, 1, 2\]",
        ),
    ],
    ids=["fewer", "renamed"],
)
def test_warm_start_with_different_classes(data, relabel, message):
    X, y = data
    clf = SoftmaxClassifier(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=f"warm_start=True but {message}"):
        clf.fit(X, relabel(y))


# -- never half-updated ---------------------------------------------------------------------------
FITTED_ATTRIBUTES = ("coef_", "intercept_", "classes_", "n_iter_", "n_features_in_", "loss_curve_")


def _snapshot(clf):
    return {name: np.copy(getattr(clf, name)) for name in FITTED_ATTRIBUTES} | {"keys": set(vars(clf))}


def _assert_unchanged(clf, snapshot):
    assert set(vars(clf)) == snapshot["keys"]
    for name in FITTED_ATTRIBUTES:
        np.testing.assert_array_equal(getattr(clf, name), snapshot[name], err_msg=name)


FAILING_FITS = {
    "nan-X": lambda X, y: ((_with_value(X, np.nan), y), {}),
    "single-class": lambda X, y: ((X, np.zeros_like(y)), {}),
    "negative-weight": lambda X, y: ((X, y), {"sample_weight": -np.ones(len(y))}),
    "short-y": lambda X, y: ((X, y[:-1]), {}),
    "fewer-features": lambda X, y: ((X[:, :3], y), {}),
    "other-classes": lambda X, y: ((X, y % 2), {}),
    "exploding": lambda X, y: ((X * 1e10, y), {}),
}


@pytest.mark.parametrize("case", FAILING_FITS, ids=FAILING_FITS)
@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@overflow_expected
def test_failed_fit_leaves_fitted_model_unchanged(data, solver, case):
    X, y = data
    clf = SoftmaxClassifier(solver=solver, warm_start=True, max_iter=5, random_state=0).fit(X, y)
    before = _snapshot(clf)
    if case == "exploding":
        clf.set_params(solver="sgd", learning_rate_init=1e30)
    args, kwargs = FAILING_FITS[case](X, y)
    with pytest.raises((ValueError, FloatingPointError)):
        clf.fit(*args, **kwargs)
    _assert_unchanged(clf, before)


@pytest.mark.parametrize("case", FAILING_FITS, ids=FAILING_FITS)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@overflow_expected
def test_failed_fit_leaves_unfitted_model_unfitted(data, case):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd", learning_rate_init=1e30 if case == "exploding" else 0.01)
    params = clf.get_params()
    args, kwargs = FAILING_FITS[case](X, y)
    try:
        clf.fit(*args, **kwargs)
    except (ValueError, FloatingPointError):
        pass
    else:
        # Fewer features or other classes are fine for a first fit; nothing more to check.
        assert case in ("fewer-features", "other-classes")
        return
    assert vars(clf) == params
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)


FAILING_PARTIAL_FITS = {
    "unknown-label": lambda X, y: ((X, y + 1), {}),
    "other-classes": lambda X, y: ((X, y), {"classes": [0, 1, 2, 3]}),
    "fewer-features": lambda X, y: ((X[:, :3], y), {}),
    "inf-X": lambda X, y: ((_with_value(X, np.inf), y), {}),
    "zero-weights": lambda X, y: ((X, y), {"sample_weight": np.zeros(len(y))}),
    "exploding": lambda X, y: ((X * 1e10, y), {}),
}


@pytest.mark.parametrize("case", FAILING_PARTIAL_FITS, ids=FAILING_PARTIAL_FITS)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@overflow_expected
def test_failed_partial_fit_leaves_model_and_solver_state_unchanged(data, solver, case):
    X, y = data
    # Two models with the same history; only one sees the failing call.
    kwargs = dict(solver=solver, batch_size=8, random_state=0)
    clf, twin = (SoftmaxClassifier(**kwargs).partial_fit(X, y, classes=[0, 1, 2]) for _ in range(2))
    before = _snapshot(clf)
    if case == "exploding":
        clf.set_params(learning_rate_init=1e30)
    args, call_kwargs = FAILING_PARTIAL_FITS[case](X, y)
    with pytest.raises((ValueError, FloatingPointError)):
        clf.partial_fit(*args, **call_kwargs)
    _assert_unchanged(clf, before)
    # The optimiser's momentum, moments and random generator must be untouched too.
    clf.set_params(learning_rate_init=0.01)
    clf.partial_fit(X, y)
    twin.partial_fit(X, y)
    np.testing.assert_array_equal(clf.coef_, twin.coef_)
    assert clf.loss_curve_ == twin.loss_curve_


@pytest.mark.parametrize("case", ["no-classes", "unknown-label", "nan-X"])
def test_failed_first_partial_fit_leaves_model_unfitted(data, case):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd")
    params = clf.get_params()
    call = {
        "no-classes": lambda: clf.partial_fit(X, y),
        "unknown-label": lambda: clf.partial_fit(X, y, classes=[0, 1]),
        "nan-X": lambda: clf.partial_fit(_with_value(X, np.nan), y, classes=[0, 1, 2]),
    }[case]
    with pytest.raises(ValueError):
        call()
    assert vars(clf) == params


# -- loss_and_grad ------------------------------------------------------------------------------
def _valid_arguments():
    """Keyword arguments of a valid ``loss_and_grad`` call: 40 samples, 4 features, 3 classes."""
    X = np.random.RandomState(1).standard_normal((N_SAMPLES, N_FEATURES))
    return {"X": X, "y": np.arange(N_SAMPLES) % 3, "W": np.zeros((N_FEATURES, 3)), "b": np.zeros(3)}


_X = _valid_arguments()["X"]
_Y = _valid_arguments()["y"]

# Each case replaces some arguments of a valid call.
LOSS_AND_GRAD_CASES = {
    "W-rows": ({"W": np.zeros((3, 3))}, r"W must have shape \(n_features=4, n_classes\), got \(3, 3\)"),
    "W-1d": ({"W": np.zeros(4)}, r"W must have shape \(n_features=4, n_classes\), got \(4,\)"),
    "W-nan": ({"W": np.full((N_FEATURES, 3), np.nan)}, "W contains NaN; every value must be finite"),
    "b-length": ({"b": np.zeros(4)}, r"b must have shape \(n_classes=3,\), got \(4,\)"),
    "b-2d": ({"b": np.zeros((1, 3))}, r"b must have shape \(n_classes=3,\), got \(1, 3\)"),
    "b-inf": ({"b": np.array([np.inf, 0.0, 0.0])}, "b contains infinity"),
    "y-too-large": ({"y": _Y + 1}, r"y holds the class index 3, outside \[0, 3\) for W with 3 columns"),
    "y-negative": ({"y": _Y - 1}, r"y holds the class index -1, outside \[0, 3\)"),
    "y-fractional": ({"y": _Y + 0.5}, "y must hold integer class indices, got dtype float64"),
    "y-strings": ({"y": _Y.astype(str)}, "y must hold integer class indices, got dtype <U"),
    "y-short": ({"y": _Y[:-1]}, "y has 39 labels but X has 40 samples"),
    "y-2d": ({"y": _Y[:, None]}, r"y must be 1-D, got an array of shape \(40, 1\)"),
    "X-nan": ({"X": _with_value(_X, np.nan)}, "X contains NaN; every value must be finite"),
    "X-inf": ({"X": _with_value(_X, np.inf)}, "X contains infinity"),
    "X-1d": ({"X": _X[:, 0]}, r"X must be 2-D \(n_samples, n_features\), got shape \(40,\)"),
    "X-3d": ({"X": _X[:, :, None]}, r"X must be 2-D .*got shape \(40, 4, 1\)"),
    "X-empty": ({"X": _X[:0], "y": _Y[:0]}, "X has no samples"),
    "weight-negative": ({"sample_weight": -np.ones(N_SAMPLES)}, "sample_weight must be non-negative"),
    "weight-nan": ({"sample_weight": np.full(N_SAMPLES, np.nan)}, "sample_weight contains NaN"),
    "weight-short": ({"sample_weight": np.ones(3)}, "sample_weight has 3 values but X has 40 samples"),
    "weight-zero": ({"sample_weight": np.zeros(N_SAMPLES)}, "sample_weight sums to zero"),
    "alpha-negative": ({"alpha": -1.0}, "alpha must be a finite non-negative number, got -1.0"),
    "alpha-nan": ({"alpha": np.nan}, "alpha must be a finite non-negative number, got nan"),
    "backend": ({"backend": "tpu"}, "backend='tpu' is not known"),
}


@pytest.mark.parametrize("case", LOSS_AND_GRAD_CASES, ids=LOSS_AND_GRAD_CASES)
def test_loss_and_grad_bad_input(case):
    changes, message = LOSS_AND_GRAD_CASES[case]
    with pytest.raises(ValueError, match=message):
        loss_and_grad(**{**_valid_arguments(), **changes})


def test_loss_and_grad_valid_call_runs():
    # The base of every case above must itself be accepted.
    loss, dW, db = loss_and_grad(**_valid_arguments())
    assert np.isclose(loss, np.log(3)) and dW.shape == (N_FEATURES, 3) and db.shape == (3,)


def test_loss_and_grad_cuda_where_unavailable():
    if fastsoftmax.available_backends()["cuda"] is None:
        pytest.skip("a CUDA backend runs here")
    with pytest.raises(BackendUnavailableError, match="backend='cuda' is not available"):
        loss_and_grad(**_valid_arguments(), backend="cuda")


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_loss_and_grad_rejects_complex_X():
    with pytest.raises((TypeError, ValueError), match="X"):
        loss_and_grad(**{**_valid_arguments(), "X": _X + 1j})
