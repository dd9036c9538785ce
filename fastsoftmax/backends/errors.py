"""Errors raised at the backend seam."""


class BackendUnavailableError(ValueError):
    """A backend was asked for by name but cannot run on this machine."""


class DeviceMemoryError(MemoryError):
    """Not even the smallest unit of work fits in the device memory available."""
