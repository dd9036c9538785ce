"""Fit on a ``.npy`` data set in a fresh process and report its resident memory.

Usage: ``python fit_peak_memory.py X.npy y.npy {memmap,memory} coef_out.npy``

``memmap`` fits on ``np.load(X, mmap_mode="r")`` (streamed chunk by chunk);
``memory`` loads X whole first.  Prints one JSON line: the resident memory before
X is opened (after a warm-up fit that compiles the kernels, so compilation is part
of the baseline) and the high-water mark after it, both in bytes, from /proc.
"""

import json
import sys
import warnings

import numpy as np

from fastsoftmax import SoftmaxClassifier


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(x_path, y_path, mode, coef_path):
    y = np.load(y_path)
    params = dict(dtype="float32", max_iter=5, tol=0.0, alpha=1e-3)
    warnings.simplefilter("ignore")  # max_iter=5 ends every fit without converging, on purpose
    warm = np.random.default_rng(0).standard_normal((2048, 8)).astype(np.float32)
    SoftmaxClassifier(**params).fit(warm, np.arange(2048) % 3)
    baseline = _status_bytes("VmRSS")
    X = np.load(x_path, mmap_mode="r") if mode == "memmap" else np.load(x_path)
    model = SoftmaxClassifier(**params).fit(X, y)
    peak = _status_bytes("VmHWM")
    np.save(coef_path, model.coef_)
    print(json.dumps({"baseline": baseline, "peak": peak, "n_iter": model.n_iter_}))


if __name__ == "__main__":
    main(*sys.argv[1:])
