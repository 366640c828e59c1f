"""Atomic file output and an inter-process file lock: every file fgp_ext writes goes through here.

Writing (:func:`atomic_write` and the helpers on top of it) follows one recipe, so that a run killed
at any instant, a full disk or a refused write never leaves a half-written or empty file where a
good one was:

1. a temporary file is created *in the target's folder* with :func:`tempfile.mkstemp` (a unique
   name ``.<name>.<random>.tmp``, opened with ``O_CREAT | O_EXCL``: it never follows a symlink
   planted at a temporary path and never shares a name with another writer);
2. the content is written to it, flushed and ``fsync``-ed;
3. it is renamed over the target with :func:`os.replace` (atomic on POSIX: readers see the old
   file or the new one, never a mix), and the folder is ``fsync``-ed so the rename survives a crash.

On any failure the temporary file is removed and the previous target is left as it was. Operating
system errors (disk full ``ENOSPC``, quota ``EDQUOT``, file-size limit ``EFBIG``, ``EACCES``,
``EROFS``, ``EIO``, ...) become one :class:`WriteError` whose message is one line naming the file and
the cause: ``cannot write runs/x/summary.json: No space left on device``. A process killed with
``SIGKILL`` during step 2 can leave a hidden ``.<name>.*.tmp`` file beside the target; nothing reads
such files and they can be deleted.

A file-size limit (``ulimit -f``) kills a process with ``SIGXFSZ`` unless that signal is ignored;
the ``fgp`` command ignores it (:func:`ignore_sigxfsz`) so that the limit reaches the writer as
``EFBIG`` and is reported like a full disk.

:class:`FileLock` is an exclusive ``fcntl.flock`` lock on a ``<file>.lock`` file that records its
holder (pid, host, command), used to let only one process at a time pre-train one entry of a
``--pretrained-dir`` cache.

Torch-free (``torch_save`` imports torch when called), so that importing it stays cheap.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

__all__ = ["WriteError", "LockTimeout", "atomic_write", "make_folder", "write_bytes", "write_text", "write_json",
           "torch_save", "np_save", "np_savez", "np_savetxt", "write_csv", "savefig", "FileLock", "ignore_sigxfsz"]

#: errno values that mean "the storage refused this write" when raised by a write inside the
#: ``with atomic_write(...)`` body (other errors from the body, e.g. reading an input, pass through).
WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS")
                         if hasattr(errno, n))
#: errno values of a folder ``fsync`` that only say the file system does not support it.
_DIR_FSYNC_UNSUPPORTED = frozenset(getattr(errno, n) for n in ("EINVAL", "ENOTSUP", "EOPNOTSUPP", "EBADF",
                                                               "EACCES", "EPERM", "EISDIR") if hasattr(errno, n))


class WriteError(OSError):
    """An output file could not be written; ``str()`` is one line naming the file and the cause.

    A subclass of :class:`OSError` (``errno`` and ``filename`` are set), so code that already
    handles ``OSError`` handles it too. The previous content of the file, if any, is intact."""

    def __init__(self, path, cause: BaseException | str, action: str = "write"):
        if isinstance(cause, OSError):
            reason = cause.strerror or str(cause)
            code = cause.errno
        else:
            reason, code = str(cause), None
        super().__init__(code, reason, os.fspath(path))
        self.message = f"cannot {action} {os.fspath(path)}: {reason}"

    def __str__(self) -> str:
        return self.message


class LockTimeout(TimeoutError):
    """:class:`FileLock` waited longer than its timeout; the message names the holder."""


def ignore_sigxfsz() -> None:
    """Turn a file-size limit (``ulimit -f``) from a kill by ``SIGXFSZ`` into ``EFBIG`` write
    errors, which :func:`atomic_write` reports as a :class:`WriteError` (main thread only)."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


_umask_lock = threading.Lock()


def _new_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, "w")`` would give a new file
    (``mkstemp`` creates 0600 files; outputs stay readable as they were before)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno in _DIR_FSYNC_UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _make_folder(folder: Path) -> None:
    """``folder`` and its parents; a file in the way is ``ENOTDIR`` (mkdir says 'File exists')."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None


def make_folder(folder) -> Path:
    """Create the output folder ``folder`` (and its parents) if missing; a file in the way or a
    refused ``mkdir`` is a :class:`WriteError` ``cannot create folder X: CAUSE``."""
    folder = Path(folder)
    try:
        _make_folder(folder)
    except OSError as e:
        raise WriteError(folder, e, action="create folder") from None
    return folder


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a unique temporary file beside ``path`` for writing; when the ``with`` block ends
    without an exception, flush, ``fsync`` and rename it over ``path`` (see the module docstring).

    ``mode`` is ``"wb"`` (default) or ``"w"`` (text; ``encoding`` defaults to UTF-8). Missing
    parent folders are created. An exception in the block removes the temporary file and leaves
    ``path`` untouched; write errors of the storage (and any ``OSError`` of the steps here) are
    raised as :class:`WriteError`. A symlink at ``path`` is replaced by the new file, not followed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes new files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    folder = path.parent
    tmp: str | None = None
    body_error: OSError | None = None
    try:
        _make_folder(folder)
        try:
            want = os.stat(path).st_mode & 0o777     # keep the permissions of the file being replaced
        except OSError:
            want = _new_file_mode()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + path.name + ".", suffix=".tmp")
        try:
            os.fchmod(fd, want)
            f = os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None,
                          newline=newline if mode == "w" else None)
        except BaseException:
            os.close(fd)
            raise
        try:
            try:
                yield f
            except WriteError:
                raise
            except OSError as e:
                if e.errno in WRITE_ERRNOS:
                    raise WriteError(path, e) from None
                body_error = e   # e.g. reading an input inside the block: not ours to rename
                raise
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                f.close()        # its flush may fail again (disk full): the first error is the one to tell
            raise
        f.close()
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    except WriteError:
        raise
    except OSError as e:
        if e is body_error:
            raise
        raise WriteError(path, e) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (newlines as given); returns ``path``."""
    with atomic_write(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(path)


def write_json(path, obj: Any, *, indent: int | None = 2, default: Callable | None = None,
               allow_nan: bool = True) -> Path:
    """``json.dump`` of ``obj`` to ``path`` atomically (a trailing newline); the JSON is rendered
    in memory first, so an unserialisable value leaves no file behind."""
    text = json.dumps(obj, indent=indent, default=default, allow_nan=allow_nan) + "\n"
    return write_text(path, text)


class _RecordingFile(io.RawIOBase):
    """A binary file that remembers the first ``OSError`` of its writes: torch's zip writer turns
    a failed write into ``RuntimeError: ... unexpected pos``, which hides the cause."""

    def __init__(self, f):
        super().__init__()
        self._f = f
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        try:
            return self._f.write(b)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return False


def torch_save(obj, path) -> Path:
    """``torch.save(obj)`` into a temporary file beside ``path``, then renamed over it; a write
    refused by the storage is a :class:`WriteError` (not torch's ``unexpected pos``)."""
    import torch

    with atomic_write(path, "wb") as f:
        rec = _RecordingFile(f)
        try:
            torch.save(obj, rec)
        except Exception as e:  # noqa: BLE001 - whatever torch makes of a failed write
            if rec.error is not None:
                raise WriteError(path, rec.error) from None
            if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
                raise WriteError(path, e) from None
            raise
    return Path(path)


def np_save(path, array) -> Path:
    """``numpy.save`` (no pickles) to ``path`` atomically; ``path`` is used as given (no ``.npy``
    is appended)."""
    import numpy as np

    with atomic_write(path, "wb") as f:
        # through the wrapper: numpy writes a real file with tofile(), whose short write is an
        # OSError without errno; the wrapper's plain write() calls keep the storage's errno
        rec = _RecordingFile(f)
        try:
            np.save(rec, np.asarray(array), allow_pickle=False)
        except OSError as e:
            raise WriteError(path, rec.error or e) from None
    return Path(path)


def np_savez(path, compressed: bool = True, **arrays) -> Path:
    """``numpy.savez_compressed`` (or ``savez``) of ``arrays`` to ``path`` atomically; ``path``
    is used as given (no ``.npz`` is appended)."""
    import numpy as np

    with atomic_write(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return Path(path)


def np_savetxt(path, array, **kwargs) -> Path:
    """``numpy.savetxt`` to ``path`` atomically (``kwargs`` as for ``savetxt``)."""
    import numpy as np

    with atomic_write(path, "w", newline="") as f:
        np.savetxt(f, array, **kwargs)
    return Path(path)


def write_csv(path, rows: Iterable[Iterable], header: Iterable[str] | None = None) -> Path:
    """Rows (and an optional header) as CSV to ``path`` atomically."""
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        if header is not None:
            w.writerow(list(header))
        w.writerows(rows)
    return Path(path)


def savefig(fig, path, **kwargs) -> Path:
    """``fig.savefig`` (a matplotlib figure) to ``path`` atomically; the format is taken from the
    suffix (``.png`` if none) unless ``format=`` is given."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix[1:].lower() or "png")
    with atomic_write(path, "wb") as f:
        fig.savefig(f, **kwargs)
    return path


# ----------------------------------------------------------------------------------------------
# inter-process lock
# ----------------------------------------------------------------------------------------------
def _command_line() -> str:
    """This process's command as a user would type it (``fgp run ...``, ``python -m fgp_ext ...``)."""
    if not sys.argv or not sys.argv[0]:
        return ""
    prog = Path(sys.argv[0])
    head = f"python -m {prog.parent.name}" if prog.name == "__main__.py" else prog.name
    return " ".join([head] + sys.argv[1:])


class FileLock:
    """An exclusive lock between processes: ``fcntl.flock`` on the file ``path`` (for a cache file
    ``X``, by convention ``X.lock``), which is created if missing and never deleted (deleting a lock
    file lets a third process lock a new file while the second still holds the old one).

    While held, the file records the holder's pid, host and command line. A second process that
    finds the lock held prints ``waiting for <what> held by pid N on HOST (COMMAND)`` once to
    ``log`` and waits (the ``fgp`` command waits without a time limit: the holder is doing the
    work the waiter needs, and a killed holder releases the lock at once). With ``timeout`` (in
    seconds) the wait ends in :class:`LockTimeout` with the same description; ``timeout=0`` means
    "do not wait". Re-entrant neither across threads nor within one: one ``with`` at a time.

    ``what`` names the locked thing in messages (default: the lock file's path).
    """

    def __init__(self, path, what: str | None = None, timeout: float | None = None,
                 log: Callable[[str], None] | None = None, poll: float = 0.1):
        self.path = Path(path)
        self.what = what or str(self.path)
        self.timeout = timeout
        self.log = log if log is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.poll = float(poll)
        self._fd: int | None = None

    def holder(self) -> dict:
        """What the lock file says about its holder (``{}`` when it says nothing readable)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.loads(f.read() or "{}")
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def _describe(self) -> str:
        h = self.holder()
        # the holder writes its details just after it takes the lock: a waiter arriving in between
        # reads an empty file, so it gives the holder a moment before saying it cannot name it
        settle = time.monotonic() + 1.0
        while not h.get("pid") and time.monotonic() < settle:
            time.sleep(0.02)
            h = self.holder()
        if not h.get("pid"):
            return f"{self.what} held by another process"
        cmd = f" ({h['command']})" if h.get("command") else ""
        return f"{self.what} held by pid {h['pid']} on {h.get('host', '?')}{cmd}"

    def acquire(self) -> "FileLock":
        import fcntl

        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this FileLock")
        try:
            _make_folder(self.path.parent)
            # O_NOFOLLOW: a symlink planted at the lock path is refused, not written through
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o666)
        except OSError as e:
            raise WriteError(self.path, e) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                desc = self._describe()
                if self.timeout is not None and self.timeout <= 0:
                    raise LockTimeout(f"{desc}; not waiting") from None
                self.log(f"waiting for {desc}")
                deadline = None if self.timeout is None else time.monotonic() + float(self.timeout)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise LockTimeout(f"gave up after {self.timeout:g} s waiting for {desc}") from None
                        time.sleep(self.poll)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)   # no stale holder once released
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
