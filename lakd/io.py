"""Atomic file and folder writes: nothing half-written is ever left under the final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_default(path: Path, *, folder: bool) -> None:
    """Give a temporary file or folder the permissions a plain ``open``/``mkdir`` would
    (``mkstemp``/``mkdtemp`` create them readable by the owner only)."""
    path.chmod((0o777 if folder else 0o666) & ~_umask())


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# how safetensors reports the operating system's error: "I/O error: No space left on device (os error 28)"
_OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Around the write of the one file ``path``: an error of the operating system's while writing it
    (a full disk, a folder that cannot be written) leaves as an :class:`OSError` naming ``path``,
    whichever library wrote it. Python's own writes raise one that names no file; safetensors raises a
    ``SafetensorError`` that carries the error number in its message. Other exceptions pass unchanged."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err
        raise
    except Exception as err:
        match = _OS_ERROR_NUMBER.search(str(err)) if type(err).__name__ == "SafetensorError" else None
        if match is None:
            raise
        code = int(match[1])
        raise OSError(code, os.strerror(code), str(path)) from err


def _renamed(err: BaseException, tmp: Path, path: Path) -> OSError | None:
    """An OSError about ``tmp`` (or a file inside the folder ``tmp``) as the same error about ``path``
    (or the same file inside ``path``): errors name what is being written, not its temporary name."""
    if not isinstance(err, OSError) or err.filename is None or err.errno is None:
        return None
    name = Path(os.fsdecode(err.filename))
    if name != tmp and not name.is_relative_to(tmp):
        return None
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path / name.relative_to(tmp)))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched; an OSError that
    names the temporary file (:func:`writing`) is raised naming ``path``. ``durable``: fsync the file
    before the rename and the folder after it, so that once this returns the new file survives a
    crash of the machine, not only of the process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _chmod_default(tmp_path, folder=tmp_path.is_dir())
            if durable and tmp_path.is_file():
                fsync_path(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            fsync_path(path.parent)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        renamed = _renamed(err, tmp_path, path)
        if renamed is not None:
            raise renamed from err
        raise


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike, durable: bool = False) -> Iterator[list[Path]]:
    """:func:`atomic_path` for files that belong together (weights and their sidecar): yield one
    temporary path beside each; once every one is written they are renamed onto ``paths`` in order.
    Everything that needs disk space happens before the first rename, so a full disk or an unwritable
    folder leaves all the previous files as they were; on an exception every temporary is removed."""
    with contextlib.ExitStack() as stack:
        # ExitStack renames in reverse order of entry: enter the last path first
        tmps = [stack.enter_context(atomic_path(path, durable=durable)) for path in reversed(paths)]
        yield tmps[::-1]


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _owner(name: str, stem: str, suffix: str) -> int | None:
    """The process id in a temporary name of :func:`atomic_dir`: ``.<stem>.<pid>.<random><suffix>``
    -> pid; None for any other name."""
    head, tail = f".{stem}.", suffix
    if not (name.startswith(head) and name.endswith(tail)):
        return None
    pid, dot, rest = name[len(head) : len(name) - len(tail)].partition(".")
    ours = dot and rest and "." not in rest and pid.isascii() and pid.isdigit()
    return int(pid) if ours else None


def clear_stale(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed :func:`atomic_dir` left beside ``path``: its temporary folders
    (``.<name>.<pid>.<random>.tmp``) and set-aside old folders (``.<name>.<pid>.<random>.old``) whose
    process no longer runs. An old folder goes back to ``path`` when ``path`` is missing (the run was
    killed between setting it aside and renaming the new one in). Only names of that pattern are
    touched; the folders of a process that still runs are left alone. Returns what was removed."""
    path = Path(path).resolve()
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        for suffix in (".tmp", ".old"):
            pid = _owner(entry.name, path.name, suffix)
            if pid is None or _pid_alive(pid) or not entry.is_dir(follow_symlinks=False):
                continue
            aside = Path(entry.path) / path.name
            if suffix == ".old" and not path.exists() and aside.exists():
                os.replace(aside, path)  # killed between the two renames: the old folder goes back
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    An existing ``path`` is replaced only when ``overwrite`` is true (callers check this, and
    whether the folder is theirs to replace, before heavy work; it is re-checked here). The old
    folder is renamed aside first and removed only once the new one is in place, so a failure at
    any point leaves either the old or the new folder under ``path``. Temporary names carry the
    process id (``.<name>.<pid>.<random>.tmp``), so what a killed run left is recognised and removed
    by the next one (:func:`clear_stale`).
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)
    prefix = f".{path.name}.{os.getpid()}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    _chmod_default(tmp, folder=True)
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
            return
        if not overwrite:
            from lakd.errors import LakdError

            raise LakdError(f"{path}: already exists (use `overwrite` to replace it)")
        old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old / path.name, path)
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        renamed = _renamed(err, tmp, path)
        if renamed is not None:
            raise renamed from err
        raise


def write_json(path: str | os.PathLike, obj: Any, *, durable: bool = False) -> None:
    """Write ``obj`` as indented JSON, atomically (``durable``: see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp, writing(tmp):
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str, *, durable: bool = False) -> None:
    """Write ``text`` atomically (UTF-8; ``durable``: see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp, writing(tmp):
        tmp.write_text(text, encoding="utf-8")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
