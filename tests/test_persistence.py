"""Saving and loading models as ``.npz`` files, and refusing files that are not models.

Covers the round trip (predictions, probabilities, hyper-parameters and fitted
attributes come back exactly, for every label kind and both dtypes), the file's
pickle-free layout, and hostile files: truncated, random, incomplete, mis-shaped,
mis-typed or tampered ones must raise :class:`fastsoftmax.ModelFileError` with a
message that says what is wrong, and never run code.

Out of scope: ``pickle`` of a live estimator (``test_estimator.py``).
"""

import io
import json
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from fastsoftmax import ModelFileError, SoftmaxClassifier, load_model, save_model

N_SAMPLES, N_FEATURES = 60, 5


@pytest.fixture(scope="module")
def data():
    """A small three-class problem: X of shape (60, 5), classes 0, 1, 2 in turn."""
    X = np.random.RandomState(0).standard_normal((N_SAMPLES, N_FEATURES))
    y = np.arange(N_SAMPLES) % 3
    X[y == 1] += 1.5
    return X, y


def _round_trip(clf, tmp_path):
    path = tmp_path / "model.npz"
    clf.save(path)
    return SoftmaxClassifier.load(path)


def _assert_same_model(loaded, clf, X):
    assert type(loaded) is SoftmaxClassifier
    assert loaded.get_params() == clf.get_params()
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.classes_.dtype == clf.classes_.dtype
    for attr in ("coef_", "intercept_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(clf, attr))
        assert getattr(loaded, attr).dtype == getattr(clf, attr).dtype
    assert loaded.n_features_in_ == clf.n_features_in_
    assert loaded.n_iter_ == clf.n_iter_
    assert loaded.loss_curve_ == clf.loss_curve_
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict_log_proba(X), clf.predict_log_proba(X))
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))


# -- round trip ---------------------------------------------------------------------------
LABELS = {
    "int": np.array([0, 1, 2]),
    "int-with-gaps": np.array([3, 7, 100]),
    "int8": np.array([-1, 0, 1], dtype=np.int8),
    "str": np.array(["cat", "dog", "emu"]),
    "object-str": np.array(["cat", "dog", "emu"], dtype=object),
    "binary-str": np.array(["no", "yes", "yes"]),
}


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("labels", LABELS.values(), ids=LABELS.keys())
def test_round_trip(data, tmp_path, labels, dtype_name):
    X, y = data
    clf = SoftmaxClassifier(alpha=1e-3, dtype=dtype_name).fit(X, labels[y])
    loaded = _round_trip(clf, tmp_path)
    _assert_same_model(loaded, clf, X)
    assert not hasattr(loaded, "feature_names_in_")


def test_round_trip_float_labels(data, tmp_path):
    # 16777217 is the first integer float32 cannot hold: a float32 detour would show.
    X, y = data
    labels = np.array([1.0, 2.0, 16777217.0])
    clf = SoftmaxClassifier(dtype="float64").fit(X, labels[y])
    _assert_same_model(_round_trip(clf, tmp_path), clf, X)


def test_round_trip_bool_labels(data, tmp_path):
    X, y = data
    clf = SoftmaxClassifier(dtype="float64").fit(X, y == 1)
    _assert_same_model(_round_trip(clf, tmp_path), clf, X)


def test_round_trip_keeps_feature_names(data, tmp_path):
    X, y = data
    columns = [f"f{i}" for i in range(N_FEATURES)]
    clf = SoftmaxClassifier(dtype="float64").fit(pd.DataFrame(X, columns=columns), y)
    loaded = _round_trip(clf, tmp_path)
    np.testing.assert_array_equal(loaded.feature_names_in_, columns)
    assert loaded.feature_names_in_.dtype == object
    frame = pd.DataFrame(X, columns=columns)
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        loaded.predict(frame[columns[::-1]])


@pytest.mark.parametrize(
    "params",
    [
        dict(
            solver="sgd", learning_rate="cosine", momentum=0.5, nesterov=False, batch_size=16, random_state=3
        ),
        dict(solver="adam", beta_1=0.8, early_stopping=True, validation_fraction=0.25, n_iter_no_change=3),
        dict(fit_intercept=False, class_weight={0: 2.0, 2: 0.5}, tol=1e-6, warm_start=True),
        dict(class_weight="balanced", backend="cpu", verbose=0, shuffle=False),
    ],
    ids=["sgd", "adam-early-stopping", "dict-class-weight", "balanced"],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_round_trip_keeps_hyper_parameters(data, tmp_path, params):
    X, y = data
    clf = SoftmaxClassifier(dtype="float64", max_iter=20, **params).fit(X, y)
    _assert_same_model(_round_trip(clf, tmp_path), clf, X)


def test_round_trip_class_weight_with_string_labels(data, tmp_path):
    X, y = data
    clf = SoftmaxClassifier(class_weight={"dog": 3.0}).fit(X, np.array(["cat", "dog", "emu"])[y])
    loaded = _round_trip(clf, tmp_path)
    assert loaded.class_weight == {"dog": 3.0}
    _assert_same_model(loaded, clf, X)


def test_loaded_model_refits_like_the_original(data, tmp_path):
    X, y = data
    clf = SoftmaxClassifier(dtype="float64", alpha=1e-2).fit(X, y)
    refit = _round_trip(clf, tmp_path).fit(X[::-1], y[::-1])
    np.testing.assert_allclose(refit.coef_, clf.fit(X[::-1], y[::-1]).coef_)


def test_loaded_minibatch_model_continues_with_partial_fit(data, tmp_path):
    X, y = data
    clf = SoftmaxClassifier(solver="sgd", random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    loaded = _round_trip(clf, tmp_path)
    loaded.partial_fit(X, y)
    assert loaded.n_iter_ == 2


def test_module_functions_match_methods(data, tmp_path):
    X, y = data
    clf = SoftmaxClassifier().fit(X, y)
    save_model(clf, tmp_path / "a.npz")
    _assert_same_model(load_model(tmp_path / "a.npz"), clf, X)


def test_save_appends_npz_suffix(data, tmp_path):
    X, y = data
    clf = SoftmaxClassifier().fit(X, y)
    clf.save(str(tmp_path / "model"))
    assert (tmp_path / "model.npz").exists()
    _assert_same_model(SoftmaxClassifier.load(str(tmp_path / "model.npz")), clf, X)


def test_round_trip_through_file_object(data):
    X, y = data
    clf = SoftmaxClassifier().fit(X, y)
    buffer = io.BytesIO()
    clf.save(buffer)
    buffer.seek(0)
    _assert_same_model(SoftmaxClassifier.load(buffer), clf, X)


# -- file layout -----------------------------------------------------------------------------
def test_file_is_plain_npz_without_pickle(data, tmp_path):
    X, y = data
    path = tmp_path / "model.npz"
    SoftmaxClassifier(dtype="float64").fit(X, np.array(["cat", "dog", "emu"], dtype=object)[y]).save(path)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["classes", "coef", "intercept", "metadata"]
        assert archive["coef"].shape == (3, N_FEATURES) and archive["coef"].dtype == np.float64
        assert archive["intercept"].shape == (3,)
        assert archive["classes"].dtype.kind == "U"
        metadata = json.loads(str(archive["metadata"]))
    assert metadata["format"] == "fastsoftmax-model"
    assert metadata["format_version"] == 1
    assert metadata["params"]["dtype"] == "float64"
    assert metadata["n_features_in"] == N_FEATURES


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(NotFittedError):
        SoftmaxClassifier().save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


def test_labels_that_need_pickle_are_refused_on_save(data, tmp_path):
    X, y = data
    clf = SoftmaxClassifier().fit(X, y)
    tuples = np.empty(3, dtype=object)
    tuples[:] = [(0, "a"), (1, "b"), (2, "c")]
    clf.classes_ = tuples
    with pytest.raises(TypeError, match="class labels of type tuple cannot be stored without pickle"):
        clf.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


def test_datetime_labels_are_refused_on_save(data, tmp_path):
    X, y = data
    days = np.array(["2024-01-01", "2024-06-01", "2025-01-01"], dtype="datetime64[D]")
    clf = SoftmaxClassifier().fit(X, days[y])
    with pytest.raises(TypeError, match="class labels of type datetime64 cannot be stored without pickle"):
        clf.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


# -- hostile files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    """A valid model file: its bytes, its arrays and its metadata dict."""
    X, y = data
    path = tmp_path_factory.mktemp("saved") / "model.npz"
    SoftmaxClassifier(dtype="float64").fit(X, y).save(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return path.read_bytes(), arrays, json.loads(str(arrays["metadata"]))


def _write(tmp_path, arrays, **changes):
    """Write ``arrays`` with ``changes`` applied (None drops an entry); return the path."""
    contents = {**arrays, **changes}
    path = tmp_path / "hostile.npz"
    np.savez(path, **{name: value for name, value in contents.items() if value is not None})
    return path


def _metadata(metadata, **changes):
    """The metadata array with top-level keys or (via params=) hyper-parameters changed."""
    changed = json.loads(json.dumps(metadata))
    params = changes.pop("params", {})
    changed.update(changes)
    changed["params"].update(params)
    return np.array(json.dumps(changed))


def _assert_refused(path, message):
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)
    assert "is not a valid fastsoftmax model" in str(info.value)


def test_nonexistent_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(saved, tmp_path, fraction):
    content, _, _ = saved
    path = tmp_path / "truncated.npz"
    path.write_bytes(content[: int(len(content) * fraction)])
    _assert_refused(path, r"cannot be read as \.npz")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.RandomState(0).bytes(4096))
    _assert_refused(path, r"cannot be read as \.npz")


def test_corrupted_byte(saved, tmp_path):
    content, _, _ = saved
    corrupted = bytearray(content)
    corrupted[len(content) // 3] ^= 0xFF
    path = tmp_path / "corrupted.npz"
    path.write_bytes(bytes(corrupted))
    _assert_refused(path, r"cannot be read as \.npz")


def test_directory(tmp_path):
    _assert_refused(tmp_path, r"cannot be read as \.npz")


def test_npy_file_instead_of_npz(tmp_path):
    path = tmp_path / "coef.npy"
    np.save(path, np.zeros((3, N_FEATURES)))
    _assert_refused(path, "npz")


@pytest.mark.parametrize("name", ["coef", "intercept", "classes", "metadata"])
def test_missing_entry(saved, tmp_path, name):
    _, arrays, _ = saved
    _assert_refused(_write(tmp_path, arrays, **{name: None}), rf"missing entries \['{name}'\]")


class _Canary:
    """Unpickling this runs code: a loader that unpickles sets ``sys._fastsoftmax_canary``."""

    def __reduce__(self):
        return exec, ("import sys; sys._fastsoftmax_canary = True",)


def test_object_array_is_refused_without_unpickling(saved, tmp_path):
    _, arrays, _ = saved
    coef = np.empty(arrays["coef"].shape, dtype=object)
    coef[...] = 0.0
    coef[0, 0] = _Canary()
    path = _write(tmp_path, arrays, coef=coef)  # np.savez pickles object arrays
    _assert_refused(path, r"array 'coef': holds Python objects, which are never unpickled")
    assert not hasattr(sys, "_fastsoftmax_canary")


HOSTILE_ARRAYS = {
    "coef-1d": (
        lambda a: {"coef": a["coef"].ravel()},
        r"coef must be a 2-D float32/float64 array, got float64 of shape \(15,\)",
    ),
    "coef-int": (
        lambda a: {"coef": a["coef"].astype(np.int64)},
        "coef must be a 2-D float32/float64 array, got int64",
    ),
    "coef-float16": (lambda a: {"coef": a["coef"].astype(np.float16)}, "got float16"),
    "coef-complex": (lambda a: {"coef": a["coef"].astype(complex)}, "got complex128"),
    "coef-str": (lambda a: {"coef": a["coef"].astype(str)}, "coef must be a 2-D float32/float64 array"),
    "coef-columns": (lambda a: {"coef": a["coef"][:, :3]}, "n_features_in 5 does not match coef's 3 columns"),
    "coef-nan": (
        lambda a: {"coef": np.where(np.eye(3, N_FEATURES) > 0, np.nan, a["coef"])},
        "coef or intercept holds NaN or inf",
    ),
    "coef-float32": (
        lambda a: {"coef": a["coef"].astype(np.float32)},
        r"intercept must be float32 of shape \(3,\), got float64",
    ),
    "intercept-length": (
        lambda a: {"intercept": a["intercept"][:2]},
        r"intercept must be float64 of shape \(3,\), got float64 \(2,\)",
    ),
    "intercept-inf": (lambda a: {"intercept": np.r_[np.inf, 0.0, 0.0]}, "coef or intercept holds NaN or inf"),
    "intercept-int": (lambda a: {"intercept": np.zeros(3, dtype=int)}, "intercept must be float64"),
    "classes-short": (
        lambda a: {"classes": a["classes"][:2]},
        r"classes must have 3 >= 2 entries, got shape \(2,\)",
    ),
    "classes-2d": (
        lambda a: {"classes": a["classes"][:, None]},
        r"classes must have 3 >= 2 entries, got shape \(3, 1\)",
    ),
    "classes-str": (
        lambda a: {"classes": np.array(["a", "b", "c"])},
        "classes dtype <U1 does not match class_kind 'int'",
    ),
    "classes-float": (
        lambda a: {"classes": np.array([0.0, 1.0, 2.0])},
        "classes dtype float64 does not match class_kind 'int'",
    ),
    "one-class": (
        lambda a: {"coef": a["coef"][:1], "intercept": a["intercept"][:1], "classes": a["classes"][:1]},
        "classes must have 1 >= 2 entries",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_ARRAYS, ids=HOSTILE_ARRAYS)
def test_hostile_arrays(saved, tmp_path, case):
    _, arrays, _ = saved
    change, message = HOSTILE_ARRAYS[case]
    _assert_refused(_write(tmp_path, arrays, **change(arrays)), message)


@pytest.mark.parametrize("classes", [[0, 0, 1], [2, 1, 0]], ids=["duplicate", "unsorted"])
def test_classes_must_be_sorted_and_unique(saved, tmp_path, classes):
    _, arrays, _ = saved
    _assert_refused(_write(tmp_path, arrays, classes=np.array(classes)), "classes")


HOSTILE_METADATA = {
    "not-json": (lambda m: np.array("{not json"), "metadata is not JSON"),
    "json-list": (lambda m: np.array("[1, 2]"), "metadata does not name the fastsoftmax-model format"),
    "number": (lambda m: np.array(5), "metadata does not name the fastsoftmax-model format"),
    "array-of-strings": (lambda m: np.array(["a", "b"]), "metadata is not JSON"),
    "other-format": (
        lambda m: _metadata(m, format="sklearn-model"),
        "metadata does not name the fastsoftmax-model format",
    ),
    "format-version-2": (lambda m: _metadata(m, format_version=2), "format_version 2; this version reads 1"),
    "format-version-str": (
        lambda m: _metadata(m, format_version="1"),
        "format_version '1'; this version reads 1",
    ),
    "format-version-missing": (lambda m: _metadata(m, format_version=None), "format_version None"),
    "unknown-parameter": (
        lambda m: _metadata(m, params={"gamma": 0.1}),
        r"unknown hyper-parameters \['gamma'\]",
    ),
    "alpha-negative": (
        lambda m: _metadata(m, params={"alpha": -1}),
        r"invalid hyper-parameters \(.*alpha=-1 is not valid",
    ),
    "alpha-null": (lambda m: _metadata(m, params={"alpha": None}), "alpha=None is not valid"),
    "solver-unknown": (lambda m: _metadata(m, params={"solver": "newton"}), "solver='newton' is not valid"),
    "max-iter-float": (lambda m: _metadata(m, params={"max_iter": 2.5}), "max_iter=2.5 is not valid"),
    "class-weight-str": (
        lambda m: _metadata(m, params={"class_weight": "weird"}),
        "class_weight='weird' is not valid",
    ),
    "dtype-unknown": (lambda m: _metadata(m, params={"dtype": "float16"}), "dtype='float16' is not valid"),
    "dtype-mismatch": (
        lambda m: _metadata(m, params={"dtype": "float32"}),
        "params say dtype 'float32' but coef is float64",
    ),
    "params-null": (lambda m: np.array(json.dumps({**m, "params": None})), "params missing from metadata"),
    "n-features-mismatch": (
        lambda m: _metadata(m, n_features_in=7),
        "n_features_in 7 does not match coef's 5 columns",
    ),
    "feature-names-short": (
        lambda m: _metadata(m, feature_names_in=["a", "b"]),
        "feature_names_in must be a list of n_features strings",
    ),
    "feature-names-int": (
        lambda m: _metadata(m, feature_names_in=list(range(N_FEATURES))),
        "feature_names_in must be a list",
    ),
    "class-kind-str": (
        lambda m: _metadata(m, class_kind="str"),
        "classes dtype int64 does not match class_kind 'str'",
    ),
    "class-kind-unknown": (lambda m: _metadata(m, class_kind="tuple"), "does not match class_kind 'tuple'"),
}


@pytest.mark.parametrize("case", HOSTILE_METADATA, ids=HOSTILE_METADATA)
def test_hostile_metadata(saved, tmp_path, case):
    _, arrays, metadata = saved
    change, message = HOSTILE_METADATA[case]
    _assert_refused(_write(tmp_path, arrays, metadata=change(metadata)), message)


HOSTILE_METADATA_UNCHECKED = {
    "n-iter-str": lambda m: _metadata(m, n_iter="many"),
    "n-iter-null": lambda m: _metadata(m, n_iter=None),
    "n-iter-negative": lambda m: _metadata(m, n_iter=-5),
    "loss-curve-str": lambda m: _metadata(m, loss_curve="x"),
    "loss-curve-nan": lambda m: _metadata(m, loss_curve=[float("nan")]),
    "class-weight-triples": lambda m: _metadata(m, params={"class_weight": [[0, 1.0, 3]]}),
    "class-weight-numbers": lambda m: _metadata(m, params={"class_weight": [5]}),
}


@pytest.mark.parametrize("case", HOSTILE_METADATA_UNCHECKED, ids=HOSTILE_METADATA_UNCHECKED)
def test_hostile_metadata_fields_are_rejected(saved, tmp_path, case):
    _, arrays, metadata = saved
    path = _write(tmp_path, arrays, metadata=HOSTILE_METADATA_UNCHECKED[case](metadata))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_extra_entries_are_ignored(saved, tmp_path, data):
    # Room for later format versions to add arrays that this one does not read.
    X, _ = data
    _, arrays, _ = saved
    loaded = load_model(_write(tmp_path, arrays, comment=np.array("hello")))
    assert loaded.predict(X).shape == (N_SAMPLES,)
