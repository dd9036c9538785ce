"""Shared fixtures: every numeric test runs on each backend and in each dtype."""
import numpy as np
import pytest

from fastsoftmax.backends import cuda_unavailable_reason, get_backend

BACKENDS = [
    pytest.param("cpu"),
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or ""
        ),
    ),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return get_backend(request.param)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param
