"""``.npy`` and ``.npz`` files read as untrusted input: never unpickled, headers never believed.

``np.load(..., allow_pickle=False)`` runs no code, but it trusts the file: a header
claiming a 700 TiB array makes it allocate before it reads (MemoryError), a damaged
header can fail in Python's tokenizer (``tokenize.TokenError``), and a damaged zip
archive raises any of a dozen exception types from zipfile and its decompressors.
These readers check each header against the bytes that follow it before reading,
and report every way a file can be wrong as a ``ValueError`` that says what is
wrong; callers add the file's name and their own exception type.
"""

import math
import os
import struct
import tokenize
import zipfile
import zlib

import numpy as np

try:
    from lzma import LZMAError
except ImportError:  # Python built without lzma: zipfile then refuses LZMA members with RuntimeError
    LZMAError = RuntimeError

_NPY_MAGIC = b"\x93NUMPY"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# What NumPy's header parser raises for a damaged header, beyond ValueError: it
# evaluates the header as a Python literal, and retries through the tokenizer.  The
# compiler warns of odd escapes in a damaged literal; under -W error that is raised.
_HEADER_ERRORS = (ValueError, EOFError, SyntaxError, TypeError, tokenize.TokenError, RecursionError, Warning)
# What reading a damaged zip archive raises: a flipped flag bit asks for a password
# (RuntimeError), a changed compression method or zip version is NotImplementedError,
# damaged compressed data is zlib.error or LZMAError, a bad CRC is BadZipFile.
_ARCHIVE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    LZMAError,
    NotImplementedError,
    RuntimeError,
    struct.error,
)


def read_npy_header(f):
    """Read the header of the ``.npy`` stream ``f``, leaving ``f`` at the first data byte.

    Parameters
    ----------
    f : binary file object

    Returns
    -------
    shape : tuple of int
    fortran_order : bool
    dtype : np.dtype
        Never an object dtype.

    Raises
    ------
    ValueError
        For a stream that is not ``.npy``, a damaged header, a negative dimension or
        Python objects (which would need unpickling).
    """
    try:
        version = np.lib.format.read_magic(f)
        if version not in _HEADER_READERS:
            raise ValueError(f".npy format version {version} is not supported")
        shape, fortran_order, dtype = _HEADER_READERS[version](f)
    except _HEADER_ERRORS as exc:
        raise ValueError(f"not a valid .npy file ({_describe(exc)})") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"not a valid .npy file (its header gives the shape {shape})")
    if dtype.hasobject:
        raise ValueError("holds Python objects, which are never unpickled; expected numbers")
    return shape, fortran_order, dtype


def _read_array(f, size):
    """The array of the ``.npy`` stream ``f`` of ``size`` bytes, its header checked before any allocation."""
    shape, fortran_order, dtype = read_npy_header(f)
    count = math.prod(shape)
    needed = count * dtype.itemsize
    if size - f.tell() < needed:
        raise ValueError(
            f"truncated: its header promises {shape} values of {dtype} ({needed} bytes) "
            f"but {max(0, size - f.tell())} bytes follow it"
        )
    data = f.read()  # to the end, so that zipfile checks a member's CRC
    if len(data) < needed:
        raise ValueError(f"truncated: {needed} bytes of data expected, {len(data)} found")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran_order else "C").copy(order="K")


def load_npy(path):
    """The array of a ``.npy`` file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ndarray

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When it is not a complete ``.npy`` file of a non-object dtype.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError("it is a directory, not a file")
    with open(path, "rb") as f:
        return _read_array(f, os.fstat(f.fileno()).st_size)


def load_npz(file, names):
    """Some arrays of a ``.npz`` archive, and the names of all its arrays.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
    names : iterable of str
        The arrays wanted; those the archive lacks are left out of the result.

    Returns
    -------
    arrays : dict of str to ndarray
    members : list of str
        Every array in the archive, sorted.

    Raises
    ------
    FileNotFoundError
        When ``file`` is a path that does not exist.
    ValueError
        When it is not a zip archive of complete ``.npy`` arrays (an array of
        Python objects included); the message names the array.
    """
    if isinstance(file, (str, os.PathLike)):
        if not os.path.exists(file):
            raise FileNotFoundError(f"{file}: no such file")
        if os.path.isdir(file):
            raise ValueError("it is a directory, not a file")
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile:
        raise ValueError(_not_a_zip_archive(file)) from None
    except _ARCHIVE_ERRORS as exc:
        raise ValueError(_describe(exc)) from None
    with archive:
        members = {name[: -len(".npy")]: name for name in archive.namelist() if name.endswith(".npy")}
        arrays = {}
        for name in names:
            if name not in members:
                continue
            try:
                # Opened by name: zipfile's errors then name the member, not a ZipInfo repr.
                with archive.open(members[name]) as f:
                    arrays[name] = _read_array(f, archive.getinfo(members[name]).file_size)
            except _ARCHIVE_ERRORS as exc:
                raise ValueError(f"array {name!r}: {_describe(exc)}") from None
    return arrays, sorted(members)


def _describe(exc):
    """An exception as a message: its type shown unless it is a plain ValueError (ours, or NumPy's)."""
    return str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"


def _not_a_zip_archive(file):
    """Why a file that zipfile refuses is not a ``.npz`` archive."""
    try:
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as f:
                head = f.read(len(_NPY_MAGIC))
        else:
            file.seek(0)
            head = file.read(len(_NPY_MAGIC))
    except OSError:
        head = b""
    if head == _NPY_MAGIC:
        return "it holds a single array (.npy), not a .npz archive"
    return "not a zip archive"
