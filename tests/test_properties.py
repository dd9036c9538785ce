"""Hypothesis properties of the CPU row kernels on arbitrary logit blocks.

Scope: invariants of ``softmax_xent_grad_``, ``softmax_`` and ``log_softmax_`` that
hold for every input, extreme logits (+-1e4, +-3e38) included: gradient rows sum
to zero and are bounded by their weight, probabilities lie in [0, 1] and sum to
one, the loss is non-negative, and nothing turns into NaN or inf.  Accuracy
against the reference is tested in ``test_kernel_cpu.py``.
"""

import math

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastsoftmax.kernels.cpu import log_softmax_, softmax_, softmax_xent_grad_
from tests.reference import rtol_for

# At most 40 classes: the sum d of C exponentials rounds with relative error at most
# (C - 1) u, so a row of G sums to zero within (C + 2) u * scale, and a softmax row
# to one within (C + 1) u (u = eps / 2).  That worst case stays below rtol_for's
# 4 eps sqrt(C) up to C = 40 with room to spare, so the checks below cannot fail on
# rounding alone.
MAX_CLASSES = 40
HUGE = [-3e38, -1e4, 1e4, 3e38]
# deadline: Numba compiles on first call.  derandomize: CI must not pass or fail by
# chance; the examples are still 200 different blocks, the same on every run.
# database=None: an example saved by an earlier local run must not make this run differ from CI's.
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@st.composite
def logit_blocks(draw):
    """``(Z, b, y, scale)``: a block mixing ordinary and extreme logits, in float32 or float64."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    width = np.finfo(dtype).bits
    n_rows = draw(st.integers(1, 12))
    n_classes = draw(st.integers(2, MAX_CLASSES))
    logit = st.one_of(st.floats(-50, 50, width=width), st.sampled_from(HUGE))
    Z = draw(arrays(dtype, (n_rows, n_classes), elements=logit))
    # A bias next to +-3e38 must not overflow z + b itself: that is the caller's input.
    b = draw(arrays(dtype, n_classes, elements=st.floats(-50, 50, width=width)))
    y = draw(arrays(np.intp, n_rows, elements=st.integers(0, n_classes - 1)))
    weight = st.one_of(st.just(0.0), st.floats(2.0**-40, 1.0, width=width))
    scale = draw(arrays(dtype, n_rows, elements=weight))
    return Z, b, y, scale


# Z, b, y of a float32 row whose lse - z_y, 6e38, exceeds float32's range.
SPREAD_ROW = (np.array([[3e38, -3e38]], np.float32), np.zeros(2, np.float32), np.array([1]))


def fused(Z, b, y, scale):
    G = Z.copy()
    loss = softmax_xent_grad_(G, b, y, scale)
    return loss, G, G.sum(axis=0, dtype=G.dtype)


@PROPERTY_SETTINGS
@given(logit_blocks())
@example(
    (
        np.array([[0.0, 3e38]], np.float32),
        np.array([0.0, 3.75], np.float32),
        np.array([0]),
        np.array([0.9375], np.float32),
    )
)
def test_fused_step_gradient_rows_sum_to_zero_and_stay_finite(block):
    Z, b, y, scale = block
    _, G, db = fused(Z, b, y, scale)
    assert np.all(np.isfinite(G)) and np.all(np.isfinite(db))
    # Row i is scale_i * (p - e_y) with p a probability vector.  p_k = e_k * (1 / d) may
    # round to 1 + 1 ulp when one exponential is the whole sum (found by hypothesis:
    # z = [0, 3e38], b = [0, 3.75] gave 0.93750006 for scale 0.9375), so the bound holds to 2 ulp.
    eps = np.finfo(Z.dtype).eps
    assert np.all(np.abs(G) <= scale[:, None] * (1 + 2 * eps))
    row_sums = np.array([math.fsum(row) for row in G.astype(np.float64)])
    assert np.all(np.abs(row_sums) <= rtol_for(Z.dtype, Z.shape[1]) * scale)


@PROPERTY_SETTINGS
@given(logit_blocks())
@example(SPREAD_ROW + (np.ones(1, np.float32),))
@example(SPREAD_ROW + (np.zeros(1, np.float32),))
# Found by hypothesis: y is the argmax, and reassociating (z + b) - m left d just below 1.
@example((np.array([[-1e4, -1e4]]), np.array([0.0, 28.95553445]), np.array([1]), np.array([1.0])))
def test_fused_step_loss_is_finite_and_non_negative(block):
    loss, _, _ = fused(*block)
    assert math.isfinite(loss)
    # Each row's lse - z_y is at least 0, since z_y <= m and d >= exp(0) = 1.
    assert loss >= 0


@PROPERTY_SETTINGS
@given(logit_blocks())
def test_softmax_rows_are_probability_vectors(block):
    Z, b, _, _ = block
    P = Z.copy()
    softmax_(P, b)
    assert np.all((P >= 0) & (P <= 1))
    row_sums = np.array([math.fsum(row) for row in P.astype(np.float64)])
    assert np.all(np.abs(row_sums - 1) <= rtol_for(Z.dtype, Z.shape[1]))


@PROPERTY_SETTINGS
@given(logit_blocks())
def test_log_softmax_is_never_nan_or_positive(block):
    Z, b, _, _ = block
    log_P = Z.copy()
    log_softmax_(log_P, b)
    # -inf is allowed: -6e38 has no float32 value (test_kernel_cpu pins where).
    assert not np.any(np.isnan(log_P))
    assert np.all(log_P <= 0)
