"""The probe that tells why the CUDA backend cannot run, without a GPU."""

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
