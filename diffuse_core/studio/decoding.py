"""Uploads are decoded once, in a worker process that Stop reaches and a memory cap bounds (issue 35).

The readers (:func:`diffuse_core.io.image.load_raw`) refuse a file by the sizes it declares before decoding it; this
module bounds what is left, for the app's uploads:

* **Once per upload.** :func:`decoded_slice` keeps the last :data:`CACHE_ENTRIES` decoded slices (and refusals),
  keyed by the staged file's path, size and modification time and the slice: the probe when a file is uploaded, the
  preview and the run share one decode. Asking for :data:`~diffuse_core.io.loaded.MIDDLE` reads a volume's slice
  count and its middle slice in one read.
* **Where Stop reaches it.** The decode runs in a child process (``python -m diffuse_core.studio.decoding``, a
  fresh interpreter that imports only the readers: about half a second) under ``RLIMIT_AS`` (its address space
  after the imports plus :data:`LOAD_MEMORY_BYTES`). The request's thread waits for it in steps of
  :data:`POLL_SECONDS`, checking the request's :class:`~diffuse_core.studio.guard.RunGuard`: a Stop, a closed tab,
  ``Job.cancel()`` or the request's wall-time limit kills the child at once, which frees its CPU and memory. The
  server's own threads only wait, so page loads and ``/status`` stay responsive while a large file decodes. The
  child's answer is read back with an unpickler that accepts nothing but a ``LoadedImage`` and NumPy arrays.

A decode that runs past :data:`LOAD_SECONDS` or out of its memory is refused with one line saying so.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from diffuse_core.io.loaded import LoadedImage, TooLargeError

__all__ = ["CACHE_BYTES", "CACHE_ENTRIES", "LOAD_MEMORY_BYTES", "LOAD_SECONDS", "POLL_SECONDS", "decoded_slice",
           "forget", "load_in_worker"]

CACHE_ENTRIES = 8                   # decoded slices (or refusals) kept: a few uploads' probe, preview and run
CACHE_BYTES = 192 * 2**20           # and at most this many bytes of them (a 4096 x 4096 float32 slice is 64 MiB)
LOAD_MEMORY_BYTES = 1 << 30         # address space a decode may add to the worker's (RLIMIT_AS)
LOAD_SECONDS = 60.0                 # wall time one decode may take
POLL_SECONDS = 0.05                 # how often the waiting thread checks the request's guard
_ERRORS = {"ValueError": ValueError, "TooLargeError": TooLargeError, "FileNotFoundError": FileNotFoundError}

_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict = {}


def _address_space() -> int:
    """This process's virtual memory size in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _child_main(argv: list[str]) -> int:
    """In the worker (``python -m diffuse_core.studio.decoding SRC SLICE MEMORY``): import the readers, cap the
    address space, read the slice, write the pickled answer to stdout."""
    src, slice_arg, memory_bytes = argv[0], argv[1], int(argv[2])
    answer_fd = os.dup(1)                              # the answer goes here; anything a library prints, to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from diffuse_core.io.image import load_raw          # imported before the cap: the cap is for the decode

    try:
        import resource

        limit = _address_space() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, ValueError, OSError):
        pass                                           # no cap where the platform has none; the time limit stays
    slice_index = None if slice_arg == "none" else (slice_arg if slice_arg == "middle" else int(slice_arg))
    from diffuse_core.io.loaded import OutOfMemoryError

    try:
        answer = ("ok", load_raw(src, slice_index))
    except (MemoryError, OutOfMemoryError):
        answer = ("memory", "", "")
    except (ValueError, FileNotFoundError) as exc:
        answer = ("error", type(exc).__name__ if type(exc).__name__ in _ERRORS else "ValueError", str(exc))
    except Exception as exc:  # noqa: BLE001 - a reader's unexpected failure still reaches the user as one line
        answer = ("error", "ValueError", f"{src} could not be read ({type(exc).__name__}: {exc})")
    try:
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        data = pickle.dumps(("memory", "", ""))
    with os.fdopen(answer_fd, "wb") as answer_out:
        answer_out.write(data)
    return 0


class _AnswerUnpickler(pickle.Unpickler):
    """Unpickles a worker's answer: a LoadedImage, NumPy arrays and plain values, nothing else."""

    def find_class(self, module, name):
        if module == "diffuse_core.io.loaded" and name == "LoadedImage":
            return LoadedImage
        if module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype", "_frombuffer",
                                                        "scalar"}:
            return super().find_class(module, name)
        if module == "builtins" and name in {"tuple", "list", "dict", "str", "int", "float", "bytes", "bytearray"}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a decoder's answer")


def _too_much_memory(src: str) -> ValueError:
    return ValueError(f"{Path(src).name} needs more than {LOAD_MEMORY_BYTES / 2**30:g} GiB of memory to decode, the "
                      f"limit per upload: upload one slice, or a cropped or uncompressed file")


def _worker_env() -> dict:
    """The worker's environment: this package importable, one thread per numeric library."""
    import diffuse_core

    env = dict(os.environ)
    root = str(Path(diffuse_core.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def load_in_worker(src: str, slice_index, guard=None) -> LoadedImage:
    """``load_raw(src, slice_index)`` in a worker process (module docstring); ``guard`` (default: the request's)
    is checked every :data:`POLL_SECONDS` and the worker killed when it says stop. Raises what the reader raised
    (same type and message), RunCancelled / RunTimeLimit from the guard, or ValueError past the time or memory
    limit."""
    from diffuse_core.studio.guard import request_guard

    guard = guard if guard is not None else request_guard()
    slice_arg = "none" if slice_index is None else str(slice_index)
    try:
        worker = subprocess.Popen([sys.executable, "-m", "diffuse_core.studio.decoding", str(src), slice_arg,
                                   str(LOAD_MEMORY_BYTES)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, env=_worker_env(), close_fds=True)
    except OSError as exc:
        raise ValueError(f"the server could not start a decoder for {Path(src).name} ({exc.strerror or exc}): "
                         f"try again in a minute") from None
    deadline = time.monotonic() + LOAD_SECONDS
    try:
        while True:
            try:
                out, _ = worker.communicate(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            guard.check("while decoding the upload")
            if time.monotonic() > deadline:
                raise ValueError(f"decoding {Path(src).name} took longer than {LOAD_SECONDS:g} s, the limit per "
                                 f"upload: upload one slice, or a cropped or uncompressed file")
    finally:
        if worker.poll() is None:
            worker.kill()                               # Stop / time limit: the CPU and memory come back now
            worker.communicate()
    if not out:
        if worker.returncode in (-9, -11, -6):          # killed or crashed: a decoder out of its memory
            raise _too_much_memory(src)
        raise ValueError(f"{Path(src).name} could not be decoded (the decoder stopped with code "
                         f"{worker.returncode}): export it again, uncompressed")
    try:
        status, kind, value = _unpack(_AnswerUnpickler(io.BytesIO(out)).load())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError):
        raise ValueError(f"{Path(src).name} could not be decoded (the decoder's answer was unreadable): export "
                         f"it again") from None
    if status == "ok" and isinstance(value, LoadedImage):
        return value
    if status == "memory":
        raise _too_much_memory(src)
    raise _ERRORS.get(kind, ValueError)(str(value))


def _unpack(message) -> tuple[str, str, object]:
    if message[0] == "ok":
        return "ok", "", message[1]
    return message[0], message[1], message[2]


def _identity(src: str) -> tuple:
    """What changes when the file (or a series folder's files) changes: sizes and modification times."""
    p = Path(src)
    try:
        if p.is_dir():
            return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir()
                                if f.is_file()))
        st = p.stat()
        return (st.st_size, st.st_mtime_ns)
    except OSError:
        return ()


def _copy(loaded: LoadedImage) -> LoadedImage:
    """A copy a caller may change (its array included) without changing the kept one."""
    return dataclasses.replace(loaded, data=loaded.data.copy())


def _remember(key, value) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = value
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_ENTRIES or (len(_CACHE) > 1 and _kept_bytes() > CACHE_BYTES):
            _CACHE.popitem(last=False)


def _kept_bytes() -> int:
    """Bytes of the kept slices (one slice kept under two keys counts once)."""
    arrays = {id(v[1]): v[1].data.nbytes for v in _CACHE.values() if v[0] == "ok"}
    return sum(arrays.values())


def _recall(key):
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    return None


def decoded_slice(src: str, slice_index, guard=None) -> LoadedImage:
    """Slice ``slice_index`` (an int, or :data:`~diffuse_core.io.loaded.MIDDLE`) of the staged upload ``src``,
    raw (no value checks), decoded in a worker once and then kept (module docstring); a refusal is kept too."""
    from diffuse_core.studio.guard import RunTimeLimit

    ident = _identity(src)
    key = (str(src), ident, slice_index)
    with _CACHE_LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    try:
        with lock:                                      # two requests for one slice: the second waits, then reuses
            kept = _recall(key)
            if kept is None:
                try:
                    kept = ("ok", load_in_worker(src, slice_index, guard))
                except RunTimeLimit:
                    raise                               # the request's own time limit: not the file's answer
                except (ValueError, FileNotFoundError) as exc:
                    kept = ("error", type(exc), str(exc))
                _remember(key, kept)
                if kept[0] == "ok":
                    _remember((str(src), ident, kept[1].slice_index), kept)
    finally:
        with _CACHE_LOCK:
            if not lock.locked():
                _KEY_LOCKS.pop(key, None)
    if kept[0] == "ok":
        return _copy(kept[1])
    raise kept[1](kept[2])


def forget() -> None:
    """Drop every kept slice (tests, and a server that wants the memory back)."""
    with _CACHE_LOCK:
        _CACHE.clear()


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
