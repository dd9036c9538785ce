"""Fit a fixed problem with checkpoints, for the kill-and-resume test (tests/test_checkpoint.py).

Usage: ``python checkpointed_fit.py SOLVER CHECKPOINT MODEL_OUT [--resume] [--pause SECONDS]``

Fits a seeded problem on the CPU backend, writing a checkpoint every few steps to
CHECKPOINT (resuming from it with ``--resume``), and saves the model to MODEL_OUT.
``--pause`` sleeps after each checkpoint write, so that a test can kill the process
part-way at leisure; sleeping changes when the fit runs, not what it computes.
"""

import argparse
import time
import warnings

import numpy as np

from fastsoftmax import Checkpoint, SoftmaxClassifier
from fastsoftmax.checkpoint import CheckpointWriter

STEPS_PER_CHECKPOINT = {"lbfgs": 2, "sgd": 20, "adam": 20}


def problem():
    rng = np.random.RandomState(3)
    X = rng.standard_normal((3000, 20))
    W = rng.standard_normal((20, 6))
    y = (X @ W + rng.gumbel(size=(3000, 6))).argmax(axis=1)
    return X, y


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("solver", choices=sorted(STEPS_PER_CHECKPOINT))
    parser.add_argument("checkpoint")
    parser.add_argument("model_out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    if args.pause:
        write = CheckpointWriter.write

        def write_then_pause(self, state):
            write(self, state)
            time.sleep(args.pause)

        CheckpointWriter.write = write_then_pause
    X, y = problem()
    model = SoftmaxClassifier(
        alpha=1e-4,
        solver=args.solver,
        max_iter=60 if args.solver == "lbfgs" else 8,
        tol=0.0,
        batch_size=50,
        backend="cpu",
        dtype="float64",
        random_state=0,
    )
    checkpoint = Checkpoint(
        args.checkpoint, every_n_steps=STEPS_PER_CHECKPOINT[args.solver], every_n_seconds=None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter is reached on purpose
        model.fit(X, y, checkpoint=checkpoint, resume_from=args.checkpoint if args.resume else None)
    model.save(args.model_out)


if __name__ == "__main__":
    main()
