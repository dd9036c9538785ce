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

import math
from dataclasses import dataclass

import numpy as np

from ..progress import Progress
from .result import SolverResult

SCHEDULES = ("constant", "invscaling", "adaptive", "cosine")
_MIN_ADAPTIVE_LR = 1e-6


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


def learning_rate_at(config, state, max_iter):
    """Learning rate for the epoch about to run."""
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


def minibatch(
    objective, params0, *, max_iter, tol, config, state, verbose=0, validation=None, stop_early=True
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

    Returns
    -------
    SolverResult

    Raises
    ------
    FloatingPointError
        When the loss stops being finite (the learning rate is too large).
    """
    params = _copy(params0)
    best_params, best_validation = None, math.inf
    n = objective.n_samples
    batch_size = min(config.batch_size, n)
    loss_curve, validation_curve = [], []
    converged, message = False, f"reached max_iter={max_iter}"
    epochs_run = 0
    with Progress(max_iter, "epoch", verbose > 0) as progress:
        for _ in range(max_iter):
            lr = learning_rate_at(config, state, max_iter)
            epoch_loss = 0.0
            for batch in objective.minibatches(state.rng, batch_size, config.shuffle):
                loss, grads = objective.loss_grad(params, batch)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss} in epoch {state.epoch + 1} (learning rate {lr:g}); "
                        "lower learning_rate_init"
                    )
                state.update.step_(params, grads, lr)
                epoch_loss += loss * batch.y.shape[0]
            state.epoch += 1
            epochs_run += 1
            loss_curve.append(epoch_loss / n)
            score = loss_curve[-1]
            if validation is not None:
                score = validation.loss(params)
                validation_curve.append(score)
            progress.step(loss_curve[-1], lr=f"{lr:.3g}")
            if validation is not None and score < best_validation:
                # The best parameters are the lowest validation loss seen, whether
                # or not it beat the previous best by tol (which only drives stopping).
                best_validation = score
                best_params = _copy(params)
            if score < state.best_score - tol:
                state.best_score = score
                state.no_improvement = 0
            else:
                state.no_improvement += 1
            if not stop_early or state.no_improvement < config.n_iter_no_change:
                continue
            if config.learning_rate == "adaptive" and lr / 5 >= _MIN_ADAPTIVE_LR:
                state.lr = lr / 5
                state.no_improvement = 0
                continue
            converged = True
            message = f"score did not improve by tol={tol} for {config.n_iter_no_change} epochs"
            break
    if best_params is not None:
        params = best_params
    return SolverResult(
        params=params,
        n_iter=epochs_run,
        converged=converged,
        loss_curve=loss_curve,
        message=message,
        state=state,
        validation_loss_curve=validation_curve,
    )
