"""The ``fastsoftmax`` command line and the data files it reads.

Runs :func:`fastsoftmax.cli.main` in-process and checks what it prints, writes and
returns, for every data format the command takes.  Out of scope: the estimator's
numerics and the sources' own checks (their tests), and speed.
"""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file, load_digits
from sklearn.model_selection import train_test_split

from fastsoftmax import SoftmaxClassifier, __version__, load_checkpoint
from fastsoftmax.cli import _warm_up, main
from fastsoftmax.sources import NpySource

REPORT_FIELDS = (
    "data",
    "backend",
    "dtype",
    "solver",
    "train rows",
    "held-out rows",
    "held-out accuracy",
    "final training loss",
    "n_iter",
    "fit time",
    "rows/s",
    "bytes/s",
)

# Enough L2 on raw pixels for L-BFGS to converge on 240 rows well within max_iter.
FIT_FLAGS = ["--dtype", "float64", "--alpha", "1e-2", "--max-iter", "200"]
FIT_PARAMS = {"dtype": "float64", "alpha": 1e-2, "max_iter": 200, "random_state": 0}


def report(text):
    """The ``key: value`` lines of a train report as a dict."""
    return {key: value.strip() for key, value in (line.split(": ", 1) for line in text.strip().splitlines())}


def si_value(text):
    """``916 MB/s (...)`` as 916e6."""
    number, unit = text.split()[:2]
    return float(number) * 1000 ** ["B", "kB", "MB", "GB", "TB"].index(unit.split("/")[0])


@pytest.fixture(scope="module")
def digits():
    # A slice keeps the files small; 300 rows hold every digit, and every pixel
    # but the first (always 0) is non-zero somewhere.
    X, y = load_digits(return_X_y=True)
    return X[:300], y[:300]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "digits.npz"
    assert main(["train", "--model", str(path), "--dtype", "float64"]) == 0
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return SoftmaxClassifier.load(model_path)


# -- one labelled data set in every format ----------------------------------------------
# Each writer saves X, y (and maybe sample weights w) and returns the DATA paths, the
# flags that say where the labels and weights are, and the weights the file holds.
def write_npy(folder, X, y, w):
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return [folder / "X.npy"], ["--labels", str(folder / "y.npy")], None


def write_csv(folder, X, y, w):
    np.savetxt(folder / "d.csv", np.column_stack([X, y]), delimiter=",", fmt="%g")
    return [folder / "d.csv"], [], None


def write_npz(folder, X, y, w):
    np.savez(folder / "d.npz", X=X, y=y, w=w)
    return [folder / "d.npz"], ["--weight-key", "w"], w


def write_libsvm(folder, X, y, w):
    # One-based indices, the libsvm convention, which index detection assumes.
    dump_svmlight_file(X, y, str(folder / "d.libsvm"), zero_based=False)
    return [folder / "d.libsvm"], [], None


def write_zero_based_svmlight(folder, X, y, w):
    # Digits' first pixel is always 0, so detection cannot see that indices start
    # at 0: the file needs --zero-based, or every feature shifts by one column.
    dump_svmlight_file(X, y, str(folder / "d.svmlight"), zero_based=True)
    return [folder / "d.svmlight"], ["--zero-based"], None


def write_hdf5(folder, X, y, w):
    h5py = pytest.importorskip("h5py")
    with h5py.File(folder / "d.h5", "w") as f:
        f.create_dataset("data/X", data=X, chunks=(64, X.shape[1]))
        f.create_dataset("target", data=y)
        f.create_dataset("w", data=w)
    flags = ["--x-key", "data/X", "--y-key", "target", "--weight-key", "w"]
    return [folder / "d.h5"], flags, w


def write_zarr(folder, X, y, w):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(folder / "d.zarr", mode="w")
    group.create_array("X", shape=X.shape, chunks=(100, X.shape[1]), dtype="f8")[:] = X
    group.create_array("y", shape=y.shape, dtype="i8")[:] = y
    return [folder / "d.zarr"], [], None


def write_parquet_table(path, X, y, w=None, row_group_size=100):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {f"px{j}": X[:, j] for j in range(X.shape[1])} | {"target": y}
    if w is not None:
        columns["w"] = w
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def write_parquet(folder, X, y, w):
    write_parquet_table(folder / "d.parquet", X, y)
    return [folder / "d.parquet"], ["--label-column", "target"], None


def write_parquet_shards(folder, X, y, w):
    # The weight column is named so that it is not read as a feature.
    write_parquet_table(folder / "a.parquet", X[:150], y[:150], w[:150])
    write_parquet_table(folder / "b.parquet", X[150:], y[150:], w[150:])
    flags = ["--label-column", "target", "--weight-column", "w"]
    return [folder / "a.parquet", folder / "b.parquet"], flags, w


WRITERS = [
    write_npy,
    write_csv,
    write_npz,
    write_libsvm,
    write_zero_based_svmlight,
    write_hdf5,
    write_zarr,
    write_parquet,
    write_parquet_shards,
]


def write(writer, folder, digits):
    X, y = digits
    w = np.arange(len(y)) % 3 + 1.0  # integer weights, so that they change the fit
    paths, flags, weights = writer(folder, X, y, w)
    return [str(p) for p in paths], flags, weights


# -- train ------------------------------------------------------------------------------
def test_train_without_arguments_fits_digits(capsys):
    assert main(["train"]) == 0
    out = report(capsys.readouterr().out)
    for field in REPORT_FIELDS:
        assert field in out, f"{field!r} missing from the report {sorted(out)}"
    assert out["data"].startswith("digits") and "1797 rows x 64 features, 10 classes, 920 kB" in out["data"]
    assert out["backend"].startswith("cpu")
    assert out["dtype"] == "float32"
    assert out["solver"] == "lbfgs"
    assert out["train rows"] == "1437" and out["held-out rows"] == "360"
    assert float(out["held-out accuracy"]) > 0.9
    assert int(out["n_iter"]) < 300  # converged before the digits preset's max_iter
    # Digits are float64: 512 bytes per row read per pass.
    assert si_value(out["bytes/s"]) / float(out["rows/s"].split()[0]) == pytest.approx(512, rel=0.01)


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__[len("write_") :])
def test_train_reports_the_estimators_held_out_accuracy(tmp_path, digits, writer, capsys):
    X, y = digits
    paths, flags, w = write(writer, tmp_path, digits)
    assert main(["train", *paths, *flags, *FIT_FLAGS]) == 0
    captured = capsys.readouterr()
    out = report(captured.out)
    assert captured.err == ""  # converged: no warning
    assert "300 rows x 64 features, 10 classes" in out["data"]
    assert out["train rows"] == "240" and out["held-out rows"] == "60"
    # The same stratified split, fitted in memory.
    rows = np.arange(len(y))
    train, test = (np.sort(r) for r in train_test_split(rows, test_size=0.2, random_state=0, stratify=y))
    expected = SoftmaxClassifier(**FIT_PARAMS).fit(X[train], y[train], None if w is None else w[train])
    assert out["held-out accuracy"] == f"{expected.score(X[test], y[test]):.4f}"
    assert out["n_iter"] == str(expected.n_iter_)


def test_train_on_csv_with_header_and_text_labels(tmp_path, digits, capsys):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    lines = ["label," + ",".join(f"px{j}" for j in range(X.shape[1]))]
    lines += [f"{names[label]}," + ",".join(f"{v:g}" for v in row) for row, label in zip(X, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    model_file = tmp_path / "text.npz"
    args = [
        "train",
        str(tmp_path / "d.csv"),
        "--label-column",
        "label",
        "--model",
        str(model_file),
        "--max-iter",
        "300",
    ]
    assert main(args) == 0
    out = report(capsys.readouterr().out)
    assert out["train rows"] == "240" and out["model"] == str(model_file)
    assert set(SoftmaxClassifier.load(model_file).classes_) == set(names)


def test_train_with_sgd_and_no_held_out_split(capsys):
    argv = ["train", "--solver", "sgd", "--max-iter", "3", "--batch-size", "256", "--test-size", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = report(captured.out)
    assert out["solver"] == "sgd" and out["n_iter"] == "3" and out["train rows"] == "1797"
    assert out["held-out accuracy"].startswith("n/a")
    assert "did not converge" in captured.err  # ConvergenceWarning shown as one line
    assert len(captured.err.strip().splitlines()) == 1


def test_train_verbose_shows_the_pass_progress_bar(tmp_path, digits, capsys):
    paths, flags, _ = write(write_npy, tmp_path, digits)
    assert main(["train", *paths, *flags, *FIT_FLAGS, "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "lbfgs" in err and "pass" in err and "rows/s" in err


def test_warm_up_reads_only_the_chunks_that_hold_its_rows(digits, monkeypatch, tmp_path):
    X, y = digits
    np.save(tmp_path / "X.npy", X)
    source = NpySource(
        tmp_path / "X.npy", y, chunk_rows=30
    )  # digits run 0, 1, ..., 9: chunk 0 holds every class
    read = []
    original = source._read_features
    monkeypatch.setattr(
        source, "_read_features", lambda index, out=None: read.append(index) or original(index, out)
    )
    _warm_up(SoftmaxClassifier(), source, y)
    assert set(read) == {0}


# -- predict ----------------------------------------------------------------------------
@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__[len("write_") :])
def test_predict_matches_the_model(tmp_path, digits, model_path, model, writer, capsys):
    X, y = digits
    paths, flags, _ = write(writer, tmp_path, digits)
    out = tmp_path / "pred.npy"
    assert main(["predict", str(model_path), *paths, *flags, "--score", "--output", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), model.predict(X))
    assert capsys.readouterr().err == f"accuracy: {model.score(X, y):.4f} (300 rows)\n"


def test_predict_prints_one_label_per_line(tmp_path, digits, model_path, model, capsys):
    X, y = digits
    np.save(tmp_path / "X.npy", X)
    assert main(["predict", str(model_path), str(tmp_path / "X.npy")]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(label) for label in model.predict(X)]
    assert captured.err == ""  # unlabelled: no accuracy


def test_predict_labelled_csv_reports_accuracy(tmp_path, digits, model_path, model, capsys):
    X, y = digits
    np.savetxt(tmp_path / "d.csv", np.column_stack([y, X]), delimiter=",", fmt="%g")
    out = tmp_path / "pred.csv"
    argv = ["predict", str(model_path), str(tmp_path / "d.csv"), "--label-column", "0", "--output", str(out)]
    assert main(argv) == 0
    np.testing.assert_array_equal(np.loadtxt(out, dtype=int), model.predict(X))
    assert capsys.readouterr().err == f"accuracy: {model.score(X, y):.4f} (300 rows)\n"


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
@pytest.mark.parametrize("writer", [write_npz, write_parquet_shards], ids=["npz", "parquet_shards"])
def test_predict_proba_output(tmp_path, digits, model_path, model, writer, suffix):
    X, y = digits
    paths, flags, _ = write(writer, tmp_path, digits)
    out = tmp_path / f"proba{suffix}"
    assert main(["predict", str(model_path), *paths, *flags, "--proba", "--output", str(out)]) == 0
    if suffix == ".npy":
        proba = np.load(out)
    else:
        header, *_ = out.read_text().splitlines()
        assert header.split(",") == [str(c) for c in model.classes_]
        proba = np.loadtxt(out, delimiter=",", skiprows=1)
    assert proba.shape == (300, 10)
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-6, atol=1e-12)


# -- info and version -------------------------------------------------------------------
def test_info(capsys):
    assert main(["info"]) == 0
    out = report(capsys.readouterr().out)
    for field in ("fastsoftmax", "numpy", "numba", "scipy", "scikit-learn", "cpu threads"):
        assert field in out
    assert out["fastsoftmax"] == __version__
    assert out["backend cpu"] == "available"
    assert out["backend cuda"] == "available" or out["backend cuda"].startswith("unavailable: ")
    assert int(out["cpu threads"].split()[0]) >= 1


def test_version_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "fastsoftmax", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fastsoftmax {__version__}"


# -- errors -----------------------------------------------------------------------------
def corrupt_npz(folder):
    (folder / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip archive")
    return ["predict", "{model}", str(folder / "bad.npz")], "bad.npz: cannot be read as .npz"


def missing_file(folder):
    return ["train", str(folder / "absent.csv")], "absent.csv: no such file"


def missing_source_file(folder):
    return ["predict", "{model}", str(folder / "absent.h5")], "absent.h5: no such file"


def missing_labels_file(folder):
    np.save(folder / "X.npy", np.zeros((4, 2)))
    argv = ["train", str(folder / "X.npy"), "--labels", str(folder / "y.npy")]
    return argv, "y.npy: no such file (the labels)"


def unknown_extension(folder):
    (folder / "data.txt").write_text("1 2 3\n")
    return ["train", str(folder / "data.txt")], "unknown data file type '.txt'"


def corrupt_parquet(folder):
    pytest.importorskip("pyarrow")
    (folder / "data.parquet").write_bytes(b"PAR1")
    return ["train", str(folder / "data.parquet")], "data.parquet: cannot be read as Parquet"


def nan_in_a_later_chunk(folder):
    X = np.tile(np.eye(3), (100, 1))
    X[250, 1] = np.nan
    write_parquet_table(folder / "d.parquet", X, np.arange(300) % 3)
    argv = ["train", str(folder / "d.parquet"), "--label-column", "target"]
    return argv, "d.parquet, chunk 2 (rows 200 to 299): features contain NaN (first in row 250)"


def nan_in_a_later_shard(folder):
    X = np.zeros((150, 64))
    write_parquet_table(folder / "a.parquet", X, np.zeros(150))
    X[120, 5] = np.nan
    write_parquet_table(folder / "b.parquet", X, np.zeros(150))
    argv = [
        "predict",
        "{model}",
        str(folder / "a.parquet"),
        str(folder / "b.parquet"),
        "--label-column",
        "target",
    ]
    return argv, "b.parquet, chunk 1 (rows 100 to 149): features contain NaN (first in row 120)"


def wrong_feature_count(folder):
    np.save(folder / "narrow.npy", np.zeros((4, 10)))
    argv = ["predict", "{model}", str(folder / "narrow.npy")]
    return argv, "narrow.npy: has 10 features, but SoftmaxClassifier is expecting 64 features as input."


def wrong_feature_count_parquet(folder):
    write_parquet_table(folder / "wide.parquet", np.zeros((4, 65)), np.zeros(4))
    argv = ["predict", "{model}", str(folder / "wide.parquet"), "--label-column", "target"]
    return argv, "wide.parquet: has 65 features, but SoftmaxClassifier is expecting 64 features as input."


def labels_left_in_a_csv(folder):
    np.savetxt(folder / "labelled.csv", np.zeros((4, 65)), delimiter=",", fmt="%g")
    argv = ["predict", "{model}", str(folder / "labelled.csv")]
    return argv, (
        "labelled.csv: has 65 features, but the model was fitted on 64; "
        "if one column holds labels, say so with --score or --label-column"
    )


def too_wide_svmlight(folder):
    (folder / "wide.svm").write_text("0 1:1 70:2\n")
    argv = ["predict", "{model}", str(folder / "wide.svm")]
    return argv, "wide.svm, chunk 0 (rows 0 to 0): n_features=64 is too small"


def non_numeric_cell(folder):
    (folder / "bad.csv").write_text("1,2,0\n3,oops,1\n")
    return ["train", str(folder / "bad.csv")], "bad.csv, line 2, column 2: 'oops' is not a number"


def ragged_csv(folder):
    (folder / "ragged.csv").write_text("1,2,0\n3,1\n")
    return ["train", str(folder / "ragged.csv")], "ragged.csv, line 2: 2 columns, but the first row has 3"


def missing_npz_key(folder):
    np.savez(folder / "d.npz", features=np.zeros((4, 2)))
    return ["train", str(folder / "d.npz")], "has no array named 'X'; it holds ['features']"


def label_count_mismatch(folder):
    np.save(folder / "X.npy", np.zeros((4, 2)))
    np.save(folder / "y.npy", np.array([0, 1, 0]))
    argv = ["train", str(folder / "X.npy"), "--labels", str(folder / "y.npy")]
    return argv, "X.npy: labels have shape (3,); expected (4,)"


def one_dimensional_features(folder):
    np.save(folder / "X.npy", np.zeros(4))
    np.save(folder / "y.npy", np.array([0, 1, 0, 1]))
    argv = ["train", str(folder / "X.npy"), "--labels", str(folder / "y.npy")]
    return argv, "X.npy: holds an array of shape (4,); expected 2-D"


def no_labels(folder):
    np.save(folder / "X.npy", np.zeros((4, 2)))
    return ["train", str(folder / "X.npy")], "X.npy: holds no labels; say where they are with --labels"


def flag_for_another_format(folder):
    (folder / "d.csv").write_text("1,2,0\n3,1,1\n")
    argv = ["train", str(folder / "d.csv"), "--x-key", "features"]
    return argv, "d.csv: --x-key applies to npz, hdf5, zarr files, not csv"


def labels_for_shards(folder):
    for name in ("a.npy", "b.npy", "y.npy"):
        np.save(folder / name, np.zeros((2, 2)))
    argv = ["train", str(folder / "a.npy"), str(folder / "b.npy"), "--labels", str(folder / "y.npy")]
    return argv, "--labels gives the labels of one .npy file, but DATA names 2 files"


def not_a_model(folder):
    np.savez(folder / "fake.npz", X=np.zeros((2, 2)))
    np.save(folder / "X.npy", np.zeros((2, 2)))
    return ["predict", str(folder / "fake.npz"), str(folder / "X.npy")], "is not a valid fastsoftmax model"


def bad_test_size(folder):
    return ["train", "--test-size", "1.5"], "--test-size 1.5 is not valid"


def invalid_hyper_parameter(folder):
    return ["train", "--alpha", "-1"], "alpha=-1.0 is not valid"


BAD_INPUTS = [
    corrupt_npz,
    missing_file,
    missing_source_file,
    missing_labels_file,
    unknown_extension,
    corrupt_parquet,
    nan_in_a_later_chunk,
    nan_in_a_later_shard,
    wrong_feature_count,
    wrong_feature_count_parquet,
    labels_left_in_a_csv,
    too_wide_svmlight,
    non_numeric_cell,
    ragged_csv,
    missing_npz_key,
    label_count_mismatch,
    one_dimensional_features,
    no_labels,
    flag_for_another_format,
    labels_for_shards,
    not_a_model,
    bad_test_size,
    invalid_hyper_parameter,
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.__name__)
def test_bad_input_is_one_line_and_status_2(tmp_path, model_path, case, capsys):
    argv, message = case(tmp_path)
    assert main([a.format(model=model_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsoftmax: error: ") and err.count("\n") == 1, err
    assert message in err


def test_bad_solver_is_a_usage_error(capsys):
    assert main(["train", "--solver", "newton"]) == 2
    assert "invalid choice: 'newton'" in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "required" in capsys.readouterr().err


def test_missing_optional_reader_is_a_usage_error(tmp_path, model_path, monkeypatch, capsys):
    (tmp_path / "d.h5").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    assert main(["predict", str(model_path), str(tmp_path / "d.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsoftmax: error: ") and err.count("\n") == 1, err
    assert "reading HDF5 files needs h5py" in err


# -- checkpoints --------------------------------------------------------------------------------
def test_train_checkpoints_and_resumes(tmp_path, capsys):
    checkpoint = tmp_path / "fit.ckpt"
    flags = ["--solver", "sgd", "--max-iter", "3", "--checkpoint", str(checkpoint), "--checkpoint-every", "5"]
    assert main(["train", *flags, "--model", str(tmp_path / "first.npz")]) == 0
    first = report(capsys.readouterr().out)
    assert load_checkpoint(checkpoint).state["epochs_run"] == 3
    # Resuming a finished fit returns its model (and says it resumed, with no rate).
    assert main(["train", *flags, "--resume", "--model", str(tmp_path / "again.npz")]) == 0
    again = report(capsys.readouterr().out)
    assert again["resumed from"] == str(checkpoint) and again["rows/s"] == "n/a (resumed)"
    assert again["held-out accuracy"] == first["held-out accuracy"]
    np.testing.assert_array_equal(
        SoftmaxClassifier.load(tmp_path / "again.npz").coef_,
        SoftmaxClassifier.load(tmp_path / "first.npz").coef_,
    )


def test_train_resume_without_a_checkpoint_starts_afresh(tmp_path, capsys):
    checkpoint = tmp_path / "new.ckpt"
    assert main(["train", "--max-iter", "5", "--checkpoint", str(checkpoint), "--resume"]) == 0
    assert "resumed from" not in capsys.readouterr().out
    assert checkpoint.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resume"], "need --checkpoint PATH"),
        (["--checkpoint-every", "5"], "need --checkpoint PATH"),
        (["--checkpoint", "x.ckpt", "--checkpoint-every", "0"], "every_n_steps must be a positive integer"),
    ],
)
def test_train_checkpoint_flags_are_checked(flags, message, capsys):
    assert main(["train", *flags]) == 2
    assert message in capsys.readouterr().err
