"""Compiled kernels of fastsoftmax, installed as ``fastsoftmax.kernels``.

``cpu`` holds the Numba ``@njit`` row kernels used by the NumPy backend and
``vecmath`` the vectorisable exponential they share.
"""
