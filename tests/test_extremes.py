"""Numerical extremes through the public API, on each backend.

Scope: logits of magnitude 1e4 to 3e38 through ``loss_and_grad`` and the prediction
methods; float16 and bfloat16 inputs (and the CUDA backend's 16-bit storage at the
edges of its range); features of scale 1e6 and of mixed scales 1e-6 to 1e6;
perfectly separable data fitted without a penalty; a class with one sample; and
10,000 classes.  Every test checks that nothing turns into inf or NaN and that no
overflow warning is raised on the way (RuntimeWarnings are errors in this module).

Covered elsewhere, not repeated here: the row kernels called directly on logits of
+-1e4 and +-3e38 (``test_kernel_cpu.py``, ``test_kernel_cuda.py``) and their
invariants on arbitrary extreme blocks (``test_properties.py``); 16-bit storage on
ordinary data and its refusal of 1e5 (``test_cuda_backend.py``); float16 X refused
by ``loss_and_grad`` (``test_bad_input.py``).

The CUDA cases run in Numba's simulator in CI, where a kernel launch costs about
0.6 s per block of 8 rows (every GPU thread is a Python thread): their data fill one
or two blocks, and their fits run a few iterations.
"""

import math
import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastsoftmax import SoftmaxClassifier, SoftmaxObjective, get_backend, loss_and_grad
from tests.conftest import BACKENDS
from tests.reference import (
    make_problem,
    max_rel_err,
    reference_log_softmax,
    reference_loss_grad,
    rtol_for,
    skip_float64_in_simulator,
)

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def simulated(backend):
    return getattr(backend, "simulated", False)


def skip_solver_repeat_in_simulator(backend):
    # What the fit adds to the kernels' extremes (tested through loss_and_grad above
    # on both backends) is solver and estimator code, shared by the backends; the
    # simulator would repeat it at minutes of CI time.  It runs on the CPU and a GPU.
    if simulated(backend):
        pytest.skip("backend-independent fit logic; the simulated kernels are covered above, a GPU runs it")


def fit_quietly(model, X, y, **kwargs):
    """``model.fit``, where stopping short of convergence is expected and not the point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **kwargs)


def assert_probability_rows(P, dtype, n_classes):
    # Each probability is e_j / d with d's relative error below rtol_for (see
    # test_properties.py), so a row sums to one within it.
    rtol = rtol_for(dtype, n_classes)
    assert np.all(np.isfinite(P)) and np.all((P >= 0) & (P <= 1))
    assert np.all(np.abs(P.sum(axis=1, dtype=np.float64) - 1) <= rtol)


# -- logits of huge magnitude ---------------------------------------------------------
HUGE = [1e4, 1e10, 1e30, 3e38]  # 3e38 is close to float32's largest finite value, 3.4e38


def huge_logit_rows(h, dtype):
    """Eight rows of logits mixing +-h, +-h/2 and small values, with ties, and their labels."""
    logits = np.array(
        [
            [h, -h, 0, 1, -1],  # spread 2h, y on -h: loss 2h (6e38 at h = 3e38, past float32)
            [h, h, -h, 0, 0],  # tied maximum, y on it: loss log 2
            [-h, -h, -h, -h, -h],  # all tied at -h: probabilities 1/5
            [h, h, h, h, h],  # all tied at +h
            [h / 2, -h, h, -h / 2, 0],  # y the argmax: loss 0
            [-h, -h, -h / 2, -h, -h],  # a negative maximum
            [0, 1, -1, 2, -h],  # y on the only huge logit: loss h + 2 + log(d)
            [-h, h, -h, h, -h / 2],  # tied maximum, y on -h: loss 2h + log 2
        ],
        dtype,
    )
    y = np.array([1, 0, 3, 4, 2, 2, 4, 0])
    return logits, y


def model_with(coef, intercept, backend):
    """A model fitted on the CPU whose ``coef_`` and ``intercept_`` are then replaced."""
    n_classes, n_features = coef.shape
    X = np.random.default_rng(0).standard_normal((2 * n_classes, n_features))
    model = SoftmaxClassifier(dtype=coef.dtype.name, max_iter=1, backend="cpu")
    fit_quietly(model, X, np.arange(2 * n_classes) % n_classes)
    model.coef_, model.intercept_ = coef, intercept
    return model.set_params(backend=backend)


@pytest.mark.parametrize("h", HUGE)
def test_loss_and_grad_of_huge_logits_are_finite_and_exact(backend, dtype, h):
    logits, y = huge_logit_rows(h, dtype)
    n_rows, n_classes = logits.shape
    # One-hot rows of X make Z = X @ W exactly W: each logit is one product by 1 plus
    # products by 0, so the logits are the huge values themselves, not a rounding of them.
    X = np.eye(n_rows, dtype=dtype)
    b = np.zeros(n_classes, dtype)
    with np.errstate(all="raise"):
        loss, dW, db = loss_and_grad(X, y, logits, b, backend=backend)
    dW, db = backend.to_host(dW), backend.to_host(db)
    loss_ref, dW_ref, db_ref = reference_loss_grad(X, y, logits, b)

    assert math.isfinite(loss) and np.all(np.isfinite(dW)) and np.all(np.isfinite(db))
    rtol = rtol_for(dtype, n_classes)
    # loss_i = (m - z_y) + log(d): the shift is a float64 subtraction of exact logits,
    # summed over the rows in float64 (relative error rtol_for(float64, n_rows)); log(d)
    # carries d's relative error as an absolute one (rtol, the weights summing to 1).
    assert abs(loss - loss_ref) <= rtol + rtol_for(np.float64, n_rows) * loss_ref
    # Row k of dW is row k of G: (1 / n_rows) (p - e_y), p with relative error rtol.
    scale = 1 / n_rows
    assert np.all(np.abs(dW - dW_ref) <= rtol * scale)
    # Probabilities that sum to one make every row of G sum to zero.
    assert np.all(np.abs(dW.sum(axis=1, dtype=np.float64)) <= rtol * scale)
    assert np.all(np.abs(db - db_ref) <= rtol + rtol_for(dtype, n_rows))


@pytest.mark.parametrize("h", HUGE)
def test_predictions_from_huge_logits(backend, dtype, h):
    logits, _ = huge_logit_rows(h, dtype)
    n_rows, n_classes = logits.shape
    X = np.eye(n_rows, dtype=dtype)  # one-hot rows: the logits are coef_ exactly
    model = model_with(np.ascontiguousarray(logits.T), np.zeros(n_classes, dtype), backend)
    with np.errstate(all="raise"):
        Z, P, predicted = model.decision_function(X), model.predict_proba(X), model.predict(X)
    with warnings.catch_warnings():
        if simulated(backend):
            # The simulator computes in NumPy scalars, which warn when a log-probability
            # of -6e38 is stored as float32's -inf; a GPU rounds to -inf silently.
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        log_P = model.predict_log_proba(X)

    np.testing.assert_array_equal(Z, logits)
    np.testing.assert_array_equal(predicted, np.argmax(logits, axis=1))  # the first of tied maxima
    log_P_ref = reference_log_softmax(logits)
    rtol = rtol_for(dtype, n_classes)
    assert_probability_rows(P, dtype, n_classes)
    assert np.all(np.abs(P - np.exp(log_P_ref)) <= rtol)
    # A log-probability of -6e38 has no float32 value: -inf there, finite wherever the
    # true value is representable, and then accurate relative to |z - m| (as in
    # test_kernel_cpu.py).
    representable = np.abs(log_P_ref) <= np.finfo(dtype).max
    assert not np.any(np.isnan(log_P)) and np.all(log_P <= 0)
    assert np.all(log_P[~representable] == -np.inf)
    np.testing.assert_allclose(log_P[representable], log_P_ref[representable], rtol=rtol, atol=rtol)


# -- 16-bit inputs --------------------------------------------------------------------
def sixteen_bit_dtype(kind):
    """np.float16, or bfloat16 from ml_dtypes (NumPy has none; the test skips without it)."""
    if kind == "bfloat16":
        return pytest.importorskip("ml_dtypes").bfloat16
    return np.float16


# The largest magnitude and the smallest subnormal put in front of a model.  bfloat16
# reaches 3.4e38, but values that large make float32 logits overflow for any
# coefficient above one, so 2**100 stands in for "huge" there.
SIXTEEN_BIT_EDGES = {"float16": (65504.0, 2.0**-24), "bfloat16": (2.0**100, 2.0**-133)}


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_16_bit_X_gives_exactly_the_model_of_its_float32_widening(backend, kind):
    skip_solver_repeat_in_simulator(backend)  # X is widened before any backend sees it
    wide16 = sixteen_bit_dtype(kind)
    X, y, _, _ = make_problem(8, 4, 3, np.float64, seed=21)
    X16 = (4 * X).astype(wide16)
    X32 = X16.astype(np.float32)  # exact: every 16-bit value is a float32
    # Two iterations keep the simulator quick; any difference in the data the backend
    # computes on would show from the first pass on.
    fits = [fit_quietly(SoftmaxClassifier(max_iter=2, backend=backend), X_, y) for X_ in (X16, X32)]
    for attr in ("coef_", "intercept_", "n_iter_", "loss_curve_"):
        np.testing.assert_array_equal(getattr(fits[0], attr), getattr(fits[1], attr), err_msg=attr)

    big, tiny = SIXTEEN_BIT_EDGES[kind]
    edges = np.array([[big, -big, tiny, 0.0], [-tiny, -0.0, big, 1.0]]).astype(wide16)
    assert np.all(edges.astype(np.float64) == [[big, -big, tiny, 0], [-tiny, 0, big, 1]])  # no rounding
    for method in ("decision_function", "predict_proba", "predict"):
        got, want = (getattr(fits[0], method)(E) for E in (edges, edges.astype(np.float32)))
        np.testing.assert_array_equal(got, want, err_msg=method)
    assert_probability_rows(fits[0].predict_proba(edges), np.float32, 3)


CUDA_MARKS = next(param.marks for param in BACKENDS if param.values == ("cuda",))


def on_cuda(*storages):
    """Cases of the CUDA backend's storage option, with conftest's CUDA marks."""
    return [pytest.param(storage, marks=CUDA_MARKS) for storage in storages]


def stored_and_widened(storage, X):
    from fastsoftmax.backends.cuda import CudaBackend

    backend = CudaBackend(storage=storage)
    return backend.to_host(backend._widen(backend.resident(X), np.float32))


@pytest.mark.parametrize("storage", on_cuda("float16"))
def test_float16_storage_keeps_its_whole_range_and_refuses_beyond(storage):
    # +-65504 and the smallest subnormal, 2**-24, are float16 values: stored exactly.
    edge = np.array([[65504, -65504, 2.0**-24, -(2.0**-24), 2.0**-14, 0]], np.float32)
    np.testing.assert_array_equal(stored_and_widened(storage, edge), edge)
    beyond = np.nextafter(np.float32(65504), np.float32(np.inf))
    for value in (beyond, -beyond):
        with pytest.raises(ValueError, match=r"beyond float16's range \(\+-65504\)"):
            stored_and_widened(storage, np.array([[0, value]], np.float32))


@pytest.mark.parametrize("storage", on_cuda("bfloat16"))
def test_bfloat16_storage_rounds_as_ml_dtypes_across_its_range(storage):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bfloat16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(0)
    top = float(ml_dtypes.finfo(bfloat16).max)  # 3.3895e38
    values = [top, -top, 3e38, 1e30, 1e-30, 2.0**-126, 1e-40, 1e-45, 0.0, -0.0]
    # Halfway between two bfloat16 values (8 significant bits): ties go to the even one.
    values += [1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8)]
    random = rng.standard_normal(200) * 10.0 ** rng.uniform(-37, 37, 200)
    X = np.concatenate([values, random]).astype(np.float32).reshape(-1, 1)
    # Bits, not values: the sign of zero and subnormals must match too.
    expected = X.astype(bfloat16).astype(np.float32)
    np.testing.assert_array_equal(stored_and_widened(storage, X).view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("storage", on_cuda("bfloat16"))
def test_bfloat16_storage_refuses_what_would_round_to_inf(storage):
    # Halfway from bfloat16's largest value to 2**128 rounds (to even) to inf.
    overflow = np.float32((2 - 2.0**-8) * 2.0**127)
    below = np.nextafter(overflow, np.float32(0))
    np.testing.assert_array_equal(
        stored_and_widened(storage, np.array([[below, -below]], np.float32)),
        [[3.3895313892515355e38, -3.3895313892515355e38]],
    )
    for value in (overflow, -overflow):
        with pytest.raises(ValueError, match="beyond bfloat16's range"):
            stored_and_widened(storage, np.array([[0, value]], np.float32))


@pytest.mark.parametrize("storage", on_cuda("float16", "bfloat16"))
def test_16_bit_storage_of_16_bit_X_changes_no_bit_of_the_objective(storage):
    from fastsoftmax.backends.cuda import CudaBackend

    wide16 = sixteen_bit_dtype(storage)
    X, y, W, b = make_problem(8, 4, 3, np.float32, seed=22)
    big, tiny = SIXTEEN_BIT_EDGES[storage]
    X[:, 0] = [big, -big, tiny, -tiny, big / 2, 0, 1, -1]
    X = X.astype(wide16).astype(np.float32)  # exactly representable: storage loses nothing
    W[0] = 1 / big  # the huge column makes logits of order one
    sw = np.ones(len(y), np.float32)
    results = []
    for backend in (CudaBackend(storage=storage), get_backend("cuda")):
        objective = SoftmaxObjective(backend, backend.resident(X), backend.asarray(y), backend.asarray(sw), 3)
        loss, grads = objective.loss_grad((backend.asarray(W), backend.asarray(b)))
        results.append((loss, *(backend.to_host(g) for g in grads)))
    (loss16, dW16, db16), (loss32, dW32, db32) = results
    assert math.isfinite(loss16) and loss16 == loss32
    np.testing.assert_array_equal(dW16, dW32)
    np.testing.assert_array_equal(db16, db32)


# -- features of extreme scale --------------------------------------------------------
# Column scales: every feature at 1e6, or features from 1e-6 to 1e6.
SCALES = {"1e6": np.full(5, 1e6), "1e-6..1e6": np.logspace(-6, 6, 5)}


@pytest.mark.parametrize("scales", SCALES.values(), ids=SCALES.keys())
def test_loss_and_grad_on_features_of_extreme_scale(backend, dtype, scales):
    n_samples, n_classes = (16, 3) if simulated(backend) else (203, 7)
    X, y, W, b = make_problem(n_samples, len(scales), n_classes, np.float64, seed=23)
    # X D and D^-1 W give the logits of X and W: a problem of unit scale in disguise.
    Xs, Ws, b = (X * scales).astype(dtype), (W / scales[:, None]).astype(dtype), b.astype(dtype)
    loss, dW, db = loss_and_grad(Xs, y, Ws, b, backend=backend)
    dW, db = backend.to_host(dW), backend.to_host(db)
    loss_ref, dW_ref, db_ref = reference_loss_grad(Xs, y, Ws, b)  # float64 on the same rounded inputs
    # Floating point is scale-invariant short of overflow and underflow (1e6 * 1e6 is
    # far from both), so the tolerance of test_objective.py for unit-scale data holds.
    # Row j of dW = X^T G scales with column j of X: compared in units of s_j.
    rtol = rtol_for(dtype, n_samples + len(scales) + n_classes)
    assert abs(loss - loss_ref) <= rtol * loss_ref
    assert max_rel_err(dW / scales[:, None], dW_ref / scales[:, None]) <= rtol
    assert max_rel_err(db, db_ref) <= rtol


def test_fit_on_features_of_scale_1e6_is_the_unit_fit_rescaled(backend):
    # Without an intercept, X' = s X and alpha' = s^2 alpha give the objective of X and
    # alpha in W' = W / s: the same optimum, the same probabilities.
    skip_solver_repeat_in_simulator(backend)
    s, alpha = 1e6, 0.1
    X, y, _, _ = make_problem(8, 4, 3, np.float64, seed=5)
    kwargs = dict(dtype="float64", fit_intercept=False)
    unit = SoftmaxClassifier(alpha=alpha, tol=1e-12, max_iter=1000, backend="cpu", **kwargs).fit(X, y)
    with np.errstate(all="raise"):
        scaled = SoftmaxClassifier(alpha=alpha * s**2, backend=backend, **kwargs).fit(X * s, y)
    assert np.all(np.isfinite(scaled.coef_))
    # The scaled fit stops where the objective's relative decrease falls below 64 eps
    # (float64); that close to the optimum, L-BFGS's remaining gap is of the order of
    # its last decrease, about 1e-14 for f ~ 0.5.  alpha-strong convexity in the unit
    # parametrisation then puts W within sqrt(2 * 1e-14 / alpha) ~ 5e-7 of the optimum,
    # and a probability moves by at most |x|_1 |dW|_max / 2 ~ 1e-6 (|x|_1 < 5 here).
    # 1e-5 leaves a margin; measured: 2e-8 for coef_, 1e-8 for probabilities.
    np.testing.assert_allclose(scaled.coef_ * s, unit.coef_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scaled.predict_proba(X * s), unit.predict_proba(X), rtol=0, atol=1e-5)


@pytest.mark.parametrize("scales", SCALES.values(), ids=SCALES.keys())
def test_fit_on_badly_scaled_features_stays_finite_and_descends(backend, dtype, scales):
    # How close such fits get to the optimum is test_scaling.py's subject (on the CPU);
    # here, on each backend, a few iterations must stay finite and descend, whatever
    # the first trial steps along weights of scale 1e6 do to the logits.
    skip_float64_in_simulator(backend, dtype)
    X, y, _, _ = make_problem(8, len(scales), 3, np.float64, seed=24)
    Xs = (X * scales).astype(dtype)
    with np.errstate(all="raise"):
        model = fit_quietly(SoftmaxClassifier(dtype=dtype.__name__, max_iter=5, backend=backend), Xs, y)
        P = model.predict_proba(Xs)
    assert np.all(np.isfinite(model.coef_)) and np.all(np.isfinite(model.intercept_))
    curve = np.array(model.loss_curve_)
    # Every accepted L-BFGS step decreases the objective (the Wolfe conditions), from
    # log(3) at zero.
    assert np.all(np.isfinite(curve)) and curve[0] < np.log(3)
    assert np.all(np.diff(curve) <= 0)
    assert_probability_rows(P, dtype, 3)


# -- perfectly separable data ---------------------------------------------------------
def separable_rows(dtype):
    """Nine rows, three classes, three to a cluster with margins of about 3."""
    angles = np.deg2rad([90, 210, 330])
    centres = 3 * np.c_[np.cos(angles), np.sin(angles)]
    offsets = np.array([[0, 0], [0.5, -0.3], [-0.4, 0.4]])
    X = (centres[:, None, :] + offsets[None]).reshape(-1, 2)
    return X.astype(dtype), np.repeat(np.arange(3), 3)


SOLVER_SETTINGS = {
    # tol=0: no gradient is small enough; L-BFGS runs until the dtype sees no decrease.
    "lbfgs": dict(solver="lbfgs", tol=0),
    # Full batches, a step that the margins allow: one launch per epoch in the simulator.
    "sgd": dict(solver="sgd", tol=0, learning_rate_init=1.0, batch_size=16, random_state=0),
}
SIMULATOR_ITERATIONS = {"lbfgs": 8, "sgd": 4}


@pytest.mark.parametrize("alpha", [0.0, 1e-10])
@pytest.mark.parametrize("solver", SOLVER_SETTINGS)
def test_separable_data_drive_the_loss_towards_zero_without_overflow(backend, dtype, solver, alpha):
    # The infimum 0 is not attained: without a penalty the weights grow for ever, and
    # logit gaps grow with them.  The loss must get there through finite values only.
    skip_float64_in_simulator(backend, dtype)
    if simulated(backend) and alpha:
        pytest.skip("alpha enters only host-side sums shared by both backends; alpha=0 covers the kernels")
    X, y = separable_rows(dtype)
    # Many iterations, except in the simulator (0.6 s each), where the bound is looser:
    # measured on the CPU in float32, L-BFGS is at 1.2e-3 after 8 iterations and SGD
    # at 1.9e-6 after 4.  Given 200, the fits stop by themselves after 18 to 46,
    # float32 below 3e-7 (it bottoms out near its eps, where d = 1 + exp(-gap) rounds
    # to 1 and the loss to 0), float64 below 2e-8.
    max_iter, bound = (SIMULATOR_ITERATIONS[solver], 5e-3) if simulated(backend) else (200, 1e-6)
    model = SoftmaxClassifier(alpha=alpha, dtype=dtype.__name__, max_iter=max_iter, backend=backend)
    model.set_params(**SOLVER_SETTINGS[solver])
    with np.errstate(all="raise"):
        fit_quietly(model, X, y)
        P = model.predict_proba(X)
    curve = np.array(model.loss_curve_)
    assert np.all(np.isfinite(curve)) and np.all(curve >= 0)
    assert curve[-1] < bound, curve
    if solver == "lbfgs":
        assert np.all(np.diff(curve) <= 0)  # the Wolfe conditions: every step decreases
    assert np.all(np.isfinite(model.coef_)) and np.all(np.isfinite(model.intercept_))
    np.testing.assert_array_equal(model.predict(X), y)
    assert_probability_rows(P, dtype, 3)


# -- a class with one sample ----------------------------------------------------------
def one_sample_class():
    """Eight rows: four of class 0, three of class 1, and one of class 2, apart from the rest."""
    X, _ = separable_rows(np.float64)
    X = np.vstack([X[:3], X[0] + [0.2, -0.2], X[3:7]])
    return X, np.array([0, 0, 0, 0, 1, 1, 1, 2])


def test_a_class_of_one_sample_is_fitted_and_predicted(backend):
    X, y = one_sample_class()
    models = {}
    for class_weight in (None, "balanced"):
        model = SoftmaxClassifier(class_weight=class_weight, max_iter=5, backend=backend)
        models[class_weight] = fit_quietly(model, X, y)
    for model in models.values():
        assert np.all(np.isfinite(model.coef_)) and np.all(np.isfinite(model.loss_curve_))
        np.testing.assert_array_equal(model.predict(X), y)
    P = {class_weight: model.predict_proba(X[-1:])[0, 2] for class_weight, model in models.items()}
    # "balanced" weighs the lone sample 8 / (3 * 1), the others 8 / 12 and 8 / 9: its
    # class gains probability on it (measured: 0.984 against 0.963).
    assert P["balanced"] > P[None]


# A class of one sample cannot be stratified: the hold-out is drawn without
# stratification, and the lone sample lands on either side.  Seed 0 keeps it for
# training, seed 1 holds it out (as the estimator draws its split today); both must work.
@pytest.mark.parametrize("seed", [0, 1], ids=["trained-on", "held-out"])
def test_early_stopping_with_a_class_of_one_sample(backend, seed):
    skip_solver_repeat_in_simulator(backend)  # the split is the estimator's; the fit above covers the kernels
    X, y = one_sample_class()
    model = SoftmaxClassifier(solver="sgd", early_stopping=True, validation_fraction=0.25, max_iter=5)
    model.set_params(random_state=seed, backend=backend)
    with np.errstate(all="raise"):
        fit_quietly(model, X, y)
        P = model.predict_proba(X)
    assert np.all(np.isfinite(model.coef_))
    assert len(model.validation_loss_curve_) == model.n_iter_
    assert np.all(np.isfinite(model.validation_loss_curve_))
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    assert_probability_rows(P, np.float32, 3)


# -- 10,000 classes -------------------------------------------------------------------
MANY_CLASSES = 10_000


def test_ten_thousand_classes_on_a_few_rows(backend):
    # Four rows: each row of the CUDA kernel is a block of 256 threads striding over
    # the 10,000 columns (about 0.7 s per row in the simulator).
    X, _, W, b = make_problem(4, 3, MANY_CLASSES, np.float32, seed=25)
    y = np.array([0, 1, MANY_CLASSES // 2, MANY_CLASSES - 1])
    loss, dW, db = loss_and_grad(X, y, W, b, backend=backend)
    loss_ref, dW_ref, db_ref = reference_loss_grad(X, y, W, b)
    rtol = rtol_for(np.float32, len(y) + X.shape[1] + MANY_CLASSES)
    assert abs(loss - loss_ref) <= rtol * loss_ref
    assert max_rel_err(backend.to_host(dW), dW_ref) <= rtol
    assert max_rel_err(backend.to_host(db), db_ref) <= rtol

    model = SoftmaxClassifier(solver="sgd", backend=backend)
    model.partial_fit(X, y, classes=np.arange(MANY_CLASSES))
    assert model.coef_.shape == (MANY_CLASSES, 3) and np.all(np.isfinite(model.coef_))
    # The epoch's loss is that of the zero model it started from: log(C).
    np.testing.assert_allclose(model.loss_curve_, [np.log(MANY_CLASSES)], rtol=rtol)
    P = model.predict_proba(X)
    assert P.shape == (len(y), MANY_CLASSES)
    assert_probability_rows(P, np.float32, MANY_CLASSES)


def test_ten_thousand_classes_of_two_rows_fit_in_bounded_memory(backend):
    if simulated(backend):
        pytest.skip("20,000 rows of 10,000 classes take hours in the simulator; see the test above")
    rng = np.random.default_rng(26)
    centres = rng.standard_normal((MANY_CLASSES, 8)).astype(np.float32)
    y = np.repeat(np.arange(MANY_CLASSES), 2)
    X = centres[y] + np.float32(0.1) * rng.standard_normal((len(y), 8), dtype=np.float32)
    model = SoftmaxClassifier(max_iter=3, backend=backend)
    tracemalloc.start()
    try:
        fit_quietly(model, X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The logits of all rows would be 20,000 x 10,000 float32 = 800 MB; passes work on
    # row blocks of a few MB instead.  NumPy's allocations are traced (not BLAS's or
    # Numba's buffers, of fixed or per-block size).  Measured on the CPU: 16 MB.
    assert peak < 100e6, f"{peak / 1e6:.0f} MB"
    curve = np.array(model.loss_curve_)
    assert np.all(np.isfinite(curve)) and curve[0] < np.log(MANY_CLASSES)
    assert np.all(np.diff(curve) <= 0)
    assert np.all(np.isfinite(model.coef_))
    assert_probability_rows(model.predict_proba(X[:50]), np.float32, MANY_CLASSES)
    # Predictions too: in blocks of logits of at most 64 MiB, not 800 MB at once.
    tracemalloc.start()
    try:
        labels = model.predict(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"{peak / 1e6:.0f} MB"
    np.testing.assert_array_equal(labels[:50], model.classes_[model.predict_proba(X[:50]).argmax(axis=1)])


# -- the functional API -------------------------------------------------------------
def test_the_penalty_of_huge_float32_weights_does_not_overflow(backend):
    # alpha/2 ||W||^2 with |W| = 1e20: the squares (1e40) exceed float32, the sum does not matter.
    X, y = np.eye(2, dtype=np.float32), np.array([1, 0])
    W = np.array([[1e20, 0.0], [0.0, 1e20]], np.float32)
    loss = loss_and_grad(X, y, W, np.zeros(2, np.float32), alpha=1e-4, backend=backend)[0]
    expected = 0.5 * 1e-4 * 2 * float(np.float32(1e20)) ** 2 + 1e20  # penalty + both rows' margin loss
    assert loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_loss_and_grad_widens_16_bit_X_as_fit_does(backend, kind):
    X, y, W, b = make_problem(6, 3, 4, np.float32, seed=30)
    narrow = X.astype(sixteen_bit_dtype(kind))
    got = loss_and_grad(narrow, y, W, b, backend=backend)
    want = loss_and_grad(narrow.astype(np.float32), y, W, b, backend=backend)
    assert got[0] == want[0]
    for a, c in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(backend.to_host(a), backend.to_host(c))
