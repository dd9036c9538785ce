"""The probe that tells why the CUDA backend cannot run, without a GPU, and "auto" saying so."""

import numpy as np
import pytest


@pytest.mark.parametrize(
    ("has_row_stack", "numba_cuda", "refused"),
    [(True, "0.30.4", False), (False, "0.30.4", True), (False, "0.31.0", False)],
)
def test_probe_names_the_numpy_that_numba_cuda_cannot_compile_with(
    monkeypatch, has_row_stack, numba_cuda, refused
):
    from fastsoftmax.backends import probe

    if not has_row_stack:
        monkeypatch.delattr(probe.np, "row_stack", raising=False)
    else:
        monkeypatch.setattr(probe.np, "row_stack", np.vstack, raising=False)
    monkeypatch.setattr(probe.metadata, "version", lambda name: numba_cuda)
    reason = probe._numpy_clash()
    assert (reason is not None) == refused
    if refused:
        assert "numba-cuda 0.30.4 cannot compile kernels with NumPy" in reason and "np.row_stack" in reason


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_says_why_it_uses_the_cpu_at_verbose_only(capsys):
    from fastsoftmax import SoftmaxClassifier
    from fastsoftmax.backends import auto_cpu_reason

    reason = auto_cpu_reason()
    if reason is None:
        pytest.skip("'auto' picks CUDA on this machine")
    X = np.random.default_rng(0).standard_normal((60, 3))
    y = np.arange(60) % 3
    SoftmaxClassifier(max_iter=2).fit(X, y)
    assert "uses the CPU" not in capsys.readouterr().err
    SoftmaxClassifier(verbose=1, max_iter=2).fit(X, y)
    assert f"fastsoftmax: backend='auto' uses the CPU: {reason}" in capsys.readouterr().err
    SoftmaxClassifier(verbose=1, max_iter=2, backend="cpu").fit(X, y)  # chosen, not defaulted to
    assert "uses the CPU" not in capsys.readouterr().err


def test_auto_never_picks_the_simulator(monkeypatch):
    from fastsoftmax import backends

    monkeypatch.setattr(backends, "cuda_simulated", lambda: True)
    assert "Numba's simulator" in backends.auto_cpu_reason()
