"""An output path and the run's input files → the file written there atomically, or an
`OutputFileError` before a byte of it is written. The one home of the rule for every file we
write (`compiler.save_model` and `compile_to_file`, `deconvc compile -o`, `deconvc run --output`),
and of the folders `deconvc export` writes (`atomic_directory`: the same rules for a folder).

Guarantees:
- The output is none of the inputs (spec, Keras file, weights, the `.npz` files a spec names),
  however either is spelled: they are compared by device and inode, so `..`, symbolic links and
  hard links name the same file.
- Only a regular file is replaced, or a new one made. A directory, a device node (`/dev/null`), a
  FIFO, a socket or a symbolic link is refused: renaming over a link replaces the link and writing
  through it writes somewhere else, and a device or FIFO is not a file to replace.
- The bytes go to a hidden temporary beside the output, `.NAME.PID.RANDOM.tmp`, created with
  `O_CREAT|O_EXCL|O_NOFOLLOW` (whatever is planted at a name is never followed nor truncated) and
  named within NAME_MAX however long NAME is. It is flushed, fsynced, given the mode of the file it
  replaces (else the umask's), then renamed over the output, and the folder is fsynced.
- On a failure or an interrupt (an exception; the CLI turns SIGTERM and SIGHUP into one, as
  Python does SIGINT) the temporary is removed and the previous file is intact. A temporary left by
  a killed process is removed by the next write to the same output.
- A folder that is missing, not a folder, read-only or not ours (`/proc`, `/sys`), a name longer
  than the file system allows, a full disk: each an `OutputFileError` naming the output. The checks
  run before the work (`check_output`, which also creates and removes an empty temporary to learn
  that the folder takes new files) and again just before the rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from deconv_compiler.errors import OutputFileError, shown

_SUFFIX = ".tmp"
_PID_DIGITS = 7  # Linux's pid_max is at most 2**22
_RANDOM_CHARS = 8  # hex digits of the random part
_TEMPORARY_EXTRA = len(f"...{_SUFFIX}") + _PID_DIGITS + _RANDOM_CHARS  # what .NAME.PID.RANDOM.tmp adds
_DIGEST_CHARS = 8
_DEFAULT_NAME_MAX = 255
_ATTEMPTS = 100  # random names tried before giving up (each taken only by a planted file)

_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def check_output(target: Path, inputs: Iterable[Path] = ()) -> None:
    """Raise `OutputFileError` unless `target` can be written and is none of `inputs`; cheap, so
    called before the work that makes the output."""
    _check_target(target, tuple(inputs))
    fd, temporary = _create_temporary(target)
    os.close(fd)
    _remove(temporary)


@contextmanager
def atomic_output(target: Path, inputs: Iterable[Path] = ()) -> Iterator[BinaryIO]:
    """A binary file to write the output into; it replaces `target` when the block ends without
    an exception, and is removed otherwise (see the module's guarantees)."""
    sources = tuple(inputs)
    _check_target(target, sources)
    mode = _mode_for(target)
    _remove_stale_temporaries(target, sources)
    fd, temporary = _create_temporary(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        _check_target(target, sources)  # what the output names may have changed while we wrote
        os.replace(temporary, target)
    except BaseException as exc:
        _remove(temporary)
        if isinstance(exc, OSError):  # a full disk, a quota, an I/O error
            raise OutputFileError(f"cannot write output {target}: {_reason(exc)}") from None
        raise
    _sync_folder(target.parent)


@contextmanager
def atomic_directory(target: Path, inputs: Iterable[Path] = (), overwrite: bool = False) -> Iterator[Path]:
    """A new empty folder to fill; it becomes `target` when the block ends without an exception,
    and is removed otherwise. `target` may be missing or an empty folder; a folder with files in
    it is replaced only when `overwrite` is given (never when an input lies inside it). A
    replaced folder is renamed aside first and removed only once the new one is in place, so a
    failure leaves the previous folder as it was."""
    sources = tuple(inputs)
    _check_target_folder(target, sources, overwrite)
    temporary = _create_temporary_folder(target)
    try:
        yield temporary
        _check_target_folder(target, sources, overwrite)
        _sync_folder(temporary)
        _publish_folder(temporary, target)
    except BaseException as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputFileError(f"cannot write output {target}: {_reason(exc)}") from None
        raise
    _sync_folder(target.parent)


def check_output_directory(target: Path, inputs: Iterable[Path] = (), overwrite: bool = False) -> None:
    """Raise `OutputFileError` unless `atomic_directory` may write `target`; cheap, so called
    before the work that makes the output."""
    _check_target_folder(target, tuple(inputs), overwrite)
    _create_temporary_folder(target).rmdir()


def _check_target_folder(target: Path, inputs: tuple[Path, ...], overwrite: bool) -> None:
    _check_folder(target)
    _check_name(target)
    existing = _stat(target, follow=False)
    if existing is None:
        return
    if not stat.S_ISDIR(existing.st_mode):
        kind = _KINDS.get(stat.S_IFMT(existing.st_mode), "a file")
        raise OutputFileError(f"output {target} is {kind}, not a directory")
    try:
        entries = os.listdir(target)
    except OSError as exc:
        raise OutputFileError(f"cannot write output {target}: {_reason(exc)}") from None
    if not entries:
        return
    if not overwrite:
        raise OutputFileError(
            f"output directory {target} exists and is not empty ({len(entries)} entries); "
            "give --overwrite to replace it, or name a new directory"
        )
    real = os.path.realpath(target)
    for source in inputs:
        if os.path.commonpath([real, os.path.realpath(source)]) == real:
            raise OutputFileError(f"output directory {target} holds an input ({source}); it is not replaced")


def _create_temporary_folder(target: Path) -> Path:
    prefix = f".{_temporary_stem(target)}.{os.getpid()}."
    for _ in range(_ATTEMPTS):
        temporary = target.parent / f"{prefix}{secrets.token_hex(_RANDOM_CHARS // 2)}{_SUFFIX}"
        try:
            os.mkdir(temporary, 0o777)  # the umask applies, as to any new folder
            return temporary
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputFileError(
                f"cannot write output {target}: {target.parent} does not take new files ({_reason(exc)})"
            ) from None
    raise OutputFileError(f"cannot write output {target}: no free temporary name in {target.parent}")


def _publish_folder(temporary: Path, target: Path) -> None:
    """`temporary` renamed to `target`; an existing `target` (checked: empty, or replaceable) is
    renamed aside first and put back if the second rename fails."""
    if _stat(target, follow=False) is None:
        os.rename(temporary, target)
        return
    aside = temporary.with_name(temporary.name[: -len(_SUFFIX)] + ".old")
    os.rename(target, aside)
    try:
        os.rename(temporary, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _check_target(target: Path, inputs: tuple[Path, ...]) -> None:
    """Everything that refuses `target`, cheapest first; nothing here opens a file."""
    _check_folder(target)
    _check_name(target)
    try:
        existing: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        existing = None  # a new file
    except OSError as exc:  # the whole path too long, a folder we may not search
        raise OutputFileError(f"cannot write output {target}: {_reason(exc)}") from None
    _check_not_an_input(target, existing, inputs)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        if stat.S_ISDIR(existing.st_mode):
            raise OutputFileError(f"output {target} is a directory")
        kind = _KINDS.get(stat.S_IFMT(existing.st_mode), "not a regular file")
        raise OutputFileError(
            f"output {target} is {kind}; only a regular file is replaced (name the file itself)"
        )


def _check_folder(target: Path) -> None:
    folder = target.parent
    try:
        found = os.stat(folder)
    except FileNotFoundError:
        raise OutputFileError(f"output directory {folder} does not exist") from None
    except NotADirectoryError:
        raise OutputFileError(f"output directory {folder} is not a directory") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = _reason(exc) if isinstance(exc, OSError) else "a NUL byte in the path"
        raise OutputFileError(f"cannot reach output directory {shown(str(folder))}: {reason}") from None
    if not stat.S_ISDIR(found.st_mode):
        raise OutputFileError(f"output directory {folder} is not a directory")


def _check_name(target: Path) -> None:
    try:
        length = len(os.fsencode(target.name))
    except UnicodeEncodeError:
        raise OutputFileError(f"output {shown(str(target))} is not a name a file can have") from None
    if "\0" in target.name:
        raise OutputFileError(f"output {shown(str(target))} has a NUL byte in its name")
    name_max = _name_max(target.parent)
    if length > name_max:
        raise OutputFileError(
            f"output name is {length} bytes long; "
            f"the file system of {target.parent} allows at most {name_max}"
        )


def _check_not_an_input(target: Path, existing: os.stat_result | None, inputs: tuple[Path, ...]) -> None:
    """By device and inode: the name itself and, for a link, what it points to."""
    if existing is None:
        return
    linked = _stat(target, follow=True)
    names = {(s.st_dev, s.st_ino) for s in (linked, existing) if s is not None}
    for source in inputs:
        read = _stat(source, follow=True)
        if read is not None and (read.st_dev, read.st_ino) in names:
            also = "" if str(source) == str(target) else f" ({source})"
            raise OutputFileError(f"output {target} is the input file itself{also}")


def _create_temporary(target: Path) -> tuple[int, Path]:
    """A new empty file beside `target`, ours alone: `O_EXCL` refuses a name that exists, link or
    not, so nothing planted there is written through."""
    folder = target.parent
    prefix = f".{_temporary_stem(target)}.{os.getpid()}."
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_ATTEMPTS):
        temporary = folder / f"{prefix}{secrets.token_hex(_RANDOM_CHARS // 2)}{_SUFFIX}"
        try:
            return os.open(temporary, flags, 0o600), temporary
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputFileError(
                f"cannot write output {target}: {folder} does not take new files ({_reason(exc)})"
            ) from None
    raise OutputFileError(f"cannot write output {target}: no free temporary name in {folder}")


def _temporary_stem(target: Path) -> str:
    """The output's name, or when the temporary's name would pass NAME_MAX its first bytes and a
    digest of the whole (the same for every process, so stale temporaries are found)."""
    name = os.fsencode(target.name)
    room = _name_max(target.parent) - _TEMPORARY_EXTRA
    if len(name) <= room:
        return target.name
    digest = hashlib.sha256(name).hexdigest()[:_DIGEST_CHARS]
    return os.fsdecode(name[: max(room - _DIGEST_CHARS - 1, 0)]) + "~" + digest


def _remove_stale_temporaries(target: Path, inputs: tuple[Path, ...]) -> None:
    """Temporaries of `target` whose writing process no longer exists (it was killed); never an
    input, a directory or anything but a file or a link."""
    folder = target.parent
    prefix = f".{_temporary_stem(target)}."
    kept = {(s.st_dev, s.st_ino) for s in (_stat(path, follow=True) for path in inputs) if s is not None}
    try:
        entries = os.scandir(folder)
    except OSError:
        return
    with entries:
        for entry in entries:
            pid = _writer_pid(entry.name, prefix)
            if pid is None or _process_exists(pid):
                continue
            try:
                found = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            removable = stat.S_ISREG(found.st_mode) or stat.S_ISLNK(found.st_mode)
            if removable and (found.st_dev, found.st_ino) not in kept:
                _remove(folder / entry.name)


def _writer_pid(name: str, prefix: str) -> int | None:
    """The process id in `PREFIX` + `PID.RANDOM.tmp` (or the older `PID.tmp`), else None."""
    if not (name.startswith(prefix) and name.endswith(_SUFFIX)):
        return None
    parts = name[len(prefix) : -len(_SUFFIX)].split(".")
    if len(parts) > 2 or (len(parts) == 2 and not _is_random_part(parts[1])):
        return None
    pid = parts[0]
    if not (pid.isascii() and pid.isdigit() and 0 < len(pid) <= _PID_DIGITS):
        return None
    return int(pid)


def _is_random_part(text: str) -> bool:
    return len(text) == _RANDOM_CHARS and all(c in "0123456789abcdef" for c in text)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mode_for(target: Path) -> int:
    """The replaced file's permissions, else what the umask gives a new file."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without setting it (setting it races other threads) where Linux
    shows it; else set and restored."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return _DEFAULT_NAME_MAX


def _stat(path: Path, follow: bool) -> os.stat_result | None:
    try:
        return os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _sync_folder(folder: Path) -> None:
    """Make the rename durable; some file systems cannot fsync a folder, which is no error."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
