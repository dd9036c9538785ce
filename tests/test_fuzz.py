"""Fuzzing the file loaders and the estimator's input checks with hypothesis; each case is counted.

(a) A valid model file (plain and compressed ``.npz``), cut short, with bytes
changed or bytes inserted, loads as a model whose probabilities are finite, or
raises :class:`~fastsoftmax.ModelFileError` naming the file.  (b) The same damage to
data files (``.npy``, svmlight, Parquet, a file of a Zarr group, and an ``.npz`` read
by the command line's reader), read whole: every chunk comes back with its shape and
finite values, or :class:`~fastsoftmax.sources.DataSourceError` (``ValueError`` for
the ``.npz`` reader) names the file.  HDF5 is parsed by a C library that a damaged
file might crash, so its fuzz runs in a child process: a crash fails one test, and
the file that caused it is left behind.  (No crash was seen in 50,000 damaged files
run in-process while this was written.)  (c) The estimator given generated ``X``,
``y`` and sample weights (0 rows or columns, 1-D and 3-D; dtypes object, str,
complex, float16, datetime, int, bool; NaN and infinity anywhere; labels of one
class, of the wrong length, NaN or unknown; weights negative, NaN, of the wrong
length or all zero) fits and predicts finite values, or raises ``ValueError`` or
``TypeError`` with a message and leaves no fitted state.  FloatingPointError is the
estimator's documented report of a diverged fit, and is accepted as such.

Every target counts its cases (``tests/fuzzcount.py``) and the session ends with a
line of the counts.  The examples differ from run to run (no database, not
derandomised): a fuzz explores, and hypothesis prints how to reproduce a failure.

Out of scope: hand-made hostile files and their exact messages
(``test_hostile_files.py``).
"""

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastsoftmax import ModelFileError, SoftmaxClassifier, load_model
from fastsoftmax.datafiles import read_data
from fastsoftmax.sources import DataSourceError, open_source
from tests.fuzzcount import CASES, REFUSED, count, refused

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES, N_FEATURES = 50, 4
X = np.random.default_rng(0).standard_normal((N_SAMPLES, N_FEATURES))
Y = np.arange(N_SAMPLES) % 3


def fuzz_settings(max_examples):
    # deadline=None: a first read may import h5py or pyarrow, a first fit compile kernels.
    return settings(max_examples=max_examples, database=None, deadline=None)


@st.composite
def damaged(draw, content):
    """``content`` cut short, with up to 8 bytes changed, or with up to 16 bytes inserted."""
    how = draw(st.sampled_from(["cut", "change", "insert"]))
    if how == "cut":
        return content[: draw(st.integers(0, len(content) - 1))]
    data = bytearray(content)
    if how == "change":
        changes = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255))
        for at, value in draw(st.lists(changes, min_size=1, max_size=8)):
            data[at] = value
    else:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# -- (a) model files --------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_files(workdir):
    """The bytes of one fitted model saved plain and compressed."""
    model = SoftmaxClassifier(dtype="float64").fit(X, Y)
    model.save(workdir / "plain.npz")
    with np.load(workdir / "plain.npz", allow_pickle=False) as archive:
        np.savez_compressed(workdir / "compressed.npz", **{name: archive[name] for name in archive.files})
    return {name: (workdir / f"{name}.npz").read_bytes() for name in ("plain", "compressed")}


@fuzz_settings(300)
@given(data=st.data())
def test_damaged_model_file(data, model_files, workdir):
    content = data.draw(damaged(model_files[data.draw(st.sampled_from(sorted(model_files)))]))
    path = workdir / "model.npz"
    path.write_bytes(content)
    count("model file")
    try:
        model = load_model(path)
    except ModelFileError as exc:
        assert f"{path} is not a valid fastsoftmax model" in str(exc)
        refused("model file")
        return
    P = model.predict_proba(X)
    assert P.shape == (N_SAMPLES, 3) and np.isfinite(P).all()


# -- (b) data files ---------------------------------------------------------------------
# A damaged shape can promise terabytes that the format fills with its fill value (a
# Zarr chunk that is not stored reads as such): a valid, if absurd, data set, which
# is opened here but not read whole.
MAX_BYTES_READ = 10**8


def read_or_refused(target, path, open_data, refusal=DataSourceError):
    """Open and read every chunk: each checks out, or ``refusal`` is raised naming ``path``."""
    count(target)
    try:
        with warnings.catch_warnings():
            # Damaged files make the libraries warn: NumPy of a header it takes for
            # Python 2's, zarr of unknown keys in a zarr.json.
            warnings.simplefilter("ignore")
            source = open_data()
            if source.nbytes > MAX_BYTES_READ:
                return
            source.targets()
            for chunk in source.chunks():
                assert chunk.X.shape == (chunk.stop - chunk.start, source.n_features)
                values = chunk.X.data if sp.issparse(chunk.X) else chunk.X
                assert values.dtype.kind in "fiub" and np.isfinite(values).all()
    except refusal as exc:
        assert str(path) in str(exc), exc
        refused(target)


def write_data(fmt, path):
    """A valid data file of ``fmt``, several chunks long."""
    if fmt == "npy":
        np.save(path, X)
    elif fmt == "svmlight":
        from sklearn.datasets import dump_svmlight_file

        dump_svmlight_file(X, Y, str(path))
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        columns = {f"f{j}": X[:, j] for j in range(N_FEATURES)} | {"y": Y}
        pytest.importorskip("pyarrow.parquet").write_table(pa.table(columns), path, row_group_size=20)
    elif fmt == "zarr":
        group = pytest.importorskip("zarr").open_group(path, mode="w")
        group.create_array("X", data=X, chunks=(20, N_FEATURES))
        group.create_array("y", data=Y)
    elif fmt == "hdf5":
        with pytest.importorskip("h5py").File(path, "w") as f:
            f.create_dataset("X", data=X, chunks=(20, N_FEATURES), compression="gzip")
            f.create_dataset("y", data=Y)
    elif fmt == "npz":
        np.savez_compressed(path, X=X, y=Y)
    return path


# Per format: the file's suffix, how to open it (in chunks), what a refusal raises,
# and the name its cases are counted under.
DATA_FORMATS = {
    "npy": (".npy", lambda path: open_source(path, y=Y, chunk_rows=20), DataSourceError, "npy file"),
    "svmlight": (".svm", lambda path: open_source(path, chunk_bytes=1000), DataSourceError, "svmlight file"),
    "parquet": (".parquet", open_source, DataSourceError, "parquet file"),
    "npz": (".npz", lambda path: read_data(path, labelled=True), ValueError, "npz file (CLI reader)"),
}


@pytest.fixture(scope="module")
def data_files(workdir):
    return {
        fmt: write_data(fmt, workdir / f"valid{suffix}").read_bytes()
        for fmt, (suffix, *_) in DATA_FORMATS.items()
    }


@pytest.mark.parametrize(
    ("fmt", "max_examples"), [("npy", 200), ("svmlight", 200), ("parquet", 200), ("npz", 150)]
)
def test_damaged_data_file(fmt, max_examples, data_files, workdir):
    suffix, open_data, refusal, target = DATA_FORMATS[fmt]

    @fuzz_settings(max_examples)
    @given(damaged(data_files[fmt]))
    def fuzz(content):
        path = workdir / f"data{suffix}"
        path.write_bytes(content)
        read_or_refused(target, path, lambda: open_data(path), refusal)

    fuzz()


@pytest.fixture(scope="module")
def zarr_group(workdir):
    """A valid Zarr group and the bytes of each of its files, by path within it."""
    path = write_data("zarr", workdir / "valid.zarr")
    return path, {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


@fuzz_settings(100)
@given(data=st.data())
def test_damaged_zarr_group(data, zarr_group, workdir):
    valid, files = zarr_group
    member = data.draw(st.sampled_from(sorted(files)))
    content = data.draw(damaged(files[member]))
    path = workdir / "data.zarr"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(valid, path)
    (path / member).write_bytes(content)
    read_or_refused("zarr group", path, lambda: open_source(path))


def hdf5_fuzz_in_this_process(folder, max_examples):
    """The HDF5 fuzz, for a child process (:func:`test_damaged_hdf5_file`); prints the cases run.

    Each case gets a file of its own, deleted once it has been read: the file that
    crashed a child or failed is left in ``folder``.  (Rewriting one file would not
    do: HDF5 shares one open file among the handles to an inode, so a handle not yet
    collected would lend its cached metadata to the next case.)
    """
    folder = Path(folder)
    content = write_data("hdf5", folder / "valid.h5").read_bytes()

    @fuzz_settings(max_examples)
    @given(damaged(content))
    def fuzz(damaged_content):
        path = folder / f"case-{CASES['hdf5']}.h5"
        path.write_bytes(damaged_content)
        read_or_refused("hdf5", path, lambda: open_source(path))
        path.unlink()

    fuzz()
    print(CASES["hdf5"], REFUSED["hdf5"])


def test_damaged_hdf5_file(tmp_path):
    pytest.importorskip("h5py")
    code = f"from tests.test_fuzz import hdf5_fuzz_in_this_process as f; f({str(tmp_path)!r}, 200)"
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, (
        f"the HDF5 fuzz process exited with status {child.returncode}; the files of the cases that "
        f"failed or crashed it are in {tmp_path}\n{child.stdout[-2000:]}\n{child.stderr[-6000:]}"
    )
    cases, refusals = (int(n) for n in child.stdout.split()[-2:])
    count("hdf5 file (child process)", cases)
    refused("hdf5 file (child process)", refusals)


# -- (c) the estimator's input checks -----------------------------------------------------
ODD_VALUES = [np.nan, np.inf, -np.inf, 1e300, -0.0]
# Plain floats come up often enough that fits and predictions run, not only refusals.
DTYPES = ["float64", "float64", "float32", "float16", "int64", "uint8", "bool"]
DTYPES += ["complex128", "str", "object", "datetime64[s]"]
ANY_WIDTH = st.integers(1, 4)


@st.composite
def features(draw, columns=ANY_WIDTH):
    """X of 0 to 8 rows and 0 or ``columns`` columns (or 1-D, or 3-D), of any dtype, odd values anywhere."""
    shape = draw(st.sampled_from([(0, 4), (8, 0)]) | st.tuples(st.integers(1, 8), columns))
    elements = st.floats(-100, 100)
    if draw(st.booleans()):
        elements |= st.sampled_from(ODD_VALUES)
    values = draw(arrays(np.float64, shape, elements=elements))
    dtype = draw(st.sampled_from(DTYPES))
    with np.errstate(all="ignore"):  # float16 overflows; NaN has no integer
        if dtype == "object":
            X = values.astype(object)
            if X.size:
                X.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from(["a", None, b"x", [1.0], 2j]))
        elif dtype == "complex128":
            X = values + 1j * draw(st.sampled_from([0.0, 1.0]))
        elif dtype.startswith("datetime"):
            X = np.nan_to_num(values).astype(np.int64).astype(dtype)
        elif dtype in ("int64", "uint8", "bool"):
            X = np.nan_to_num(values, posinf=0, neginf=0).astype(dtype)
        else:
            X = values.astype(dtype)
    ndim = draw(st.sampled_from([2, 2, 2, 1, 3]))
    return X if ndim == 2 else X.reshape(-1) if ndim == 1 else X[..., None]


def labels(n_rows):
    """Labels for ``n_rows`` rows: good ones, one class, the wrong length, NaN, mixed types, ..."""
    good = np.arange(n_rows) % 3
    return st.sampled_from(
        [
            good,
            good,
            np.array(["cat", "dog", "emu"])[good],
            np.zeros(n_rows),
            good[:-1],
            np.r_[good, 0],
            np.where(good == 1, np.nan, good),
            np.where(good == 1, np.inf, good),
            good * 0.5,
            np.array([0, "a"] * n_rows, dtype=object)[:n_rows],
            good.astype(complex),
            good.astype("S1"),
            good[:, None],
        ]
    )


def sample_weights(n_rows):
    ones = np.ones(n_rows)
    return st.sampled_from(
        [
            None,
            None,
            ones,
            -ones,
            np.where(ones.cumsum() == 1, np.nan, ones),
            ones[:-1],
            0 * ones,
            0.0,
            ones + 1j,
        ]
    )


@fuzz_settings(300)
@given(X=features(), data=st.data(), solver=st.sampled_from(["lbfgs", "sgd", "adam"]))
def test_fit_refuses_or_fits_finite(X, data, solver):
    y = data.draw(labels(len(X)), label="y")
    sample_weight = data.draw(sample_weights(len(X)), label="sample_weight")
    count("estimator fit")
    model = SoftmaxClassifier(solver=solver, max_iter=5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning after 5 iterations, overflow on odd values
            model.fit(X, y, sample_weight=sample_weight)
    except (ValueError, TypeError, FloatingPointError) as exc:  # FloatingPointError: a diverged fit
        assert str(exc)
        assert not hasattr(model, "coef_")
        refused("estimator fit")
        return
    assert np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all()
    P = model.predict_proba(X)
    assert P.shape == (len(X), len(model.classes_)) and np.isfinite(P).all()


@pytest.fixture(scope="module")
def fitted():
    return SoftmaxClassifier(dtype="float64").fit(X[:, :3], Y)


@fuzz_settings(200)
@given(X=features(columns=st.sampled_from([3, 3, 3, 2, 4])), data=st.data())
def test_predict_refuses_or_predicts_finite(X, data, fitted):
    y = data.draw(labels(len(X)) | st.just(np.full(len(X), 7)), label="y")  # 7: an unknown label
    count("estimator predict")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow on odd values
            P = fitted.predict_proba(X)
            accuracy = fitted.score(X, y)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        refused("estimator predict")
        return
    assert P.shape == (len(X), 3) and np.isfinite(P).all()
    assert 0 <= accuracy <= 1
