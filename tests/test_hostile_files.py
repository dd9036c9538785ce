"""Hostile files: every loader refuses a damaged or mislabelled file, naming the file and the problem.

Model files (``load_model`` and ``SoftmaxClassifier.load``), data files of every
format (``open_source`` and a full read, ``fit`` and ``predict`` given the path) and
the command line (its own ``.csv``/``.npz`` reader included) are given files cut
at several offsets, of the wrong shape or dtype, holding Python objects, damaged
inside their container, not what their suffix says, or without rows or columns.
Each must raise :class:`~fastsoftmax.ModelFileError` or
:class:`~fastsoftmax.sources.DataSourceError` (both ``ValueError``) whose message
names the file; nothing else may escape, and nothing is ever unpickled: an object
array here holds a canary whose unpickling would create a marker file.

Out of scope: the cases ``test_persistence.py``, ``test_sources_formats.py`` and
``test_streaming_fit.py`` already pin (a model cut at fractions of its length,
random bytes, missing entries, mistyped metadata; NaN in a later chunk), and
random damage (``test_fuzz.py``).
"""

import json
import re
import struct
import zipfile

import numpy as np
import pytest

from fastsoftmax import ModelFileError, SoftmaxClassifier, load_model
from fastsoftmax.cli import main
from fastsoftmax.sources import DataSourceError, open_source

N_SAMPLES, N_FEATURES = 24, 3
X = np.random.default_rng(0).standard_normal((N_SAMPLES, N_FEATURES))
Y = np.arange(N_SAMPLES) % 3


@pytest.fixture(scope="module")
def fitted():
    return SoftmaxClassifier(dtype="float64").fit(X, Y)


class Canary:
    """Unpickling this creates the file ``marker``: a loader that unpickles leaves it behind."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def canary_array(marker, shape):
    array = np.zeros(shape, dtype=object)
    array.flat[0] = Canary(marker)
    return array


def test_the_canary_fires_when_unpickled(tmp_path):
    # Without this, "the marker never appears" would prove nothing.
    np.save(tmp_path / "objects.npy", canary_array(tmp_path / "marker", (2, 2)), allow_pickle=True)
    np.load(tmp_path / "objects.npy", allow_pickle=True)
    assert (tmp_path / "marker").exists()


def npy_bytes(header, data=b""):
    """A version 1.0 ``.npy`` stream whose header is the text ``header``, then ``data``."""
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


HUGE_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 3), }"
NEGATIVE_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (-4, 3), }"
BROKEN_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3x, }"  # fails in NumPy's tokenizer

# Offsets of 2-byte fields in a zip member's local header and in its central
# directory entry.  zipfile trusts the central directory's copy; both are patched.
ZIP_FIELDS = {"version": (4, 6), "flags": (6, 8), "method": (8, 10)}


def patch_zip(content, field, value):
    """The zip archive ``content`` with ``field`` of its first member set to ``value``."""
    data = bytearray(content)
    for signature, offset in zip((b"PK\x03\x04", b"PK\x01\x02"), ZIP_FIELDS[field]):
        at = data.index(signature) + offset
        data[at : at + 2] = struct.pack("<H", value)
    return bytes(data)


def write_bytes(path, content):
    path.write_bytes(content)
    return path


def flip_byte(content, at):
    return content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1 :]


def member_data_offset(content):
    """Offset of the first member's data in the zip archive ``content``."""
    name_length, extra_length = struct.unpack("<HH", content[26:30])
    return 30 + name_length + extra_length


def write_npz(path, arrays, raw=None):
    """An ``.npz`` of ``arrays`` (objects pickled, as NumPy writes them) and of ``raw`` byte members."""
    raw = raw or {}
    np.savez(path, **{name: a for name, a in arrays.items() if name not in raw})
    with zipfile.ZipFile(path, "a") as archive:
        for name, content in raw.items():
            archive.writestr(name + ".npy", content)
    return path


def other_format(kind, path):
    """A valid file of another format, ``kind``, at ``path`` (whatever its suffix)."""
    if kind == "parquet":
        pa = pytest.importorskip("pyarrow")
        pytest.importorskip("pyarrow.parquet").write_table(pa.table({"a": [1.0, 2.0]}), path)
    elif kind == "hdf5":
        with pytest.importorskip("h5py").File(path, "w") as f:
            f.create_dataset("X", data=np.zeros((2, 2)))
    elif kind == "npz":  # through a file object, so that NumPy adds no suffix
        with open(path, "wb") as f:
            np.savez(f, X=X, y=Y)
    else:
        with open(path, "wb") as f:
            np.save(f, X)
    return path


# -- model files ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    fitted.save(path)
    return path


@pytest.fixture(scope="module")
def model_arrays(model_file):
    with np.load(model_file, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def with_metadata(arrays, **changes):
    metadata = json.loads(str(arrays["metadata"]))
    params = changes.pop("params", {})
    metadata.update(changes)
    metadata["params"].update(params)
    return {**arrays, "metadata": np.array(json.dumps(metadata))}


def assert_model_refused(path, message):
    for load in (load_model, SoftmaxClassifier.load):
        with pytest.raises(ModelFileError, match=message) as info:
            load(path)
        assert f"{path} is not a valid fastsoftmax model" in str(info.value)


def zip_of_text(path):
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("coef", "intercept", "classes", "metadata"):
            archive.writestr(name + ".txt", "1 2 3")
    return path


# Each case: make(folder, the model file's bytes, its arrays) -> the hostile file's
# bytes, or its path; and the problem reported.
MODEL_CASES = {
    "empty-file": (lambda d, b, a: b"", r"cannot be read as \.npz \(not a zip archive\)"),
    "text-file": (lambda d, b, a: b"coef intercept classes metadata\n", "not a zip archive"),
    "parquet-file": (lambda d, b, a: other_format("parquet", d / "m.npz"), "not a zip archive"),
    "hdf5-file": (lambda d, b, a: other_format("hdf5", d / "m.npz"), "not a zip archive"),
    "zip-of-text": (
        lambda d, b, a: zip_of_text(d / "m.npz"),
        r"missing entries \['coef', 'intercept', 'classes', 'metadata'\]",
    ),
    "cut-in-signature": (lambda d, b, a: b[:2], "not a zip archive"),
    "cut-in-first-header": (lambda d, b, a: b[:20], "not a zip archive"),
    "cut-in-first-array": (lambda d, b, a: b[: member_data_offset(b) + 40], "not a zip archive"),
    "cut-at-directory": (lambda d, b, a: b[: b.index(b"PK\x01\x02")], "not a zip archive"),
    "cut-in-directory": (lambda d, b, a: b[: b.index(b"PK\x01\x02") + 30], "not a zip archive"),
    "cut-last-byte": (lambda d, b, a: b[:-1], "not a zip archive"),
    "encrypted-flag": (
        lambda d, b, a: patch_zip(b, "flags", 0x1),
        r"array 'coef': RuntimeError: File 'coef.npy' is encrypted",
    ),
    "unknown-compression": (
        lambda d, b, a: patch_zip(b, "method", 99),
        r"array 'coef': NotImplementedError: That compression method is not supported",
    ),
    "zip-version-too-new": (
        lambda d, b, a: patch_zip(b, "version", 255),
        r"cannot be read as \.npz \(NotImplementedError: zip file version 25\.5\)",
    ),
    "bad-crc": (
        # A byte of coef's values, after its 128-byte .npy header.
        lambda d, b, a: flip_byte(b, member_data_offset(b) + 130),
        r"array 'coef': BadZipFile: Bad CRC-32 for file 'coef.npy'",
    ),
    "header-promises-huge-array": (
        lambda d, b, a: write_npz(d / "m.npz", a, {"coef": npy_bytes(HUGE_HEADER, bytes(48))}),
        r"array 'coef': truncated: its header promises \(1000000000000, 3\) values of float64",
    ),
    "negative-shape": (
        lambda d, b, a: write_npz(d / "m.npz", a, {"coef": npy_bytes(NEGATIVE_HEADER)}),
        r"array 'coef': not a valid \.npy file \(its header gives the shape \(-4, 3\)\)",
    ),
    "broken-header": (
        lambda d, b, a: write_npz(d / "m.npz", a, {"intercept": npy_bytes(BROKEN_HEADER)}),
        r"array 'intercept': not a valid \.npy file \(TokenError",
    ),
    "member-not-npy": (
        lambda d, b, a: write_npz(d / "m.npz", a, {"classes": b"just text"}),
        r"array 'classes': not a valid \.npy file",
    ),
    "coef-3d": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "coef": a["coef"][..., None]}),
        r"coef must be a 2-D float32/float64 array, got float64 of shape \(3, 3, 1\)",
    ),
    "coef-bool": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "coef": a["coef"] > 0}),
        "coef must be a 2-D float32/float64 array, got bool",
    ),
    "coef-datetime": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "coef": np.zeros((3, 3), "M8[s]")}),
        "got datetime64",
    ),
    "coef-without-columns": (
        lambda d, b, a: write_npz(
            d / "m.npz", {**with_metadata(a, n_features_in=0), "coef": np.zeros((3, 0))}
        ),
        r"coef has shape \(3, 0\): a model needs at least one feature",
    ),
    "intercept-complex": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "intercept": a["intercept"].astype(complex)}),
        r"intercept must be float64 of shape \(3,\), got complex128",
    ),
    "classes-bytes": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "classes": np.array([b"a", b"b", b"c"])}),
        r"classes dtype \|S1 does not match class_kind 'int'",
    ),
    "classes-complex": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "classes": a["classes"].astype(complex)}),
        "classes dtype complex128 does not match",
    ),
    "classes-structured": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "classes": np.zeros(3, [("a", "i8")])}),
        "classes dtype .* does not match",
    ),
    "metadata-bytes": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "metadata": np.array(str(a["metadata"]).encode())}),
        "metadata is not JSON",
    ),
    "metadata-nested-too-deep": (
        lambda d, b, a: write_npz(d / "m.npz", {**a, "metadata": np.array("[" * 100_000 + "]" * 100_000)}),
        r"metadata is not JSON \(RecursionError",
    ),
    "class-weight-list-label": (
        lambda d, b, a: write_npz(d / "m.npz", with_metadata(a, params={"class_weight": [[[0], 1.0]]})),
        r"class_weight must be a list of \[label, non-negative weight\] pairs",
    ),
    "class-weight-negative": (
        lambda d, b, a: write_npz(d / "m.npz", with_metadata(a, params={"class_weight": [[0, -1.0]]})),
        r"class_weight must be a list of \[label, non-negative weight\] pairs",
    ),
    "loss-beyond-float": (
        lambda d, b, a: write_npz(d / "m.npz", with_metadata(a, loss_curve=[10**400])),
        "loss_curve must be a list of finite numbers",
    ),
}


def write_model_case(case, folder, model_file, model_arrays):
    made = MODEL_CASES[case][0](folder, model_file.read_bytes(), model_arrays)
    return write_bytes(folder / "m.npz", made) if isinstance(made, bytes) else made


@pytest.mark.parametrize("case", MODEL_CASES, ids=MODEL_CASES)
def test_hostile_model_file(case, tmp_path, model_file, model_arrays):
    path = write_model_case(case, tmp_path, model_file, model_arrays)
    assert_model_refused(path, MODEL_CASES[case][1])


def test_damaged_compressed_model(tmp_path, model_arrays):
    np.savez_compressed(tmp_path / "m.npz", **model_arrays)
    content = bytearray((tmp_path / "m.npz").read_bytes())
    start = member_data_offset(content)
    content[start : start + 8] = b"\xff" * 8  # the deflate stream's first block header
    (tmp_path / "m.npz").write_bytes(bytes(content))
    assert_model_refused(tmp_path / "m.npz", r"array 'coef': (error|BadZipFile): ")


@pytest.mark.parametrize("member", ["coef", "intercept", "classes", "metadata"])
def test_object_array_in_a_model_is_never_unpickled(member, tmp_path, model_arrays):
    marker = tmp_path / "marker"
    shape = model_arrays[member].shape or (1,)
    path = write_npz(tmp_path / "m.npz", {**model_arrays, member: canary_array(marker, shape)})
    assert_model_refused(path, rf"array '{member}': holds Python objects, which are never unpickled")
    assert not marker.exists()


@pytest.mark.parametrize("case", ["parquet-file", "cut-in-first-array", "encrypted-flag", "coef-bool"])
def test_hostile_model_on_the_command_line(case, tmp_path, model_file, model_arrays, capsys):
    path = write_model_case(case, tmp_path, model_file, model_arrays)
    np.save(tmp_path / "X.npy", X)
    assert main(["predict", str(path), str(tmp_path / "X.npy")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"fastsoftmax: error: {path} is not a valid fastsoftmax model")
        and err.count("\n") == 1
    )


# -- data files -------------------------------------------------------------------------
SUFFIXES = {"npy": ".npy", "hdf5": ".h5", "zarr": ".zarr", "parquet": ".parquet", "svmlight": ".svm"}


def write(fmt, folder, features=X, labels=Y, weights=None):
    """A data file of ``fmt`` holding the arrays as given (labels beside a ``.npy``; not written)."""
    path = folder / f"data{SUFFIXES[fmt]}"
    if fmt == "npy":
        np.save(path, features, allow_pickle=True)
    elif fmt == "hdf5":
        with pytest.importorskip("h5py").File(path, "w") as f:
            f.create_dataset("X", data=features)
            f.create_dataset("y", data=labels)
            if weights is not None:
                f.create_dataset("w", data=weights)
    elif fmt == "zarr":
        group = pytest.importorskip("zarr").open_group(path, mode="w")
        group.create_array("X", data=features)
        group.create_array("y", data=labels)
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        columns = {f"f{j}": features[:, j] for j in range(features.shape[1])}
        columns |= {"y": labels} if weights is None else {"y": labels, "w": weights}
        pytest.importorskip("pyarrow.parquet").write_table(pa.table(columns), path)
    else:  # by hand: scikit-learn's writer refuses an infinite label
        lines = [
            " ".join([str(label)] + [f"{j + 1}:{v}" for j, v in enumerate(x)])
            for label, x in zip(labels, features)
        ]
        path.write_text("\n".join(lines) + "\n")
    return path


def empty_file(fmt, folder):
    path = folder / f"data{SUFFIXES[fmt]}"
    path.write_bytes(b"")
    return path


def text_file(fmt, folder):
    path = folder / f"data{SUFFIXES[fmt]}"
    path.write_text("this is not a data file\n")
    return path


def make_directory(path):
    path.mkdir()
    return path


def directory(fmt, folder):
    return make_directory(folder / f"data{SUFFIXES[fmt]}")


OTHER_FORMAT = {"npy": "npz", "hdf5": "parquet", "parquet": "hdf5", "svmlight": "npy"}


def another_format(fmt, folder):
    return other_format(OTHER_FORMAT[fmt], folder / f"data{SUFFIXES[fmt]}")


def cut(keep):
    """A maker of a file of ``keep(size)`` of its bytes."""

    def make(fmt, folder):
        path = write(fmt, folder)
        content = path.read_bytes()
        return write_bytes(path, content[: keep(len(content))])

    return make


CUTS = {
    "cut-to-5%": lambda n: n // 20,
    "cut-in-half": lambda n: n // 2,
    "cut-to-95%": lambda n: n * 19 // 20,
    "cut-last-byte": lambda n: n - 1,
}


CANT_OPEN = {
    "npy": r"not a valid \.npy file",
    "hdf5": "cannot be opened as an HDF5 file",
    "zarr": "cannot be opened as a zarr group",
    "parquet": "cannot be read as Parquet",
    "svmlight": "cannot be parsed as svmlight/libsvm",
}
# Each case: make(fmt, folder) -> the hostile file, and per format the problem reported.
FEATURE_CASES = {
    "empty-file": (empty_file, {**CANT_OPEN, "svmlight": "holds no data rows"}),
    "text-file": (text_file, CANT_OPEN),
    "directory": (
        directory,
        {
            **CANT_OPEN,
            "npy": r"is a directory, not a \.npy file",
            "hdf5": "is a directory, not an HDF5 file",
            "svmlight": "is a directory, not a svmlight",
        },
    ),
    "another-format": (another_format, {fmt: CANT_OPEN[fmt] for fmt in OTHER_FORMAT}),
    **{
        name: (
            cut(keep),
            {"npy": r"not a valid \.npy file|the file is truncated", "hdf5": "HDF5", "parquet": "Parquet"},
        )
        for name, keep in CUTS.items()
    },
    "no-rows": (
        lambda fmt, d: write(fmt, d, np.zeros((0, N_FEATURES)), np.zeros(0, int)),
        dict.fromkeys(["npy", "hdf5", "zarr", "parquet"], r"holds 0 rows of 3 features; a data set needs"),
    ),
    "no-columns": (
        lambda fmt, d: write(fmt, d, np.zeros((N_SAMPLES, 0))),
        {
            **dict.fromkeys(["npy", "hdf5", "zarr"], r"holds 24 rows of 0 features; a data set needs"),
            "parquet": "has no feature columns",
        },
    ),
    "one-dimensional": (
        lambda fmt, d: write(fmt, d, X[:, 0]),
        {"npy": r"shape \(24,\); expected 2-D", "hdf5": r"shape \(24,\); expected 2-D", "zarr": r"\(24,\)"},
    ),
    "three-dimensional": (
        lambda fmt, d: write(fmt, d, X[..., None]),
        dict.fromkeys(["npy", "hdf5", "zarr"], r"shape \(24, 3, 1\); expected 2-D"),
    ),
    "strings": (
        lambda fmt, d: write(fmt, d, X.astype(str)),
        {"npy": "holds dtype <U.*; expected real numbers", "parquet": "column 'f0' has type string"},
    ),
    "complex": (
        lambda fmt, d: write(fmt, d, X.astype(complex)),
        dict.fromkeys(["npy", "hdf5", "zarr"], "dtype complex128; expected real numbers"),
    ),
    "datetime": (
        lambda fmt, d: write(fmt, d, (X * 1e6).astype("M8[s]")),
        {"npy": r"holds dtype datetime64\[s\]", "parquet": "column 'f0' has type timestamp"},
    ),
    "header-promises-huge-array": (
        lambda fmt, d: write_bytes(d / "data.npy", npy_bytes(HUGE_HEADER, bytes(96))),
        {"npy": r"the file is truncated: its header promises \(1000000000000, 3\) values"},
    ),
    "negative-shape": (
        lambda fmt, d: write_bytes(d / "data.npy", npy_bytes(NEGATIVE_HEADER)),
        {"npy": r"not a valid \.npy file \(its header gives the shape \(-4, 3\)\)"},
    ),
    "broken-header": (
        lambda fmt, d: write_bytes(d / "data.npy", npy_bytes(BROKEN_HEADER)),
        {"npy": r"not a valid \.npy file \(TokenError"},
    ),
    "dataset-without-shape": (
        lambda fmt, d: write(fmt, d, pytest.importorskip("h5py").Empty("f8")),
        {"hdf5": "the features 'X' have shape None; expected 2-D"},
    ),
    "repeated-column": (
        lambda fmt, d: write_repeated_columns(d / "data.parquet"),
        {"parquet": r"has several columns named \['f0'\]"},
    ),
    "unknown-codec-option": (
        lambda fmt, d: damage_zarr_codec(write(fmt, d)),
        {"zarr": r"the zarr group cannot be read \(TypeError"},
    ),
}


def write_repeated_columns(path):
    pa = pytest.importorskip("pyarrow")
    table = pa.Table.from_arrays([pa.array(X[:, 0]), pa.array(X[:, 1]), pa.array(Y)], names=["f0", "f0", "y"])
    pytest.importorskip("pyarrow.parquet").write_table(table, path)
    return path


def damage_zarr_codec(path):
    metadata = path / "X" / "zarr.json"
    text = metadata.read_text()
    metadata.write_text(text.replace('"level"', '"leveL"'))
    assert text != metadata.read_text()
    return path


def fit_labels(fmt):
    """What fit needs beside the file: the labels, for a ``.npy``."""
    return Y if fmt == "npy" else None


def read_everything(source):
    source.targets()
    for _ in source.chunks():
        pass


CONSUMERS = {
    "open_source": lambda fitted, path, fmt: read_everything(open_source(path, y=fit_labels(fmt))),
    "fit": lambda fitted, path, fmt: SoftmaxClassifier().fit(str(path), fit_labels(fmt)),
    "predict": lambda fitted, path, fmt: fitted.predict(str(path)),
}


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize(
    ("case", "fmt"), [(case, fmt) for case, (_, messages) in FEATURE_CASES.items() for fmt in messages]
)
def test_hostile_data_file(case, fmt, consumer, tmp_path, fitted):
    make, messages = FEATURE_CASES[case]
    path = make(fmt, tmp_path)
    with pytest.raises(DataSourceError, match=messages[fmt]) as info:
        CONSUMERS[consumer](fitted, path, fmt)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_bool_and_float16_features_are_numbers(fmt, tmp_path, fitted):
    for features in (X > 0, X.astype(np.float16)):
        path = write(fmt, tmp_path, features)
        assert SoftmaxClassifier().fit(str(path), fit_labels(fmt)).coef_.shape == (3, N_FEATURES)
        assert fitted.predict(str(path)).shape == (N_SAMPLES,)


@pytest.mark.parametrize("target", ["X/zarr.json", "X/c/0/0", "y/zarr.json"])
def test_truncated_zarr_member(target, tmp_path):
    path = write("zarr", tmp_path)
    member = path / target
    member.write_bytes(member.read_bytes()[:7])
    with pytest.raises(DataSourceError, match=re.escape(str(path))):
        read_everything(open_source(path))


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_object_features_are_never_unpickled(consumer, tmp_path, fitted):
    marker = tmp_path / "marker"
    path = write("npy", tmp_path, canary_array(marker, X.shape))
    with pytest.raises(DataSourceError, match="holds Python objects, which are never unpickled"):
        CONSUMERS[consumer](fitted, path, "npy")
    assert not marker.exists()


def labels_file(folder, labels, name="y.npy"):
    np.save(folder / name, labels, allow_pickle=True)
    return folder / name


# Hostile labels or weights: make(fmt, folder) -> (what to open, the labels beside it);
# per format the problem reported.  Predictions read no labels, so only reading and fit apply.
LABEL_CASES = {
    "labels-wrong-length": (
        lambda fmt, d: (write(fmt, d, labels=Y[:-1]), labels_file(d, Y[:-1]) if fmt == "npy" else None),
        dict.fromkeys(["npy", "hdf5", "zarr"], r"labels have shape \(23,\); expected \(24,\), one per row"),
    ),
    "labels-complex": (
        lambda fmt, d: (write(fmt, d, labels=Y + 0j), labels_file(d, Y + 0j) if fmt == "npy" else None),
        dict.fromkeys(
            ["npy", "hdf5", "zarr"], "labels have dtype complex128; expected numbers, strings or dates"
        ),
    ),
    "labels-bytes": (
        lambda fmt, d: (
            write(fmt, d, labels=Y.astype("S1")),
            labels_file(d, Y.astype("S1")) if fmt == "npy" else None,
        ),
        {
            "npy": r"labels have dtype \|S1",
            "parquet": r"label b'0' in row 0 is not a finite number or a string",
        },
    ),
    "labels-structured": (
        lambda fmt, d: (
            write(fmt, d, labels=np.zeros(N_SAMPLES, [("a", "i4")])),
            labels_file(d, np.zeros(N_SAMPLES, [("a", "i4")])) if fmt == "npy" else None,
        ),
        dict.fromkeys(["npy", "hdf5"], r"labels have dtype \[\('a', '<i4'\)\]"),
    ),
    "labels-infinite": (
        lambda fmt, d: (write(fmt, d, labels=np.where(Y == 2, np.inf, Y)), None),
        dict.fromkeys(
            ["hdf5", "parquet", "svmlight"], "label inf in row 2 is not a finite number or a string"
        ),
    ),
    "labels-lists": (
        lambda fmt, d: (write(fmt, d, labels=[[int(v)] for v in Y]), None),
        {"parquet": r"label array\(\[0\]\) in row 0 is not a finite number or a string"},
    ),
    "labels-decimal": (
        lambda fmt, d: (write_decimal_labels(d / "data.parquet"), None),
        {"parquet": r"label Decimal\('0.00'\) in row 0 is not a finite number or a string"},
    ),
    "labels-file-is-a-directory": (
        lambda fmt, d: (write(fmt, d), make_directory(d / "y.npy")),
        {"npy": r"y\.npy: cannot read the labels: it is a directory"},
    ),
    "labels-file-truncated": (
        lambda fmt, d: (write(fmt, d), write_bytes(d / "y.npy", npy_bytes(HUGE_HEADER))),
        {"npy": r"y\.npy: cannot read the labels: truncated: its header promises"},
    ),
    "weights-strings": (
        lambda fmt, d: ({"path": str(write(fmt, d, weights=np.full(N_SAMPLES, b"1"))), "weight": "w"}, None),
        dict.fromkeys(["hdf5", "parquet"], r"sample weights have shape \(24,\) and dtype"),
    ),
}


def write_decimal_labels(path):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"f0": X[:, 0], "y": pa.array(Y).cast(pa.decimal128(22, 2))})
    pytest.importorskip("pyarrow.parquet").write_table(table, path)
    return path


@pytest.mark.parametrize("consumer", ["open_source", "fit"])
@pytest.mark.parametrize(
    ("case", "fmt"), [(case, fmt) for case, (_, messages) in LABEL_CASES.items() for fmt in messages]
)
def test_hostile_labels(case, fmt, consumer, tmp_path):
    make, messages = LABEL_CASES[case]
    spec, labels = make(fmt, tmp_path)
    with pytest.raises(DataSourceError, match=messages[fmt]) as info:
        if consumer == "open_source":
            read_everything(open_source(spec, y=labels))
        else:
            SoftmaxClassifier().fit(spec, labels)
    named = [str(p) for p in (spec["path"] if isinstance(spec, dict) else spec, labels) if p is not None]
    assert any(name in str(info.value) for name in named)


def test_object_labels_are_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    labels = labels_file(tmp_path, canary_array(marker, (N_SAMPLES,)))
    with pytest.raises(DataSourceError, match=r"y\.npy: cannot read the labels: holds Python objects"):
        SoftmaxClassifier().fit(str(write("npy", tmp_path)), str(labels))
    assert not marker.exists()


# -- the command line -------------------------------------------------------------------
def assert_cli_refuses(argv, path, capsys):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsoftmax: error: ") and err.count("\n") == 1, err
    assert str(path) in err


@pytest.mark.parametrize(
    ("case", "fmt"),
    [
        (case, fmt)
        for case in ("empty-file", "directory", "another-format", "cut-in-half", "no-rows", "complex")
        for fmt in FEATURE_CASES[case][1]
    ],
)
def test_hostile_data_file_on_the_command_line(case, fmt, tmp_path, model_file, capsys):
    path = FEATURE_CASES[case][0](fmt, tmp_path)
    assert_cli_refuses(["predict", model_file, path], path, capsys)


def test_unusable_labels_on_the_command_line(tmp_path, capsys):
    path = write("parquet", tmp_path, labels=Y.astype("S1"))
    assert_cli_refuses(["train", path, "--label-column", "y"], path, capsys)


def bad_utf8_after_the_first_block(path):
    path.write_bytes(b"1,2,0\n" * 5000 + b"\xff,1,0\n")


def field_over_the_csv_limit(path):
    path.write_bytes(b"1,2,0\n" * 10 + b'1,"' + b"x" * 200_000 + b'",0\n')


def npz_member_encrypted(path):
    np.savez(path, X=X, y=Y)
    path.write_bytes(patch_zip(path.read_bytes(), "flags", 0x1))


def npz_header_promises_huge_array(path):
    write_npz(path, {"X": X, "y": Y}, {"X": npy_bytes(HUGE_HEADER, bytes(96))})


def npz_labels_complex(path):
    np.savez(path, X=X, y=Y + 0j)


# The command line's own reader (datafiles.read_data): .csv and .npz files, read whole.
IN_MEMORY_CASES = {
    "csv-bad-utf8-late": (".csv", bad_utf8_after_the_first_block),
    "csv-huge-field": (".csv", field_over_the_csv_limit),
    "npz-empty": (".npz", lambda path: path.write_bytes(b"")),
    "npz-that-is-parquet": (".npz", lambda path: other_format("parquet", path)),
    "npz-encrypted-member": (".npz", npz_member_encrypted),
    "npz-header-promises-huge-array": (".npz", npz_header_promises_huge_array),
    "npz-labels-complex": (".npz", npz_labels_complex),
}


@pytest.mark.parametrize("case", IN_MEMORY_CASES, ids=IN_MEMORY_CASES)
def test_hostile_csv_and_npz_on_the_command_line(case, tmp_path, capsys):
    suffix, make = IN_MEMORY_CASES[case]
    path = tmp_path / f"data{suffix}"
    make(path)
    assert_cli_refuses(["train", path], path, capsys)


def test_object_array_in_an_npz_data_file_is_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = write_npz(tmp_path / "data.npz", {"X": canary_array(marker, X.shape), "y": Y})
    assert_cli_refuses(["train", path], path, capsys)
    assert not marker.exists()
