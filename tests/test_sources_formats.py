"""Data sources over files: HDF5, zarr, Parquet, svmlight, and shards of them joined.

For each format: the chunks read back exactly what was written, ``open_source``
finds the format by suffix and by spec, and bad files (missing, truncated, corrupt,
non-numeric, NaN in a later chunk, missing labels) raise errors that name the file
and, where the problem is in one chunk, the chunk.

Out of scope: the checks of the interface itself and the array sources (their own
tests), and training on sources (the estimator's tests).
"""

import os
import pickle
import re

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from fastsoftmax.sources import DataSourceError, open_source
from fastsoftmax.sources.concat import ConcatSource
from fastsoftmax.sources.svmlight import SvmlightSource

N_SAMPLES, N_FEATURES, CHUNK_ROWS = 1000, 7, 300
BOUNDS = [(0, 300), (300, 600), (600, 900), (900, 1000)]


@pytest.fixture(scope="module")
def data():
    """X of shape (1000, 7) in float32, integer labels 0..2 and positive weights."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES)).astype(np.float32)
    y = rng.integers(0, 3, N_SAMPLES)
    w = rng.uniform(0.5, 2.0, N_SAMPLES)
    return X, y, w


# -- writers: one file per format, in chunks of 300 rows --------------------------------
def write_hdf5(path, X, y=None, w=None):
    h5py = pytest.importorskip("h5py")
    path = path.with_suffix(".h5")
    X = X.astype("S") if X.dtype.kind == "U" else X  # h5py stores bytes, not NumPy's UTF-32
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "X", data=X, chunks=(min(100, len(X)), X.shape[1]) if X.dtype.kind in "fiub" else None
        )
        if y is not None:
            f.create_dataset("y", data=y)
        if w is not None:
            f.create_dataset("w", data=w)
    return path


def write_zarr(path, X, y=None, w=None):
    zarr = pytest.importorskip("zarr")
    path = path.with_suffix(".zarr")
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X, chunks=(min(100, len(X)), X.shape[1]))
    if y is not None:
        group.create_array("y", data=y)
    if w is not None:
        group.create_array("w", data=w)
    return path


def write_parquet(path, X, y=None, w=None):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = path.with_suffix(".parquet")
    columns = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    if y is not None:
        columns["y"] = y
    if w is not None:
        columns["w"] = w
    pq.write_table(pa.table(columns), path, row_group_size=CHUNK_ROWS)
    return path


# Writer and the options that open its file in 300-row chunks with the weights.
FORMATS = {
    "hdf5": (write_hdf5, {"weight": "w", "chunk_rows": CHUNK_ROWS}),
    "zarr": (write_zarr, {"weight": "w", "chunk_rows": CHUNK_ROWS}),
    "parquet": (write_parquet, {"weight": "w"}),
}


@pytest.fixture(params=sorted(FORMATS))
def fmt(request):
    return request.param


def write(fmt, tmp_path, X, y=None, w=None, name="data"):
    return FORMATS[fmt][0](tmp_path / name, X, y, w)


def open_fmt(fmt, path, **options):
    return open_source(path, **{**FORMATS[fmt][1], **options})


def read_all(source, dtype=None):
    chunks = list(source.chunks(dtype))
    X = [c.X for c in chunks]
    X = sp.vstack(X).tocsr() if sp.issparse(X[0]) else np.concatenate(X)
    y = None if chunks[0].y is None else np.concatenate([c.y for c in chunks])
    w = None if chunks[0].sample_weight is None else np.concatenate([c.sample_weight for c in chunks])
    return X, y, w


def damage(path):
    """Cut the file (for a zarr group: its first stored chunk of features) in half."""
    if path.is_dir():
        path = min(p for p in (path / "X").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# -- HDF5, zarr, Parquet ------------------------------------------------------------------
def test_round_trip(fmt, tmp_path, data):
    X, y, w = data
    source = open_fmt(fmt, write(fmt, tmp_path, X, y, w))
    assert (source.n_samples, source.n_features, source.bounds) == (N_SAMPLES, N_FEATURES, BOUNDS)
    assert source.nbytes == X.nbytes
    X_read, y_read, w_read = read_all(source)
    assert X_read.dtype == np.float32
    np.testing.assert_array_equal(X_read, X)
    np.testing.assert_array_equal(y_read, y)
    np.testing.assert_array_equal(w_read, w)


def test_open_by_suffix_by_spec_and_by_class(fmt, tmp_path, data):
    X, y, w = data
    path = write(fmt, tmp_path, X, y, w)
    by_suffix = open_fmt(fmt, path)
    by_spec = open_source({"path": str(path), "format": fmt, **FORMATS[fmt][1]})
    assert type(by_spec) is type(by_suffix)
    assert by_spec.bounds == by_suffix.bounds == BOUNDS
    np.testing.assert_array_equal(by_spec.read_features(2), by_suffix.read_features(2))
    np.testing.assert_array_equal(by_spec.read_features(2), X[600:900])


def test_pickle_reopens_the_file(fmt, tmp_path, data):
    X, y, w = data
    source = open_fmt(fmt, write(fmt, tmp_path, X, y, w))
    source.read_features(0)  # the handle is open
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy.read_features(3), X[900:])
    np.testing.assert_array_equal(copy.targets()[0], y)


def test_missing_file(fmt, tmp_path):
    path = tmp_path / {"hdf5": "none.h5", "zarr": "none.zarr", "parquet": "none.parquet"}[fmt]
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        open_source(path)
    cls = type(open_source(write(fmt, tmp_path, np.zeros((3, 2), np.float32))))
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        cls(path)


def test_truncated_file(fmt, tmp_path, data):
    X, y, w = data
    path = write(fmt, tmp_path, X, y, w)
    damage(path)
    with pytest.raises(DataSourceError, match=re.escape(str(path))):
        read_all(open_fmt(fmt, path))


def test_corrupt_file(fmt, tmp_path):
    path = write(fmt, tmp_path, np.zeros((3, 2), np.float32))
    if path.is_dir():  # a zarr group: garbage where its metadata was, and a file of garbage
        (path / "zarr.json").write_bytes(np.random.default_rng(1).bytes(300))
        with pytest.raises(DataSourceError, match=re.escape(str(path))):
            open_source(path)
        path = tmp_path / "garbage.zarr"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(DataSourceError, match=re.escape(str(path))):
        open_source(path)


def test_nan_in_a_later_chunk(fmt, tmp_path, data):
    X, y, w = data
    X = X.copy()
    X[650, 3] = np.nan
    path = write(fmt, tmp_path, X, y, w)
    source = open_fmt(fmt, path)
    read_all_but_last = source.chunks()
    with pytest.raises(DataSourceError, match=re.escape(f"{path}, chunk 2 (rows 600 to 899)")) as caught:
        list(read_all_but_last)
    assert "NaN (first in row 650)" in str(caught.value) and caught.value.chunk == 2


def test_without_labels(fmt, tmp_path, data):
    X, _, _ = data
    source = open_fmt(fmt, write(fmt, tmp_path, X), weight=None)
    assert source.targets() == (None, None)
    assert all(chunk.y is None for chunk in source.chunks())


def test_named_weights_must_exist(fmt, tmp_path, data):
    X, y, _ = data
    path = write(fmt, tmp_path, X, y)
    with pytest.raises(DataSourceError, match=re.escape(str(path)) + ".*'w'"):
        open_fmt(fmt, path)


@pytest.mark.parametrize("fmt", ["hdf5", "zarr"])
@pytest.mark.filterwarnings("ignore:The data type")  # zarr: strings have no settled zarr 3 encoding yet
def test_features_must_be_a_2d_array_of_numbers(fmt, tmp_path):
    path = write(fmt, tmp_path, np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(
        DataSourceError, match=re.escape(str(path)) + ".*'X' have dtype .*expected real numbers"
    ):
        open_source(path)
    path = write(fmt, tmp_path, np.zeros((5, 2), np.float32), y=np.arange(5), name="one")
    with pytest.raises(DataSourceError, match=r"'y' have shape \(5,\); expected 2-D"):
        open_source(path, features="y", label=None)
    with pytest.raises(DataSourceError, match=re.escape(str(path)) + ".*has no array 'nothing'.*'X', 'y'"):
        open_source(path, features="nothing")


def test_hdf5_chunks_align_to_the_stored_chunks(tmp_path, monkeypatch):
    import fastsoftmax.sources.hdf5 as hdf5

    h5py = pytest.importorskip("h5py")
    path = tmp_path / "aligned.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=np.zeros((1000, 7), np.float32), chunks=(100, 7))
        f.create_dataset("big", data=np.zeros((1000, 7), np.float32), chunks=(1000, 7))
        f.create_dataset("flat", data=np.zeros((1000, 7), np.float32))
    monkeypatch.setattr(hdf5, "DEFAULT_CHUNK_BYTES", 250 * 7 * 4)  # 250 rows
    assert hdf5.HDF5Source(path).bounds[:2] == [(0, 200), (200, 400)]  # two stored chunks each
    assert hdf5.HDF5Source(path, features="big").bounds == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert hdf5.HDF5Source(path, features="flat").bounds[:2] == [(0, 250), (250, 500)]


def test_zarr_format_2(tmp_path, data):
    zarr = pytest.importorskip("zarr")
    X, y, _ = data
    path = tmp_path / "v2.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("X", data=X, chunks=(128, N_FEATURES))
    group.create_array("y", data=y)
    source = open_source(path, chunk_rows=256)
    assert source.bounds[:2] == [(0, 256), (256, 512)]
    X_read, y_read, _ = read_all(source)
    np.testing.assert_array_equal(X_read, X)
    np.testing.assert_array_equal(y_read, y)


def test_hdf5_string_labels(tmp_path, data):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "names.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=np.ones((4, 2)))
        f.create_dataset(
            "y", data=np.array(["cat", "dog", "cat", "émeu"], dtype=object), dtype=h5py.string_dtype()
        )
    assert open_source(path).targets()[0].tolist() == ["cat", "dog", "cat", "émeu"]


def test_parquet_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "columns.parquet"
    table = pa.table(
        {"b": [1, 2, 3], "label": ["x", "y", "x"], "a": [0.5, 1.5, 2.5], "on": [True, False, True]}
    )
    pq.write_table(table, path)
    source = open_source(path, label="label")
    assert source.feature_names.tolist() == ["b", "a", "on"]
    np.testing.assert_array_equal(source.read_features(0), [[1, 0.5, 1], [2, 1.5, 0], [3, 2.5, 1]])
    source = open_source({"path": path, "features": ["on", "a"], "label": "label"})
    assert source.feature_names.tolist() == ["on", "a"]
    np.testing.assert_array_equal(source.read_features(0), [[1, 0.5], [0, 1.5], [1, 2.5]])
    assert source.targets()[0].tolist() == ["x", "y", "x"]
    with pytest.raises(DataSourceError, match=re.escape(str(path)) + ".*'label'.*numbers"):
        open_source(path, label="b")  # "label" is then a string feature
    with pytest.raises(DataSourceError, match="no column 'c'"):
        open_source(path, features=["a", "c"])


def test_parquet_nulls(tmp_path, data):
    pa = pytest.importorskip("pyarrow")
    X, y, _ = data
    path = write_parquet(tmp_path / "nulls", X, y)
    table = pa.parquet.read_table(path)
    f2 = pa.array([None if i == 700 else v for i, v in enumerate(X[:, 2].tolist())], pa.float32())
    labels = pa.array([None if i == 420 else v for i, v in enumerate(y.tolist())])
    table = table.set_column(2, "f2", f2).set_column(7, "y", labels)
    pa.parquet.write_table(table, path, row_group_size=CHUNK_ROWS)
    source = open_source(path)
    with pytest.raises(DataSourceError, match=re.escape(f"{path}, chunk 1 (rows 300 to 599)") + ".*row 420"):
        source.targets()
    with pytest.raises(
        DataSourceError, match=re.escape(f"{path}, chunk 2 (rows 600 to 899)") + ".*'f2'.*row 700"
    ):
        source.read_features(2)


# -- svmlight ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sparse_data(data):
    """The data set with about half the features zero, as svmlight files hold it."""
    X, y, _ = data
    X = np.where(np.random.default_rng(2).random(X.shape) < 0.5, 0, X).astype(np.float64)
    return X, y


def test_svmlight_round_trip(tmp_path, sparse_data):
    X, y = sparse_data
    path = tmp_path / "data.svm"
    dump_svmlight_file(X, y, str(path))
    X_whole, y_whole = load_svmlight_file(str(path))
    source = open_source(path, chunk_bytes=4096)
    assert source.n_chunks > 5 and source.nbytes == os.path.getsize(path)
    assert (source.n_samples, source.n_features) == X_whole.shape
    X_read, y_read, w_read = read_all(source)
    assert X_read.dtype == np.float64 and w_read is None
    assert (X_read != X_whole).nnz == 0
    np.testing.assert_allclose(X_read.toarray(), X, rtol=1e-15)
    np.testing.assert_array_equal(y_read, y_whole)
    assert y_read.dtype.kind == "i"  # whole-number labels read as integers, as fastsoftmax.datafiles does
    by_spec = open_source({"path": str(path), "format": "svmlight", "chunk_bytes": 4096})
    assert by_spec.bounds == source.bounds


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 11, 12, 13, 24, 25, 26, 40, 41, 97, 10**6])
def test_svmlight_byte_ranges_partition_the_lines(tmp_path, chunk_bytes):
    """Every line read once, whatever the ranges: lines longer than a range, comments, blank lines."""
    lines = [
        "# a comment",
        "1 1:0.5 7:2",
        "",
        "0 2:1",
        "2 " + " ".join(f"{j}:{j / 10}" for j in range(1, 30)),  # longer than most ranges
        "   ",
        "1 qid:3 4:-1 # trailing",
        "0",
        "2 3:1e-3 30:4",
    ]
    path = tmp_path / "lines.svm"
    path.write_text("\n".join(lines))  # no final newline
    X_whole, y_whole = load_svmlight_file(str(path))
    source = SvmlightSource(path, chunk_bytes=chunk_bytes)
    X_read, y_read, _ = read_all(source, np.float64)
    assert X_read.shape == X_whole.shape == (6, 30)
    assert (X_read != X_whole).nnz == 0
    np.testing.assert_array_equal(y_read, y_whole)
    assert all(stop > start for start, stop in source.bounds)


def test_svmlight_index_base(tmp_path, sparse_data):
    X, y = sparse_data
    path = tmp_path / "one_based.svm"
    dump_svmlight_file(X, y, str(path), zero_based=False)
    X_whole, _ = load_svmlight_file(str(path))  # "auto" finds no index 0: one-based
    X_read, _, _ = read_all(SvmlightSource(path, chunk_bytes=2048))
    assert X_read.shape == X_whole.shape == X.shape
    assert (X_read != X_whole).nnz == 0
    assert SvmlightSource(path, zero_based=True).n_features == N_FEATURES + 1

    path = tmp_path / "zero_based.svm"
    path.write_text("1 1:1\n" * 50 + "0 0:1 2:1\n")
    with pytest.raises(DataSourceError, match=re.escape(f"{path}, chunk 1") + ".*index 0"):
        SvmlightSource(path, zero_based=False, chunk_bytes=150)
    assert SvmlightSource(path).n_features == 3


def test_svmlight_n_features(tmp_path):
    path = tmp_path / "wide.svm"
    path.write_text("1 1:1\n" * 50 + "0 9:1\n")
    assert SvmlightSource(path, n_features=12).read_features(0).shape == (51, 12)
    with pytest.raises(DataSourceError, match=re.escape(f"{path}, chunk 1") + ".*n_features=5.*9 columns"):
        SvmlightSource(path, n_features=5, chunk_bytes=150)


def test_svmlight_bad_files(tmp_path, sparse_data):
    X, y = sparse_data
    missing = tmp_path / "none.svm"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        SvmlightSource(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        open_source(missing)

    path = tmp_path / "bad.svm"
    lines = ["1 1:1 2:1"] * 100
    lines[70] = "1 1:1 2:abc"
    path.write_text("\n".join(lines))
    with pytest.raises(DataSourceError, match=re.escape(f"{path}, chunk 2 (bytes 520 to 761)")):
        SvmlightSource(path, chunk_bytes=250)

    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(DataSourceError, match=re.escape(str(path))):
        open_source(path)

    path.write_text("# only a comment\n\n")
    with pytest.raises(DataSourceError, match=re.escape(str(path)) + ": holds no data rows"):
        open_source(path)

    dump_svmlight_file(X, y, str(path))
    lines = path.read_text().splitlines()
    row = lines[650].split()
    row[1] = row[1].split(":")[0] + ":nan"  # scikit-learn refuses to write NaN
    lines[650] = " ".join(row)
    path.write_text("\n".join(lines))
    source = SvmlightSource(path, chunk_bytes=len(path.read_bytes()) // 4 + 1)
    chunk = source.chunk_of_row(650)
    assert chunk == 2
    with pytest.raises(DataSourceError, match=re.escape(f"{path}, chunk 2") + ".*NaN.*row 650"):
        list(source.chunks())


# -- shards ------------------------------------------------------------------------------------------
def test_concat_shards(tmp_path, data):
    pytest.importorskip("pyarrow")
    X, y, w = data
    paths = [
        write_parquet(tmp_path / name, X[rows], y[rows], w[rows])
        for name, rows in [("a", slice(0, 500)), ("b", slice(500, None))]
    ]
    source = open_source([str(p) for p in paths], weight="w")
    assert isinstance(source, ConcatSource) and source.name == "2 files (a.parquet, b.parquet)"
    assert source.bounds == [(0, 300), (300, 500), (500, 800), (800, 1000)]
    assert source.feature_names.tolist() == [f"f{j}" for j in range(N_FEATURES)]
    X_read, y_read, w_read = read_all(source)
    np.testing.assert_array_equal(X_read, X)
    np.testing.assert_array_equal(y_read, y)
    np.testing.assert_array_equal(w_read, w)
    assert source.nbytes == X.nbytes


def test_concat_errors_name_the_file(tmp_path, data):
    pytest.importorskip("pyarrow")
    X, y, w = data
    X = X.copy()
    X[850, 1] = np.nan
    a = write_parquet(tmp_path / "a", X[:500], y[:500], w[:500])
    b = write_parquet(tmp_path / "b", X[500:], y[500:])
    source = ConcatSource([open_source(a, weight="w"), open_source(b)])
    _, w_read = source.targets()
    np.testing.assert_array_equal(w_read, np.r_[w[:500], np.ones(500)])  # b has no weights: ones
    with pytest.raises(
        DataSourceError, match=re.escape(f"{b}, chunk 1 (rows 300 to 499)") + ".*row 350.*chunk 3"
    ):
        list(source.chunks())

    narrow = write_parquet(tmp_path / "narrow", X[:10, :5], y[:10])
    with pytest.raises(
        DataSourceError, match=f"{re.escape(str(a))} has 7 columns but {re.escape(str(narrow))} has 5"
    ):
        ConcatSource([open_source(a, weight="w"), open_source(narrow)])

    unlabelled = write_parquet(tmp_path / "unlabelled", X[:10])
    with pytest.raises(DataSourceError, match=re.escape(f"{unlabelled}: has no labels")):
        ConcatSource([open_source(a, weight="w"), open_source(unlabelled)]).targets()


def test_concat_of_formats(tmp_path, data):
    X, y, _ = data
    h5 = write_hdf5(tmp_path / "a", X[:400], y[:400])
    pq = write_parquet(tmp_path / "b", X[400:], y[400:])
    source = open_source([h5, pq])
    assert source.feature_names.tolist() == [f"f{j}" for j in range(N_FEATURES)]
    X_read, y_read, _ = read_all(source)
    np.testing.assert_array_equal(X_read, X)
    np.testing.assert_array_equal(y_read, y)
