"""SoftmaxClassifier as a scikit-learn estimator: API, fitted state and solver options.

Covers scikit-learn's estimator checks, composition with ``clone``, ``Pipeline``,
``GridSearchCV`` and ``cross_val_score``, the fitted attributes, label handling, the
agreement of the prediction methods with one another, every solver and schedule
option, reproducibility, ``partial_fit``, ``warm_start``, class and sample weights,
the progress bar, pickling and concurrent prediction.

Out of scope: the objective's numerics against a reference (the numeric tests),
rejected input (``test_bad_input.py``) and ``.npz`` files (``test_persistence.py``).
"""

import pickle
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from fastsoftmax import SoftmaxClassifier
from fastsoftmax.params import PARAMETER_CHECKS

MINIBATCH_SOLVERS = ["sgd", "adam"]
SCHEDULES = ["constant", "invscaling", "adaptive", "cosine"]

# Minibatch fits in these tests stop at max_iter on purpose, to stay fast.
no_convergence_warning = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _standardised(X):
    return (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)


@pytest.fixture(scope="module")
def digits():
    """Standardised digits (1797 x 64, 10 classes), split 75/25 with stratification."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(_standardised(X), y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def wine():
    """Standardised wine (178 x 13, 3 classes)."""
    X, y = load_wine(return_X_y=True)
    return _standardised(X), y


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def _eps(dtype_name):
    return np.finfo(np.dtype(dtype_name)).eps


# -- scikit-learn's estimator checks ---------------------------------------------------
@parametrize_with_checks(
    [SoftmaxClassifier(dtype="float64"), SoftmaxClassifier(dtype="float64", solver="sgd", random_state=0)],
)
@no_convergence_warning
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- parameters, clone and meta-estimators ----------------------------------------------
def test_get_params_lists_every_validated_parameter():
    assert set(SoftmaxClassifier().get_params(deep=False)) == set(PARAMETER_CHECKS)


def test_get_params_set_params_round_trip():
    clf = SoftmaxClassifier()
    new = {
        "alpha": 0.5,
        "solver": "adam",
        "max_iter": 7,
        "class_weight": {0: 2.0},
        "dtype": "float64",
        "learning_rate": "cosine",
        "random_state": 3,
        "warm_start": True,
    }
    assert clf.set_params(**new) is clf
    params = clf.get_params()
    assert {k: params[k] for k in new} == new
    assert SoftmaxClassifier(**params).get_params() == params


def test_set_params_rejects_unknown_name():
    with pytest.raises(ValueError, match="Invalid parameter 'gamma'"):
        SoftmaxClassifier().set_params(gamma=1.0)


def test_clone_gives_unfitted_copy_with_equal_params(iris):
    X, y = iris
    clf = SoftmaxClassifier(alpha=1e-2, dtype="float64", class_weight={0: 2.0}).fit(X, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.class_weight is not clf.class_weight
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)


def test_pipeline_with_standard_scaler(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = make_pipeline(StandardScaler(), SoftmaxClassifier(alpha=1e-3, dtype="float64"))
    pipe.fit(X_train * 16, y_train)
    assert pipe.score(X_test * 16, y_test) > 0.93
    assert pipe.predict_proba(X_test[:5] * 16).shape == (5, 10)


@no_convergence_warning
def test_grid_search_over_alpha_and_solver(iris):
    X, y = iris
    pipe = Pipeline([("scale", StandardScaler()), ("clf", SoftmaxClassifier(random_state=0))])
    grid = {"clf__alpha": [1e-4, 1.0], "clf__solver": ["lbfgs", "adam"]}
    search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["clf__alpha"] == 1e-4
    assert search.best_score_ > 0.9
    # A strong penalty must cost accuracy, or the parameter is not reaching the fit.
    scores = dict(
        zip(map(str, search.cv_results_["params"]), search.cv_results_["mean_test_score"], strict=True)
    )
    assert scores[str({"clf__alpha": 1.0, "clf__solver": "lbfgs"})] < search.best_score_


def test_cross_val_score_multiclass(wine):
    X, y = wine
    scores = cross_val_score(SoftmaxClassifier(dtype="float64"), X, y, cv=5)
    assert scores.shape == (5,)
    assert scores.mean() > 0.95


def test_cross_val_score_roc_auc_on_binary_problem():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), SoftmaxClassifier(alpha=1e-3, dtype="float64"))
    scores = cross_val_score(pipe, X, y, cv=3, scoring="roc_auc")
    assert np.all(scores > 0.97)


# -- fitted attributes ------------------------------------------------------------------
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
@no_convergence_warning
def test_fitted_attributes(wine, solver, dtype_name):
    X, y = wine
    clf = SoftmaxClassifier(solver=solver, dtype=dtype_name, max_iter=20, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.coef_.shape == (3, 13)
    assert clf.intercept_.shape == (3,)
    assert clf.coef_.dtype == clf.intercept_.dtype == np.dtype(dtype_name)
    assert clf.coef_.flags.c_contiguous
    assert isinstance(clf.n_iter_, int) and 1 <= clf.n_iter_ <= 20
    assert len(clf.loss_curve_) == clf.n_iter_
    assert all(isinstance(v, float) and np.isfinite(v) for v in clf.loss_curve_)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.n_features_in_ == 13
    assert not hasattr(clf, "feature_names_in_")
    assert not hasattr(clf, "validation_loss_curve_")


def test_no_intercept_keeps_intercept_zero(wine):
    X, y = wine
    clf = SoftmaxClassifier(fit_intercept=False, dtype="float64").fit(X, y)
    np.testing.assert_array_equal(clf.intercept_, np.zeros(3))
    np.testing.assert_allclose(clf.decision_function(X), X @ clf.coef_.T, rtol=1e-12, atol=1e-12)


def test_dataframe_sets_feature_names_in(iris):
    X, y = iris
    columns = ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    clf = SoftmaxClassifier(dtype="float64", max_iter=300).fit(pd.DataFrame(X, columns=columns), y)
    np.testing.assert_array_equal(clf.feature_names_in_, columns)
    assert clf.feature_names_in_.dtype == object
    on_array = SoftmaxClassifier(dtype="float64", max_iter=300).fit(X, y)
    np.testing.assert_array_equal(clf.coef_, on_array.coef_)
    np.testing.assert_array_equal(
        clf.predict_proba(pd.DataFrame(X, columns=columns)), on_array.predict_proba(X)
    )


@pytest.fixture(scope="module")
def fitted_on_dataframe(iris):
    X, y = iris
    return SoftmaxClassifier(dtype="float64", max_iter=300).fit(pd.DataFrame(X, columns=list("abcd")), y)


def test_reordered_columns_raise_as_sklearn_does(iris, fitted_on_dataframe):
    X, _ = iris
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        fitted_on_dataframe.predict(pd.DataFrame(X, columns=list("abcd"))[list("bacd")])


def test_misnamed_columns_raise_as_sklearn_does(iris, fitted_on_dataframe):
    X, _ = iris
    with pytest.raises(ValueError, match="(?s)Feature names unseen at fit time:.*- w"):
        fitted_on_dataframe.predict_proba(pd.DataFrame(X, columns=list("wxyz")))


def test_array_after_dataframe_fit_warns(iris, fitted_on_dataframe):
    X, _ = iris
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        fitted_on_dataframe.predict(X)


def test_dataframe_after_array_fit_warns(iris):
    X, y = iris
    clf = SoftmaxClassifier(dtype="float64", max_iter=300).fit(X, y)
    with pytest.warns(UserWarning, match="X has feature names, but SoftmaxClassifier was fitted without"):
        clf.predict(pd.DataFrame(X, columns=list("abcd")))


# -- labels -----------------------------------------------------------------------------
LABEL_SETS = {
    "str": np.array(["cat", "dog", "emu"]),
    "object_str": np.array(["cat", "dog", "emu"], dtype=object),
    "int_with_gaps": np.array([3, 7, 100]),
    "negative_int": np.array([-5, 0, 2]),
    "float_integral": np.array([1.0, 2.0, 4.0]),
}


@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
def test_labels_are_mapped_back_and_do_not_change_the_fit(wine, labels):
    X, y = wine
    coded = SoftmaxClassifier(dtype="float64").fit(X, y)
    clf = SoftmaxClassifier(dtype="float64").fit(X, labels[y])
    np.testing.assert_array_equal(clf.classes_, labels)
    assert clf.classes_.dtype == labels.dtype
    # Labels only name the columns: the optimisation is the same as on 0..k-1.
    np.testing.assert_array_equal(clf.coef_, coded.coef_)
    np.testing.assert_array_equal(clf.predict(X), labels[coded.predict(X)])
    assert clf.score(X, labels[y]) == coded.score(X, y)


@pytest.mark.parametrize(
    "labels",
    [np.array(["no", "yes"]), np.array([3, 100]), np.array([False, True])],
    ids=["str", "int", "bool"],
)
def test_binary_problem(labels):
    X, y01 = load_breast_cancer(return_X_y=True)
    X = _standardised(X)
    clf = SoftmaxClassifier(dtype="float64").fit(X, labels[y01])
    assert clf.coef_.shape == (2, X.shape[1])
    margin = clf.decision_function(X)
    assert margin.shape == (X.shape[0],)
    log_proba = clf.predict_log_proba(X)
    np.testing.assert_allclose(margin, log_proba[:, 1] - log_proba[:, 0], rtol=1e-10, atol=1e-10)
    # sklearn's binary convention: a positive margin predicts classes_[1].
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(margin > 0).astype(int)])
    assert clf.score(X, labels[y01]) > 0.97


# -- prediction methods agree -----------------------------------------------------------
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_prediction_methods_agree(digits, dtype_name):
    X_train, X_test, y_train, y_test = digits
    clf = SoftmaxClassifier(alpha=1e-3, dtype=dtype_name).fit(X_train, y_train)
    eps = _eps(dtype_name)
    proba = clf.predict_proba(X_test)
    log_proba = clf.predict_log_proba(X_test)
    scores = clf.decision_function(X_test)
    predicted = clf.predict(X_test)
    assert proba.dtype == log_proba.dtype == scores.dtype == np.dtype(dtype_name)
    assert proba.shape == log_proba.shape == scores.shape == (len(X_test), 10)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=20 * eps)
    np.testing.assert_array_equal(clf.classes_[np.argmax(proba, axis=1)], predicted)
    np.testing.assert_array_equal(clf.classes_[np.argmax(scores, axis=1)], predicted)
    # log(p) and log_softmax agree wherever p is far from the exp clamp (~1e-38 in float32).
    usable = log_proba > np.log(np.finfo(np.dtype(dtype_name)).tiny) + 10
    np.testing.assert_allclose(np.log(proba[usable]), log_proba[usable], rtol=0, atol=200 * eps)
    shifted = scores - scores.max(axis=1, keepdims=True)
    softmax = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, softmax, rtol=0, atol=100 * eps)
    assert clf.score(X_test, y_test) == accuracy_score(y_test, predicted)


# -- solvers ----------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
@no_convergence_warning
def test_each_solver_reaches_good_accuracy_on_digits(digits, solver):
    X_train, X_test, y_train, y_test = digits
    clf = SoftmaxClassifier(solver=solver, alpha=1e-3, max_iter=50, batch_size=64, random_state=0)
    clf.fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.93


@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
@no_convergence_warning
def test_minibatch_fit_is_reproducible_for_fixed_seed(wine, solver):
    X, y = wine
    fits = [
        SoftmaxClassifier(solver=solver, max_iter=5, batch_size=16, random_state=seed).fit(X, y)
        for seed in (7, 7, 8)
    ]
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
    np.testing.assert_array_equal(fits[0].intercept_, fits[1].intercept_)
    assert fits[0].loss_curve_ == fits[1].loss_curve_
    assert not np.array_equal(fits[0].coef_, fits[2].coef_)


@no_convergence_warning
def test_random_state_instance_is_accepted_and_reproducible(wine):
    X, y = wine
    a = SoftmaxClassifier(solver="sgd", max_iter=3, batch_size=16, random_state=np.random.RandomState(1)).fit(
        X, y
    )
    b = SoftmaxClassifier(solver="sgd", max_iter=3, batch_size=16, random_state=np.random.RandomState(1)).fit(
        X, y
    )
    np.testing.assert_array_equal(a.coef_, b.coef_)


@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@no_convergence_warning
def test_learning_rate_schedules_run(wine, solver, schedule):
    X, y = wine
    clf = SoftmaxClassifier(solver=solver, learning_rate=schedule, max_iter=15, batch_size=32, random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ == 15
    assert np.all(np.isfinite(clf.coef_))
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.score(X, y) > 0.9


@pytest.mark.parametrize("schedule", ["invscaling", "cosine"])
@no_convergence_warning
def test_schedules_change_the_fit(wine, schedule):
    X, y = wine
    kwargs = dict(solver="sgd", max_iter=5, batch_size=32, random_state=0)
    constant = SoftmaxClassifier(learning_rate="constant", **kwargs).fit(X, y)
    scheduled = SoftmaxClassifier(learning_rate=schedule, **kwargs).fit(X, y)
    assert not np.array_equal(constant.coef_, scheduled.coef_)


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.0, True), (0.9, False), (0.9, True)])
@no_convergence_warning
def test_sgd_momentum_options_run(wine, momentum, nesterov):
    X, y = wine
    clf = SoftmaxClassifier(solver="sgd", momentum=momentum, nesterov=nesterov, max_iter=10, random_state=0)
    clf.fit(X, y)
    assert np.all(np.isfinite(clf.coef_))
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


@no_convergence_warning
def test_nesterov_matters_only_with_momentum(wine):
    X, y = wine

    def coef(momentum, nesterov):
        clf = SoftmaxClassifier(
            solver="sgd", momentum=momentum, nesterov=nesterov, max_iter=3, batch_size=32, random_state=0
        )
        return clf.fit(X, y).coef_

    np.testing.assert_array_equal(coef(0.0, True), coef(0.0, False))
    assert not np.array_equal(coef(0.9, True), coef(0.9, False))


# -- early stopping ---------------------------------------------------------------------
EARLY_STOPPING = dict(
    early_stopping=True,
    validation_fraction=0.2,
    n_iter_no_change=5,
    max_iter=300,
    batch_size=16,
    learning_rate_init=0.05,
    random_state=0,
    dtype="float64",
)


def _validation_loss(clf, X, y):
    """The objective on the hold-out that early stopping uses.

    Mirrors the documented split: a stratified ``validation_fraction`` of the rows,
    drawn by a generator seeded with ``random_state``.
    """
    _, rows = train_test_split(
        np.arange(len(y)),
        test_size=clf.validation_fraction,
        random_state=np.random.RandomState(clf.random_state),
        stratify=y,
    )
    penalty = 0.5 * clf.alpha * float(np.sum(clf.coef_**2))
    return log_loss(y[rows], clf.predict_proba(X[rows]), labels=clf.classes_) + penalty


@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
def test_early_stopping_records_validation_curve_and_stops(wine, solver):
    X, y = wine
    clf = SoftmaxClassifier(solver=solver, **EARLY_STOPPING).fit(X, y)  # converges: no warning
    assert clf.n_iter_ < 300
    assert len(clf.validation_loss_curve_) == len(clf.loss_curve_) == clf.n_iter_
    assert all(np.isfinite(clf.validation_loss_curve_))
    # The kept parameters are those of one of the recorded epochs.
    curve = np.array(clf.validation_loss_curve_)
    assert np.min(np.abs(curve - _validation_loss(clf, X, y))) < 1e-9


@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
def test_early_stopping_keeps_best_parameters(wine, solver):
    X, y = wine
    clf = SoftmaxClassifier(solver=solver, tol=1e-3, **EARLY_STOPPING).fit(X, y)
    np.testing.assert_allclose(_validation_loss(clf, X, y), min(clf.validation_loss_curve_), rtol=1e-9)


@no_convergence_warning
def test_refit_without_early_stopping_drops_validation_curve(wine):
    X, y = wine
    clf = SoftmaxClassifier(solver="sgd", **EARLY_STOPPING).fit(X, y)
    clf.set_params(early_stopping=False, max_iter=3).fit(X, y)
    assert getattr(clf, "validation_loss_curve_", None) in (None, [])


# -- partial_fit --------------------------------------------------------------------------
@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
def test_partial_fit_calls_continue(wine, solver):
    X, y = wine
    clf = SoftmaxClassifier(solver=solver, batch_size=32, random_state=0)
    coefs = []
    for call in range(1, 4):
        clf.partial_fit(X, y, classes=[0, 1, 2] if call == 1 else None)
        assert clf.n_iter_ == call
        assert len(clf.loss_curve_) == call
        coefs.append(clf.coef_.copy())
    assert not np.array_equal(coefs[0], coefs[1])
    assert not np.array_equal(coefs[1], coefs[2])
    assert clf.loss_curve_[2] < clf.loss_curve_[0]


def test_partial_fit_first_batch_may_lack_classes(wine):
    X, y = wine
    first = y != 2
    clf = SoftmaxClassifier(solver="sgd", random_state=0).partial_fit(X[first], y[first], classes=[2, 0, 1])
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.coef_.shape == (3, 13)
    clf.partial_fit(X[~first], y[~first])
    assert clf.n_iter_ == 2


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
@no_convergence_warning
def test_one_partial_fit_equals_fit_with_one_epoch(wine, solver, shuffle):
    X, y = wine
    kwargs = dict(solver=solver, shuffle=shuffle, batch_size=32, random_state=5)
    partial = SoftmaxClassifier(**kwargs).partial_fit(X, y, classes=[0, 1, 2])
    full = SoftmaxClassifier(max_iter=1, **kwargs).fit(X, y)
    np.testing.assert_array_equal(partial.coef_, full.coef_)
    np.testing.assert_array_equal(partial.intercept_, full.intercept_)
    assert partial.loss_curve_ == full.loss_curve_
    assert partial.n_iter_ == full.n_iter_ == 1


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive"])
@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
@no_convergence_warning
def test_partial_fit_calls_equal_fit_epochs(wine, solver, schedule):
    # Three epochs cannot trigger the stopping rule (n_iter_no_change=10), so fit runs all three.
    X, y = wine
    kwargs = dict(solver=solver, learning_rate=schedule, batch_size=32, random_state=5)
    partial = SoftmaxClassifier(**kwargs)
    for _ in range(3):
        partial.partial_fit(X, y, classes=[0, 1, 2])
    full = SoftmaxClassifier(max_iter=3, **kwargs).fit(X, y)
    np.testing.assert_array_equal(partial.coef_, full.coef_)
    assert partial.loss_curve_ == full.loss_curve_


def test_partial_fit_keeps_learning_with_cosine_schedule(wine):
    X, y = wine
    clf = SoftmaxClassifier(solver="adam", learning_rate="cosine", max_iter=50, random_state=0)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    first = clf.coef_.copy()
    clf.partial_fit(X, y)
    assert not np.array_equal(first, clf.coef_)


@pytest.mark.parametrize("solver", MINIBATCH_SOLVERS)
@no_convergence_warning
def test_partial_fit_after_fit_continues_the_fit(wine, solver):
    X, y = wine
    clf = SoftmaxClassifier(solver=solver, max_iter=3, batch_size=32, random_state=0).fit(X, y)
    clf.partial_fit(X, y)
    longer = SoftmaxClassifier(solver=solver, max_iter=4, batch_size=32, random_state=0).fit(X, y)
    assert clf.n_iter_ == 4
    np.testing.assert_array_equal(clf.coef_, longer.coef_)


@no_convergence_warning
def test_partial_fit_after_lbfgs_fit(wine):
    X, y = wine
    clf = SoftmaxClassifier(dtype="float64").fit(X, y).set_params(solver="sgd")
    clf.partial_fit(X, y)
    assert clf.n_iter_ >= 1


# -- warm start ---------------------------------------------------------------------------
def test_warm_start_lbfgs_needs_fewer_iterations(wine):
    X, y = wine
    clf = SoftmaxClassifier(warm_start=True, tol=1e-6, dtype="float64").fit(X, y)
    cold_coef, cold_iter = clf.coef_.copy(), clf.n_iter_
    clf.fit(X, y)
    assert clf.n_iter_ < cold_iter
    np.testing.assert_allclose(clf.coef_, cold_coef, atol=1e-5)


def test_warm_start_lbfgs_after_changing_alpha(wine):
    X, y = wine
    clf = SoftmaxClassifier(warm_start=True, alpha=1e-2, tol=1e-6, dtype="float64").fit(X, y)
    clf.set_params(alpha=1.2e-2).fit(X, y)
    cold = SoftmaxClassifier(alpha=1.2e-2, tol=1e-6, dtype="float64").fit(X, y)
    assert clf.n_iter_ < cold.n_iter_
    np.testing.assert_allclose(clf.coef_, cold.coef_, atol=1e-4)


def test_without_warm_start_refit_starts_over(wine):
    X, y = wine
    clf = SoftmaxClassifier(dtype="float64").fit(X, y)
    first = clf.coef_.copy(), clf.n_iter_
    clf.fit(X, y)
    np.testing.assert_array_equal(clf.coef_, first[0])
    assert clf.n_iter_ == first[1]


@no_convergence_warning
def test_warm_start_sgd_continues_from_previous_solution(wine):
    X, y = wine
    clf = SoftmaxClassifier(solver="sgd", warm_start=True, max_iter=5, batch_size=32, random_state=0).fit(
        X, y
    )
    end_of_first = clf.loss_curve_[-1]
    clf.fit(X, y)
    assert clf.loss_curve_[0] < end_of_first * 1.05
    cold_start = SoftmaxClassifier(solver="sgd", max_iter=5, batch_size=32, random_state=0).fit(X, y)
    assert clf.loss_curve_[0] < cold_start.loss_curve_[0]


# -- class and sample weights ---------------------------------------------------------------
def test_balanced_class_weight_matches_compute_class_weight(wine):
    X, y = wine
    weights = compute_class_weight("balanced", classes=np.unique(y), y=y)
    balanced = SoftmaxClassifier(class_weight="balanced", dtype="float64").fit(X, y)
    by_sample = SoftmaxClassifier(dtype="float64").fit(X, y, sample_weight=weights[y])
    plain = SoftmaxClassifier(dtype="float64").fit(X, y)
    np.testing.assert_allclose(balanced.coef_, by_sample.coef_, rtol=1e-12, atol=1e-12)
    assert np.abs(balanced.coef_ - plain.coef_).max() > 1e-3


def test_dict_class_weight_matches_sample_weight(wine):
    X, y = wine
    class_weight = {0: 1.0, 1: 3.0, 2: 0.5}
    weights = compute_class_weight(class_weight, classes=np.unique(y), y=y)
    by_class = SoftmaxClassifier(class_weight=class_weight, dtype="float64").fit(X, y)
    by_sample = SoftmaxClassifier(dtype="float64").fit(X, y, sample_weight=weights[y])
    plain = SoftmaxClassifier(dtype="float64").fit(X, y)
    np.testing.assert_allclose(by_class.coef_, by_sample.coef_, rtol=1e-12, atol=1e-12)
    assert np.abs(by_class.coef_ - plain.coef_).max() > 1e-3


def test_class_weight_with_string_labels_and_missing_entries(wine):
    X, y = wine
    names = np.array(["a", "b", "c"])
    by_class = SoftmaxClassifier(class_weight={"b": 4.0}, dtype="float64").fit(X, names[y])
    by_sample = SoftmaxClassifier(dtype="float64").fit(X, y, sample_weight=np.where(y == 1, 4.0, 1.0))
    np.testing.assert_allclose(by_class.coef_, by_sample.coef_, rtol=1e-12, atol=1e-12)


def test_class_weight_multiplies_sample_weight(wine):
    X, y = wine
    sample_weight = np.linspace(0.5, 2.0, len(y))
    both = SoftmaxClassifier(class_weight={0: 2.0}, dtype="float64").fit(X, y, sample_weight=sample_weight)
    product = SoftmaxClassifier(dtype="float64").fit(
        X, y, sample_weight=sample_weight * np.where(y == 0, 2.0, 1.0)
    )
    np.testing.assert_allclose(both.coef_, product.coef_, rtol=1e-12, atol=1e-12)


def test_integer_sample_weight_equals_repeated_rows(wine):
    # Standardised wine and alpha = 1e-2, so that both fits converge: on raw wine
    # L-BFGS (ours and scikit-learn's) is still moving after 1,000 iterations, and at
    # alpha = 1e-4 the fits stop on float64's resolution of the objective with the
    # coefficients 1e-6 apart.  Here both stop with the coefficients 3e-12 apart.
    X, y = wine
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    repeats = np.random.RandomState(0).randint(0, 4, size=len(y))
    assert set(y[repeats > 0]) == {0, 1, 2}
    kwargs = dict(alpha=1e-2, dtype="float64", tol=1e-10, max_iter=1000)
    weighted = SoftmaxClassifier(**kwargs).fit(X, y, sample_weight=repeats)
    repeated = SoftmaxClassifier(**kwargs).fit(np.repeat(X, repeats, axis=0), np.repeat(y, repeats))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, rtol=1e-8, atol=1e-9)


def test_uniform_sample_weight_changes_nothing(wine):
    # The loss is a weighted mean, so a common factor cancels.
    X, y = wine
    plain = SoftmaxClassifier(dtype="float64").fit(X, y)
    scaled = SoftmaxClassifier(dtype="float64").fit(X, y, sample_weight=np.full(len(y), 4.0))
    scalar = SoftmaxClassifier(dtype="float64").fit(X, y, sample_weight=4.0)
    np.testing.assert_allclose(scaled.coef_, plain.coef_, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(scalar.coef_, scaled.coef_)


# -- progress bar -------------------------------------------------------------------------
@pytest.mark.parametrize(("solver", "label"), [("lbfgs", "lbfgs"), ("sgd", "epoch"), ("adam", "epoch")])
@no_convergence_warning
def test_verbose_shows_progress_bar_with_loss(wine, capsys, solver, label):
    X, y = wine
    clf = SoftmaxClassifier(solver=solver, verbose=1, max_iter=3, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    assert f"{label}:" in err
    assert f"{clf.n_iter_}/3" in err
    assert f"loss={clf.loss_curve_[-1]:.6g}" in err
    if solver != "lbfgs":
        assert "lr=0.01" in err


def test_quiet_by_default(wine, capsys):
    X, y = wine
    SoftmaxClassifier().fit(X, y)
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


# -- pickling and threads --------------------------------------------------------------
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_pickle_round_trip(wine, dtype_name):
    X, y = wine
    clf = SoftmaxClassifier(dtype=dtype_name).fit(X, np.array(["a", "b", "c"])[y])
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.get_params() == clf.get_params()
    for attr in ("classes_", "coef_", "intercept_"):
        np.testing.assert_array_equal(getattr(restored, attr), getattr(clf, attr))
    assert restored.n_iter_ == clf.n_iter_ and restored.loss_curve_ == clf.loss_curve_
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(restored.predict(X), clf.predict(X))


def test_pickled_minibatch_model_continues_identically(wine):
    X, y = wine
    clf = SoftmaxClassifier(solver="adam", batch_size=32, random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    restored = pickle.loads(pickle.dumps(clf))
    clf.partial_fit(X, y)
    restored.partial_fit(X, y)
    np.testing.assert_array_equal(restored.coef_, clf.coef_)


def test_predict_from_threads_matches_serial(digits):
    X_train, X_test, y_train, _ = digits
    clf = SoftmaxClassifier(dtype="float64").fit(X_train, y_train)
    # Enough rows that every call splits the work over the backend's thread pool.
    X_big = np.tile(X_test, (4, 1))
    expected = clf.predict(X_big), clf.predict_proba(X_big), clf.decision_function(X_big)
    results = [None] * 4
    barrier = threading.Barrier(4)

    def worker(i):
        barrier.wait()
        results[i] = [
            (clf.predict(X_big), clf.predict_proba(X_big), clf.decision_function(X_big)) for _ in range(5)
        ]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for per_thread in results:
        assert per_thread is not None
        for got in per_thread:
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_array_equal(g, e)
