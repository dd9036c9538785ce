"""A description of the machine and software, stored with every result file."""

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata

_LIBRARIES = (
    "fastsoftmax",
    "numpy",
    "numba",
    "numba-cuda",
    "scipy",
    "scikit-learn",
    "torch",
    "threadpoolctl",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "matplotlib",
    "pytest-benchmark",
)
_ENV_PREFIXES = ("OPENBLAS", "OMP_", "MKL_", "FASTSOFTMAX", "CUDA_", "CUPY_", "NUMBA_", "NVIDIA_", "PYTORCH_")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def nvidia_smi():
    """Name, driver, memory, power limit and clocks of the first GPU from ``nvidia-smi``.

    Returns ``{"error": ...}`` on a machine without an NVIDIA driver.
    """
    fields = ("name", "driver_version", "memory.total", "power.limit", "clocks.max.sm", "clocks.max.memory")
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    lines = out.strip().splitlines()
    if not lines:
        return {"error": "nvidia-smi listed no GPU"}
    return dict(zip(fields, (v.strip() for v in lines[0].split(",")), strict=False))


def module_command(module, argv=None):
    """The command that reruns ``python -m module`` with this process's (or the given) arguments."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([os.path.basename(sys.executable), "-m", module, *args])


def _git_commit():
    """The checkout's commit (with "+dirty" when files differ from it), or None outside a checkout."""
    folder = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # Results being written are not a change to the code that measured them.
            [
                "git",
                "-C",
                folder,
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                ":(top,exclude)bench/results",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def describe(command):
    """Dict of CPU, cores, GPU, Python, library versions, BLAS, relevant env vars and the command.

    Parameters
    ----------
    command : str
        The exact command line that produced the result, stored so it can be rerun.
    """
    try:
        from threadpoolctl import threadpool_info

        blas = [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for lib in threadpool_info()
        ]
    except ImportError:
        blas = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "git_commit": _git_commit(),
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "gpu": nvidia_smi(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {dist: _version(dist) for dist in _LIBRARIES},
        "blas": blas,
        "env": {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)},
    }


def describe_gpu():
    """Dict of the current CUDA device as CuPy sees it: name, memory, driver and runtime versions."""
    import cupy

    runtime = cupy.cuda.runtime
    device = cupy.cuda.Device()
    props = runtime.getDeviceProperties(device.id)
    name = props["name"]

    def cuda_version(v):
        return f"{v // 1000}.{v % 1000 // 10}"

    torch_cuda = sys.modules["torch"].version.cuda if "torch" in sys.modules else None
    return {
        "name": name.decode() if isinstance(name, bytes) else name,
        "device_id": device.id,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "total_memory_bytes": props["totalGlobalMem"],
        "multiprocessors": props.get("multiProcessorCount"),
        "l2_cache_bytes": props.get("l2CacheSize"),
        "memory_bus_width_bits": props.get("memoryBusWidth"),
        "driver_cuda_version": cuda_version(runtime.driverGetVersion()),
        "runtime_cuda_version": cuda_version(runtime.runtimeGetVersion()),
        "versions": {
            "cupy": cupy.__version__,
            "torch": _version("torch"),
            "torch_cuda": torch_cuda,
            "numba-cuda": _version("numba-cuda"),
            "triton": _version("triton"),
        },
    }
