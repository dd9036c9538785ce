"""The ``fastsoftmax`` command line and the data files it reads.

Runs :func:`fastsoftmax.cli.main` in-process and checks what it prints, writes and
returns.  Out of scope: the estimator's numerics (its own tests), and speed.
"""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file, load_digits

from fastsoftmax import SoftmaxClassifier, __version__
from fastsoftmax.cli import main

REPORT_FIELDS = (
    "backend",
    "dtype",
    "solver",
    "train rows",
    "held-out accuracy",
    "final training loss",
    "n_iter",
    "fit time",
    "rows/s",
)


def report(text):
    """The ``key: value`` lines of a train report as a dict."""
    return {key: value.strip() for key, value in (line.split(": ", 1) for line in text.strip().splitlines())}


@pytest.fixture(scope="module")
def digits():
    # A slice keeps the files small; 300 rows hold every digit.
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


def write_npy(folder, X, y):
    np.save(folder / "X.npy", X)
    return folder / "X.npy", []


def write_csv(folder, X, y):
    np.savetxt(folder / "X.csv", X, delimiter=",", fmt="%g")
    return folder / "X.csv", []


def write_npz(folder, X, y):
    np.savez(folder / "X.npz", X=X, y=y)
    return folder / "X.npz", []


def write_libsvm(folder, X, y):
    # One-based indices, the libsvm convention, which index detection assumes.
    dump_svmlight_file(X, y, str(folder / "X.libsvm"), zero_based=False)
    return folder / "X.libsvm", []


def write_zero_based_svmlight(folder, X, y):
    # Digits' first pixel is always 0, so detection cannot see that indices start
    # at 0: the file needs --zero-based, or every feature shifts by one column.
    dump_svmlight_file(X, y, str(folder / "X.svmlight"), zero_based=True)
    return folder / "X.svmlight", ["--zero-based"]


WRITERS = [write_npy, write_csv, write_npz, write_libsvm, write_zero_based_svmlight]


# -- train ------------------------------------------------------------------------------
def test_train_without_arguments_fits_digits(capsys):
    assert main(["train"]) == 0
    out = report(capsys.readouterr().out)
    for field in REPORT_FIELDS:
        assert field in out, f"{field!r} missing from the report {sorted(out)}"
    assert out["backend"].startswith("cpu")
    assert out["dtype"] == "float32"
    assert out["solver"] == "lbfgs"
    assert out["train rows"] == "1437"
    assert float(out["held-out accuracy"]) > 0.9
    assert int(out["n_iter"]) < 300  # converged before the digits preset's max_iter


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


# -- predict ----------------------------------------------------------------------------
@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__[len("write_") :])
def test_predict_matches_the_model(tmp_path, digits, model_path, model, writer):
    X, y = digits
    data, flags = writer(tmp_path, X, y)
    out = tmp_path / "pred.npy"
    assert main(["predict", str(model_path), str(data), "--output", str(out), *flags]) == 0
    np.testing.assert_array_equal(np.load(out), model.predict(X))


def test_predict_prints_one_label_per_line(tmp_path, digits, model_path, model, capsys):
    X, y = digits
    data, _ = write_npy(tmp_path, X, y)
    assert main(["predict", str(model_path), str(data)]) == 0
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


def test_predict_npy_with_separate_labels(tmp_path, digits, model_path, capsys):
    X, y = digits
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    argv = ["predict", str(model_path), str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]
    assert main(argv) == 0
    assert capsys.readouterr().err.startswith("accuracy: ")


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_predict_proba_output(tmp_path, digits, model_path, model, suffix):
    X, y = digits
    data, _ = write_npz(tmp_path, X, y)
    out = tmp_path / f"proba{suffix}"
    assert main(["predict", str(model_path), str(data), "--proba", "--output", str(out)]) == 0
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


def unknown_extension(folder):
    (folder / "data.parquet").write_bytes(b"PAR1")
    return ["train", str(folder / "data.parquet")], "unknown data file type '.parquet'"


def wrong_feature_count(folder):
    np.save(folder / "narrow.npy", np.zeros((4, 10)))
    argv = ["predict", "{model}", str(folder / "narrow.npy")]
    return argv, "has 10 feature columns but the model was fitted on 64"


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
    return ["train", str(folder / "X.npy"), "--labels", str(folder / "y.npy")], "3 labels for 4 rows"


def one_dimensional_features(folder):
    np.save(folder / "X.npy", np.zeros(4))
    np.save(folder / "y.npy", np.array([0, 1, 0, 1]))
    return ["train", str(folder / "X.npy"), "--labels", str(folder / "y.npy")], "got shape (4,)"


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
    unknown_extension,
    wrong_feature_count,
    non_numeric_cell,
    ragged_csv,
    missing_npz_key,
    label_count_mismatch,
    one_dimensional_features,
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
