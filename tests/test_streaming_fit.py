"""Fitting and predicting on data sources streamed chunk by chunk, on every backend.

A streamed full-batch pass sums the same rows as an in-memory pass, in other
chunks: in float64 the two L-BFGS fits agree to ~1e-9 relative (rounding of sums
in another order, amplified by ~20 iterations of a well-conditioned problem).
Minibatch solvers visit chunks in a shuffled order and shuffle rows within each
chunk, so their fits equal themselves for a seed, not the in-memory fit.

Bad data in any chunk stops the fit with an error naming the file and the chunk,
and the model keeps the state it had before the call.
"""

import functools
import re

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import fastsoftmax.progress
from fastsoftmax import SoftmaxClassifier, get_backend
from fastsoftmax.backends import cuda_unavailable_reason
from fastsoftmax.sources import ArraySource, DataSource, DataSourceError, NpySource
from fastsoftmax.streaming import SourceFeatures
from tests.conftest import BACKENDS

N_SAMPLES, N_FEATURES, N_CLASSES = 600, 9, 4


def problem(seed=0, n_samples=N_SAMPLES):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, N_FEATURES))
    W = rng.standard_normal((N_FEATURES, N_CLASSES))
    y = (X @ W + rng.gumbel(size=(n_samples, N_CLASSES))).argmax(axis=1)
    return X, y, rng.uniform(0.5, 2.0, n_samples)


def optimum_score(X, y):
    """Training accuracy at the L-BFGS optimum: what a minibatch fit should come close to."""
    return SoftmaxClassifier(alpha=1e-4, dtype="float64").fit(X, y).score(X, y)


@pytest.fixture
def npy_problem(tmp_path):
    X, y, sw = problem()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "X.npy", tmp_path / "y.npy", X, y, sw


@pytest.mark.parametrize("backend", BACKENDS)
def test_lbfgs_on_a_source_takes_the_in_memory_steps(backend, tmp_path):
    # Few rows: the CUDA simulator runs each GPU thread in Python.  Three L-BFGS
    # iterations (tol=0) on both, so that the two fits must take the same steps.
    X, y, sw = problem(n_samples=30)
    np.save(tmp_path / "X.npy", X)
    params = dict(alpha=1e-2, dtype="float64", tol=0.0, max_iter=3, backend=backend)
    with pytest.warns(Warning, match="did not converge"):
        in_memory = SoftmaxClassifier(**params).fit(X, y, sample_weight=sw)
    with pytest.warns(Warning, match="did not converge"):
        streamed = SoftmaxClassifier(**params).fit(
            NpySource(tmp_path / "X.npy", y=y, sample_weight=sw, chunk_rows=17)
        )
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(streamed.intercept_, in_memory.intercept_, rtol=1e-10, atol=1e-13)
    assert streamed.n_features_in_ == N_FEATURES


def test_lbfgs_on_a_source_reaches_the_in_memory_optimum(npy_problem):
    x_path, y_path, X, y, sw = npy_problem
    params = dict(alpha=1e-2, dtype="float64", tol=1e-8)
    in_memory = SoftmaxClassifier(**params).fit(X, y, sample_weight=sw)
    streamed = SoftmaxClassifier(**params).fit(NpySource(x_path, y=y_path, sample_weight=sw, chunk_rows=97))
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed.intercept_, in_memory.intercept_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predictions_on_a_source_equal_those_on_arrays(backend, tmp_path):
    X, y, _ = problem(n_samples=45)
    np.save(tmp_path / "X.npy", X)
    model = (
        SoftmaxClassifier(alpha=1e-2, dtype="float64", backend="cpu").fit(X, y).set_params(backend=backend)
    )
    source = NpySource(tmp_path / "X.npy", chunk_rows=16)
    np.testing.assert_array_equal(model.predict(source), model.predict(X))
    np.testing.assert_allclose(
        model.predict_proba(str(tmp_path / "X.npy")), model.predict_proba(X), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        model.decision_function(source), model.decision_function(X), rtol=1e-12, atol=1e-12
    )


def test_a_memmap_is_streamed_and_gives_the_in_memory_fit(npy_problem):
    x_path, _, X, y, _ = npy_problem
    params = dict(alpha=1e-2, dtype="float64", tol=1e-8)
    mapped = SoftmaxClassifier(**params).fit(np.load(x_path, mmap_mode="r"), y)
    np.testing.assert_allclose(
        mapped.coef_, SoftmaxClassifier(**params).fit(X, y).coef_, rtol=1e-9, atol=1e-12
    )


class RecordingSource(ArraySource):
    """An ArraySource that logs the order in which its chunks are read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = []

    def _read_features(self, index):
        self.reads.append(index)
        return super()._read_features(index)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_epochs_shuffle_chunks_reproducibly(solver):
    X, y, _ = problem(1)
    params = dict(solver=solver, max_iter=3, random_state=4, n_iter_no_change=100, learning_rate_init=0.05)

    def fit(seed=4):
        source = RecordingSource(X, y, chunk_rows=50)
        with pytest.warns(Warning, match="did not converge"):
            model = SoftmaxClassifier(**{**params, "random_state": seed}).fit(source)
        return model, source.reads

    first, reads = fit()
    again, reads_again = fit()
    np.testing.assert_array_equal(first.coef_, again.coef_)
    assert reads == reads_again
    epochs = [reads[k * 12 : (k + 1) * 12] for k in range(3)]
    assert all(sorted(epoch) == list(range(12)) for epoch in epochs)  # every chunk once per epoch
    assert epochs[0] != list(range(12)) and epochs[0] != epochs[1]  # in a shuffled order
    other, _ = fit(seed=5)
    assert not np.array_equal(first.coef_, other.coef_)
    assert first.score(X, y) > optimum_score(X, y) - 0.05


def test_partial_fit_and_early_stopping_on_a_source():
    X, y, _ = problem(2)
    model = SoftmaxClassifier(solver="sgd", random_state=0)
    for _ in range(3):
        model.partial_fit(ArraySource(X, y, chunk_rows=64), classes=np.arange(N_CLASSES))
    assert model.n_iter_ == 3 and model.score(X, y) > optimum_score(X, y) - 0.05

    stopped = SoftmaxClassifier(solver="adam", early_stopping=True, random_state=0, max_iter=200)
    stopped.fit(ArraySource(X, y, chunk_rows=64))
    assert len(stopped.validation_loss_curve_) == stopped.n_iter_ < 200
    assert stopped.score(X, y) > optimum_score(X, y) - 0.05


def test_string_labels_and_class_weights_from_a_source():
    X, y, _ = problem(3)
    labels = np.array(["ant", "bee", "cat", "dog"])[y]
    params = dict(alpha=1e-2, dtype="float64", tol=1e-8, class_weight="balanced")
    streamed = SoftmaxClassifier(**params).fit(ArraySource(X, labels, chunk_rows=100))
    in_memory = SoftmaxClassifier(**params).fit(X, labels)
    np.testing.assert_array_equal(streamed.classes_, ["ant", "bee", "cat", "dog"])
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-9, atol=1e-12)


# -- bad input: clear errors, model untouched -----------------------------------------
@pytest.fixture
def fitted(npy_problem):
    _, _, X, y, _ = npy_problem
    model = SoftmaxClassifier(alpha=1e-2).fit(X, y)
    return model, model.coef_.copy()


def assert_untouched(model, coef):
    np.testing.assert_array_equal(model.coef_, coef)


def test_nan_in_a_later_chunk_names_the_file_and_chunk(tmp_path, fitted):
    model, coef = fitted
    X, y, _ = problem()
    X[450, 3] = np.nan
    np.save(tmp_path / "bad.npy", X)
    with pytest.raises(
        DataSourceError,
        match=r"bad\.npy, chunk 4 \(rows 400 to 499\): features contain NaN \(first in row 450\)",
    ):
        model.fit(NpySource(tmp_path / "bad.npy", y=y, chunk_rows=100))
    assert_untouched(model, coef)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_an_error_after_some_iterations_leaves_the_model_as_it_was(solver, fitted):
    model, coef = fitted
    X, y, _ = problem()

    class FailsLate(ArraySource):
        reads = 0

        def _read_features(self, index):
            FailsLate.reads += 1
            if FailsLate.reads > 9:  # in the second pass (six chunks per pass)
                raise OSError("device not ready")
            return super()._read_features(index)

    model.set_params(solver=solver, warm_start=True, alpha=0.5)
    with pytest.raises(
        DataSourceError, match=r"late, chunk \d+ \(rows .*\): cannot read the features: device not ready"
    ):
        model.fit(FailsLate(X, y, chunk_rows=100, name="late"))
    assert_untouched(model, coef)
    assert model.solver == solver and model.warm_start


def test_missing_truncated_and_unlabelled_files(tmp_path, fitted):
    model, coef = fitted
    X, y, _ = problem()
    with pytest.raises(FileNotFoundError, match="nothere.npy"):
        model.fit(str(tmp_path / "nothere.npy"), y)
    np.save(tmp_path / "X.npy", X)
    with pytest.raises(DataSourceError, match=r"X\.npy: holds no labels"):
        model.fit(str(tmp_path / "X.npy"))
    raw = (tmp_path / "X.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataSourceError, match=r"cut\.npy: the file is truncated"):
        model.fit(str(tmp_path / "cut.npy"), y)
    (tmp_path / "junk.npy").write_bytes(b"\x00not an npy file at all" * 10)
    with pytest.raises(DataSourceError, match=r"junk\.npy: not a valid \.npy file"):
        model.fit(str(tmp_path / "junk.npy"), y)
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object))
    with pytest.raises(DataSourceError, match="never unpickled"):
        model.fit(str(tmp_path / "objects.npy"), y)
    with pytest.raises(DataSourceError, match=r"labels have shape \(599,\)"):
        model.fit(str(tmp_path / "X.npy"), y[:-1])
    with pytest.raises(ValueError, match="cannot tell the format"):
        model.fit(str(tmp_path / "X.bin"), y)
    assert_untouched(model, coef)


def test_missing_labels_and_bad_weights_name_the_chunk(fitted):
    model, coef = fitted
    X, y, _ = problem()
    labels = y.astype(float)
    labels[333] = np.nan
    with pytest.raises(
        DataSourceError, match=r"chunk 3 \(rows 300 to 399\): labels are missing \(first in row 333\)"
    ):
        model.fit(ArraySource(X, labels, chunk_rows=100))
    weights = np.ones(len(y))
    weights[120] = -1
    with pytest.raises(DataSourceError, match=r"chunk 1 .*sample weight -1.0 in row 120"):
        model.fit(ArraySource(X, y, weights, chunk_rows=100))
    assert_untouched(model, coef)


def test_a_source_whose_chunks_change_width_is_refused(fitted):
    model, coef = fitted
    X, y, _ = problem()

    class Ragged(ArraySource):
        def _read_features(self, index):
            chunk = super()._read_features(index)
            return chunk[:, :-1] if index == 2 else chunk

    with pytest.raises(DataSourceError, match=r"chunk 2 .*shape \(100, 8\); expected \(100, 9\)"):
        model.fit(Ragged(X, y, chunk_rows=100, name="ragged"))
    with pytest.raises(ValueError, match="has 8 features, but SoftmaxClassifier is expecting 9"):
        model.predict(ArraySource(X[:, :-1]))
    assert_untouched(model, coef)


def test_verbose_shows_rows_and_bytes_per_second(capsys, monkeypatch, npy_problem):
    x_path, y_path, *_ = npy_problem
    # Redraw on every update: these passes end before tqdm's default 0.1 s redraw interval.
    monkeypatch.setattr(
        fastsoftmax.progress, "tqdm", functools.partial(fastsoftmax.progress.tqdm, mininterval=0)
    )
    with pytest.warns(ConvergenceWarning):  # two iterations are all the test needs
        SoftmaxClassifier(verbose=1, max_iter=2, tol=0).fit(NpySource(x_path, y=y_path, chunk_rows=100))
    err = capsys.readouterr().err
    assert re.search(r"rows/s, [0-9.]+ [kMG]?B/s", err), err


def test_a_source_is_a_data_source():
    assert isinstance(ArraySource(np.ones((2, 2))), DataSource)


def test_minibatches_do_not_depend_on_how_the_backend_sizes_its_pieces(monkeypatch):
    # On the GPU, pieces are sized from free device memory; batches must not be.  A
    # batch cut into pieces sums in another order (float64 rounding, ~1e-16 per step);
    # different batches would move the coefficients by ~1e-2.
    X, y, _ = problem(5)
    params = dict(solver="sgd", max_iter=2, random_state=1, n_iter_no_change=100, dtype="float64")
    with pytest.warns(Warning, match="did not converge"):
        reference = SoftmaxClassifier(**params).fit(ArraySource(X, y, chunk_rows=64))
    backend = get_backend("cpu")
    monkeypatch.setattr(type(backend), "max_chunk_rows", lambda self, X, n_classes: 7)
    with pytest.warns(Warning, match="did not converge"):
        small_pieces = SoftmaxClassifier(**params).fit(ArraySource(X, y, chunk_rows=64))
    np.testing.assert_allclose(small_pieces.coef_, reference.coef_, rtol=1e-10, atol=1e-13)


def test_predicting_on_a_source_with_other_column_names_is_refused():
    X, y, _ = problem(6)

    class Named(ArraySource):
        def __init__(self, X, y=None, names=()):
            super().__init__(X, y, chunk_rows=100)
            self.feature_names = np.array(names)

    names = [f"f{j}" for j in range(N_FEATURES)]
    model = SoftmaxClassifier().fit(Named(X, y, names))
    np.testing.assert_array_equal(model.feature_names_in_, names)
    with pytest.raises(ValueError, match=r"column 0 is 'f8' but the model was fitted with 'f0' there"):
        model.predict(Named(X, names=names[::-1]))
    assert model.predict(Named(X, names=names)).shape == (len(y),)


@pytest.mark.cuda
@pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or "")
def test_a_sparse_source_is_budgeted_by_its_stored_values_on_the_cuda_backend():
    import scipy.sparse as sp

    X = sp.random(1000, 200_000, density=1e-4, format="csr", dtype=np.float64, random_state=0)
    backend = get_backend("cuda")
    rows = backend.max_chunk_rows(SourceFeatures(ArraySource(X), np.float64), 3)
    dense_rows = backend.max_chunk_rows(SourceFeatures(ArraySource(np.zeros((10, 200_000))), np.float64), 3)
    assert rows > 1000 * dense_rows  # 20 stored values a row, not 200,000
