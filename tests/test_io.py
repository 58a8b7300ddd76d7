"""Atomic writes: the final name appears only when complete, with ordinary permissions."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from lakd.errors import LakdError
from lakd.io import atomic_dir, atomic_path, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_renames_on_success_with_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        target = tmp_path / "a" / "x.txt"
        with atomic_path(target) as tmp:
            tmp.write_text("hello")
            assert not target.exists()
        assert target.read_text() == "hello"
        assert _mode(target) == 0o644
    finally:
        os.umask(mask)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"old": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text().strip().startswith("{") and "old" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_dir_permissions_overwrite_and_cleanup(tmp_path):
    mask = os.umask(0o022)
    try:
        out = tmp_path / "out"
        with atomic_dir(out) as tmp:
            (tmp / "f").write_text("1")
        assert _mode(out) == 0o755 and (out / "f").read_text() == "1"
        with pytest.raises(LakdError, match="already exists \\(use `overwrite` to replace it\\)"):
            with atomic_dir(out) as tmp:
                (tmp / "f").write_text("2")
        assert (out / "f").read_text() == "1"
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "g").write_text("3")
        assert sorted(p.name for p in out.iterdir()) == ["g"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    finally:
        os.umask(mask)


def test_atomic_dir_keeps_the_old_folder_when_the_swap_fails(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("kept")
    real_replace = os.replace
    calls = []

    def failing_second_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder moving into place
            raise OSError("disk trouble")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second_replace)
    with pytest.raises(OSError, match="disk trouble"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "new").write_text("x")
    monkeypatch.undo()
    assert (out / "old").read_text() == "kept" and not (out / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_is_an_os_error_naming_the_file_it_was_to_become(tmp_path):
    from safetensors import SafetensorError

    from lakd.io import writing

    target = tmp_path / "out.bin"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # Python's write: no file name
    with pytest.raises(OSError) as err, atomic_path(target) as tmp, writing(tmp):
        raise full
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(target))
    with pytest.raises(PermissionError) as err, atomic_path(target) as tmp, writing(tmp):
        raise SafetensorError("Error while serializing: I/O error: Permission denied (os error 13)")
    assert (err.value.errno, err.value.filename) == (errno.EACCES, str(target))
    # inside a folder written atomically: the file it was to become, in the final folder
    with pytest.raises(OSError) as err, atomic_dir(tmp_path / "report") as folder:
        write_json(folder / "sub" / "metrics.json", {"a": 1})
        with atomic_path(folder / "sub" / "page.html") as tmp, writing(tmp):
            raise full
    assert err.value.filename == str((tmp_path / "report" / "sub" / "page.html").resolve())
    # errors that are not about the file being written pass as they are
    other = OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "input.csv"))
    for error in (other, SafetensorError("invalid header"), ValueError("x")):
        with pytest.raises(type(error)) as err, atomic_path(target) as tmp, writing(tmp):
            raise error
        assert err.value is error
    assert sorted(p.name for p in tmp_path.iterdir()) == []
