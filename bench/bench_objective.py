"""pytest-benchmark: one loss-and-gradient pass, fastsoftmax and its peers on the same data.

Run with ``python -m pytest bench/ --benchmark-only`` (not part of the default test run).
``python -m bench`` prints the same comparison with ceilings and floor ratios; this file
feeds pytest-benchmark's storage and comparison tools (``--benchmark-autosave``,
``--benchmark-compare``).  The GPU cases skip, with the reason, without CuPy and a device.
"""

import numpy as np
import pytest

from fastsoftmax.bench import gpu_peers, peers
from fastsoftmax.bench.cpu_pass import RTOL, reference_pass
from fastsoftmax.bench.gpu_pass import to_host

CPU_WORKLOADS = [(200_000, 256, 20), (50_000, 256, 1000)]
GPU_WORKLOADS = [(1_000_000, 256, 100), (200_000, 768, 1000)]


def _shape_id(shape):
    return "x".join(map(str, shape))


@pytest.fixture(scope="module", params=CPU_WORKLOADS, ids=_shape_id)
def cpu_problem(request):
    return peers.make_problem(*request.param)


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_cpu_pass(benchmark, cpu_problem, name):
    why_not = peers.available(name)
    if why_not:
        pytest.skip(why_not)
    fn = peers.PEERS[name](*cpu_problem)
    _, dW = fn()
    _, ref = reference_pass(*cpu_problem)
    assert np.abs(np.asarray(dW) - ref).max() <= RTOL * np.abs(ref).max()
    n, d = cpu_problem[0].shape
    benchmark.extra_info.update(n_samples=n, n_features=d, n_classes=cpu_problem[2].shape[1])
    benchmark(fn)


def _gpu_unavailable():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "CuPy sees no CUDA device"
    except Exception as exc:  # noqa: BLE001 (ImportError, or a CUDA driver that fails to load)
        return f"no CUDA GPU through CuPy ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="module", params=GPU_WORKLOADS, ids=_shape_id)
def gpu_problem(request):
    why_not = _gpu_unavailable()
    if why_not:
        pytest.skip(why_not)
    return gpu_peers.make_device_problem(*request.param)


@pytest.mark.parametrize("name", list(gpu_peers.PEERS))
def test_gpu_pass(benchmark, gpu_problem, name):
    import cupy

    why_not = gpu_peers.available(name)
    if why_not:
        pytest.skip(why_not)
    fn = gpu_peers.PEERS[name](*gpu_problem)
    expected = to_host(gpu_peers.make_fastsoftmax(*gpu_problem)()[1])
    dW = to_host(fn()[1])
    assert np.abs(dW - expected).max() <= RTOL * np.abs(expected).max()

    def synchronised():
        out = fn()
        cupy.cuda.Device().synchronize()  # pytest-benchmark's wall clock must cover the kernels
        return out

    n, d = gpu_problem[0].shape
    benchmark.extra_info.update(n_samples=n, n_features=d, n_classes=gpu_problem[2].shape[1])
    benchmark(synchronised)
