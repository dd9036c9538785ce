"""The epoch loop shared by the minibatch solvers (SGD and Adam).

Each epoch visits every training row once, in minibatches of ``batch_size`` rows
drawn from a fresh permutation of the rows, or, for data streamed from a source, of
the source's chunks and of the rows within each chunk (``SoftmaxObjective.minibatches``;
from the solver's own random generator, so a fixed ``random_state`` reproduces a fit
exactly).  The stopping rule is
scikit-learn's MLP rule: a score (the epoch's mean training loss, or the validation
loss with early stopping) that fails to improve by ``tol`` for ``n_iter_no_change``
consecutive epochs ends the fit -- or, with the "adaptive" schedule, divides the
learning rate by 5 until it falls below 1e-6.
"""

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np

from ..checkpoint import expect_array, reading, restore_rng, rng_state
from ..progress import Progress
from .result import SolverResult

SCHEDULES = ("constant", "invscaling", "adaptive", "cosine")
_MIN_ADAPTIVE_LR = 1e-6
# An epoch whose mean loss exceeds this many times the first minibatch's has diverged.
_DIVERGED = 1e4


@dataclass
class MinibatchConfig:
    """Hyper-parameters of the epoch loop (see ``SoftmaxClassifier`` for their meaning)."""

    batch_size: int
    learning_rate: str
    learning_rate_init: float
    power_t: float
    n_iter_no_change: int
    shuffle: bool = True
    schedule_epochs: int | None = None  # length of the cosine schedule; None: this call's max_iter


@dataclass
class MinibatchState:
    """Everything needed to continue a minibatch fit where it stopped."""

    solver: str
    backend: str
    update: object
    rng: np.random.RandomState
    epoch: int = 0
    lr: float | None = None
    best_score: float = math.inf
    no_improvement: int = 0
    steps: int = 0  # minibatch updates, over every call


def learning_rate_at(config, state, max_iter):
    """Learning rate for the epoch about to run, as a Python float.

    A Python float, whatever the type of ``learning_rate_init``: a NumPy float64
    would promote float32 updates to float64 (NumPy's promotion rules), so a fit
    given ``np.float64(0.01)`` would round differently from one resumed from a
    checkpoint, which holds plain numbers.
    """
    return float(_schedule(config, state, max_iter))


def _schedule(config, state, max_iter):
    if config.learning_rate == "invscaling":
        return config.learning_rate_init / (state.epoch + 1) ** config.power_t
    if config.learning_rate == "cosine":
        # Annealed over the estimator's max_iter, not over one call: partial_fit runs
        # one epoch per call and must not restart at (or jump to) the end of the curve.
        length = config.schedule_epochs or max_iter
        progress = min(state.epoch / length, 1.0)
        return config.learning_rate_init * 0.5 * (1 + math.cos(math.pi * progress))
    if config.learning_rate == "adaptive":
        return state.lr if state.lr is not None else config.learning_rate_init
    return config.learning_rate_init


def _copy(params):
    return tuple(p.copy() for p in params)


@dataclass
class MinibatchRun:
    """One call's progress: what a checkpoint holds besides :class:`MinibatchState`."""

    params: tuple
    loss_curve: list
    validation_curve: list
    best_params: tuple | None = None
    best_validation: float = math.inf
    epochs_run: int = 0
    batches_done: int = 0  # of the current epoch
    epoch_loss: float = 0.0  # weighted sum over those batches
    stopped: str | None = None  # why the fit converged, once it has
    first_loss: float | None = None  # of the call's first minibatch: the divergence yardstick


def _snapshot(run, state, epoch_rng):
    """Checkpoint entries of a run (see :mod:`fastsoftmax.checkpoint`)."""
    entries = {
        "solver": state.solver,
        "W": run.params[0],
        "b": run.params[1],
        "loss_curve": run.loss_curve,
        "validation_curve": run.validation_curve,
        "best_validation": run.best_validation,
        "epochs_run": run.epochs_run,
        "batches_done": run.batches_done,
        "epoch_loss": run.epoch_loss,
        "stopped": run.stopped,
        "first_loss": run.first_loss,
        "epoch": state.epoch,
        "lr": state.lr,
        "best_score": state.best_score,
        "no_improvement": state.no_improvement,
        "steps": state.steps,
        **state.update.state_dict(),
        # The generator as the epoch began: a resume redraws the epoch's order.
        **rng_state(epoch_rng, "epoch_"),
    }
    if run.best_params is not None:
        entries.update(best_W=run.best_params[0], best_b=run.best_params[1])
    return entries


def _restore(saved, state, asarray, shapes, max_iter):
    """The run a checkpoint holds, with ``state`` advanced to it in place.

    ``shapes`` are those of (W, b); every array is checked against its own.  Raises
    ValueError for anything else than what :func:`_snapshot` writes.
    """
    if saved["solver"] != state.solver:
        raise ValueError(f"the checkpoint is of solver={saved['solver']!r}, not {state.solver!r}")
    stopped = saved["stopped"]
    if not (stopped is None or isinstance(stopped, str)):
        raise ValueError(f"stopped must be null or a message, got {stopped!r}")
    epochs_run, batches_done = int(saved["epochs_run"]), int(saved["batches_done"])
    if not (0 <= epochs_run <= max_iter and batches_done >= 0) or (epochs_run == max_iter and batches_done):
        raise ValueError(f"the checkpoint is in epoch {epochs_run + 1}, beyond max_iter={max_iter}")

    def pair(w, b):
        return asarray(expect_array(saved, w, shapes[0])), asarray(expect_array(saved, b, shapes[1]))

    # Every array the update rule restores has W's or b's shape: check them first.
    for name in saved:
        if isinstance(saved[name], np.ndarray) and name[:-2] in _PAIRED and name[-2:] in ("_W", "_b"):
            expect_array(saved, name, shapes[name.endswith("_b")])
    state.epoch = int(saved["epoch"])
    state.lr = None if saved["lr"] is None else float(saved["lr"])
    state.best_score = float(saved["best_score"])
    state.no_improvement = int(saved["no_improvement"])
    state.steps = int(saved["steps"])
    state.update.load_state_dict(saved, asarray)
    restore_rng(state.rng, saved, "epoch_")
    return MinibatchRun(
        params=pair("W", "b"),
        loss_curve=[float(v) for v in saved["loss_curve"]],
        validation_curve=[float(v) for v in saved["validation_curve"]],
        best_params=pair("best_W", "best_b") if "best_W" in saved else None,
        best_validation=float(saved["best_validation"]),
        epochs_run=epochs_run,
        batches_done=batches_done,
        epoch_loss=float(saved["epoch_loss"]),
        stopped=stopped,
        first_loss=None if saved["first_loss"] is None else float(saved["first_loss"]),
    )


# Prefixes of the checkpoint's arrays shaped like W (suffix _W) or b (suffix _b).
_PAIRED = ("velocity", "adam_m", "adam_v", "best")


def minibatch(
    objective,
    params0,
    *,
    max_iter,
    tol,
    config,
    state,
    verbose=0,
    validation=None,
    stop_early=True,
    checkpoint=None,
    resume=None,
):
    """Run up to ``max_iter`` epochs of minibatch descent.

    Parameters
    ----------
    objective : SoftmaxObjective
        Training data and objective.
    params0 : tuple (W, b) of backend arrays
        Starting point (copied, never modified).
    max_iter : int
        Epochs.
    tol : float
    config : MinibatchConfig
    state : MinibatchState
        Update rule, generator and counters; advanced in place.
    verbose : int
    validation : SoftmaxObjective, optional
        Held-out data; its loss drives the stopping rule, and the best parameters
        seen on it are returned.
    stop_early : bool
        False runs exactly ``max_iter`` epochs (``partial_fit``).
    checkpoint : CheckpointWriter, optional
        Told of every minibatch update, and written to when the run ends.
    resume : SavedFit, optional
        A checkpoint to continue from, part-way through an epoch if it was written
        there; ``params0`` is then unused.

    Returns
    -------
    SolverResult

    Raises
    ------
    FloatingPointError
        When the loss stops being finite (the learning rate is too large).
    """
    asarray = objective.backend.asarray
    if resume is None:
        run = MinibatchRun(params=_copy(params0), loss_curve=[], validation_curve=[])
    else:
        with reading(resume):
            run = _restore(resume.state, state, asarray, (params0[0].shape, params0[1].shape), max_iter)
    n = objective.n_samples
    batch_size = min(config.batch_size, n)
    with Progress(max_iter, "epoch", verbose > 0) as progress:
        while run.stopped is None and run.epochs_run < max_iter:
            lr = learning_rate_at(config, state, max_iter)
            # The generator as the epoch begins, for checkpoints to redraw its order.
            epoch_rng = copy.deepcopy(state.rng) if checkpoint is not None else None
            batches = objective.minibatches(state.rng, batch_size, config.shuffle, skip=run.batches_done)
            for batch in batches:
                loss, grads = objective.loss_grad(run.params, batch)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss} in epoch {state.epoch + 1}, minibatch {run.batches_done + 1} "
                        f"(learning rate {lr:g}); lower learning_rate_init"
                    )
                if run.first_loss is None:
                    run.first_loss = loss
                state.update.step_(run.params, grads, lr)
                state.steps += 1
                run.epoch_loss += loss * batch.y.shape[0]
                run.batches_done += 1
                if checkpoint is not None:
                    checkpoint.step(functools.partial(_snapshot, run, state, epoch_rng))
            end_epoch(run, state, config, run.epoch_loss / n, validation, lr, tol, stop_early, progress)
    if checkpoint is not None:
        checkpoint.write(_snapshot(run, state, state.rng))
    return SolverResult(
        params=run.best_params if run.best_params is not None else run.params,
        n_iter=run.epochs_run,
        converged=run.stopped is not None,
        loss_curve=run.loss_curve,
        message=run.stopped or f"reached max_iter={max_iter}",
        state=state,
        validation_loss_curve=run.validation_curve,
    )


def end_epoch(run, state, config, mean_loss, validation, lr, tol, stop_early, progress):
    """Record an epoch's mean loss, keep the best parameters, and apply the stopping rule.

    Shared by this loop and the Dask one (:mod:`fastsoftmax.dask`), whose epochs run
    on the workers.

    Raises FloatingPointError when the epoch's loss is more than ``_DIVERGED``
    times the first minibatch's (or 1): finite, but the steps diverge, and the
    stopping rule would otherwise take the stall for convergence.
    """
    state.epoch += 1
    run.epochs_run += 1
    run.loss_curve.append(mean_loss)
    if run.first_loss is not None and run.loss_curve[-1] > _DIVERGED * max(run.first_loss, 1.0):
        raise FloatingPointError(
            f"the loss rose from {run.first_loss:.3g} to {run.loss_curve[-1]:.3g} by epoch {state.epoch} "
            f"(learning rate {lr:g}): the steps diverge; lower learning_rate_init or standardise X"
        )
    run.batches_done, run.epoch_loss = 0, 0.0
    score = run.loss_curve[-1]
    if validation is not None:
        score = validation.loss(run.params)
        run.validation_curve.append(score)
    progress.step(run.loss_curve[-1], lr=f"{lr:.3g}")
    if validation is not None and score < run.best_validation:
        # The best parameters are the lowest validation loss seen, whether or not it
        # beat the previous best by tol (which only drives stopping).
        run.best_validation = score
        run.best_params = _copy(run.params)
    if score < state.best_score - tol:
        state.best_score = score
        state.no_improvement = 0
    else:
        state.no_improvement += 1
    if not stop_early or state.no_improvement < config.n_iter_no_change:
        return
    if config.learning_rate == "adaptive" and lr / 5 >= _MIN_ADAPTIVE_LR:
        state.lr = lr / 5
        state.no_improvement = 0
        return
    run.stopped = f"score did not improve by tol={tol} for {config.n_iter_no_change} epochs"
