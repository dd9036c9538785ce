"""fastsoftmax.dask on a real distributed.LocalCluster: two worker processes, one thread each.

- L-BFGS on Dask reaches the in-memory optimum (float64: coef_ within 1e-5 relative;
  measured 1e-13, since both run the same solver on the same sums).
- A worker killed mid-fit is survived through Dask's own machinery (the nanny
  restarts it, lost partitions are recomputed from their graph, tasks re-run), and
  the fit ends at the same optimum.
- Predictions are Dask arrays equal to the in-memory model's; DataFrames work; bad
  input gets the in-memory estimator's errors.
The minibatch solvers average parameters per epoch, so their fits do not equal
the in-memory ones: they are tested for descent and sanity only.
"""

import threading
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from fastsoftmax import SoftmaxClassifier  # noqa: E402
from fastsoftmax.dask import DaskObjective, DaskSoftmaxClassifier  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # dask_expr turns pandas' string columns into object arrays, and says so.
    pytest.mark.filterwarnings(
        "ignore:Dask currently has limited support for converting pandas extension dtypes"
    ),
]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def _problem(n=3000, d=12, c=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal((d, c)) + rng.gumbel(size=(n, c))).argmax(axis=1)
    return X, y


def _dask(X, y, rows=400):
    return da.from_array(X, chunks=(rows, X.shape[1])), da.from_array(y, chunks=rows)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_lbfgs_on_dask_reaches_the_in_memory_optimum(client, fit_intercept):
    X, y = _problem()
    w = np.random.RandomState(1).uniform(0.5, 2.0, len(y))
    params = dict(alpha=1e-3, dtype="float64", tol=1e-8, max_iter=200, fit_intercept=fit_intercept)
    local = SoftmaxClassifier(backend="cpu", **params).fit(X, y, sample_weight=w)
    Xd, yd = _dask(X, y)
    distributed_fit = DaskSoftmaxClassifier(**params).fit(Xd, yd, sample_weight=da.from_array(w, chunks=400))
    np.testing.assert_allclose(
        distributed_fit.coef_, local.coef_, rtol=1e-5, atol=1e-5 * np.abs(local.coef_).max()
    )
    np.testing.assert_allclose(distributed_fit.intercept_, local.intercept_, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(distributed_fit.classes_, local.classes_)


def test_string_labels_class_weights_and_dataframes(client):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, y = _problem(n=1200, d=5, c=3)
    labels = np.array(["ant", "bee", "cat"])[y]
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(5)])
    params = dict(alpha=1e-2, dtype="float64", tol=1e-8, class_weight="balanced")
    local = SoftmaxClassifier(backend="cpu", **params).fit(X, labels)
    Xd = dd.from_pandas(frame, npartitions=3)
    yd = dd.from_pandas(pd.Series(labels), npartitions=3)
    fitted = DaskSoftmaxClassifier(**params).fit(Xd, yd)
    np.testing.assert_array_equal(fitted.classes_, ["ant", "bee", "cat"])
    np.testing.assert_allclose(fitted.coef_, local.coef_, rtol=1e-5, atol=1e-7)


def test_predictions_are_dask_arrays_equal_to_the_in_memory_ones(client):
    X, y = _problem(n=1000)
    Xd, yd = _dask(X, y, rows=300)
    fitted = DaskSoftmaxClassifier(alpha=1e-2, dtype="float64").fit(Xd, yd)
    local = SoftmaxClassifier(backend="cpu")
    for name in ("classes_", "coef_", "intercept_", "n_features_in_"):
        setattr(local, name, getattr(fitted, name))
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        lazy = getattr(fitted, method)(Xd)
        assert isinstance(lazy, da.Array), method
        np.testing.assert_allclose(lazy.compute(), getattr(local, method)(X), rtol=1e-12, err_msg=method)
    assert fitted.score(Xd, yd) == pytest.approx(local.score(X, y))


def test_the_objective_is_evaluated_on_the_workers_in_a_tree(client):
    X, y = _problem(n=2000, d=6, c=3)
    Xd, yd = _dask(X, y, rows=100)  # 20 partitions: a reduction tree of depth 2
    objective = DaskObjective(Xd, yd, da.ones(len(y), chunks=100), 3, 1e-3, True, np.float64)
    W = np.random.RandomState(2).standard_normal((6, 3))
    b = np.array([0.1, -0.2, 0.3])
    keys = [str(key[0] if isinstance(key, tuple) else key) for key in objective.graph((W, b)).dask]
    # One task per partition, and a tree of adds: 20 -> 3 -> 1 with 8 partials per add.
    assert sum(key.startswith("partition_sums-") for key in keys) == 20
    assert sum(key.startswith("_add-") for key in keys) == 4
    loss, (dW, db) = objective.loss_grad((W, b))
    from fastsoftmax import loss_and_grad

    ref_loss, ref_dW, ref_db = loss_and_grad(X, y, W, b, alpha=1e-3, backend="cpu")
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(dW, ref_dW, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(db, ref_db, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_solvers_average_parameters_and_descend(client, solver):
    X, y = _problem(n=2400, d=8, c=3)
    Xd, yd = _dask(X, y, rows=600)
    fitted = DaskSoftmaxClassifier(
        solver=solver, dtype="float64", max_iter=15, batch_size=64, random_state=0, learning_rate_init=0.05
    ).fit(Xd, yd)
    optimum = SoftmaxClassifier(dtype="float64", backend="cpu").fit(X, y)
    assert fitted.n_iter_ == 15 and fitted.loss_curve_[-1] < fitted.loss_curve_[0]
    # Within a few percent of the optimum's accuracy after 15 averaged epochs.
    assert fitted.score(Xd, yd) > optimum.score(X, y) - 0.05


def test_a_worker_killed_mid_fit_is_survived(client, monkeypatch):
    X, y = _problem(n=6000, d=20, c=5)
    Xd, yd = _dask(X, y, rows=500)
    params = dict(alpha=1e-4, dtype="float64", tol=0.0, max_iter=60)
    reference = DaskSoftmaxClassifier(**params).fit(Xd, yd)
    assert reference.n_iter_ >= 10
    # Kill at the 5th gradient pass, when the partitions are persisted and the fit
    # has taken steps: the killed worker holds partitions, and passes are running.
    evaluations, fifth_pass, go_on = [0], threading.Event(), threading.Event()
    loss_grad = DaskObjective.loss_grad

    def counted(self, params):
        evaluations[0] += 1
        if evaluations[0] == 5:
            fifth_pass.set()
            go_on.wait(60)
        return loss_grad(self, params)

    monkeypatch.setattr(DaskObjective, "loss_grad", counted)
    outcome = {}

    def fit():
        try:
            outcome["model"] = DaskSoftmaxClassifier(**params).fit(Xd, yd)
        except BaseException as exc:  # reported below, in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=fit)
    thread.start()
    assert fifth_pass.wait(120), "the fit never reached its 5th pass"
    victim = next(iter(client.cluster.workers.values()))
    assert client.has_what()[victim.worker_address], "the worker to kill holds no partition"
    victim.process.process.kill()  # SIGKILL: its partitions and any running task are lost
    go_on.set()
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in outcome, repr(outcome.get("error"))
    assert outcome["model"].n_iter_ == reference.n_iter_
    np.testing.assert_allclose(outcome["model"].coef_, reference.coef_, rtol=1e-10, atol=1e-12)
    client.wait_for_workers(2, timeout=60)


def test_uneven_and_empty_partitions(client):
    # A filtered DataFrame has partitions of other sizes; labels must stay with their rows.
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, y = _problem(n=2000, d=5, c=3)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(5)]).assign(label=y)
    kept = frame[frame.f0 > -0.5]
    params = dict(alpha=1e-2, dtype="float64", tol=1e-8)
    local = SoftmaxClassifier(backend="cpu", **params).fit(kept.iloc[:, :5].to_numpy(), kept.label.to_numpy())
    filtered = dd.from_pandas(frame, npartitions=4)
    filtered = filtered[filtered.f0 > -0.5]
    fitted = DaskSoftmaxClassifier(**params).fit(filtered[[f"f{j}" for j in range(5)]], filtered["label"])
    np.testing.assert_allclose(fitted.coef_, local.coef_, rtol=1e-5, atol=1e-7)
    # Uneven chunks of a Dask array, one of them empty.
    Xd = da.from_array(X, chunks=((0, 1000, 500, 500), (5,)))
    yd = da.from_array(y, chunks=700)
    local = SoftmaxClassifier(backend="cpu", **params).fit(X, y)
    np.testing.assert_allclose(
        DaskSoftmaxClassifier(**params).fit(Xd, yd).coef_, local.coef_, rtol=1e-5, atol=1e-7
    )


def test_a_failed_fit_leaves_the_model_as_it_was(client):
    X, y = _dask(*_problem(n=800))
    fitted = DaskSoftmaxClassifier(alpha=1e-2).fit(X, y)
    coef = fitted.coef_.copy()
    with pytest.raises(ValueError, match="only one class"):
        fitted.fit(X[:, :5], y * 0)
    np.testing.assert_array_equal(fitted.coef_, coef)
    assert fitted.n_features_in_ == 12
    assert fitted.predict(X).compute().shape == (800,)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda X, y: (X.compute(), y), TypeError, "must be a dask array"),
        (lambda X, y: (X, y[:-1]), ValueError, "rows but y has"),
        (lambda X, y: (da.where(X > 2.5, np.nan, X), y), ValueError, "NaN or infinity"),
        (lambda X, y: (X, y * 0), ValueError, "only one class"),
        (lambda X, y: (X, y + 0.5 * (y == 1)), ValueError, "Unknown label type"),
        (lambda X, y: (X[:0], y[:0]), ValueError, "is empty"),
    ],
    ids=["numpy-X", "short-y", "nan", "one-class", "continuous-y", "empty"],
)
def test_bad_input_is_refused(client, change, error, message):
    X, y = _dask(*_problem(n=800))
    with pytest.raises(error, match=message):
        DaskSoftmaxClassifier().fit(*change(X, y))


def test_unsupported_options_are_refused(client):
    X, y = _dask(*_problem(n=400))
    with pytest.raises(ValueError, match="early_stopping=True is not supported"):
        DaskSoftmaxClassifier(solver="sgd", early_stopping=True).fit(X, y)
    assert not hasattr(DaskSoftmaxClassifier(solver="sgd"), "partial_fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="sample_weight must be non-negative"):
            DaskSoftmaxClassifier().fit(X, y, sample_weight=-da.ones(len(y), chunks=400))
    with pytest.raises(ValueError, match="class weights must be finite and non-negative"):
        DaskSoftmaxClassifier(class_weight={0: -1.0}).fit(X, y)
    with pytest.raises(ValueError, match="sums to zero"):
        DaskSoftmaxClassifier(class_weight=dict.fromkeys(range(4), 0.0)).fit(X, y)
