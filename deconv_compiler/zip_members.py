"""Members of a zip archive (`.keras`, `.npz`) read from a stranger's file, within limits.

Before a byte is decompressed, a member is refused when it is encrypted, uses a compression method
other than stored or deflate (deflate64, bzip2, ...), or declares more bytes than allowed. zipfile
never returns more than a member's declared size and checks its CRC at the end, so a member that
lies about its size (a decompression bomb) is cut at the declared size and then refused as corrupt.
Every refusal is a `ZipMemberError` whose message names the member; the readers add the file.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

# What Keras and numpy write. zipfile also reads bzip2 and lzma, but decompresses each 4 KiB of their
# input in one unbounded call (a 400-byte bzip2 member took 1.1 GB before it could be refused), so
# they are refused like deflate64 (9), implode (6) or PPMd (98), which it cannot read at all.
READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ENCRYPTED = 0x1  # general purpose flag bit 0
CHUNK = 2**20


class ZipMemberError(ValueError):
    """A member that cannot be read safely; the message names it."""


def member_info(archive: zipfile.ZipFile, name: str, limit: int) -> zipfile.ZipInfo:
    """The member's entry, refused when encrypted, compressed in a way we cannot read, or larger
    than `limit` bytes once decompressed (as declared)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ZipMemberError(f"{name}: no such member in the archive") from None
    if info.flag_bits & _ENCRYPTED:
        raise ZipMemberError(f"{name} is encrypted; save it without a password")
    if info.compress_type not in READABLE_METHODS:
        methods = ", ".join(READABLE_METHODS.values())
        raise ZipMemberError(
            f"{name} is compressed with zip method {info.compress_type}, which cannot be read "
            f"(readable: {methods})"
        )
    if info.file_size > limit:
        raise ZipMemberError(f"{name} declares {info.file_size:,} bytes; the limit is {limit:,}")
    return info


def open_member(archive: zipfile.ZipFile, name: str, limit: int) -> IO[bytes]:
    """A stream of the member's bytes (at most `limit`), after `member_info`'s checks."""
    info = member_info(archive, name, limit)
    try:
        return archive.open(info)
    except (NotImplementedError, RuntimeError) as exc:  # methods and encryption zipfile finds itself
        raise ZipMemberError(f"{name} cannot be read: {exc}") from None


def read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """The member's bytes, at most `limit` of them; a corrupt member is a `ZipMemberError`."""
    with _corrupt_as_refusal(name), open_member(archive, name, limit) as stream:
        return stream.read(limit + 1)


def copy_member(archive: zipfile.ZipFile, name: str, limit: int, target: IO[bytes]) -> None:
    """Stream the member into `target` in bounded chunks (never the whole member in memory)."""
    with _corrupt_as_refusal(name), open_member(archive, name, limit) as stream:
        shutil.copyfileobj(stream, target, CHUNK)


@contextmanager
def _corrupt_as_refusal(name: str) -> Iterator[None]:
    """Errors of decompressing the member (BadZipFile for a bad CRC, zlib.error, EOFError) as a
    `ZipMemberError`; an OSError with an errno (a disk full or gone) is not the archive's fault."""
    try:
        yield
    except ZipMemberError:
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ZipMemberError(f"{name} is corrupt ({exc})") from None
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ZipMemberError(f"{name} is corrupt ({type(exc).__name__}: {exc})") from None
