""".npy and .npz files from strangers → numpy arrays, each checked before a byte of its data is read.

What it guarantees, whoever wrote the file:
- only regular files are opened: a FIFO, a device, a socket or a directory is refused by `os.stat`
  first (and the opened file is checked again, so one swapped in between is refused too, unblocked);
- zip members are read through `zip_members` (encrypted members, unreadable methods and declared
  sizes refused before decompressing);
- each array's .npy header is read within `MAX_HEADER_BYTES` and checked before its data is read:
  numbers only (no objects: nothing is ever unpickled), at most `MAX_DIMS` non-negative dimensions,
  at most `limit` bytes of data, and exactly as many bytes after the header as it declares (in the
  file for .npy, in the member's declared size for .npz), so a forged header cannot make us allocate;
- an array is read once, straight into its own memory (no second copy), in native byte order.
Every refusal is an `ArrayFileError` naming the file and, in an .npz, the array; callers add where
the file came from (a spec's field, a command-line option).
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, cast

import numpy as np

from deconv_compiler.errors import DeconvError, first_line, shown
from deconv_compiler.zip_members import ZipMemberError, copy_member, open_member

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
MAX_HEADER_BYTES = 10_000  # numpy's own bound (max_header_size); real headers take about 128
MAX_DIMS = 32  # numpy 1.x's limit; numpy 2 allows 64, but no weight or input has more than 6
# the length field after the 8-byte magic: 2 bytes in format 1.0, 4 bytes in 2.0 and 3.0
_LENGTH_FIELD = {(1, 0): "<H", (2, 0): "<I", (3, 0): "<I"}


class ArrayFileError(DeconvError):
    """An array file, or one array in it, that is refused; the message names both."""

    def __init__(self, file: str, reason: str, array: str | None = None) -> None:
        super().__init__(f"{file}: {array}: {reason}" if array is not None else f"{file}: {reason}")


class ArrayFileMissing(ArrayFileError):
    """The file does not exist (callers say where they looked)."""


@dataclass(frozen=True)
class ArrayHeader:
    """What an .npy header declares, checked: `offset` bytes of header, then `nbytes` of data."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def open_array_file(path: Path, shown_as: str, limit: int, follow_symlinks: bool = True) -> ArrayFile:
    """The .npy or .npz at `path` (named `shown_as` in messages), for reading arrays of at most
    `limit` bytes each. `follow_symlinks=False` refuses a symbolic link as the last component
    (for a path whose links were already resolved and checked). Use it as a context manager."""
    handle = _open_regular(path, shown_as, follow_symlinks)
    try:
        head = handle.read(len(NPY_MAGIC))
        handle.seek(0)
        if head == NPY_MAGIC:
            return ArrayFile(handle, shown_as, limit, None)
        if head.startswith(ZIP_MAGIC):
            return ArrayFile(handle, shown_as, limit, _open_zip(handle, shown_as))
        raise ArrayFileError(shown_as, "is not an .npz archive nor an .npy array")
    except BaseException:
        handle.close()
        raise


class ArrayFile:
    """An open .npy (one array, named "") or .npz (arrays by member name, `.npy` dropped)."""

    def __init__(
        self, handle: io.BufferedReader, shown_as: str, limit: int, archive: zipfile.ZipFile | None
    ) -> None:
        self._handle, self._archive = handle, archive
        self.file, self.limit = shown_as, limit
        self.kind: Literal["npy", "npz"] = "npy" if archive is None else "npz"
        self._members = {"": ""} if archive is None else _members(archive, shown_as)
        self.names: tuple[str, ...] = tuple(self._members)

    def __enter__(self) -> ArrayFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
        self._handle.close()

    def header(self, name: str = "") -> ArrayHeader:
        """The array's header, checked (numbers, dimensions, size within `limit` and consistent
        with the bytes that follow it); no data is read."""
        label = None if self._archive is None else name
        if name not in self._members:
            raise ArrayFileError(self.file, "no such array", label)
        if self._archive is None:
            self._handle.seek(0)
            header = _parse_header(self._handle, self.file, label)
            available = os.fstat(self._handle.fileno()).st_size - header.offset
        else:
            member = self._members[name]
            with _zip_errors(self.file, label):
                # open_member refuses a member declaring more than the array, its header and magic
                with open_member(self._archive, member, self.limit + MAX_HEADER_BYTES + 16) as stream:
                    header = _parse_header(stream, self.file, label)
            available = self._archive.getinfo(member).file_size - header.offset
        _check_header(header, available, self.limit, self.file, label)
        return header

    def read(self, name: str = "", header: ArrayHeader | None = None) -> np.ndarray:
        """The array (after `header`'s checks, which are run here unless their result is given),
        read into memory allocated once, in native byte order."""
        label = None if self._archive is None else name
        header = header or self.header(name)
        flat = np.empty(math.prod(header.shape), header.dtype)
        target = flat.view(np.uint8)
        if self._archive is None:
            self._handle.seek(header.offset)
            done = _fill(self._handle, target)
        else:
            writer = _SkippingWriter(target, header.offset)
            with _zip_errors(self.file, label):
                copy_member(self._archive, self._members[name], header.offset + header.nbytes, writer.io())
            done = writer.done
        if done != header.nbytes:
            raise ArrayFileError(self.file, f"ends after {done:,} of {header.nbytes:,} bytes of data", label)
        array = flat.reshape(header.shape[::-1]).T if header.fortran_order else flat.reshape(header.shape)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return array


def _open_regular(path: Path, shown_as: str, follow_symlinks: bool) -> io.BufferedReader:
    """`path` opened for reading if it is a regular file; anything else is refused before opening
    (a FIFO would block, a device never end). O_NONBLOCK keeps a FIFO swapped in after the check
    from blocking the open; the descriptor is then checked to be the regular file we looked at."""
    try:
        before = os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise ArrayFileMissing(shown_as, "not found") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise ArrayFileError(shown_as, f"cannot be read: {_reason(exc)}") from None
    if not stat.S_ISREG(before.st_mode):
        raise ArrayFileError(shown_as, f"is {_file_type(before.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise ArrayFileError(shown_as, f"cannot be read: {_reason(exc)}") from None
    try:
        after = os.fstat(descriptor)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise ArrayFileError(shown_as, "was replaced while it was being opened")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _file_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _open_zip(handle: io.BufferedReader, shown_as: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(handle)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        EOFError,
        struct.error,
        ValueError,  # ValueError, OverflowError, OSError: offsets and counts a forged directory declares
        OverflowError,
        OSError,
    ) as exc:
        raise ArrayFileError(shown_as, f"is not a readable .npz (zip) archive: {exc}") from None


def _members(archive: zipfile.ZipFile, shown_as: str) -> dict[str, str]:
    """Array name → member name, as numpy names them (`kernel.npy` is `kernel`); a name given twice
    is refused (zipfile would silently read the last)."""
    members: dict[str, str] = {}
    for member in archive.namelist():
        name = member.removesuffix(".npy")
        if name in members:
            raise ArrayFileError(shown_as, f"holds two members named {shown(name)}")
        members[name] = member
    return members


class _zip_errors:  # noqa: N801 - used like a function in `with`
    """Turn a member's refusal by `zip_members` into an `ArrayFileError` naming the file."""

    def __init__(self, shown_as: str, array: str | None) -> None:
        self.file, self.array = shown_as, array

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, ZipMemberError):
            raise ArrayFileError(self.file, str(exc)) from None  # its message names the member
        if isinstance(exc, Exception) and not isinstance(exc, (ArrayFileError, MemoryError)):
            # reading a header decompresses outside copy_member: zlib.error, lzma.LZMAError,
            # BadZipFile (a CRC), EOFError... all mean the member's data is corrupt
            raise ArrayFileError(self.file, f"corrupt ({type(exc).__name__}: {exc})", self.array) from None


def _parse_header(stream: IO[bytes], shown_as: str, array: str | None) -> ArrayHeader:
    """The header at the start of `stream`: magic, version, length (refused beyond
    `MAX_HEADER_BYTES` before it is read), then the dict, parsed by numpy from our bounded copy."""
    magic = _read_exactly(stream, len(NPY_MAGIC) + 2, shown_as, array)
    if not magic.startswith(NPY_MAGIC):
        raise ArrayFileError(shown_as, "is not an .npy array (no .npy magic string)", array)
    version = (magic[-2], magic[-1])
    length_format = _LENGTH_FIELD.get(version)
    if length_format is None:
        raise ArrayFileError(shown_as, f"uses .npy format version {version}, which is not known", array)
    length_bytes = _read_exactly(stream, struct.calcsize(length_format), shown_as, array)
    (length,) = struct.unpack(length_format, length_bytes)
    if length > MAX_HEADER_BYTES:
        raise ArrayFileError(
            shown_as, f"declares an .npy header of {length:,} bytes; the limit is {MAX_HEADER_BYTES:,}", array
        )
    text = _read_exactly(stream, length, shown_as, array)
    bounded = io.BytesIO(magic + length_bytes + text)
    bounded.seek(len(magic))
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about Python 2 headers it can still read
            shape, fortran_order, dtype = reader(bounded, max_header_size=MAX_HEADER_BYTES)
    except Exception as exc:  # noqa: BLE001 - numpy parses a stranger's literal (ValueError, SyntaxError,
        # tokenize.TokenError, TypeError, RecursionError...): any failure means the header is invalid
        raise ArrayFileError(
            shown_as, f"has an invalid .npy header ({first_line(exc, 200)})", array
        ) from None
    return ArrayHeader(tuple(shape), dtype, bool(fortran_order), len(magic) + len(length_bytes) + length)


def _read_exactly(stream: IO[bytes], count: int, shown_as: str, array: str | None) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise ArrayFileError(shown_as, "ends inside its .npy header", array)
    return data


def _check_header(header: ArrayHeader, available: int, limit: int, shown_as: str, array: str | None) -> None:
    """Numbers only, sane dimensions, at most `limit` bytes, and exactly the bytes that follow."""
    dtype = header.dtype
    if dtype.hasobject:
        reason = "holds pickled Python objects, which are refused (allow_pickle=False); save numbers only"
        raise ArrayFileError(shown_as, reason, array)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ArrayFileError(shown_as, f"is an array of {dtype} where numbers were expected", array)
    shape = header.shape
    if len(shape) > MAX_DIMS or any(isinstance(d, bool) or d < 0 for d in shape):
        raise ArrayFileError(shown_as, f"declares an invalid shape {shown(shape)}", array)
    if header.nbytes > limit:
        raise ArrayFileError(
            shown_as,
            f"declares shape {shown(shape)} of {dtype}: {header.nbytes:,} bytes; the limit is {limit:,}",
            array,
        )
    if available != header.nbytes:
        raise ArrayFileError(
            shown_as,
            f"holds {max(available, 0):,} bytes of data where its header declares {header.nbytes:,} "
            f"(shape {shown(shape)} of {dtype})",
            array,
        )


def _fill(handle: io.BufferedReader, target: np.ndarray) -> int:
    """Read into `target` (bytes) until it is full or the file ends; the count read."""
    view = target.data
    done = 0
    while done < len(view):
        count = handle.readinto(view[done:])
        if not count:
            break
        done += count
    return done


class _SkippingWriter:
    """A file-like target for `copy_member`: drops the first `skip` bytes (the header), then writes
    into `target` (the array's bytes); more than fit is refused (the declared size was checked)."""

    def __init__(self, target: np.ndarray, skip: int) -> None:
        self.view, self.skip, self.done = target.data, skip, 0

    def write(self, data: bytes) -> int:
        chunk = memoryview(data)
        if self.skip:
            dropped = min(self.skip, len(chunk))
            self.skip -= dropped
            chunk = chunk[dropped:]
        if self.done + len(chunk) > len(self.view):
            raise ZipMemberError("more data than its header declares")
        self.view[self.done : self.done + len(chunk)] = chunk
        self.done += len(chunk)
        return len(data)

    def io(self) -> IO[bytes]:
        return cast(IO[bytes], self)  # copy_member only calls write()
