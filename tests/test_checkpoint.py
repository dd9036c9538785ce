"""Checkpoints: a fit interrupted at any step and resumed ends with the model it would have had.

The interruption is simulated in-process (a checkpoint write that raises after a
given number of writes, as a crash right after that write would leave things) for
every solver and option that keeps state, and done for real once per solver kind:
a fitting subprocess is killed with SIGKILL part-way, and a second process resumes.
On the CPU backend "the same model" means bit-identical: the resumed fit redoes the
same floating-point operations in the same order.  The CUDA cases run in the
simulator in CI; they ask for equality too, since the backend sums in a fixed order.

File-level checks (atomic replacement, corrupt and foreign checkpoints) are here as
well; hostile model and data files are tested in tests/test_hostile_files.py.
"""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastsoftmax import Checkpoint, CheckpointError, SoftmaxClassifier, load_checkpoint
from fastsoftmax.checkpoint import CheckpointWriter
from fastsoftmax.sources import open_source

SCRIPT = Path(__file__).parent / "scripts" / "checkpointed_fit.py"


class Interrupted(Exception):
    """Stands for the process dying right after a checkpoint write."""


def _problem(n=240, d=6, c=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal((d, c)) + rng.gumbel(size=(n, c))).argmax(axis=1)
    return X, y


def _fit_quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is small on purpose
        return model.fit(*args, **kwargs)


def _interrupt_after(monkeypatch, writes):
    """Make the ``writes``-th checkpoint write the last thing the fit does."""
    write = CheckpointWriter.write
    count = [0]

    def write_then_die(self, state):
        write(self, state)
        count[0] += 1
        if count[0] == writes:
            raise Interrupted

    monkeypatch.setattr(CheckpointWriter, "write", write_then_die)
    return lambda: monkeypatch.setattr(CheckpointWriter, "write", write)


def _interrupt_and_resume(monkeypatch, path, fit, writes, every_n_steps, **resume_options):
    """``fit(**options)`` killed right after its ``writes``-th checkpoint, then resumed from ``path``."""
    restore = _interrupt_after(monkeypatch, writes)
    with pytest.raises(Interrupted):
        fit(checkpoint=Checkpoint(path, every_n_steps=every_n_steps))
    restore()
    saved = load_checkpoint(path)
    return saved, fit(resume_from=path, **resume_options)


def _assert_same_model(resumed, reference):
    np.testing.assert_array_equal(resumed.coef_, reference.coef_)
    np.testing.assert_array_equal(resumed.intercept_, reference.intercept_)
    assert resumed.n_iter_ == reference.n_iter_
    assert resumed.loss_curve_ == reference.loss_curve_
    assert getattr(resumed, "validation_loss_curve_", None) == getattr(
        reference, "validation_loss_curve_", None
    )


CASES = {
    "lbfgs": dict(solver="lbfgs", max_iter=15, tol=0.0),
    "lbfgs-float32": dict(solver="lbfgs", max_iter=15, tol=0.0, dtype="float32"),
    "sgd": dict(solver="sgd", max_iter=4, batch_size=16),
    "sgd-classical-momentum": dict(solver="sgd", max_iter=4, batch_size=16, nesterov=False),
    "adam-early-stopping": dict(
        solver="adam", max_iter=6, batch_size=16, early_stopping=True, n_iter_no_change=2
    ),
    "adam-cosine": dict(solver="adam", max_iter=4, batch_size=16, learning_rate="cosine"),
    "sgd-adaptive": dict(
        solver="sgd", max_iter=8, batch_size=32, learning_rate="adaptive", n_iter_no_change=1, tol=10.0
    ),
    "sgd-no-shuffle-weights": dict(
        solver="sgd", max_iter=3, batch_size=16, shuffle=False, class_weight="balanced"
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("writes", [1, 3])
def test_resumed_fit_is_bit_identical(case, writes, tmp_path, monkeypatch):
    params = dict(alpha=1e-3, backend="cpu", random_state=0, dtype="float64") | CASES[case]
    X, y = _problem()
    reference = _fit_quietly(SoftmaxClassifier(**params), X, y)
    path = tmp_path / "fit.ckpt"

    def fit(**options):
        return _fit_quietly(SoftmaxClassifier(**params), X, y, **options)

    # Resumed with a checkpoint of its own, as a crash-safe script would be.
    saved, resumed = _interrupt_and_resume(monkeypatch, path, fit, writes, 4, checkpoint=path)
    assert 0 < saved.steps and saved.state["stopped"] is None
    _assert_same_model(resumed, reference)


def test_resume_mid_epoch_of_a_streamed_source(tmp_path, monkeypatch):
    # Chunks of 50 rows and batches of 16: the checkpoint falls inside a chunk, after
    # chunks whose rows the resume must skip without reading.
    X, y = _problem(n=230)
    np.save(tmp_path / "X.npy", X)
    source = {"path": str(tmp_path / "X.npy"), "chunk_rows": 50}
    params = dict(solver="adam", max_iter=3, batch_size=16, backend="cpu", random_state=2, dtype="float64")

    def fit(**options):
        return _fit_quietly(SoftmaxClassifier(**params), open_source(source, y), **options)

    saved, resumed = _interrupt_and_resume(monkeypatch, tmp_path / "fit.ckpt", fit, 2, 7)
    assert saved.state["batches_done"] == 14
    _assert_same_model(resumed, fit())


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_resume_on_the_cuda_backend(solver, backend, tmp_path, monkeypatch):
    # Tiny: the simulator runs every GPU thread in Python.  Interrupted after the
    # first step: L-BFGS with a curvature pair to restore, Adam mid-epoch.
    X, y = _problem(n=24, d=3, c=3)
    params = dict(solver=solver, max_iter=2, batch_size=12, tol=0.0, backend=backend, random_state=0)

    def fit(**options):
        return _fit_quietly(SoftmaxClassifier(**params), X, y, **options)

    _, resumed = _interrupt_and_resume(monkeypatch, tmp_path / "fit.ckpt", fit, 1, 1)
    _assert_same_model(resumed, fit())


def test_checkpointing_does_not_change_the_fit(tmp_path):
    X, y = _problem()
    params = dict(solver="sgd", max_iter=3, batch_size=16, backend="cpu", random_state=0)
    reference = _fit_quietly(SoftmaxClassifier(**params), X, y)
    path = tmp_path / "fit.ckpt"
    checkpointed = _fit_quietly(
        SoftmaxClassifier(**params), X, y, checkpoint=Checkpoint(path, every_n_steps=1, every_n_seconds=1e-9)
    )
    _assert_same_model(checkpointed, reference)
    assert load_checkpoint(path).steps == 3 * 15  # the last write: at the end, every step taken
    assert os.listdir(tmp_path) == ["fit.ckpt"]  # no temporary files left behind


def test_resuming_a_finished_fit_returns_its_model(tmp_path):
    X, y = _problem()
    path = tmp_path / "fit.ckpt"
    params = dict(alpha=1e-2, backend="cpu", dtype="float64")
    first = SoftmaxClassifier(**params).fit(X, y, checkpoint=path)
    assert load_checkpoint(path).steps == first.n_iter_
    again = SoftmaxClassifier(**params).fit(X, y, resume_from=path)
    _assert_same_model(again, first)


def test_a_longer_max_iter_continues_a_finished_fit(tmp_path):
    # max_iter may change on resume: 5 iterations then 10 more are the 15-iteration fit.
    X, y = _problem()
    params = dict(alpha=1e-3, backend="cpu", dtype="float64", tol=0.0)
    path = tmp_path / "fit.ckpt"
    _fit_quietly(SoftmaxClassifier(max_iter=5, **params), X, y, checkpoint=path)
    resumed = _fit_quietly(SoftmaxClassifier(max_iter=15, **params), X, y, resume_from=path)
    _assert_same_model(resumed, _fit_quietly(SoftmaxClassifier(max_iter=15, **params), X, y))


def test_a_checkpoint_of_another_fit_is_refused(tmp_path):
    X, y = _problem()
    path = tmp_path / "fit.ckpt"
    SoftmaxClassifier(alpha=1e-2, backend="cpu").fit(X, y, checkpoint=path)
    with pytest.raises(CheckpointError, match=r"alpha=0\.01 -> 0\.1"):
        SoftmaxClassifier(alpha=1e-1, backend="cpu").fit(X, y, resume_from=path)
    with pytest.raises(CheckpointError, match="labels or sample weights differ"):
        SoftmaxClassifier(alpha=1e-2, backend="cpu").fit(X, y[::-1], resume_from=path)
    with pytest.raises(CheckpointError, match="n_features differ"):
        SoftmaxClassifier(alpha=1e-2, backend="cpu").fit(X[:, :3], y, resume_from=path)
    with pytest.raises(CheckpointError, match="dtype differ"):
        SoftmaxClassifier(alpha=1e-2, backend="cpu", dtype="float64").fit(X, y, resume_from=path)
    with pytest.raises(CheckpointError, match=r"max_iter=10 -> 20"):
        # With the cosine schedule max_iter sets the learning rates, so it may not change.
        cosine = dict(solver="sgd", learning_rate="cosine", backend="cpu")
        _fit_quietly(SoftmaxClassifier(max_iter=10, **cosine), X, y, checkpoint=path)
        SoftmaxClassifier(max_iter=20, **cosine).fit(X, y, resume_from=path)


def test_a_resume_with_another_data_layout_is_refused(tmp_path):
    # A minibatch epoch's order depends on the source's chunks: resuming one written
    # for chunks of 50 rows with chunks of 100, or in memory, would skip other rows.
    X, y = _problem(n=230)
    np.save(tmp_path / "X.npy", X)
    params = dict(solver="sgd", max_iter=2, batch_size=16, backend="cpu", random_state=0)
    path = tmp_path / "fit.ckpt"
    _fit_quietly(
        SoftmaxClassifier(**params),
        open_source({"path": str(tmp_path / "X.npy"), "chunk_rows": 50}, y),
        checkpoint=path,
    )
    with pytest.raises(CheckpointError, match="data layout"):
        _fit_quietly(
            SoftmaxClassifier(**params),
            open_source({"path": str(tmp_path / "X.npy"), "chunk_rows": 100}, y),
            resume_from=path,
        )
    with pytest.raises(CheckpointError, match="data layout"):
        _fit_quietly(SoftmaxClassifier(**params), X, y, resume_from=path)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_max_iter_below_the_checkpoints_progress_is_refused(solver, tmp_path):
    X, y = _problem()
    path = tmp_path / "fit.ckpt"
    params = dict(solver=solver, batch_size=16, backend="cpu", random_state=0, tol=0.0)
    _fit_quietly(SoftmaxClassifier(max_iter=4, **params), X, y, checkpoint=path)
    with pytest.raises(CheckpointError, match="beyond max_iter=2"):
        _fit_quietly(SoftmaxClassifier(max_iter=2, **params), X, y, resume_from=path)


def test_a_numpy_learning_rate_survives_the_checkpoint(tmp_path, monkeypatch):
    # Grid searches hand out NumPy scalars; the adaptive rate derived from one is
    # still a plain number in the checkpoint.
    X, y = _problem()
    params = dict(
        solver="sgd",
        max_iter=8,
        batch_size=32,
        learning_rate="adaptive",
        learning_rate_init=np.float64(0.05),
        n_iter_no_change=1,
        tol=10.0,
        backend="cpu",
        random_state=0,
    )

    def fit(**options):
        return _fit_quietly(SoftmaxClassifier(**params), X, y, **options)

    # 8 minibatches an epoch; the rate is cut after epoch 2; the 5th write is in epoch 3.
    saved, resumed = _interrupt_and_resume(monkeypatch, tmp_path / "fit.ckpt", fit, 5, 4)
    assert saved.state["lr"] == pytest.approx(0.01)
    _assert_same_model(resumed, fit())


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    X, y = _problem()
    path = tmp_path / "fit.ckpt"
    params = dict(solver="sgd", max_iter=2, batch_size=16, backend="cpu", random_state=0)
    _fit_quietly(SoftmaxClassifier(**params), X, y, checkpoint=path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _fit_quietly(SoftmaxClassifier(**params), X, y, checkpoint=Checkpoint(path, every_n_steps=1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["fit.ckpt"]


def _corrupt(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("not a checkpoint")
    elif how == "a model file":
        X, y = _problem()
        SoftmaxClassifier(backend="cpu").fit(X, y).save(path.with_suffix(".npz"))
        path.write_bytes(path.with_suffix(".npz").read_bytes())
    elif how == "npy":
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.write_bytes(path.with_suffix(".npy").read_bytes())


@pytest.mark.parametrize("how", ["truncated", "empty", "text", "a model file", "npy"])
def test_a_corrupt_checkpoint_gives_a_clear_error(how, tmp_path):
    X, y = _problem()
    path = tmp_path / "fit.ckpt"
    SoftmaxClassifier(backend="cpu").fit(X, y, checkpoint=path)
    _corrupt(path, how)
    with pytest.raises(CheckpointError, match=str(path.name)):
        SoftmaxClassifier(backend="cpu").fit(X, y, resume_from=path)


def _rewrite(path, change):
    """Rewrite a checkpoint with ``change(arrays, metadata)`` applied (no pickle: plain arrays)."""
    import json

    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(arrays.pop("metadata")))
    change(arrays, metadata)
    with open(path, "wb") as f:
        np.savez(f, metadata=np.array(json.dumps(metadata)), **arrays)


def _set(name, value):
    def change(arrays, metadata):
        arrays[name] = value

    return change


def _set_state(name, value):
    def change(arrays, metadata):
        metadata["state"][name] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_set("W", np.full((6, 4), np.nan)), "W holds NaN"),
        (_set("W", np.zeros((5, 4))), "W must be float64"),
        (_set("b", np.zeros(4, np.float32)), "b must be float64"),
        (_set("epoch_rng_keys", np.zeros(3, np.uint32)), "624 uint32"),
        (_set("W", np.array(["a", "b"])), "W must be float64"),
        (_set_state("steps", "many"), "state is invalid"),
        (_set_state("loss_curve", None), "state is invalid"),
        (
            lambda arrays, metadata: [arrays.pop(k) for k in ("dW", "velocity_W") if k in arrays],
            "state is invalid",
        ),
        (_set_state("epoch_rng_pos", 2**31 - 100), "not a generator position"),
        (_set("W", np.zeros(4)), r"W must have shape \(6, 4\)"),
        (_set_state("stopped", [1]), "stopped must be null or a message"),
        (_set_state("steps", float("inf")), "state is invalid"),
        (lambda arrays, metadata: metadata.update(format_version=99), "format_version 99"),
        (lambda arrays, metadata: metadata.pop("context"), "context or state is missing"),
    ],
    ids=[
        "nan",
        "shape",
        "dtype",
        "rng",
        "strings",
        "type",
        "curve",
        "missing",
        "rng-position",
        "W-shape",
        "stopped",
        "infinite-steps",
        "version",
        "context",
    ],
)
@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_an_invalid_checkpoint_gives_a_clear_error(change, message, solver, tmp_path, request):
    if solver == "lbfgs" and "-rng" in request.node.callspec.id:
        pytest.skip("L-BFGS draws no random numbers: its checkpoints hold no generator")
    X, y = _problem()
    path = tmp_path / "fit.ckpt"
    params = dict(
        solver=solver, max_iter=2, batch_size=16, backend="cpu", dtype="float64", random_state=0, tol=0.0
    )
    _fit_quietly(SoftmaxClassifier(**params), X, y, checkpoint=path)
    _rewrite(path, change)
    with pytest.raises(CheckpointError, match=message):
        _fit_quietly(SoftmaxClassifier(**params), X, y, resume_from=path)


def test_a_missing_checkpoint_is_file_not_found(tmp_path):
    X, y = _problem()
    with pytest.raises(FileNotFoundError):
        SoftmaxClassifier(backend="cpu").fit(X, y, resume_from=tmp_path / "nope.ckpt")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(every_n_steps=None, every_n_seconds=None), "needs every_n_steps or every_n_seconds"),
        (dict(every_n_steps=0), "every_n_steps must be a positive integer"),
        (dict(every_n_steps=2.5), "every_n_steps must be a positive integer"),
        (dict(every_n_seconds=-1), "every_n_seconds must be a positive number"),
        (dict(every_n_seconds=float("inf")), "every_n_seconds must be a positive number"),
    ],
)
def test_checkpoint_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Checkpoint("fit.ckpt", **kwargs)


def test_checkpoint_must_be_a_path_or_checkpoint():
    X, y = _problem()
    with pytest.raises(TypeError, match="checkpoint must be a path or a fastsoftmax.Checkpoint"):
        SoftmaxClassifier(backend="cpu").fit(X, y, checkpoint=3)


def _run_script(*args, pause=0.0):
    command = [sys.executable, str(SCRIPT), *map(str, args)] + (["--pause", str(pause)] if pause else [])
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _steps_written(path):
    try:
        return load_checkpoint(path).steps
    except (FileNotFoundError, CheckpointError):
        return 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
@pytest.mark.parametrize("solver, kill_at_step", [("lbfgs", 10), ("sgd", 200)])
def test_a_fit_killed_with_sigkill_resumes_to_the_same_model(solver, kill_at_step, tmp_path):
    """Kill a fitting process part-way; a new process resumes it to the uninterrupted model, bit for bit."""
    uninterrupted = _run_script(solver, tmp_path / "whole.ckpt", tmp_path / "whole.npz")
    checkpoint = tmp_path / "killed.ckpt"
    killed = _run_script(solver, checkpoint, tmp_path / "never.npz", pause=0.1)
    deadline = time.monotonic() + 120
    while _steps_written(checkpoint) < kill_at_step:
        assert killed.poll() is None, f"the fit ended before it could be killed: {killed.communicate()[1]!r}"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.npz").exists()
    saved = load_checkpoint(checkpoint)
    assert saved.state["stopped"] is None
    resumed = _run_script(solver, checkpoint, tmp_path / "resumed.npz", "--resume")
    for process in (uninterrupted, resumed):
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    whole = SoftmaxClassifier.load(tmp_path / "whole.npz")
    _assert_same_model(SoftmaxClassifier.load(tmp_path / "resumed.npz"), whole)
    assert saved.steps < load_checkpoint(tmp_path / "whole.ckpt").steps  # it was killed part-way
