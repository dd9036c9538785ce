"""Shared fixtures: every numeric test runs on each backend and in each dtype.

The "cuda" cases carry the ``cuda`` marker.  Without a GPU they run under Numba's
CUDA simulator, in a second pytest run (README's test command does both)::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda
"""

import numpy as np
import pytest

from fastsoftmax.backends import cuda_simulated, cuda_unavailable_reason, get_backend

BACKENDS = [
    pytest.param("cpu"),
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or ""),
        ],
    ),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return get_backend(request.param)


@pytest.fixture
def cupy():
    """CuPy on a real device; the tests that take it skip in the simulator or without it."""
    module = pytest.importorskip("cupy")
    if cuda_simulated():
        pytest.skip("needs a real GPU")
    return module


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def pytest_configure(config):
    # numba-cuda has its own NumbaPerformanceWarning class (an implicit host copy on
    # a launch); like Numba's, it is an error in the tests.  numba-cuda is optional.
    try:
        from numba.cuda.core.errors import NumbaPerformanceWarning
    except ImportError:
        return
    name = f"{NumbaPerformanceWarning.__module__}.{NumbaPerformanceWarning.__qualname__}"
    config.addinivalue_line("filterwarnings", f"error::{name}")


def pytest_terminal_summary(terminalreporter):
    # The fuzz tests (test_fuzz.py) count their cases; the issue asks for the number run.
    from tests.fuzzcount import summary

    line = summary()
    if line is not None:
        terminalreporter.write_line(line)
