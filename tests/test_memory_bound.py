"""Fitting on a memory-mapped data set larger than a quarter of RAM's share keeps memory bounded.

A 2 GiB float32 ``.npy`` file is fitted twice, each in a fresh process: streamed
from its memory map, and loaded whole.  The streamed fit must raise the process's
peak resident memory by less than 25% of the file's size, and reach the same model.

Same model, to float32 rounding: the two fits sum the same rows in differently
sized chunks, so each pass's float32 gradient differs in its last bits (relative
~1e-7 per sum, growing to ~1e-5 through five L-BFGS iterations); ``rtol=1e-4``
leaves a margin of ten and still catches any wrong or missing chunk (which moves
the coefficients by far more).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "fit_peak_memory.py"
N_FEATURES, N_CLASSES = 128, 5
FILE_BYTES = 2 << 30  # 2 GiB


def _write_dataset(directory):
    """A 2 GiB float32 .npy file of a linearly separable-ish problem, written in slices."""
    n_samples = FILE_BYTES // (N_FEATURES * 4)
    rng = np.random.default_rng(7)
    W = rng.standard_normal((N_FEATURES, N_CLASSES)).astype(np.float32)
    X = np.lib.format.open_memmap(
        directory / "X.npy", mode="w+", dtype=np.float32, shape=(n_samples, N_FEATURES)
    )
    y = np.empty(n_samples, dtype=np.int64)
    step = 1 << 18
    for start in range(0, n_samples, step):
        block = rng.standard_normal((min(step, n_samples - start), N_FEATURES), dtype=np.float32)
        X[start : start + len(block)] = block
        y[start : start + len(block)] = (block @ W + rng.gumbel(size=(len(block), N_CLASSES))).argmax(axis=1)
    X.flush()
    del X
    np.save(directory / "y.npy", y)
    return directory / "X.npy", directory / "y.npy"


def _fit(x_path, y_path, mode, coef_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(x_path), str(y_path), mode, str(coef_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_memmap_fit_keeps_peak_memory_under_a_quarter_of_the_file(tmp_path):
    x_path, y_path = _write_dataset(tmp_path)
    file_bytes = x_path.stat().st_size
    assert file_bytes >= 2 * 10**9

    streamed = _fit(x_path, y_path, "memmap", tmp_path / "coef_streamed.npy")
    growth = streamed["peak"] - streamed["baseline"]
    print(
        f"streamed fit: peak RSS {growth / 2**20:.0f} MiB above baseline, file {file_bytes / 2**20:.0f} MiB"
    )
    assert growth < 0.25 * file_bytes, (
        f"peak resident memory grew by {growth} bytes for a {file_bytes}-byte file"
    )

    in_memory = _fit(x_path, y_path, "memory", tmp_path / "coef_memory.npy")
    loaded_growth = in_memory["peak"] - in_memory["baseline"]
    print(f"in-memory fit: peak RSS {loaded_growth / 2**20:.0f} MiB above baseline")
    assert loaded_growth >= 0.9 * file_bytes  # the contrast: loading X whole costs about the file
    assert streamed["n_iter"] == in_memory["n_iter"] == 5
    coef_streamed = np.load(tmp_path / "coef_streamed.npy")
    coef_memory = np.load(tmp_path / "coef_memory.npy")
    np.testing.assert_allclose(coef_streamed, coef_memory, rtol=1e-4, atol=1e-4 * np.abs(coef_memory).max())
