"""The ``fastsoftmax`` command: train, predict and info.

This module parses arguments, opens the data as a
:class:`~fastsoftmax.sources.DataSource`, builds a :class:`SoftmaxClassifier` and
reports; it holds no maths.  ``.csv`` and ``.npz`` files are read whole by
:mod:`fastsoftmax.datafiles`; every other format (``.npy``, HDF5, Zarr, Parquet,
svmlight, and shards of several files) is streamed chunk by chunk by
:mod:`fastsoftmax.sources`, so training and prediction never hold more than a few
chunks of features in memory.  Every hyper-parameter flag defaults to the
estimator's own default, so the two cannot drift apart.  Errors a user can cause
(a missing or malformed file, a bad value) print one ``fastsoftmax: error: ...``
line on stderr and exit with status 2.

Examples
--------
.. code-block:: console

    $ fastsoftmax train                      # scikit-learn's bundled digits
    $ fastsoftmax train data.csv --model model.npz
    $ fastsoftmax train X.npy --labels y.npy
    $ fastsoftmax train part-0.parquet part-1.parquet --label-column target --verbose
    $ fastsoftmax predict model.npz new.h5 --x-key features --output predictions.csv
    $ fastsoftmax info
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .backends import BACKEND_NAMES, available_backends, get_backend
from .checkpoint import Checkpoint
from .datafiles import SUFFIXES as IN_MEMORY_SUFFIXES
from .datafiles import read_data
from .estimator import SoftmaxClassifier
from .progress import format_bytes
from .solvers import SOLVERS
from .sources import FORMATS, ArraySource, open_source
from .sources.concat import ConcatSource

# Exceptions a user can cause with a file or a flag value.  Anything else is a bug
# in fastsoftmax and keeps its traceback.  OSError covers FileNotFoundError and
# ValueError the sources' DataSourceError; FloatingPointError is the estimator's
# report of a diverged fit (a learning rate set too high); ImportError is an
# optional reader's missing package (h5py, zarr, pyarrow), which its message names.
USER_ERRORS = (OSError, ValueError, FloatingPointError, ImportError)
USAGE_ERROR = 2

# Data-file flags (by their argparse dest) and the formats each applies to.  A flag
# given for a file of another format is an error rather than silently ignored.
DATA_FLAGS = {
    "labels": "--labels",
    "label": "--label-column/--y-key",
    "weight": "--weight-column/--weight-key",
    "features": "--x-key",
    "header": "--header",
    "zero_based": "--zero-based",
}
FLAGS_BY_FORMAT = {
    "csv": ("label", "header"),
    "npz": ("features", "label", "weight"),
    "npy": ("labels",),
    "hdf5": ("features", "label", "weight"),
    "zarr": ("features", "label", "weight"),
    "parquet": ("label", "weight"),
    "svmlight": ("zero_based",),
}
SUFFIX_LIST = ", ".join(IN_MEMORY_SUFFIXES + tuple(FORMATS))

# The estimator parameters the command line exposes, each as a flag of the same name.
HYPER_PARAMETERS = (
    "solver",
    "alpha",
    "max_iter",
    "tol",
    "batch_size",
    "learning_rate_init",
    "dtype",
    "backend",
)

# Raw digits pixels (0..16) are not standardised, so L-BFGS needs 100 to 145
# iterations to reach the default tol (measured over split seeds 0-9, both dtypes);
# the estimator's default of 100 would stop short and warn.  Fitting on raw pixels
# keeps the saved model usable on raw digits with no preprocessing step to repeat.
DIGITS_DEFAULTS = {"max_iter": 300}


def main(argv=None) -> int:
    """Run the ``fastsoftmax`` command.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a usage or input error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits for --help, --version and usage errors; return the status
        # instead, so that main() can be called in-process.
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader of our output went away (`fastsoftmax predict ... | head`):
        # send what is left to /dev/null so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as exc:
        print(f"fastsoftmax: error: {exc}", file=sys.stderr)
        return USAGE_ERROR


# -- argument parsing -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="fastsoftmax", description="Softmax regression trained near the hardware limit."
    )
    parser.add_argument("--version", action="version", version=f"fastsoftmax {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_predict(commands)
    info = commands.add_parser("info", help="versions, CPU threads and available backends")
    info.set_defaults(run=run_info)
    # `bench` hands its arguments to the suite's own parser (main() intercepts it); it is
    # listed here for --help.
    commands.add_parser("bench", help="run a benchmark suite (quick, cpu, gpu): fastsoftmax bench --help")
    return parser


def _add_train(commands):
    train = commands.add_parser(
        "train",
        help="fit a model and report held-out accuracy and speed",
        description="Fit a SoftmaxClassifier on DATA (default: scikit-learn's bundled digits, raw pixels), "
        "report accuracy on a held-out stratified split and the fit's speed, and optionally save the model.  "
        "Only the labels are read whole; the features of every format but .csv and .npz are streamed "
        "chunk by chunk, for the fit and for the held-out accuracy.",
    )
    train.add_argument(
        "data",
        nargs="*",
        metavar="DATA",
        help=f"data file ({SUFFIX_LIST}); several files are shards whose rows are joined; omit for digits",
    )
    _add_data_arguments(train)
    train.add_argument("--model", metavar="OUT.npz", help="write the fitted model here")
    train.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="save the fit's state to PATH while it runs (atomically; every 60 s unless "
        "--checkpoint-every) and when it ends",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="write the checkpoint every N steps (L-BFGS iterations or minibatch updates) instead",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint PATH if it exists (same data and options), else start afresh",
    )
    _add_hyper_parameters(train)
    train.add_argument(
        "--test-size",
        type=float,
        default=0.2,
        metavar="F",
        help="fraction of rows held out for the accuracy (default 0.2; 0 trains on all rows)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the split and of minibatch shuffling (default 0)",
    )
    train.add_argument(
        "--verbose",
        action="store_true",
        help="show a progress bar of the iterations (with the loss) and of each pass over the data "
        "(rows/s, bytes/s)",
    )
    train.set_defaults(run=run_train)


def _add_predict(commands):
    predict = commands.add_parser(
        "predict",
        help="predict labels or probabilities with a saved model",
        description="Predict with MODEL on DATA, streamed chunk by chunk (but .csv and .npz, read whole).  "
        "DATA is read unlabelled unless --score, --labels, --label-column or --y-key says where its labels "
        "are; then the accuracy is printed on stderr.",
    )
    predict.add_argument("model", metavar="MODEL", help="a model written by `fastsoftmax train --model`")
    predict.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help=f"data file ({SUFFIX_LIST}); several files are shards whose rows are joined",
    )
    _add_data_arguments(predict)
    predict.add_argument(
        "--score",
        action="store_true",
        help="DATA is labelled in its default place (CSV last column; array or column y of .npz, HDF5, "
        "Zarr and Parquet files; svmlight labels): report the accuracy",
    )
    predict.add_argument("--output", metavar="PATH", help="write to PATH (.npy or .csv) instead of stdout")
    predict.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    predict.set_defaults(run=run_predict)


def _add_data_arguments(parser):
    group = parser.add_argument_group(
        "data file options",
        "Each applies to the formats it names; giving it for a file of another format is an error.",
    )
    group.add_argument(
        "--labels",
        metavar="FILE.npy",
        help="labels of .npy features, one per row, in a 1-D .npy file (one DATA file only)",
    )
    group.add_argument(
        "--label-column",
        "--y-key",
        dest="label",
        metavar="NAME",
        help="where the labels are: a CSV column (an index, negative from the end, or a header name; "
        "default the last), a Parquet column, or an .npz, HDF5 or Zarr array (default y)",
    )
    group.add_argument(
        "--weight-column",
        "--weight-key",
        dest="weight",
        metavar="NAME",
        help="sample weights: a Parquet column, or an .npz, HDF5 or Zarr array (default: none, every row "
        "weighs 1); a Parquet weight column is never read as a feature",
    )
    group.add_argument(
        "--x-key",
        dest="features",
        metavar="NAME",
        help="the features array of an .npz, HDF5 or Zarr file (default X; data/X reaches into a group)",
    )
    group.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the CSV's first row holds column names (default: detect)",
    )
    group.add_argument(
        "--zero-based",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="svmlight feature indices start at 0 (default: one-based unless an index 0 appears; "
        "declare it for a zero-based file whose first feature is always zero)",
    )


def _add_hyper_parameters(parser):
    defaults = SoftmaxClassifier().get_params()
    group = parser.add_argument_group("estimator options (defaults are SoftmaxClassifier's)")
    group.add_argument("--solver", choices=sorted(SOLVERS), help=f"(default {defaults['solver']})")
    group.add_argument("--alpha", type=float, help=f"L2 strength (default {defaults['alpha']:g})")
    group.add_argument(
        "--max-iter",
        type=int,
        help=f"iterations or epochs (default {defaults['max_iter']}; "
        f"{DIGITS_DEFAULTS['max_iter']} for digits)",
    )
    group.add_argument("--tol", type=float, help=f"(default {defaults['tol']:g})")
    group.add_argument(
        "--batch-size", type=int, help=f"minibatch rows for sgd, adam (default {defaults['batch_size']})"
    )
    group.add_argument(
        "--learning-rate-init",
        type=float,
        help=f"step size for sgd, adam (default {defaults['learning_rate_init']:g})",
    )
    group.add_argument("--dtype", choices=("float32", "float64"), help=f"(default {defaults['dtype']})")
    group.add_argument("--backend", choices=BACKEND_NAMES, help=f"(default {defaults['backend']})")


def _open_data(paths, args, *, labelled, n_features=None):
    """One data source over the files ``paths`` (shards, joined in order).

    ``labelled`` says whether a CSV has a label column and an ``.npz`` a label
    array; the other formats hold their labels apart from their features.
    ``n_features`` is the model's width, which an svmlight file (storing only
    non-zero entries) cannot always tell.
    """
    if args.labels is not None and len(paths) > 1:
        raise ValueError(
            f"--labels gives the labels of one .npy file, but DATA names {len(paths)} files; "
            "shards must hold their own labels"
        )
    sources = [_open_file(Path(path), args, labelled, n_features) for path in paths]
    return sources[0] if len(sources) == 1 else ConcatSource(sources)


def _open_file(path, args, labelled, n_features):
    suffix = path.suffix.lower()
    fmt = suffix[1:] if suffix in IN_MEMORY_SUFFIXES else FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(
            f"{path}: unknown data file type {suffix or '(no suffix)'!r}; expected one of {SUFFIX_LIST}"
        )
    given = {dest: getattr(args, dest) for dest in DATA_FLAGS if getattr(args, dest) is not None}
    for dest in given:
        if dest not in FLAGS_BY_FORMAT[fmt]:
            formats = [f for f, dests in FLAGS_BY_FORMAT.items() if dest in dests]
            raise ValueError(f"{path}: {DATA_FLAGS[dest]} applies to {', '.join(formats)} files, not {fmt}")
    if fmt in ("csv", "npz"):
        return read_data(path, labelled=labelled, **given)
    if fmt == "npy":
        if args.labels is not None and Path(args.labels).suffix.lower() != ".npy":
            raise ValueError(f"{args.labels}: a labels file must be .npy")
        return open_source(path, y=args.labels)
    if fmt == "svmlight":
        return open_source(path, n_features=n_features, zero_based=given.get("zero_based", "auto"))
    return open_source(path, **given)


# -- train ------------------------------------------------------------------------------
def run_train(args) -> int:
    """``fastsoftmax train``: fit, report, optionally save."""
    if not 0 <= args.test_size < 1:
        raise ValueError(f"--test-size {args.test_size} is not valid; expected a fraction in [0, 1)")
    if args.data:
        source, preset = _open_data(args.data, args, labelled=True), {}
    else:
        source, preset = _digits(), DIGITS_DEFAULTS
    checkpoint, resume_from = _checkpointing(args)
    train, y_train, test, y_test = _split(source, _labels(source), args.test_size, args.seed)
    model = SoftmaxClassifier(**_estimator_params(args, preset))
    warm_up_seconds = _warm_up(model, train, y_train)
    fit_seconds, caught = _timed_fit(model, train, checkpoint=checkpoint, resume_from=resume_from)
    for warning in caught:
        print(f"fastsoftmax: warning: {warning.message}", file=sys.stderr)
    accuracy = None if test is None else model.score(test, y_test)
    saved = _save(model, args.model) if args.model else None
    timing = (fit_seconds, warm_up_seconds)
    _print_report(model, source, train, test, accuracy, timing, saved, resume_from)
    return 0


def _checkpointing(args):
    """The fit's ``checkpoint`` and ``resume_from`` arguments from the command line."""
    if args.checkpoint is None:
        if args.resume or args.checkpoint_every is not None:
            raise ValueError("--resume and --checkpoint-every need --checkpoint PATH")
        return None, None
    every = args.checkpoint_every
    checkpoint = Checkpoint(args.checkpoint, every_n_steps=every, every_n_seconds=None if every else 60.0)
    return checkpoint, args.checkpoint if args.resume and os.path.exists(args.checkpoint) else None


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return ArraySource(X, y, name="digits (scikit-learn's bundled copy, raw pixels 0..16)")


def _labels(source):
    """Every label of ``source`` (labels are small beside the features); an error if it has none."""
    y = source.targets()[0]
    if y is None:
        raise ValueError(
            f"{source.name}: holds no labels; say where they are with --labels FILE.npy (.npy features) "
            "or --label-column/--y-key (other formats)"
        )
    return y


def _split(source, y, test_size, seed):
    """Training and held-out subsets of ``source`` and their labels; no held-out part when test_size is 0."""
    from sklearn.model_selection import train_test_split

    if test_size == 0:
        return source, y, None, None
    # Stratify so every class is held out in proportion, when every class has the
    # two members that needs.
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 else None
    parts = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed, stratify=stratify)
    # A subset reads just its rows from each chunk, so neither part is ever copied
    # whole; it needs them sorted.
    train_rows, test_rows = (np.sort(rows) for rows in parts)
    return source.subset(train_rows), y[train_rows], source.subset(test_rows), y[test_rows]


def _estimator_params(args, preset):
    params = dict(preset)
    for name in HYPER_PARAMETERS:
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    params["random_state"] = args.seed
    params["verbose"] = int(args.verbose)
    return params


def _warm_up(model, source, y):
    """Fit a copy for one iteration on one row per class of ``source``; return its wall time.

    The first fit in a process loads the compiled Numba kernels from their cache
    (about 0.1 s, measured here), which would dominate the reported speed of a
    small fit such as digits (about 0.05 s).  One row per class is the least data on
    which a fit runs the same kernels in the same dtype; ``source.subset`` reads
    only the chunks that hold those rows.
    """
    from sklearn.base import clone

    _, first_rows = np.unique(y, return_index=True)
    probe = clone(model).set_params(max_iter=1, verbose=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one iteration never converges; that is the point
        probe.fit(source.subset(np.sort(first_rows)))
    return time.perf_counter() - start


def _timed_fit(model, source, **fit_options):
    """Fit, returning the wall time and the warnings raised, to be shown as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        model.fit(source, **fit_options)
        seconds = time.perf_counter() - start
    return seconds, caught


def _save(model, path):
    model.save(path)
    path = Path(path)
    # np.savez appends .npz to a name without it; report the file that exists.
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _print_report(model, source, train, test, accuracy, timing, saved, resumed_from=None):
    backend = get_backend(model.backend)
    threads = getattr(backend, "n_threads", None)
    fit_seconds, warm_up_seconds = timing
    iterations_per_second = model.n_iter_ / fit_seconds
    lines = [
        (
            "data",
            f"{source.name}: {source.n_samples} rows x {source.n_features} features, "
            f"{len(model.classes_)} classes, {format_bytes(source.nbytes)} of features",
        ),
        ("backend", backend.name + (f" ({threads} threads)" if threads else "")),
        ("dtype", model.coef_.dtype.name),
        ("solver", model.solver),
        ("train rows", str(train.n_samples)),
        ("held-out rows", "0" if test is None else str(test.n_samples)),
        ("held-out accuracy", "n/a (--test-size 0)" if accuracy is None else f"{accuracy:.4f}"),
        ("final training loss", f"{model.loss_curve_[-1]:.6g}"),
        ("n_iter", str(model.n_iter_)),
        ("fit time", f"{fit_seconds:.3f} s (after a {warm_up_seconds:.3f} s warm-up that loads the kernels)"),
        ("rows/s", f"{train.n_samples * iterations_per_second:.3g} (rows x iterations / fit time)"),
        (
            "bytes/s",
            f"{format_bytes(train.nbytes * iterations_per_second)}/s (feature bytes x iterations / fit time)",
        ),
    ]
    if resumed_from is not None:
        # n_iter_ counts the iterations before the interruption too: no rate to report.
        lines[-2:] = [("rows/s", "n/a (resumed)"), ("bytes/s", "n/a (resumed)")]
        lines.append(("resumed from", str(resumed_from)))
    if saved is not None:
        lines.append(("model", str(saved)))
    _print_table(lines)


def _print_table(lines, file=None):
    width = max(len(key) for key, _ in lines) + 1
    for key, value in lines:
        print(f"{key + ':':<{width}} {value}", file=file)


# -- predict ----------------------------------------------------------------------------
def run_predict(args) -> int:
    """``fastsoftmax predict``: load a model, predict, write or print, score if labelled."""
    if args.output is not None and Path(args.output).suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"--output {args.output}: expected a .npy or .csv file")
    model = SoftmaxClassifier.load(args.model)
    labelled = args.score or args.labels is not None or args.label is not None
    source = _open_data(args.data, args, labelled=labelled, n_features=model.n_features_in_)
    _check_width(source, model.n_features_in_, labelled)
    # Labels before the pass over the features: a file without them fails at once.
    y = _labels(source) if labelled else None
    result = model.predict_proba(source) if args.proba else model.predict(source)
    if args.output is None:
        _write_csv(sys.stdout, result, model.classes_ if args.proba else None)
    else:
        _write_file(Path(args.output), result, model.classes_ if args.proba else None)
    if y is not None:
        predicted = result if not args.proba else model.classes_[np.argmax(result, axis=1)]
        accuracy = np.mean(predicted == y)
        print(f"accuracy: {accuracy:.4f} ({y.shape[0]} rows)", file=sys.stderr)
    return 0


def _check_width(source, n_features, labelled):
    """The likely cause of one column too many: unlabelled data whose labels are a column.

    Any other mismatch is the estimator's to report (``predict`` checks every source).
    """
    if source.n_features == n_features + 1 and not labelled:
        raise ValueError(
            f"{source.name}: has {source.n_features} features, but the model was fitted on {n_features}; "
            "if one column holds labels, say so with --score or --label-column"
        )


def _write_file(path, result, classes):
    if path.suffix.lower() == ".npy":
        # Object arrays would need pickle; class labels are plain strings or numbers.
        np.save(path, result.astype(str) if result.dtype == object else result, allow_pickle=False)
        return
    with open(path, "w", encoding="utf-8") as f:
        _write_csv(f, result, classes)


def _write_csv(f, result, classes):
    """Labels one per line; probabilities one row per line under a header of class labels."""
    if classes is None:
        f.writelines(f"{label}\n" for label in result.tolist())
        return
    f.write(",".join(str(c) for c in classes.tolist()) + "\n")
    np.savetxt(f, result, fmt="%.8g", delimiter=",")


# -- bench ------------------------------------------------------------------------------
def run_bench(argv) -> int:
    """``fastsoftmax bench SUITE ...``: the benchmark suite (``python -m bench`` in a checkout)."""
    from .bench.suite import main as bench_main

    return bench_main(argv, prog="fastsoftmax bench")


# -- info -------------------------------------------------------------------------------
def run_info(args) -> int:
    """``fastsoftmax info``: versions, CPU threads, BLAS and backend availability."""
    import numba
    import scipy
    import sklearn

    lines = [
        ("fastsoftmax", __version__),
        ("python", sys.version.split()[0]),
        ("numpy", np.__version__),
        ("numba", numba.__version__),
        ("scipy", scipy.__version__),
        ("scikit-learn", sklearn.__version__),
        (
            "cpu threads",
            f"{get_backend('cpu').n_threads} (NumPy backend; set FASTSOFTMAX_NUM_THREADS to change)",
        ),
        ("blas", _blas_description()),
    ]
    for name, reason in available_backends().items():
        lines.append((f"backend {name}", "available" if reason is None else f"unavailable: {reason}"))
    _print_table(lines)
    return 0


def _blas_description():
    from threadpoolctl import threadpool_info

    blas = [
        f"{i['internal_api']} {i.get('version') or ''}".strip()
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    return ", ".join(blas) or "none found"
