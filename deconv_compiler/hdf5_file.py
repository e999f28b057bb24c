"""An HDF5 file from a stranger → its layout (groups, datasets, the attributes asked for) and the
datasets' arrays, read in a worker process that a time limit ends.

A corrupt HDF5 file can loop or exhaust memory inside the C library, where no Python signal
handler runs, so every HDF5 read happens in a worker process (forked per file by a helper that
has h5py loaded) that the parent kills with SIGKILL when one request takes longer than
`read_seconds()`; the worker also caps its own CPU time per request (RLIMIT_CPU) and its address
space, so an orphaned worker ends as well. A refusal or a failure is an `HDF5Error` naming the
object.

Guarantees, before any dataset's data is read:
- the whole file is walked from the root: an external link, a soft link, a virtual dataset, a
  dataset stored in external files, a filter outside `KNOWN_FILTERS`, anywhere in the file, is
  refused (only data physically inside the given file is read, and no HDF5 plugin is loaded);
- datasets are described (shape, numpy dtype, declared bytes, chunk bytes), so the caller checks
  sizes and dtypes before asking for data; attributes are read only when asked for, bounded.
`HDF5Reader.read` then streams the datasets asked for, back to back, in slabs of about
`SLAB_BYTES`, each straight into an array allocated once in the parent: the parent holds one copy
of the weights, the worker one slab (one row of chunks for a chunked dataset).
"""

from __future__ import annotations

import atexit
import gc
import math
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import numpy as np

# Per request (the layout, one slab): a sound file takes milliseconds; 60 s only ends a loop.
READ_SECONDS = 60.0
READ_SECONDS_VARIABLE = "DECONVC_HDF5_SECONDS"  # overrides READ_SECONDS (tests use a short one)
SLAB_BYTES = 16 * 2**20
MAX_LINKS = 200_000  # a Keras file has a few per layer
MAX_ATTRIBUTE_BYTES = 128 * 2**20  # all attributes read, together (a model config is at most 64 MiB)
MAX_NAMES = 1_000_000  # entries of one attribute
WORKER_EXTRA_MEMORY = 2 * 2**30  # address space a worker may add: one chunk, one slab, HDF5's caches
# HDF5's built-in filters and h5py's LZF: anything else would load a plugin
KNOWN_FILTERS = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
}


class HDF5Error(ValueError):
    """The file, or one object in it, is refused or cannot be read; the message names it."""


@dataclass(frozen=True)
class Dataset:
    path: str  # from the root, without a leading "/": "model_weights/conv/kernel:0"
    shape: tuple[int, ...]
    dtype: str  # numpy's dtype.str ("<f4") for numbers, else a description ("string", "compound")
    numeric: bool  # integer or floating point values
    nbytes: int  # declared: shape x itemsize (a fill-value-only dataset declares it too)
    chunk_bytes: int  # one chunk, 0 when not chunked
    chunk_rows: int  # a chunk's extent along the first axis, 0 when not chunked


@dataclass(frozen=True)
class Unreadable:
    """An attribute that is not text or a list of texts."""

    description: str


Attribute = str | tuple[str, ...] | Unreadable


@dataclass(frozen=True)
class Group:
    path: str  # "" for the root
    attrs: Mapping[str, Attribute]  # only those asked for and present


@dataclass(frozen=True)
class Layout:
    objects: Mapping[str, Group | Dataset]  # by path; "" is the root

    def get(self, path: str) -> Group | Dataset | None:
        return self.objects.get(path)

    def children(self, path: str) -> list[str]:
        """The names of a group's members."""
        return self._members.get(path, [])

    @cached_property
    def _members(self) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {}
        for key in self.objects:
            if key:
                parent, _, name = key.rpartition("/")
                members.setdefault(parent, []).append(name)
        return members


def read_seconds() -> float:
    """The time limit of one request to the worker, in seconds."""
    text = os.environ.get(READ_SECONDS_VARIABLE)
    try:
        seconds = float(text) if text else READ_SECONDS
    except ValueError:
        return READ_SECONDS
    return seconds if seconds > 0 and math.isfinite(seconds) else READ_SECONDS


# --- the parent's side -------------------------------------------------------------------------------


class HDF5Reader:
    """A worker reading one HDF5 file: `layout` once entered, then `read(dataset)` per dataset.

    `fd` is a readable descriptor of a regular file (the caller keeps and closes it); `attributes`
    are the attribute names read from every group."""

    def __init__(self, fd: int, attributes: frozenset[str], max_memory: int) -> None:
        self.fd, self.attributes, self.max_memory = fd, attributes, max_memory
        self.seconds = read_seconds()
        self.layout = Layout({})

    def __enter__(self) -> HDF5Reader:
        self.conn, self.pid = _FORK_SERVER.start(
            self.fd, (sorted(self.attributes), self.seconds, self.max_memory)
        )
        try:
            self.layout = self._answer("reading its structure")
        except BaseException:
            self._stop(kill=True)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        # Leaving on an error (a refusal, Ctrl-C, SIGTERM's exit) the worker may be looping in C,
        # deaf to a polite close: only SIGKILL is sure.
        self._stop(kill=kind is not None)

    def read(self, datasets: Sequence[Dataset]) -> list[np.ndarray]:
        """The datasets' values, in order, each streamed into one array allocated here; one
        request for all of them (the worker sends them back to back)."""
        self.conn.send(("read", [dataset.path for dataset in datasets]))
        return [self._receive(dataset) for dataset in datasets]

    def _receive(self, dataset: Dataset) -> np.ndarray:
        array = np.empty(dataset.shape, np.dtype(dataset.dtype))
        flat = array.reshape(-1).view(np.uint8)
        what = f"reading {dataset.path}"
        offset = 0
        for selection in slabs(dataset):
            size = self._answer(what)
            if size != math.prod(_selected_shape(dataset.shape, selection)) * array.itemsize:
                self._stop(kill=True)  # out of step: nothing more it sends can be trusted
                raise HDF5Error(f"{what}: the worker sent {size:,} bytes for a slab, not the expected size")
            self._receive_into(flat[offset : offset + size], what)
            offset += size
        return array

    def _answer(self, what: str) -> Any:
        """The worker's next message, within the time limit; an error it reports is raised."""
        if not self.conn.poll(self.seconds):
            self._timed_out(what)
        try:
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            self._died(what)
        if kind == "error":
            raise HDF5Error(value)
        return value

    def _receive_into(self, target: np.ndarray, what: str) -> None:
        """Fill `target` from the connection's raw bytes (no copy, no frame), within the limit."""
        view, fd, done = memoryview(target.data), self.conn.fileno(), 0
        deadline = time.monotonic() + self.seconds
        while done < len(view):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self._timed_out(what)
            count = os.readv(fd, [view[done:]])
            if count == 0:
                self._died(what)
            done += count

    def _timed_out(self, what: str) -> NoReturn:
        self._stop(kill=True)
        raise HDF5Error(
            f"{what} took longer than {self.seconds:g} s; the file is corrupt or crafted "
            f"to stall the HDF5 library (the read was stopped)"
        )

    def _died(self, what: str) -> NoReturn:
        self._stop(kill=True)
        raise HDF5Error(f"{what}: the HDF5 library failed (a corrupt file?)")

    def _stop(self, kill: bool = False) -> None:
        if self.conn.closed:
            return
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass  # it has ended already
        else:
            try:
                self.conn.send(("close", ""))
            except OSError:
                pass
        self.conn.close()


class _ForkServer:
    """A helper process with h5py loaded that forks one worker per file (~10 ms each, instead of
    a new interpreter's ~0.3 s), and never runs the user's main module again, as multiprocessing's
    spawn and forkserver would. Started on first use, in its own session (a Ctrl-C is the
    CLI's to handle); it ends when this process closes its socket (exits)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def start(self, fd: int, options: tuple[Any, ...]) -> tuple[Connection, int]:
        """A new worker reading `fd`: the connection to it and its process id."""
        with self.lock:
            for attempt in (0, 1):
                ours, theirs = socket.socketpair()
                try:
                    sock = self._server() if attempt == 0 else self._restart()
                    socket.send_fds(sock, [pickle.dumps(options)], [theirs.fileno(), fd])
                    answer = _receive_exactly(sock, 8)
                except OSError:
                    ours.close()
                    continue
                finally:
                    theirs.close()
                return Connection(ours.detach()), struct.unpack("q", answer)[0]
        raise HDF5Error("the HDF5 reader process could not be started")

    def _server(self) -> socket.socket:
        if self.sock is None or self.process is None or self.process.poll() is not None:
            return self._restart()
        return self.sock

    def _restart(self) -> socket.socket:
        if self.sock is not None:
            self.sock.close()
        ours, theirs = socket.socketpair()
        code = "import sys; sys.path[:0] = sys.argv[2:]; from deconv_compiler.hdf5_file import fork_server; "
        code += "fork_server(int(sys.argv[1]))"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), *sys.path],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self.sock = ours
        return ours

    def close(self) -> None:
        """End the helper: it exits when its socket closes."""
        with self.lock:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            if self.process is not None:
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
                self.process = None


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise OSError("the HDF5 reader process has gone")
        data += part
    return data


_FORK_SERVER = _ForkServer()
atexit.register(_FORK_SERVER.close)


def fork_server(fd: int) -> None:
    """The helper's loop: per request (options + a socket and a file descriptor), fork a worker
    and answer its process id. Workers are reaped by the kernel (SIGCHLD ignored)."""
    _warm_up()
    base = _address_space()
    gc.freeze()  # the workers' garbage collector leaves the helper's objects (and their pages) alone
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    with socket.socket(fileno=fd) as sock:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(sock, 2**16, 2)
            except OSError:
                return
            if not message:
                return  # the parent has gone
            if len(fds) != 2:
                for extra in fds:
                    os.close(extra)
                continue
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    sock.close()
                    _die_with_parent()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    attributes, seconds, max_memory = pickle.loads(message)
                    serve(Connection(fds[0]), fds[1], frozenset(attributes), seconds, max_memory, base)
                except BaseException:  # noqa: BLE001 - the parent sees the connection close
                    code = 1
                finally:
                    os._exit(code)
            for received in fds:
                os.close(received)
            try:
                sock.sendall(struct.pack("q", pid))
            except OSError:
                return  # the parent has gone


def _die_with_parent() -> None:
    """SIGKILL this worker when the helper exits, as it does when the process that asked for the
    read has gone (Linux's PR_SET_PDEATHSIG; elsewhere RLIMIT_CPU ends a looping orphan)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _warm_up() -> None:
    """Load h5py and run HDF5's one-time set-up here, once, not in every worker; and forget the
    plugin folders, so that no worker ever loads a plugin (unknown filters are refused anyway)."""
    import io

    import h5py

    while h5py.h5pl.size():
        h5py.h5pl.remove(0)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_group("group").attrs["names"] = [b"a"]
        h5["group/data"] = np.zeros((2, 2), np.float32)
    with h5py.File(buffer, "r") as h5:
        _describe(h5, frozenset({"names"}))
        h5["group/data"].read_direct(np.empty((2, 2), np.float32))


def slabs(dataset: Dataset, budget: int = SLAB_BYTES) -> Iterator[tuple[slice | int, ...]]:
    """The selections the worker reads and sends, in order, each a C-contiguous block of the array.

    Contiguous data: the leading axes one index at a time until the rest fits `budget`, then
    ranges along the next axis. Chunked data: ranges along the first axis in whole chunk rows
    (each chunk is then decompressed once), as many as fit `budget`, at least one."""
    shape = dataset.shape
    count: int = math.prod(shape)
    itemsize = dataset.nbytes // count if count else 0
    if not shape or dataset.nbytes == 0:
        if dataset.nbytes:
            yield ()
        return
    if dataset.chunk_rows:
        row = math.prod(shape[1:]) * itemsize
        step = max(1, budget // max(1, row * dataset.chunk_rows)) * dataset.chunk_rows
        for start in range(0, shape[0], step):
            yield (slice(start, min(start + step, shape[0])),)
        return
    axis = 0
    while axis < len(shape) - 1 and math.prod(shape[axis:]) * itemsize > budget:
        axis += 1
    rest = math.prod(shape[axis + 1 :]) * itemsize
    step = max(1, budget // max(1, rest))
    for index in np.ndindex(*shape[:axis]):
        for start in range(0, shape[axis], step):
            yield (*index, slice(start, min(start + step, shape[axis])))


# --- the worker's side -------------------------------------------------------------------------------


def serve(
    conn: Connection, fd: int, attributes: frozenset[str], seconds: float, max_memory: int, base: int | None
) -> None:
    """The worker: answers the layout, then one `read` request at a time until `close`. Everything
    it opens is closed on the way out (a finalizer's warning would reach the user's terminal)."""
    with ExitStack() as stack:
        stack.callback(os.close, fd)
        stack.callback(conn.close)
        try:
            _limit_memory(base, max_memory)
            _limit_cpu(seconds)
            try:
                h5 = _open_h5(fd, stack)
            except Exception as exc:  # noqa: BLE001 - whatever the library says, the file is unreadable
                conn.send(("error", f"is not a readable HDF5 file ({_reason(exc)})"))
                return
            try:
                layout = _describe(h5, attributes)
            except HDF5Error as exc:
                conn.send(("error", str(exc)))
                return
            except Exception as exc:  # noqa: BLE001 - a corrupt header where the walk starts
                conn.send(("error", f"its structure cannot be read ({_reason(exc)})"))
                return
            conn.send(("layout", layout))
            sock = stack.enter_context(socket.socket(fileno=os.dup(conn.fileno())))
            while True:
                kind, paths = conn.recv()
                if kind != "read":
                    return
                for path in paths:
                    _limit_cpu(seconds)
                    obj = layout.get(path)
                    if not isinstance(obj, Dataset):
                        conn.send(("error", f"{path} is not a dataset"))
                        break
                    if not _send_dataset(conn, sock, h5[path], obj):
                        break  # the parent raises on the error: the rest is not read
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return  # the parent has gone
        except MemoryError:
            _try_send(conn, ("error", "reading it needs more memory than allowed (a corrupt file?)"))


def _try_send(conn: Connection, message: tuple[str, str]) -> None:
    try:
        conn.send(message)
    except OSError:
        pass


def _open_h5(fd: int, stack: ExitStack) -> Any:
    """h5py's file on the descriptor, closed by `stack`: by its own path on Linux (HDF5's fast
    driver), else (an unlinked temporary file has no path HDF5 accepts) through a file object."""
    import h5py

    path = f"/proc/self/fd/{fd}"
    if os.path.exists(path):
        try:
            return stack.enter_context(h5py.File(path, "r", locking=False))
        except OSError:
            pass
    handle = stack.enter_context(os.fdopen(os.dup(fd), "rb"))
    return stack.enter_context(h5py.File(handle, "r", locking=False))


def _limit_cpu(seconds: float) -> None:
    """The kernel ends the worker (SIGXCPU) if this request uses more than 2x the parent's limit."""
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    limit = math.ceil(used.ru_utime + used.ru_stime + 2 * seconds)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))


def _address_space() -> int | None:
    """This process' virtual memory size in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return None


def _limit_memory(base: int | None, max_memory: int) -> None:
    """Cap the address space at the helper's (`base`, measured once) + what one read may need."""
    import resource

    if base is None:
        return
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = base + max_memory + WORKER_EXTRA_MEMORY
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _reason(exc: BaseException) -> str:
    quoted = isinstance(exc, KeyError) and len(exc.args) == 1  # str(KeyError) adds quotes
    text = (str(exc.args[0]) if quoted else str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _describe(h5: Any, attributes: frozenset[str]) -> Layout:
    """Every object reachable from the root by hard links; anything else is refused."""
    import h5py

    objects: dict[str, Group | Dataset] = {}
    budget = [MAX_ATTRIBUTE_BYTES]
    objects[""] = Group("", _attributes(h5, "", attributes, budget))
    problems: list[str] = []

    def visit(name: str, link: Any) -> Any:
        if len(objects) > MAX_LINKS:
            problems.append(f"has more than {MAX_LINKS:,} objects")
            return True
        if isinstance(link, h5py.ExternalLink):
            problems.append(
                f"{name} is an external link (to another file); only data inside the file is read"
            )
            return True
        if isinstance(link, h5py.SoftLink):
            problems.append(f"{name} is a soft link; links are not followed")
            return True
        if not isinstance(link, h5py.HardLink):
            problems.append(f"{name} is a link of an unknown kind")
            return True
        try:
            obj = h5[name]
            if isinstance(obj, h5py.Group):
                objects[name] = Group(name, _attributes(obj, name, attributes, budget))
            elif isinstance(obj, h5py.Dataset):
                objects[name] = _dataset(obj, name)
        except HDF5Error as exc:
            problems.append(str(exc))
            return True
        except Exception as exc:  # noqa: BLE001 - a corrupt object header: name it
            problems.append(f"{name} cannot be read ({_reason(exc)})")
            return True
        return None

    try:
        h5.visititems_links(visit)
    except Exception as exc:  # noqa: BLE001 - a corrupt link table
        if not problems:
            raise HDF5Error(f"its structure cannot be read ({_reason(exc)})") from None
    if problems:
        raise HDF5Error(problems[0])
    return Layout(objects)


def _dataset(obj: Any, name: str) -> Dataset:
    if obj.is_virtual:
        raise HDF5Error(f"{name} is a virtual dataset (it would read other files)")
    if obj.external:
        raise HDF5Error(f"{name} stores its data in external files")
    plist = obj.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in KNOWN_FILTERS:
            raise HDF5Error(
                f"{name} is compressed with HDF5 filter {code}, which is not read (only built-in ones)"
            )
    dtype = obj.dtype
    if obj.shape is None:  # a null dataspace: no values at all
        return Dataset(name, (), "no", False, 0, 0, 0)
    numeric = dtype.kind in "iuf" and dtype.fields is None and not dtype.subdtype
    shape = tuple(int(n) for n in obj.shape)
    itemsize = dtype.itemsize
    chunks = obj.chunks
    chunk_bytes = math.prod(chunks) * itemsize if chunks else 0
    return Dataset(
        name,
        shape,
        dtype.str if numeric else _dtype_description(dtype),
        numeric,
        math.prod(shape) * itemsize,
        chunk_bytes,
        int(chunks[0]) if chunks else 0,
    )


def _dtype_description(dtype: np.dtype[Any]) -> str:
    import h5py

    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "SU":
        return "string"
    if dtype.fields is not None:
        return "compound"
    if dtype.kind == "O":
        return "object"
    return str(dtype)


def _attributes(obj: Any, name: str, wanted: frozenset[str], budget: list[int]) -> dict[str, Attribute]:
    found: dict[str, Attribute] = {}
    for key in wanted:
        if key not in obj.attrs:
            continue
        where = f"{name or '/'}: attribute {key}"
        attr = obj.attrs.get_id(key)
        count = math.prod(attr.shape) if attr.shape else 1
        if count > MAX_NAMES:
            raise HDF5Error(f"{where} has {count:,} entries; the limit is {MAX_NAMES:,}")
        if count * attr.dtype.itemsize > budget[0]:  # as declared: fixed-length strings say their size
            raise HDF5Error(f"{where}: the attributes take more than {MAX_ATTRIBUTE_BYTES:,} bytes")
        try:
            value = obj.attrs[key]
        except Exception as exc:  # noqa: BLE001 - an attribute of a type h5py cannot read
            found[key] = Unreadable(f"cannot be read ({_reason(exc)})")
            continue
        text = found[key] = _text_or_names(value)
        if isinstance(text, str):
            budget[0] -= len(text)
        elif isinstance(text, tuple):
            budget[0] -= sum(map(len, text))
        if budget[0] < 0:
            raise HDF5Error(f"{where}: the attributes take more than {MAX_ATTRIBUTE_BYTES:,} bytes")
    return found


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return None


def _text_or_names(value: Any) -> Attribute:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    text = _text(value)
    if text is not None:
        return text
    if isinstance(value, np.ndarray) and value.ndim == 1:
        if value.size == 0:
            return ()
        names = [_text(v) for v in value.tolist()]
        if all(n is not None for n in names):
            return tuple(n for n in names if n is not None)
        return Unreadable(f"a list of {value.dtype} values")
    if isinstance(value, np.ndarray):
        return Unreadable(f"a {value.ndim}-D array")
    return Unreadable(f"a scalar {type(value).__name__}")


def _send_dataset(conn: Connection, sock: socket.socket, obj: Any, dataset: Dataset) -> bool:
    """The dataset slab by slab: a header (its size, or an error) and then its raw bytes; False
    after an error."""
    if not dataset.numeric:
        conn.send(("error", f"{dataset.path} holds {dataset.dtype} values"))
        return False
    dtype = np.dtype(dataset.dtype)
    for selection in slabs(dataset):
        try:
            block = np.empty(_selected_shape(dataset.shape, selection), dtype)
            if block.size:
                obj.read_direct(block, source_sel=selection if selection else np.s_[()])
        except Exception as exc:  # noqa: BLE001 - corrupt data (MemoryError included): name the dataset
            conn.send(("error", f"{dataset.path} cannot be read ({_reason(exc)})"))
            return False
        conn.send(("slab", block.nbytes))
        sock.sendall(block.reshape(-1).view(np.uint8).data)
    return True


def _selected_shape(shape: tuple[int, ...], selection: tuple[slice | int, ...]) -> tuple[int, ...]:
    dims: list[int] = []
    for axis, size in enumerate(shape):
        part = selection[axis] if axis < len(selection) else slice(0, size)
        if isinstance(part, slice):
            dims.append(len(range(*part.indices(size))))
    return tuple(dims)
